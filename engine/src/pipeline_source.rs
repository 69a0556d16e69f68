//! What a new pipeline is made of, before it is stored: where its CI file comes from
//! (inline, or the repository at the ref's commit; the files it includes are
//! [`crate::includes`]), what made it ([`Origin`]), and which jobs the file's
//! `workflow: rules` and each job's `rules`, `only` and `except` give it, with what
//! variables.

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
pub(crate) enum Masked {
    Included,
    Left,
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
    pub(crate) async fn variables_of_pipeline(
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
