//! Project CI variables: maintainers add and delete them, developers see their keys, and
//! every job of the project gets them (see `Engine::assignment`). A value is never
//! shown again once set; a masked one never appears in a job's log.

use usher_core::api::{CreateVariable, Variable};
use usher_core::roles::Action;

use crate::{Actor, Engine, EngineError, detached};

impl Engine {
    pub async fn add_variable(&self, actor: &Actor, project_id: i64, req: CreateVariable) -> Result<Variable, EngineError> {
        actor.require(Action::ManageProjects)?;
        self.get_project(actor, project_id).await?;
        if let Some(problem) = req.problem() {
            return Err(EngineError::BadRequest(problem));
        }
        let engine = self.clone();
        detached(async move {
            engine
                .store()
                .add_variable(project_id, &req.key, &req.value, req.masked.unwrap_or(false))
                .await
        })
        .await
    }

    pub async fn list_variables(&self, actor: &Actor, project_id: i64) -> Result<Vec<Variable>, EngineError> {
        actor.require(Action::ListVariables)?;
        self.get_project(actor, project_id).await?;
        self.store().list_variables(project_id).await
    }

    pub async fn delete_variable(&self, actor: &Actor, project_id: i64, key: &str) -> Result<(), EngineError> {
        actor.require(Action::ManageProjects)?;
        self.get_project(actor, project_id).await?;
        let (engine, key) = (self.clone(), key.to_string());
        let deleted = detached(async move { engine.store().delete_variable(project_id, &key).await }).await?;
        if deleted {
            Ok(())
        } else {
            Err(EngineError::NotFound("variable".into()))
        }
    }
}
