//! Projects: a name and the CI configuration its pipelines start from.

use usher_core::api::Project;

use super::*;
use crate::{EngineError, now};

impl Store {
    pub async fn create_project(&self, name: &str, ci_config: &str) -> Result<Project, EngineError> {
        let row =
            sqlx::query("INSERT INTO projects (name, ci_config, created_at) VALUES ($1, $2, $3) RETURNING id, name, ci_config, created_at")
                .bind(name)
                .bind(ci_config)
                .bind(now())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        EngineError::Conflict(format!("a project named `{name}` already exists"))
                    }
                    e => e.into(),
                })?;
        project_from_row(&row)
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, EngineError> {
        let rows = sqlx::query("SELECT id, name, ci_config, created_at FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    pub async fn get_project(&self, id: i64) -> Result<Option<Project>, EngineError> {
        let row = sqlx::query("SELECT id, name, ci_config, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// Changes what is given; None when there is no such project.
    pub async fn update_project(&self, id: i64, name: Option<&str>, ci_config: Option<&str>) -> Result<Option<Project>, EngineError> {
        let row = sqlx::query(
            "UPDATE projects SET name = COALESCE($1, name), ci_config = COALESCE($2, ci_config) WHERE id = $3 \
             RETURNING id, name, ci_config, created_at",
        )
        .bind(name)
        .bind(ci_config)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                EngineError::Conflict(format!("a project named `{}` already exists", name.unwrap_or_default()))
            }
            e => e.into(),
        })?;
        row.as_ref().map(project_from_row).transpose()
    }
}
