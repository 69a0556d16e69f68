//! Projects: create, read and change the CI configuration their pipelines start from
//! (validated before it is stored).

use usher_core::api::{CreateProject, Project};
use usher_core::config;
use usher_core::roles::Action;

use crate::{Actor, Engine, EngineError};

impl Engine {
    pub async fn create_project(&self, actor: &Actor, req: CreateProject) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        if req.name.trim().is_empty() {
            return Err(EngineError::BadRequest("a project needs a name".into()));
        }
        config::parse(&req.ci_config)?;
        self.store().create_project(req.name.trim(), &req.ci_config).await
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

    pub async fn update_project(&self, actor: &Actor, id: i64, ci_config: &str) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        config::parse(ci_config)?;
        self.store()
            .update_project_config(id, ci_config)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("project {id}")))
    }
}
