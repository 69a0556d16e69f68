//! Runners: their tokens, registration and heartbeats, handing a pending job to a
//! runner (with everything it needs to run it: [`crate::assignment`]), and taking its
//! final report.

use usher_core::api::FailureReason;
use usher_core::protocol::{JobAssignment, JobReport};
use usher_core::roles::Action;
use usher_core::status::Status;

use crate::auth::{hash_token, new_token};
use crate::plan::{Event, Move};
use crate::store::Change;
use crate::{Actor, Engine, EngineError, format_time};

impl Engine {
    /// `usher runner-token create`.
    pub async fn create_runner_token(&self) -> Result<String, EngineError> {
        let token = new_token("usher_rt_");
        self.store().add_runner_token(&hash_token(&token)).await?;
        Ok(token)
    }

    /// `usher runner-token revoke`: new connections and uploads are refused at once, and
    /// connected runners using it are dropped at their next heartbeat.
    pub async fn revoke_runner_token(&self, token: &str) -> Result<(), EngineError> {
        if self.store().revoke_runner_token(&hash_token(token)).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound("a live runner token with that value".into()))
        }
    }

    pub async fn runner_token_is_live(&self, token_id: i64) -> Result<bool, EngineError> {
        self.store().runner_token_is_live(token_id).await
    }

    /// The runners this server has seen; online = heard from within the runner-lost window.
    pub async fn list_runners(&self, actor: &Actor) -> Result<Vec<usher_core::api::RunnerInfo>, EngineError> {
        actor.require(Action::Read)?;
        let since = chrono::Utc::now() - chrono::Duration::seconds(self.inner.settings.runner_lost_after_secs as i64);
        self.store().list_runners(&format_time(since)).await
    }

    /// Pauses (`paused`) or resumes runner `id` (admin): a paused runner keeps its
    /// running jobs and takes no new one. The runner as it is afterwards.
    pub async fn pause_runner(&self, actor: &Actor, id: i64, paused: bool) -> Result<usher_core::api::RunnerInfo, EngineError> {
        actor.require(Action::Administer)?;
        if !self.store().set_runner_paused(id, paused).await? {
            return Err(EngineError::NotFound(format!("runner {id}")));
        }
        tracing::info!(runner = id, paused, "runner {}", if paused { "paused" } else { "resumed" });
        self.list_runners(actor)
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| EngineError::NotFound(format!("runner {id}")))
    }

    /// What a runner said when it connected (its executor); it is not draining.
    pub async fn runner_said_hello(&self, runner_id: i64, executor: Option<&str>) -> Result<(), EngineError> {
        self.store().runner_connected(runner_id, executor).await
    }

    /// The runner said it is draining (SIGQUIT).
    pub async fn runner_draining(&self, runner_id: i64) -> Result<(), EngineError> {
        tracing::info!(runner = runner_id, "runner draining");
        self.store().set_runner_draining(runner_id).await
    }

    /// The runner token's id, or 401.
    pub async fn authenticate_runner(&self, token: &str) -> Result<i64, EngineError> {
        self.store()
            .runner_token_id(&hash_token(token))
            .await?
            .ok_or(EngineError::Unauthorized)
    }

    /// Registers a connecting runner; a runner reconnecting with its previous id (and
    /// the same token) keeps it, so the jobs it holds stay its own.
    /// `tags`: what the runner advertises (jobs with tags go only to runners having all).
    pub async fn register_runner(&self, name: &str, token_id: i64, previous_id: Option<i64>, tags: &[String]) -> Result<i64, EngineError> {
        if let Some(id) = previous_id
            && self.store().touch_runner(id, token_id, tags).await?
        {
            return Ok(id);
        }
        self.store().add_runner(name, token_id, tags).await
    }

    /// A runner's heartbeat.
    pub async fn runner_seen(&self, runner_id: i64) -> Result<(), EngineError> {
        self.store().runner_seen(runner_id).await
    }

    /// Hands the oldest pending job to this runner, if there is one.
    pub async fn claim_job(&self, runner_id: i64, runner_tags: &[String]) -> Result<Option<JobAssignment>, EngineError> {
        if self.store().runner_paused(runner_id).await? {
            return Ok(None);
        }
        let claimed = self.commit(Change::Claim { runner_id, runner_tags }).await?;
        match claimed.jobs.first() {
            Some(t) => Ok(Some(self.assignment(&t.job).await?)),
            None => Ok(None),
        }
    }

    /// The runner's final report. A job that was aborted or reaped meanwhile stays as it
    /// is (the report is late, not wrong), but the teardown receipt it carries is kept
    /// (after an abort it is all the runner sends); the answer is the job's status.
    pub async fn finish_job(&self, runner_id: i64, job_id: i64, mut report: JobReport) -> Result<Status, EngineError> {
        // What went wrong is shown to every viewer of the job: never a masked value (an
        // image name a project variable completed, a runner's error quoting it).
        if let Some(detail) = &report.detail
            && let Some(job) = self.store().get_job(job_id).await?
        {
            report.detail = Some(self.masker_of(job.project_id).await?.mask(detail));
        }
        let receipt = report.teardown.clone();
        // Only a failed script's exit code can be one `allow_failure: exit_codes` allows
        // (a runner says `script_failure` for it; an older report may say nothing).
        let script_failed = matches!(report.failure_reason, None | Some(FailureReason::ScriptFailure));
        let allowed_failure = match report.exit_code {
            Some(code) if code != 0 && script_failed => self.store().job_spec(job_id).await?.job.allow_failure.exit_codes.contains(&code),
            _ => false,
        };
        let reported = Move {
            job_id,
            event: Event::Report {
                runner_id,
                report,
                allowed_failure,
            },
            by: format!("runner:{runner_id}"),
        };
        let result = self.apply_to_job(&reported).await;
        match result {
            Ok(t) => {
                if t.changed && t.job.status.is_terminal() {
                    self.keep_coverage(job_id).await?;
                }
                Ok(t.job.status)
            }
            Err(EngineError::InvalidTransition(_)) => {
                if let Some(receipt) = receipt {
                    self.keep_late_receipt(runner_id, job_id, &receipt).await?;
                }
                self.job_status(job_id).await
            }
            Err(e) => Err(e),
        }
    }

    /// The coverage a finished job's log reports by its `coverage:` pattern (read from
    /// the log's last 64 KiB, where test tools print their totals), stored and published.
    async fn keep_coverage(&self, job_id: i64) -> Result<(), EngineError> {
        let Some(pattern) = self.store().job_spec(job_id).await?.job.coverage else {
            return Ok(());
        };
        let length = self.store().log_length(job_id).await?;
        let (tail, _, _) = self
            .store()
            .read_log_page(job_id, length.saturating_sub(64 * 1024), 64 * 1024)
            .await?;
        let Some(coverage) = usher_core::config::rules::coverage_of(&pattern, &tail) else {
            return Ok(());
        };
        self.store().set_coverage(job_id, coverage).await?;
        if let Some(job) = self.store().get_job(job_id).await? {
            self.bus().publish(crate::BusEvent::Job(job));
        }
        Ok(())
    }

    /// A runner's connection to this replica began.
    pub fn runner_connected(&self, runner_id: i64) {
        *self.inner.connected_runners.lock().unwrap().entry(runner_id).or_default() += 1;
    }

    /// A runner's connection to this replica ended.
    pub fn runner_disconnected(&self, runner_id: i64) {
        let mut connected = self.inner.connected_runners.lock().unwrap();
        if let Some(n) = connected.get_mut(&runner_id) {
            *n -= 1;
            if *n == 0 {
                connected.remove(&runner_id);
            }
        }
    }

    /// Records the `index`th (0 first) teardown command that job `job_id` registered with
    /// `usher-defer`, as its runner reports it; shown with the job from then on. A
    /// registration already recorded counts once. Masked with the project's masked
    /// variables (the runner masks it too). Refused (false) when the runner does not hold
    /// the job, the job has ended, an earlier registration is missing, or the job has
    /// registered the most a job may (100 commands, 64 KiB). Not a status change, so not
    /// the gate's: the job's new state goes to this replica's subscribers.
    pub async fn record_deferred(&self, runner_id: i64, job_id: i64, index: u32, command: &str) -> Result<bool, EngineError> {
        use usher_core::api::{MAX_DEFERRED_BYTES, MAX_DEFERRED_COMMANDS};
        let Some(job) = self.store().get_job(job_id).await? else {
            return Ok(false);
        };
        if command.is_empty() {
            return Ok(false);
        }
        let command = self.masker_of(job.project_id).await?.mask(command);
        let limits = crate::store::DeferredLimits {
            commands: MAX_DEFERRED_COMMANDS,
            bytes: MAX_DEFERRED_BYTES,
        };
        let kept = self
            .store()
            .record_deferred(job_id, runner_id, index as usize, &command, limits)
            .await?;
        if kept && let Some(job) = self.store().get_job(job_id).await? {
            self.bus().publish(crate::BusEvent::Job(job));
        }
        Ok(kept)
    }

    /// The masker of a project's masked variables.
    async fn masker_of(&self, project_id: i64) -> Result<usher_core::masking::Masker, EngineError> {
        Ok(usher_core::masking::Masker::new(self.store().masked_values(project_id).await?))
    }

    /// The receipt of a job that a previous run of a runner was running when it died,
    /// sent by its next run (registered with the same token `token_id`) once that has
    /// run the job's deferred commands. The job ends now as `runner_lost` if it had not
    /// ended yet (its runner is gone: no need to wait for the lost-runner reaper), and
    /// keeps the receipt. Refused when the job's runner was not registered with this
    /// token.
    pub async fn recovered_receipt(&self, token_id: i64, job_id: i64, receipt: &usher_core::api::Teardown) -> Result<(), EngineError> {
        let Some(held_by) = self.store().job_runner_of_token(job_id, token_id).await? else {
            return Err(EngineError::Conflict(format!(
                "job {job_id} was not run by a runner with this token"
            )));
        };
        // A runner still connected is alive: only a later run of a dead one recovers.
        if self.inner.connected_runners.lock().unwrap().contains_key(&held_by) {
            return Err(EngineError::Conflict(format!(
                "job {job_id}'s runner is connected: it reports the job itself"
            )));
        }
        // The restarted runner no longer knows the job's masked values; the server does.
        let mut receipt = receipt.clone();
        if let Some(job) = self.store().get_job(job_id).await? {
            let masker = self.masker_of(job.project_id).await?;
            for deferred in &mut receipt.deferred {
                deferred.command = masker.mask(&deferred.command);
            }
        }
        let receipt = &receipt;
        let lost = Move {
            job_id,
            event: Event::RunnerLost,
            by: format!("runner:{held_by}"),
        };
        match self.apply_to_job(&lost).await {
            Ok(_) | Err(EngineError::InvalidTransition(_)) => {}
            Err(e) => return Err(e),
        }
        self.keep_late_receipt(held_by, job_id, receipt).await
    }

    /// A receipt that came after its job had ended (aborted, or reaped): kept when the job
    /// has none yet and this runner held it. Not a status change, so not the gate's: the
    /// job's new state goes to this replica's subscribers only.
    async fn keep_late_receipt(&self, runner_id: i64, job_id: i64, receipt: &usher_core::api::Teardown) -> Result<(), EngineError> {
        let text = serde_json::to_string(receipt).map_err(|e| EngineError::Internal(e.to_string()))?;
        if self.store().keep_late_receipt(job_id, runner_id, &text).await? {
            if receipt.leftovers > 0 {
                self.inner.metrics.teardown_leftovers.inc_by(u64::from(receipt.leftovers));
            }
            if let Some(job) = self.store().get_job(job_id).await? {
                self.bus().publish(crate::BusEvent::Job(job));
            }
        }
        Ok(())
    }
}
