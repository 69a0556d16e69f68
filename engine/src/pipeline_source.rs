//! What a new pipeline is made of, before it is stored: where its CI file comes from
//! (inline, or the repository at the ref's commit, with the files it includes), what
//! made it ([`Origin`]), and which jobs the file's `workflow: rules` and each job's
//! `rules`, `only` and `except` give it, with what variables.

use std::collections::HashMap;

use usher_core::api::{CreatePipeline, Project};
use usher_core::config;
use usher_core::repository::{CI_FILES, short_sha};

use crate::repos::Resolved;
use crate::{Engine, EngineError};

/// A new pipeline's configuration, the file it came from (for messages), and its commit.
pub(crate) struct PipelineSource {
    pub yaml: String,
    pub file: Option<String>,
    pub commit: Option<Resolved>,
}

/// Whether [`Engine::variables_of_pipeline`] gives the project's masked variables.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Masked {
    Included,
    Left,
}

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

/// What made a pipeline (`CI_PIPELINE_SOURCE`, and what `rules`/`only`/`except` see).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A push (a forge's webhook).
    Push,
    /// Someone in the web UI.
    Web,
    /// A program with an API token.
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Push => "push",
            Origin::Web => "web",
            Origin::Api => "api",
        }
    }
}

impl Engine {
    /// The pipeline's variables and its jobs: `None` of either when the file's rules make
    /// no pipeline, or leave every job out (refused as a bad request, with why).
    pub(crate) async fn jobs_of_pipeline(
        &self,
        project: &Project,
        git_ref: &str,
        source: &PipelineSource,
        origin: Origin,
        cfg: &config::CiConfig,
    ) -> Result<(Vec<(String, String)>, Vec<config::JobConfig>), EngineError> {
        use config::rules::{PipelineFacts, job_decision, workflow_decision};
        let commit = source.commit.as_ref();
        let is_tag = commit.is_some_and(|c| c.is_tag);
        let mut variables = self
            .variables_of_pipeline(project, git_ref, source, origin, &cfg.variables, Masked::Included)
            .await?;
        // `exists:` reads the commit's files, only if a rule asks.
        let wants_files = cfg
            .workflow_rules
            .iter()
            .chain(cfg.conditions.iter().flat_map(|c| c.rules.iter().flatten()))
            .any(|r| !r.exists.is_empty());
        let files = match (wants_files, commit) {
            (true, Some(c)) => self.inner.repos.files(project.id, &c.sha).await,
            _ => Vec::new(),
        };
        let facts = PipelineFacts {
            variables: &variables,
            git_ref,
            is_tag,
            source: origin.as_str(),
            files: &files,
        };
        let Some(workflow_variables) = workflow_decision(&cfg.workflow_rules, &facts) else {
            return Err(EngineError::NoPipeline(format!(
                "the CI file's `workflow: rules` make no pipeline for `{git_ref}` ({} pipeline)",
                origin.as_str()
            )));
        };
        // The workflow rule's variables are the pipeline's: job rules see them too.
        variables.extend(workflow_variables.iter().cloned());
        let facts = PipelineFacts {
            variables: &variables,
            git_ref,
            is_tag,
            source: origin.as_str(),
            files: &files,
        };
        let mut chosen = Vec::new();
        for (job, conditions) in cfg.jobs.iter().zip(&cfg.conditions) {
            let Some(decision) = job_decision(
                conditions.rules.as_deref(),
                conditions.only.as_ref(),
                conditions.except.as_ref(),
                job.when,
                &job.variables,
                &facts,
            ) else {
                continue;
            };
            let mut job = job.clone();
            job.when = decision.when;
            if decision.start_in.is_some() {
                job.start_in = decision.start_in;
            }
            if let Some(allowed) = decision.allow_failure {
                job.allow_failure.any = allowed;
            }
            for (k, v) in decision.variables {
                job.variables.retain(|(existing, _)| *existing != k);
                job.variables.push((k, v));
            }
            chosen.push(job);
        }
        if chosen.is_empty() {
            return Err(EngineError::NoPipeline(format!(
                "no job of the CI file runs for `{git_ref}` ({} pipeline): their `rules`, `only` and `except` leave every one out",
                origin.as_str()
            )));
        }
        // An optional need on a job the rules left out is dropped (GitLab's rule).
        let names: Vec<String> = chosen.iter().map(|j| j.name.clone()).collect();
        for job in &mut chosen {
            let optional = job.optional_needs.clone();
            if let Some(needs) = &mut job.needs {
                needs.retain(|n| names.contains(n) || !optional.contains(n));
            }
        }
        for job in &chosen {
            for need in job.needs.iter().flatten() {
                if !chosen.iter().any(|j| &j.name == need) {
                    return Err(EngineError::InvalidConfig(config::ConfigError {
                        line: None,
                        key: Some(format!("{}.needs", job.name)),
                        message: format!(
                            "job `{}` needs `{need}`, which this pipeline does not have (its rules leave it out)",
                            job.name
                        ),
                    }));
                }
            }
        }
        let mut pipeline_variables = cfg.variables.clone();
        for (k, v) in workflow_variables {
            pipeline_variables.retain(|(existing, _)| *existing != k);
            pipeline_variables.push((k, v));
        }
        Ok((pipeline_variables, chosen))
    }

    /// The variables a pipeline's expressions see: the project's, then `file_variables`
    /// (the CI file's top-level ones), then Usher's predefined `CI_*` ones, which only the
    /// pipeline sets (or leaves unset: `CI_COMMIT_TAG` of a branch).
    async fn variables_of_pipeline(
        &self,
        project: &Project,
        git_ref: &str,
        source: &PipelineSource,
        origin: Origin,
        file_variables: &[(String, String)],
        masked: Masked,
    ) -> Result<HashMap<String, String>, EngineError> {
        let commit = source.commit.as_ref();
        let is_tag = commit.is_some_and(|c| c.is_tag);
        let mut variables = HashMap::new();
        for v in self.store().variable_values(project.id).await? {
            if !v.masked || masked == Masked::Included {
                variables.insert(v.key, v.value);
            }
        }
        variables.extend(file_variables.iter().cloned());
        let predefined = [
            ("CI", Some("true".to_string())),
            ("CI_PIPELINE_SOURCE", Some(origin.as_str().to_string())),
            ("CI_COMMIT_REF_NAME", Some(git_ref.to_string())),
            ("CI_COMMIT_BRANCH", (!is_tag).then(|| git_ref.to_string())),
            ("CI_COMMIT_TAG", is_tag.then(|| git_ref.to_string())),
            ("CI_DEFAULT_BRANCH", Some(project.default_branch.clone())),
            ("CI_PROJECT_NAME", Some(project.name.clone())),
            ("CI_COMMIT_SHA", commit.map(|c| c.sha.clone())),
            ("CI_COMMIT_TITLE", commit.map(|c| c.title.clone())),
        ];
        for (k, v) in predefined {
            match v {
                Some(v) => variables.insert(k.to_string(), v),
                None => variables.remove(k),
            };
        }
        Ok(variables)
    }

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

    /// Where a new pipeline's configuration comes from, and its commit.
    pub(crate) async fn pipeline_source(
        &self,
        project: &Project,
        git_ref: &str,
        req: &CreatePipeline,
    ) -> Result<PipelineSource, EngineError> {
        let inline = req.ci_config.clone().or_else(|| project.ci_config.clone());
        let Some(url) = &project.repository_url else {
            if req.sha.is_some() {
                return Err(EngineError::InvalidRef(
                    "this project has no repository, so `sha` means nothing".into(),
                ));
            }
            return Ok(PipelineSource {
                yaml: inline.unwrap_or_default(),
                file: None,
                commit: None,
            });
        };
        let secrets = self.store().project_secrets(project.id).await?;
        let commit = self
            .inner
            .repos
            .resolve(project.id, url, &secrets, git_ref, req.sha.as_deref())
            .await?;
        let (yaml, file) = match (inline, &commit.ci_file) {
            (Some(yaml), _) => (yaml, None),
            (None, Some((name, text))) => (text.clone(), Some(format!("{name} at {}", short_sha(&commit.sha)))),
            (None, None) => {
                return Err(EngineError::InvalidConfig(config::ConfigError {
                    line: None,
                    key: None,
                    message: format!("commit {} has no {} or {}", short_sha(&commit.sha), CI_FILES[0], CI_FILES[1]),
                }));
            }
        };
        Ok(PipelineSource {
            yaml,
            file,
            commit: Some(commit),
        })
    }
}
