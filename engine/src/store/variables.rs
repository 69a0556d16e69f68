//! Project CI variables: added, listed (keys only), removed, and read whole (values
//! included) only for the jobs the runner is handed.

use sqlx::Row;
use usher_core::api::Variable;

use super::Store;
use crate::{EngineError, now};

/// A variable with its value, for a job's assignment.
pub struct VariableValue {
    pub key: String,
    pub value: String,
    pub masked: bool,
}

impl Store {
    /// Every variable of a project with its value, by key (for `rules:` when a pipeline
    /// is made; a job's assignment reads them with the job).
    pub async fn variable_values(&self, project_id: i64) -> Result<Vec<VariableValue>, EngineError> {
        let rows = sqlx::query("SELECT key, value, masked FROM project_variables WHERE project_id = $1 ORDER BY key")
            .bind(project_id)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(VariableValue {
                    key: r.try_get("key")?,
                    value: r.try_get("value")?,
                    masked: r.try_get::<i64, _>("masked")? != 0,
                })
            })
            .collect()
    }

    /// The values of a project's masked variables.
    pub async fn masked_values(&self, project_id: i64) -> Result<Vec<String>, EngineError> {
        let rows = sqlx::query("SELECT value FROM project_variables WHERE project_id = $1 AND masked <> 0")
            .bind(project_id)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(rows.iter().map(|r| r.try_get("value")).collect::<Result<_, _>>()?)
    }

    /// Adds a variable; a key the project has already is a conflict.
    pub async fn add_variable(&self, project_id: i64, key: &str, value: &str, masked: bool) -> Result<Variable, EngineError> {
        let created_at = now();
        let added = sqlx::query(
            "INSERT INTO project_variables (project_id, key, value, masked, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (project_id, key) DO NOTHING",
        )
        .bind(project_id)
        .bind(key)
        .bind(value)
        .bind(masked as i64)
        .bind(&created_at)
        .execute(&mut *self.conn().await?)
        .await?;
        if added.rows_affected() == 0 {
            return Err(EngineError::Conflict(format!(
                "the project has a variable `{key}` already; delete it first"
            )));
        }
        Ok(Variable {
            key: key.to_string(),
            masked,
            created_at,
        })
    }

    /// The project's variables, without their values, by key.
    pub async fn list_variables(&self, project_id: i64) -> Result<Vec<Variable>, EngineError> {
        let rows = sqlx::query("SELECT key, masked, created_at FROM project_variables WHERE project_id = $1 ORDER BY key")
            .bind(project_id)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Variable {
                    key: r.try_get("key")?,
                    masked: r.try_get::<i64, _>("masked")? != 0,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Removes a variable; false when the project has none of that key.
    pub async fn delete_variable(&self, project_id: i64, key: &str) -> Result<bool, EngineError> {
        let done = sqlx::query("DELETE FROM project_variables WHERE project_id = $1 AND key = $2")
            .bind(project_id)
            .bind(key)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
