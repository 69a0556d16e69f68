//! Projects: create, read and change the CI configuration their pipelines start from
//! (validated before it is stored).

use usher_core::api::{CreateProject, Project, UpdateProject};
use usher_core::roles::Action;
use usher_core::{config, names};

use crate::{Actor, Engine, EngineError, detached};

impl Engine {
    pub async fn create_project(&self, actor: &Actor, req: CreateProject) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        names::check_name("project", &req.name).map_err(EngineError::BadRequest)?;
        config::parse(&req.ci_config)?;
        let engine = self.clone();
        detached(async move { engine.store().create_project(req.name.trim(), &req.ci_config).await }).await
    }

    pub async fn list_projects(&self, actor: &Actor) -> Result<Vec<Project>, EngineError> {
        actor.require(Action::Read)?;
        self.store().list_projects().await
    }

    pub async fn get_project(&self, actor: &Actor, id: i64) -> Result<Project, EngineError> {
        actor.require(Action::Read)?;
        self.store()
            .get_project(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("project {id}")))
    }

    /// Renames a project and/or replaces its configuration (only what `req` names).
    pub async fn update_project(&self, actor: &Actor, id: i64, req: UpdateProject) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        if let Some(name) = &req.name {
            names::check_name("project", name).map_err(EngineError::BadRequest)?;
        }
        if let Some(source) = &req.ci_config {
            config::parse(source)?;
        }
        let engine = self.clone();
        detached(async move {
            let name = req.name.as_deref().map(str::trim);
            engine
                .store()
                .update_project(id, name, req.ci_config.as_deref())
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("project {id}")))
        })
        .await
    }
}
