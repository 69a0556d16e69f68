//! A new pipeline's includes: what its `include:` entries are read with (the pipeline's
//! variables and the commit's files), the files they name fetched — the repository's,
//! another project's, URLs — and the configuration parsed with them.

use std::collections::HashMap;

use usher_core::api::Project;
use usher_core::config;

use crate::pipeline_source::{Masked, Origin, PipelineSource};
use crate::{Engine, EngineError};

/// What a pipeline's `include:` entries are read with: see [`Engine::include_context`].
pub(crate) struct IncludeContext {
    variables: HashMap<String, String>,
    /// The commit's files (none without a repository, or a file without `include`).
    files: Vec<String>,
    git_ref: String,
    is_tag: bool,
    origin: Origin,
}

impl IncludeContext {
    /// `read` given the facts.
    pub(crate) fn with_facts<T>(&self, read: impl FnOnce(&config::include::IncludeFacts) -> T) -> T {
        read(&config::rules::PipelineFacts {
            variables: &self.variables,
            git_ref: &self.git_ref,
            is_tag: self.is_tag,
            source: self.origin.as_str(),
            files: &self.files,
        })
    }
}

impl Engine {
    /// What the pipeline's `include:` entries are read with (GitLab's: the project's
    /// variables and the predefined ones, not the file's), and the commit's files for
    /// their `rules: exists` when the file includes anything.
    pub(crate) async fn include_context(
        &self,
        project: &Project,
        git_ref: &str,
        source: &PipelineSource,
        origin: Origin,
    ) -> Result<IncludeContext, EngineError> {
        let files = match &source.commit {
            Some(c) if source.yaml.contains("include") => self.inner.repos.files(project.id, &c.sha).await,
            _ => Vec::new(),
        };
        Ok(IncludeContext {
            // A masked value put into an include's path, an error about it, or the file
            // (`expand_vars`) would be shown to every viewer: `include` does not get them.
            variables: self
                .variables_of_pipeline(project, git_ref, source, origin, &[], Masked::Left)
                .await?,
            files,
            git_ref: git_ref.to_string(),
            is_tag: source.commit.as_ref().is_some_and(|c| c.is_tag),
            origin,
        })
    }

    /// The pipeline's configuration, its includes read with `context`: the files the
    /// parser will ask for are fetched first ([`config::included_paths`], nested ones
    /// too); one it asks for that was not foreseen (a path an including entry's `inputs`
    /// make) is fetched and the file parsed again, a few rounds at most.
    /// The parsing itself runs on a blocking thread: a large file with many includes
    /// must not hold up the server's other work.
    pub(crate) async fn parsed_config(
        &self,
        project_id: i64,
        source: &PipelineSource,
        context: IncludeContext,
    ) -> Result<Result<config::CiConfig, config::ConfigError>, EngineError> {
        const ROUNDS: usize = 5;
        let context = std::sync::Arc::new(context);
        let yaml: std::sync::Arc<str> = source.yaml.as_str().into();
        let (mut files, mut commits) = (HashMap::new(), HashMap::new());
        let first = context.with_facts(|facts| config::included_paths(&source.yaml, "", Some(facts)));
        self.fetch_included(project_id, source, &context, first, &mut files, &mut commits)
            .await?;
        for round in 0.. {
            let (context_now, yaml_now) = (context.clone(), yaml.clone());
            let (parsed, asked, returned) = tokio::task::spawn_blocking(move || {
                let asked = std::cell::RefCell::new(Vec::new());
                let read = |path: &str| match files.get(path) {
                    Some(text) => text.clone(),
                    None => {
                        asked.borrow_mut().push(path.to_string());
                        None
                    }
                };
                let parsed = context_now.with_facts(|facts| config::parse_for_pipeline(&yaml_now, &read, facts));
                (parsed, asked.into_inner(), files)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("parsing the CI file: {e}")))?;
            files = returned;
            if parsed.is_ok() || asked.is_empty() || round == ROUNDS {
                return Ok(parsed);
            }
            let known = files.len();
            self.fetch_included(project_id, source, &context, asked, &mut files, &mut commits)
                .await?;
            // Nothing new (past the limit): another parse would say the same.
            if files.len() == known {
                return Ok(parsed);
            }
        }
        unreachable!("the loop returns")
    }

    /// Adds to `files` the included files `wanted` names and those they include, by the
    /// address the parser gives each: `include: local` ones read from the repository at
    /// the pipeline's commit (None for a path it does not have, or without a repository:
    /// the parser then refuses the include), `include: project` ones from that project's
    /// repository (see [`Engine::project_file`]), `include: remote` ones fetched (see
    /// [`crate::remote_includes`]; one that cannot be is refused here, with why).
    async fn fetch_included(
        &self,
        project_id: i64,
        source: &PipelineSource,
        context: &IncludeContext,
        mut wanted: Vec<String>,
        files: &mut HashMap<String, Option<String>>,
        commits: &mut HashMap<(String, Option<String>), (i64, String)>,
    ) -> Result<(), EngineError> {
        let paths_of = |text: &str, from: &str| context.with_facts(|facts| config::included_paths(text, from, Some(facts)));
        while let Some(path) = wanted.pop() {
            if files.contains_key(&path) || files.len() >= config::include::MAX_INCLUDES * 2 {
                continue;
            }
            let text = if let Some(file) = config::include::ProjectFile::from_address(&path) {
                self.project_file(&file, commits).await?
            } else if config::include::is_url(&path) {
                let allowed = self.inner.settings.remote_includes_local_network;
                let text = crate::remote_includes::fetch(&path, allowed).await.map_err(|why| {
                    EngineError::InvalidConfig(config::ConfigError {
                        line: None,
                        key: Some("include.remote".into()),
                        message: format!("`{path}` cannot be included: {why}"),
                    })
                })?;
                Some(text)
            } else {
                match &source.commit {
                    Some(commit) => self.inner.repos.file(project_id, &commit.sha, &path).await,
                    None => None,
                }
            };
            if let Some(text) = &text {
                wanted.extend(paths_of(text, &path));
            }
            files.insert(path, text);
        }
        Ok(())
    }

    /// An `include: project` file: of the Usher project with that name, at its `ref` (a
    /// branch, tag or commit id; none: the project's default branch) as its repository has it now. None for
    /// a file the commit does not have (the parser refuses it, naming it); a project that
    /// does not exist, has no repository or reads it with credentials, or a ref it does not
    /// have, is refused here.
    /// `commits` keeps each (project, ref)'s commit for the pipeline's other includes.
    async fn project_file(
        &self,
        file: &config::include::ProjectFile,
        commits: &mut HashMap<(String, Option<String>), (i64, String)>,
    ) -> Result<Option<String>, EngineError> {
        let refuse = |message: String| {
            EngineError::InvalidConfig(config::ConfigError {
                line: None,
                key: Some("include.project".into()),
                message,
            })
        };
        let key = (file.project.clone(), file.git_ref.clone());
        if !commits.contains_key(&key) {
            let project = self
                .store()
                .project_by_name(&file.project)
                .await?
                .ok_or_else(|| refuse(format!("`include: project`: there is no project named `{}`", file.project)))?;
            let Some(url) = &project.repository_url else {
                return Err(refuse(format!(
                    "`include: project`: project `{}` has no repository to include files from",
                    file.project
                )));
            };
            let secrets = self.store().project_secrets(project.id).await?;
            // Whoever can push to this pipeline's repository could otherwise read a private
            // repository through Usher's credentials for it: only repositories Usher reads
            // without any are included.
            if secrets.credentials.is_some() || secrets.ssh_private_key.is_some() {
                return Err(refuse(format!(
                    "`include: project`: project `{}` reads its repository with credentials, and its files are not given to other projects' pipelines; copy the file into this repository, or include it by URL",
                    file.project
                )));
            }
            let git_ref = file.git_ref.as_deref().unwrap_or(&project.default_branch);
            // A branch or tag first; a ref that is neither may be a commit id, which pins
            // the file as GitLab allows.
            let resolved = match self.inner.repos.resolve(project.id, url, &secrets, git_ref, None).await {
                Err(EngineError::InvalidRef(_))
                    if git_ref.len() >= 7 && git_ref.len() <= 64 && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    self.inner.repos.resolve(project.id, url, &secrets, git_ref, Some(git_ref)).await
                }
                other => other,
            };
            let sha = match resolved {
                Ok(commit) => commit.sha,
                Err(EngineError::InvalidRef(_)) => {
                    return Err(refuse(format!(
                        "`include: project`: project `{}` has no branch, tag or commit `{git_ref}`",
                        file.project
                    )));
                }
                Err(e) => return Err(e),
            };
            commits.insert(key.clone(), (project.id, sha));
        }
        let (project_id, sha) = &commits[&key];
        Ok(self.inner.repos.file(*project_id, sha, &file.file).await)
    }
}
