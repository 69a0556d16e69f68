//! Reads of single jobs: the job itself, the spec a runner runs, the timeline of its
//! status changes, and the groups the admin page and the reaper look for.

use std::collections::HashMap;

use sqlx::Row;
use usher_core::api::{CancelMode, Job, TimelineEvent};
use usher_core::repository::RepoCredentials;
use usher_core::status::{Status, StatusGroup};

use super::pipelines::StoredSpec;
use super::variables::VariableValue;
use super::{JOB_COLUMNS, Store, bad_status, job_from_row, placeholders, sql_statuses, strings_from};
use crate::EngineError;
use sqlx::any::AnyRow;

/// What [`Store::assignment_source`] reads.
pub struct AssignmentSource {
    pub spec: StoredSpec,
    /// Its stage's place in the pipeline's stages.
    pub stage_index: usize,
    pub git_ref: String,
    pub sha: Option<String>,
    pub commit_title: Option<String>,
    pub project_name: String,
    pub default_branch: String,
    /// Without credentials.
    pub repository_url: Option<String>,
    pub credentials: Option<RepoCredentials>,
    pub ssh_private_key: Option<String>,
    /// The project's variables with their values, by key.
    pub variables: Vec<VariableValue>,
}

/// How many teardown commands a job may register, and how many bytes in all.
#[derive(Clone, Copy)]
pub struct DeferredLimits {
    pub commands: usize,
    pub bytes: usize,
}

/// Where a job is (see [`Store::job_place`]).
pub struct JobPlace {
    pub pipeline_id: i64,
    pub name: String,
    pub stage_index: usize,
    pub retried: bool,
}

/// One job's handed-over variables (see [`Store::handed_over`]).
pub struct HandedOver {
    pub job: String,
    pub stage_index: usize,
    pub variables: Vec<(String, String)>,
}

impl Store {
    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), EngineError> {
        sqlx::query("SELECT 1").fetch_one(&mut *self.conn().await?).await?;
        Ok(())
    }

    /// How many jobs are in each status.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, EngineError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Jobs with `status`, oldest first (the ones stuck longest come first).
    pub async fn jobs_with_status(&self, status: Status, limit: i64) -> Result<Vec<Job>, EngineError> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 ORDER BY id LIMIT $2"))
            .bind(status.as_str())
            .bind(limit)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn get_job(&self, id: i64) -> Result<Option<Job>, EngineError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// The definitions of these jobs (those that exist), with one read per 500.
    pub async fn job_specs(&self, ids: &[i64]) -> Result<HashMap<i64, StoredSpec>, EngineError> {
        let mut specs = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!("SELECT id, spec FROM jobs WHERE id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            let rows = query.fetch_all(&mut *self.conn().await?).await?;
            for row in rows {
                let id: i64 = row.try_get("id")?;
                specs.insert(id, spec_from(id, &row)?);
            }
        }
        Ok(specs)
    }

    /// What a runner is handed with job `id`, in one read: the job's definition, its
    /// pipeline's ref and commit, its project's name and repository with credentials (the
    /// first row), and its project's variables (a row each after it).
    pub async fn assignment_source(&self, id: i64) -> Result<AssignmentSource, EngineError> {
        let rows = sqlx::query(
            "SELECT 0 AS part, j.spec, j.stage_index, p.git_ref, p.sha, p.commit_title, pr.name AS project_name, \
             pr.default_branch, pr.repository_url, pr.repository_username, pr.repository_password, pr.ssh_private_key, \
             NULL AS key, NULL AS value, NULL AS masked \
             FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id JOIN projects pr ON pr.id = j.project_id WHERE j.id = $1 \
             UNION ALL \
             SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, v.key, v.value, v.masked \
             FROM project_variables v WHERE v.project_id = (SELECT project_id FROM jobs WHERE id = $1) \
             ORDER BY part, key",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let row = rows
            .first()
            .filter(|r| r.try_get::<i64, _>("part").is_ok_and(|p| p == 0))
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))?;
        let mut variables = Vec::new();
        for r in &rows[1..] {
            if let Some(key) = r.try_get::<Option<String>, _>("key")? {
                variables.push(VariableValue {
                    key,
                    value: r.try_get::<Option<String>, _>("value")?.unwrap_or_default(),
                    masked: r.try_get::<Option<i64>, _>("masked")?.unwrap_or(0) != 0,
                });
            }
        }
        Ok(AssignmentSource {
            variables,
            spec: spec_from(id, row)?,
            stage_index: row.try_get::<i64, _>("stage_index")?.max(0) as usize,
            git_ref: row.try_get("git_ref")?,
            sha: row.try_get("sha")?,
            commit_title: row.try_get("commit_title")?,
            project_name: row.try_get("project_name")?,
            default_branch: row.try_get("default_branch")?,
            repository_url: row.try_get("repository_url")?,
            credentials: super::projects::repo_credentials(row)?,
            ssh_private_key: row.try_get("ssh_private_key")?,
        })
    }

    /// The variables the jobs of a pipeline handed over (their dotenv reports), other
    /// than job `except`'s: (job name, its stage's index, the variables), newest attempts
    /// only, in stage order.
    pub async fn handed_over(&self, pipeline_id: i64, except: i64) -> Result<Vec<HandedOver>, EngineError> {
        let rows = sqlx::query(
            "SELECT name, stage_index, dotenv FROM jobs WHERE pipeline_id = $1 AND id <> $2 AND retried = 0 \
             AND dotenv IS NOT NULL ORDER BY stage_index, id",
        )
        .bind(pipeline_id)
        .bind(except)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("dotenv")?;
                Ok(HandedOver {
                    job: r.try_get("name")?,
                    stage_index: r.try_get::<i64, _>("stage_index")?.max(0) as usize,
                    variables: serde_json::from_str(&text).map_err(|e| EngineError::Internal(format!("a stored dotenv report: {e}")))?,
                })
            })
            .collect()
    }

    /// Stores the teardown receipt of a finished job that has none, if `runner_id` held
    /// it; whether it was stored.
    pub async fn keep_late_receipt(&self, job_id: i64, runner_id: i64, receipt: &str) -> Result<bool, EngineError> {
        let finished = sql_statuses(StatusGroup::Finished);
        let done = sqlx::query(&format!(
            "UPDATE jobs SET teardown = $1 WHERE id = $2 AND runner_id = $3 AND teardown IS NULL AND status IN ({finished})"
        ))
        .bind(receipt)
        .bind(job_id)
        .bind(runner_id)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The runner that held job `job_id`, if it was registered with runner token
    /// `token_id` (a later run of the same runner has a new id but the same token).
    pub async fn job_runner_of_token(&self, job_id: i64, token_id: i64) -> Result<Option<i64>, EngineError> {
        let row = sqlx::query("SELECT j.runner_id FROM jobs j JOIN runners r ON r.id = j.runner_id WHERE j.id = $1 AND r.token_id = $2")
            .bind(job_id)
            .bind(token_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| r.try_get("runner_id")).transpose()?)
    }

    /// Records `command` as the `index`th (0 first) teardown command job `job_id`
    /// registered, if `runner_id` holds the job and it is active: appended when it is the
    /// next one and within `limits`; already recorded when `index` is below the count
    /// (a frame sent again). Whether it is recorded. A compare-and-set on the list as
    /// read, tried again if it changed meanwhile.
    pub async fn record_deferred(
        &self,
        job_id: i64,
        runner_id: i64,
        index: usize,
        command: &str,
        limits: DeferredLimits,
    ) -> Result<bool, EngineError> {
        let active = sql_statuses(StatusGroup::Active);
        loop {
            let Some(row) = sqlx::query(&format!(
                "SELECT deferred FROM jobs WHERE id = $1 AND runner_id = $2 AND status IN ({active})"
            ))
            .bind(job_id)
            .bind(runner_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            else {
                return Ok(false);
            };
            let before: Option<String> = row.try_get("deferred")?;
            let mut commands = strings_from(before.clone());
            if index < commands.len() {
                return Ok(true);
            }
            let bytes: usize = commands.iter().map(String::len).sum::<usize>() + command.len();
            if index > commands.len() || commands.len() >= limits.commands || bytes > limits.bytes {
                return Ok(false);
            }
            commands.push(command.to_string());
            let after = serde_json::to_string(&commands).map_err(|e| EngineError::Internal(e.to_string()))?;
            let done = sqlx::query(&format!(
                "UPDATE jobs SET deferred = $1 WHERE id = $2 AND runner_id = $3 AND status IN ({active}) \
                 AND deferred IS NOT DISTINCT FROM $4"
            ))
            .bind(after)
            .bind(job_id)
            .bind(runner_id)
            .bind(before)
            .execute(&mut *self.conn().await?)
            .await?;
            if done.rows_affected() > 0 {
                return Ok(true);
            }
        }
    }

    /// Stores a finished job's coverage.
    pub async fn set_coverage(&self, job_id: i64, coverage: f64) -> Result<(), EngineError> {
        sqlx::query("UPDATE jobs SET coverage = $1 WHERE id = $2")
            .bind(coverage)
            .bind(job_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// How many attempts of the job named `name` its pipeline has had.
    pub async fn attempts(&self, pipeline_id: i64, name: &str) -> Result<u32, EngineError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE pipeline_id = $1 AND name = $2")
            .bind(pipeline_id)
            .bind(name)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(row.try_get::<i64, _>("n")?.max(0) as u32)
    }

    pub async fn job_spec(&self, id: i64) -> Result<StoredSpec, EngineError> {
        let row = sqlx::query("SELECT spec FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))?;
        spec_from(id, &row)
    }

    /// A job's definition, its pipeline and its stage's index.
    pub async fn job_spec_and_place(&self, id: i64) -> Result<(StoredSpec, i64, usize), EngineError> {
        let row = sqlx::query("SELECT spec, pipeline_id, stage_index FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))?;
        let stage_index = row.try_get::<i64, _>("stage_index")?.max(0) as usize;
        Ok((spec_from(id, &row)?, row.try_get("pipeline_id")?, stage_index))
    }

    /// Of the jobs `ids`, those whose `resource_group` another job of their project holds
    /// (is running or canceling): (waiting job, group, holding job).
    pub async fn resource_group_holders(&self, ids: &[i64]) -> Result<Vec<(i64, String, i64)>, EngineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let active = sql_statuses(StatusGroup::Active);
        let sql = format!(
            "SELECT w.id AS waiting, w.resource_group AS grp, MIN(h.id) AS holder FROM jobs w \
             JOIN jobs h ON h.project_id = w.project_id AND h.resource_group = w.resource_group AND h.id <> w.id \
             WHERE w.id IN ({}) AND h.status IN ({active}) GROUP BY w.id, w.resource_group",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&mut *self.conn().await?).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("waiting")?, r.try_get("grp")?, r.try_get("holder")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Where a job is: its pipeline, name and stage index, and whether it was retried.
    pub async fn job_place(&self, id: i64) -> Result<Option<JobPlace>, EngineError> {
        let row = sqlx::query("SELECT pipeline_id, name, stage_index, retried FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(JobPlace {
            pipeline_id: row.try_get("pipeline_id")?,
            name: row.try_get("name")?,
            stage_index: row.try_get::<i64, _>("stage_index")?.max(0) as usize,
            retried: row.try_get::<i64, _>("retried")? != 0,
        }))
    }

    /// `canceling` jobs whose cancel deadline is before `now`.
    pub async fn overdue_canceling_jobs(&self, now: &str) -> Result<Vec<i64>, EngineError> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE status = $1 AND cancel_deadline < $2 ORDER BY id")
            .bind(Status::Canceling.as_str())
            .bind(now)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
    }

    /// Makes these jobs count for their pipeline's status (`allow_failure` off): a stop
    /// job that is a cancel's teardown keeps its pipeline `canceling` until it has run.
    pub async fn make_required(&self, ids: &[i64]) -> Result<(), EngineError> {
        let sql = format!(
            "UPDATE jobs SET allow_failure = 0 WHERE id IN ({})",
            super::placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut *self.conn().await?).await?;
        Ok(())
    }

    /// Delayed jobs waiting in `manual` whose `play_at` is not after `now`, the earliest
    /// first.
    pub async fn due_delayed_jobs(&self, now: &str) -> Result<Vec<i64>, EngineError> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE play_at <= $1 AND status = $2 ORDER BY play_at, id")
            .bind(now)
            .bind(Status::Manual.as_str())
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
    }

    pub async fn timeline(&self, job_id: i64) -> Result<Vec<TimelineEvent>, EngineError> {
        let rows =
            sqlx::query("SELECT at, from_status, to_status, actor, mode, reason, detail FROM job_events WHERE job_id = $1 ORDER BY id")
                .bind(job_id)
                .fetch_all(&mut *self.conn().await?)
                .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_status")?;
                let to: String = r.try_get("to_status")?;
                let mode: Option<String> = r.try_get("mode")?;
                Ok(TimelineEvent {
                    at: r.try_get("at")?,
                    from: from.and_then(|f| Status::parse(&f)),
                    to: Status::parse(&to).ok_or_else(|| bad_status(&to))?,
                    actor: r.try_get("actor")?,
                    mode: mode.and_then(|m| CancelMode::parse(&m)),
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}

/// The `spec` column of job `id`'s row, decoded.
fn spec_from(id: i64, row: &AnyRow) -> Result<StoredSpec, EngineError> {
    let spec: String = row.try_get("spec")?;
    serde_json::from_str(&spec).map_err(|e| EngineError::Internal(format!("job {id} has a broken spec: {e}")))
}
