//! What a runner is given for a job it takes: its variables (the project's, the file's,
//! what earlier jobs handed over, Usher's `CI_*`, in that order of strength), scripts,
//! checkout, image and services with the job's variables put in, the artifacts of the
//! jobs it depends on, and its caches.

use usher_core::api::Job;
use usher_core::protocol::{ArtifactsAssignment, Checkout, JobAssignment};
use usher_core::status::Status;

use crate::store::AssignmentSource;
use crate::{Engine, EngineError};

impl Engine {
    pub(crate) async fn assignment(&self, job: &Job) -> Result<JobAssignment, EngineError> {
        let AssignmentSource {
            spec,
            stage_index,
            git_ref,
            sha,
            commit_title,
            project_name,
            default_branch,
            repository_url,
            credentials,
            ssh_private_key,
            variables: project_variables,
        } = self.store().assignment_source(job.id).await?;
        self.inner.cancel_windows.remember(job.id, &spec);
        // The configuration's variables first, Usher's last: the last of two equal names
        // wins in the job's environment, so CI_* always say the truth (the parser also
        // refuses configurations that set them; pipelines stored before that may).
        // The project's variables first: the YAML's of the same name win.
        let masked: Vec<String> = project_variables.iter().filter(|v| v.masked).map(|v| v.value.clone()).collect();
        // The file's (and the pipeline's) variables, which its services get too.
        let file_variables: Vec<(String, String)> = spec
            .pipeline_variables
            .into_iter()
            .filter(|(k, _)| !spec.job.without_variables.contains(k))
            .chain(spec.job.variables.clone())
            .filter(|(k, _)| !usher_core::config::limits::is_set_by_usher(k))
            .collect();
        let mut variables: Vec<(String, String)> = project_variables
            .into_iter()
            .map(|v| (v.key, v.value))
            .filter(|(k, _)| !usher_core::config::limits::is_set_by_usher(k))
            .chain(file_variables.iter().cloned())
            .collect();
        // What earlier jobs handed over (dotenv reports) comes after the YAML's, so it
        // wins, as in GitLab: from the jobs it takes artifacts from (every job of an
        // earlier stage, or those of `needs:` or `dependencies:`). A job of the first
        // stage without needs waits for none. Together they are held to one report's
        // limits, so that many jobs handing over cannot make an environment too large to
        // start a process in.
        let (mut dependencies, mut dependencies_left_out) = (Vec::new(), 0);
        if stage_index > 0 || spec.job.needs.as_ref().is_some_and(|n| !n.is_empty()) {
            let mut handed = Vec::new();
            for earlier in self.store().handed_over(job.pipeline_id, job.id).await? {
                if spec.job.takes_from(stage_index, &earlier.job, earlier.stage_index) {
                    handed.extend(earlier.variables);
                }
            }
            variables.extend(usher_core::dotenv::accept(handed));
            (dependencies, dependencies_left_out) = self.dependency_artifacts(job.id, job.pipeline_id, &spec.job, stage_index).await?;
        }
        variables.extend([
            ("CI".to_string(), "true".to_string()),
            ("CI_JOB_ID".to_string(), job.id.to_string()),
            ("CI_PIPELINE_ID".to_string(), job.pipeline_id.to_string()),
            ("CI_PROJECT_NAME".to_string(), project_name.clone()),
            ("CI_DEFAULT_BRANCH".to_string(), default_branch),
            ("CI_COMMIT_REF_NAME".to_string(), git_ref.clone()),
            ("CI_COMMIT_REF_SLUG".to_string(), usher_core::cache::ref_slug(&git_ref)),
            ("CI_JOB_NAME".to_string(), job.name.clone()),
            ("CI_JOB_STAGE".to_string(), job.stage.clone()),
        ]);
        if let Some(origin) = &spec.origin {
            variables.push(("CI_PIPELINE_SOURCE".to_string(), origin.clone()));
        }
        if let Some((index, total)) = spec.job.node {
            variables.push(("CI_NODE_INDEX".to_string(), index.to_string()));
            variables.push(("CI_NODE_TOTAL".to_string(), total.to_string()));
        }
        if job.when.is_cleanup() {
            variables.push((
                "CI_PIPELINE_STATUS".to_string(),
                self.pipeline_outcome(job.pipeline_id).await?.to_string(),
            ));
        }
        let checkout = match (repository_url, sha) {
            (Some(url), Some(sha)) => {
                let kind = if spec.ref_is_tag { "CI_COMMIT_TAG" } else { "CI_COMMIT_BRANCH" };
                variables.extend([
                    ("CI_COMMIT_SHA".to_string(), sha.clone()),
                    (
                        "CI_COMMIT_SHORT_SHA".to_string(),
                        usher_core::repository::short_sha(&sha).to_string(),
                    ),
                    (kind.to_string(), git_ref.clone()),
                    ("CI_COMMIT_TITLE".to_string(), commit_title.unwrap_or_default()),
                    ("CI_REPOSITORY_URL".to_string(), url.clone()),
                ]);
                Some(Checkout {
                    url,
                    sha,
                    credentials,
                    ssh_private_key,
                })
            }
            _ => None,
        };
        let cache = spec
            .job
            .cache
            .iter()
            .map(|c| usher_core::cache::assign(job.project_id, c, &variables))
            .collect();
        // What the file did not set in `image` and `services` (its project's variables,
        // Usher's), as GitLab expands them when a job runs; a name nothing sets stays as
        // written, and the runner refuses the image, naming it.
        let unset = usher_core::variables::Unset::Kept;
        let image = spec.job.image.map(|i| usher_core::variables::expand(&i, &variables, unset));
        let services: Vec<usher_core::config::Service> = spec
            .job
            .services
            .into_iter()
            .map(|s| {
                let name = usher_core::variables::expand(&s.name, &variables, unset);
                usher_core::config::Service {
                    // One the parser could not name: its default alias, from the name now.
                    alias: if s.alias.is_empty() {
                        usher_core::config::default_service_alias(&name)
                    } else {
                        s.alias
                    },
                    name,
                    // Its own variables may name the job's (a project's variable handed
                    // to the service on purpose, as GitLab users do), expanded here.
                    variables: s
                        .variables
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                usher_core::variables::expand(v, &variables, usher_core::variables::Unset::Empty),
                            )
                        })
                        .collect(),
                    entrypoint: s.entrypoint,
                    command: s.command,
                }
            })
            .collect();
        Ok(JobAssignment {
            job_id: job.id,
            pipeline_id: job.pipeline_id,
            project_name,
            git_ref,
            name: job.name.clone(),
            stage: job.stage.clone(),
            variables,
            before_script: spec.job.before_script,
            script: spec.job.script,
            after_script: spec.job.after_script,
            timeout_secs: spec.job.timeout_secs,
            cancel_grace_secs: spec.job.cancel_grace_secs,
            after_script_timeout_secs: spec.job.after_script_timeout_secs,
            artifacts: spec.job.artifacts.map(|a| ArtifactsAssignment {
                paths: a.paths,
                when: a.when,
                dotenv: a.dotenv,
                exclude: a.exclude,
                untracked: a.untracked,
                max_bytes: Some(self.inner.settings.max_artifact_bytes),
            }),
            checkout,
            image,
            // Only when there are services to give them to.
            service_variables: if services.is_empty() { Vec::new() } else { file_variables },
            services,
            masked,
            dependencies,
            dependencies_left_out,
            cache,
        })
    }

    /// How the rest of a pipeline ended, for its cleanup jobs (`CI_PIPELINE_STATUS`):
    /// `canceled` when it was cancelled, else what its other jobs ended as (`failed`,
    /// `success`, …).
    async fn pipeline_outcome(&self, pipeline_id: i64) -> Result<Status, EngineError> {
        let pipeline = self
            .store()
            .get_pipeline(pipeline_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("pipeline {pipeline_id}")))?;
        if pipeline.cancel.is_some() {
            return Ok(Status::Canceled);
        }
        let jobs = self.store().jobs_of_pipeline(pipeline_id).await?;
        let others = jobs
            .iter()
            .filter(|j| !j.retried && !j.when.is_cleanup())
            .map(|j| usher_core::pipeline::counted(j.status, j.allow_failure));
        Ok(usher_core::pipeline::derive_status(others))
    }
}
