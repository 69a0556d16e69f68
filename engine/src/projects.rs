//! Projects: create, read and change them. A project has a repository (any URL `git
//! clone` accepts; HTTPS credentials are split off and kept server-side), inline CI
//! YAML, or both (the inline YAML then overrides the repository's CI file). Secrets (a
//! webhook secret, an SSH key) are write-only.

use usher_core::api::{CreateProject, Project, UpdateProject};
use usher_core::repository::{RepoCredentials, split_credentials};
use usher_core::roles::Action;
use usher_core::{config, names};

use crate::store::{NewProject, ProjectChange};
use crate::{Actor, Engine, EngineError, detached};

/// The longest webhook secret or SSH key accepted.
const MAX_SECRET_BYTES: usize = 16 * 1024;

impl Engine {
    pub async fn create_project(&self, actor: &Actor, req: CreateProject) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        names::check_name("project", &req.name).map_err(EngineError::BadRequest)?;
        let repository = match req.repository_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => Some(self.check_repository(url)?),
            None => None,
        };
        let ci_config = req.ci_config.unwrap_or_default();
        if repository.is_none() && ci_config.trim().is_empty() {
            return Err(EngineError::BadRequest(
                "a project needs a `repository_url` or a `ci_config` (or both)".into(),
            ));
        }
        if !ci_config.trim().is_empty() {
            config::parse(&ci_config)?;
        }
        let default_branch = req.default_branch.unwrap_or_else(|| "main".into());
        names::check_ref(&default_branch).map_err(EngineError::BadRequest)?;
        check_secrets(req.webhook_secret.as_deref(), req.ssh_private_key.as_deref())?;
        let engine = self.clone();
        detached(async move {
            let (url, credentials) = repository.unzip();
            engine
                .store()
                .create_project(&NewProject {
                    name: req.name.trim(),
                    repository_url: url.as_deref(),
                    credentials: credentials.flatten().as_ref(),
                    ssh_private_key: req.ssh_private_key.as_deref().filter(|k| !k.is_empty()),
                    default_branch: &default_branch,
                    ci_config: &ci_config,
                    webhook_secret: req.webhook_secret.as_deref().filter(|s| !s.is_empty()),
                })
                .await
        })
        .await
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

    /// Changes what `req` names: `""` removes a repository, the inline YAML, the webhook
    /// secret or the SSH key. A project always keeps a repository or inline YAML.
    pub async fn update_project(&self, actor: &Actor, id: i64, req: UpdateProject) -> Result<Project, EngineError> {
        actor.require(Action::ManageProjects)?;
        if let Some(name) = &req.name {
            names::check_name("project", name).map_err(EngineError::BadRequest)?;
        }
        if let Some(source) = req.ci_config.as_deref().filter(|c| !c.trim().is_empty()) {
            config::parse(source)?;
        }
        if let Some(branch) = &req.default_branch {
            names::check_ref(branch).map_err(EngineError::BadRequest)?;
        }
        check_secrets(req.webhook_secret.as_deref(), req.ssh_private_key.as_deref())?;
        let repository = match req.repository_url.as_deref().map(str::trim) {
            None => None,
            Some("") => Some((None, None)),
            Some(url) => {
                let (url, credentials) = self.check_repository(url)?;
                Some((Some(url), credentials))
            }
        };
        let current = self.get_project(actor, id).await?;
        let has_repository = match &repository {
            Some((url, _)) => url.is_some(),
            None => current.repository_url.is_some(),
        };
        let has_yaml = match req.ci_config.as_deref() {
            Some(c) => !c.trim().is_empty(),
            None => current.ci_config.is_some(),
        };
        if !has_repository && !has_yaml {
            return Err(EngineError::BadRequest(
                "a project keeps a `repository_url` or a `ci_config`".into(),
            ));
        }
        let engine = self.clone();
        detached(async move {
            let change = ProjectChange {
                name: req.name.as_deref().map(str::trim),
                repository: repository.as_ref().map(|(url, creds)| (url.as_deref(), creds.as_ref())),
                default_branch: req.default_branch.as_deref(),
                ci_config: req.ci_config.as_deref(),
                webhook_secret: req.webhook_secret.as_deref().map(|s| Some(s).filter(|s| !s.is_empty())),
                ssh_private_key: req.ssh_private_key.as_deref().map(|k| Some(k).filter(|k| !k.is_empty())),
            };
            engine
                .store()
                .update_project(id, &change)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("project {id}")))
        })
        .await
    }

    /// A repository URL split from its credentials, refused if it is malformed or a path
    /// inside the server's own data.
    fn check_repository(&self, url: &str) -> Result<(String, Option<RepoCredentials>), EngineError> {
        let (clean, credentials) = split_credentials(url).map_err(EngineError::BadRequest)?;
        let local = clean.strip_prefix("file://").unwrap_or(&clean);
        let remote = local.contains("://") || is_scp_like(local);
        if !remote && (!local.starts_with('/') || local.split('/').any(|part| part == "..")) {
            // git would resolve it from the server's (or runner's) working directory,
            // where Usher's own data may be: another project's mirror, say.
            return Err(EngineError::BadRequest(
                "a local repository must be an absolute path without `..` (or use a URL such as https://, ssh:// or git@host:path)".into(),
            ));
        }
        if local.starts_with('/') {
            // Usher's own data (mirrors, artifacts, build directories) is no project's code.
            let resolved = std::fs::canonicalize(local).unwrap_or_else(|_| local.into());
            let settings = &self.inner.settings;
            let builds = settings.repos_dir.as_ref().and_then(|r| r.parent()).map(|d| d.join("builds"));
            let private = [settings.repos_dir.clone(), settings.artifacts_dir.clone(), builds];
            if private
                .into_iter()
                .flatten()
                .any(|dir| resolved.starts_with(std::fs::canonicalize(&dir).unwrap_or(dir)))
            {
                return Err(EngineError::BadRequest("a repository cannot be inside Usher's own storage".into()));
            }
        }
        Ok((clean, credentials))
    }
}

/// `[user@]host:path` (git's scp-like syntax): a colon before any slash, and a host.
fn is_scp_like(url: &str) -> bool {
    match url.split_once(':') {
        Some((host, _)) => !host.is_empty() && !host.contains('/'),
        None => false,
    }
}

fn check_secrets(webhook_secret: Option<&str>, ssh_key: Option<&str>) -> Result<(), EngineError> {
    for (what, value) in [("webhook_secret", webhook_secret), ("ssh_private_key", ssh_key)] {
        if value.is_some_and(|v| v.len() > MAX_SECRET_BYTES) {
            return Err(EngineError::BadRequest(format!("`{what}` has at most {MAX_SECRET_BYTES} bytes")));
        }
    }
    Ok(())
}
