//! Projects: a name, a repository (its URL served without credentials) or inline CI YAML,
//! and the secrets kept apart from what is served: HTTPS credentials, an SSH key and the
//! webhook secret.

use usher_core::api::Project;
use usher_core::repository::RepoCredentials;

use super::{Store, project_from_row};
use crate::{EngineError, now};
use sqlx::Row;
use sqlx::any::AnyRow;

const PROJECT_COLUMNS: &str = "id, name, repository_url, default_branch, ci_config, created_at";

/// A project to insert.
pub struct NewProject<'a> {
    pub name: &'a str,
    /// Without credentials.
    pub repository_url: Option<&'a str>,
    pub credentials: Option<&'a RepoCredentials>,
    pub ssh_private_key: Option<&'a str>,
    pub default_branch: &'a str,
    /// `""`: none (the repository's CI file is used).
    pub ci_config: &'a str,
    pub webhook_secret: Option<&'a str>,
}

/// What a change sets; None leaves a field as it is, `Some(None)` clears it.
#[derive(Default)]
pub struct ProjectChange<'a> {
    pub name: Option<&'a str>,
    pub repository: Option<(Option<&'a str>, Option<&'a RepoCredentials>)>,
    pub default_branch: Option<&'a str>,
    pub ci_config: Option<&'a str>,
    pub webhook_secret: Option<Option<&'a str>>,
    pub ssh_private_key: Option<Option<&'a str>>,
}

/// What a project keeps and never serves.
#[derive(Clone, Default)]
pub struct ProjectSecrets {
    pub credentials: Option<RepoCredentials>,
    pub ssh_private_key: Option<String>,
    pub webhook_secret: Option<String>,
}

fn unique_name(name: &str) -> impl FnOnce(sqlx::Error) -> EngineError + '_ {
    move |e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => EngineError::Conflict(format!("a project named `{name}` already exists")),
        e => e.into(),
    }
}

impl Store {
    pub async fn create_project(&self, p: &NewProject<'_>) -> Result<Project, EngineError> {
        let row = sqlx::query(&format!(
            "INSERT INTO projects (name, repository_url, repository_username, repository_password, ssh_private_key, \
             default_branch, ci_config, webhook_secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING {PROJECT_COLUMNS}"
        ))
        .bind(p.name)
        .bind(p.repository_url)
        .bind(p.credentials.map(|c| c.username.as_str()))
        .bind(p.credentials.map(|c| c.password.as_str()))
        .bind(p.ssh_private_key)
        .bind(p.default_branch)
        .bind(p.ci_config)
        .bind(p.webhook_secret)
        .bind(now())
        .fetch_one(&mut *self.conn().await?)
        .await
        .map_err(unique_name(p.name))?;
        project_from_row(&row)
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, EngineError> {
        let rows = sqlx::query(&format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id"))
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    pub async fn get_project(&self, id: i64) -> Result<Option<Project>, EngineError> {
        let row = sqlx::query(&format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// The project named `name` exactly (names are unique), if there is one.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>, EngineError> {
        let row = sqlx::query(&format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    pub async fn project_secrets(&self, id: i64) -> Result<ProjectSecrets, EngineError> {
        let row =
            sqlx::query("SELECT repository_username, repository_password, ssh_private_key, webhook_secret FROM projects WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *self.conn().await?)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("project {id}")))?;
        Ok(ProjectSecrets {
            credentials: repo_credentials(&row)?,
            ssh_private_key: row.try_get("ssh_private_key")?,
            webhook_secret: row.try_get("webhook_secret")?,
        })
    }

    /// Changes what `change` names; None when there is no such project.
    pub async fn update_project(&self, id: i64, change: &ProjectChange<'_>) -> Result<Option<Project>, EngineError> {
        let flag = |set: bool| set as i64;
        let (url, credentials) = change.repository.unwrap_or((None, None));
        let row = sqlx::query(&format!(
            "UPDATE projects SET name = COALESCE($1, name), \
             repository_url = CASE WHEN $2 = 1 THEN $3 ELSE repository_url END, \
             repository_username = CASE WHEN $2 = 1 THEN $4 ELSE repository_username END, \
             repository_password = CASE WHEN $2 = 1 THEN $5 ELSE repository_password END, \
             default_branch = COALESCE($6, default_branch), ci_config = COALESCE($7, ci_config), \
             webhook_secret = CASE WHEN $8 = 1 THEN $9 ELSE webhook_secret END, \
             ssh_private_key = CASE WHEN $10 = 1 THEN $11 ELSE ssh_private_key END \
             WHERE id = $12 RETURNING {PROJECT_COLUMNS}"
        ))
        .bind(change.name)
        .bind(flag(change.repository.is_some()))
        .bind(url)
        .bind(credentials.map(|c| c.username.as_str()))
        .bind(credentials.map(|c| c.password.as_str()))
        .bind(change.default_branch)
        .bind(change.ci_config)
        .bind(flag(change.webhook_secret.is_some()))
        .bind(change.webhook_secret.flatten())
        .bind(flag(change.ssh_private_key.is_some()))
        .bind(change.ssh_private_key.flatten())
        .bind(id)
        .fetch_optional(&mut *self.conn().await?)
        .await
        .map_err(unique_name(change.name.unwrap_or_default()))?;
        row.as_ref().map(project_from_row).transpose()
    }
}

/// A project row's `repository_username` and `repository_password`, as git is given them.
pub(super) fn repo_credentials(row: &AnyRow) -> Result<Option<RepoCredentials>, sqlx::Error> {
    let username: Option<String> = row.try_get("repository_username")?;
    let password: Option<String> = row.try_get("repository_password")?;
    Ok(username.map(|username| RepoCredentials {
        username,
        password: password.unwrap_or_default(),
    }))
}
