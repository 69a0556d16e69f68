//! Which pending job a runner gets when it asks for work: fair between projects (fewest
//! active jobs first, then the project served least recently, then the oldest job) and
//! only jobs whose tags the runner all has. Called inside the claim's transaction.

use sqlx::Row;
use usher_core::status::{Status, StatusGroup};

use super::transitions::Tx;
use super::*;
use crate::EngineError;

impl Store {
    /// The next pending job and its pipeline, shared fairly between projects: the oldest
    /// pending job of the project with the fewest active jobs, and among those the one
    /// served least recently (so one project's 10,000-job pipeline cannot hold every
    /// runner while other projects wait). On PostgreSQL both
    /// rows are locked, skipping rows another replica holds.
    pub(super) async fn next_pending_in(&self, tx: &mut Tx<'_>, runner_tags: &[String]) -> Result<Option<(i64, i64)>, EngineError> {
        let active = sql_statuses(StatusGroup::Active);
        let busy: std::collections::HashMap<i64, i64> = sqlx::query(&format!(
            "SELECT project_id, COUNT(*) AS n FROM jobs WHERE status IN ({active}) GROUP BY project_id"
        ))
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("project_id")?, r.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()?;
        // The oldest pending job of each project that this runner may take (it has every
        // tag the job asks for).
        let pending = sqlx::query("SELECT id, project_id, tags FROM jobs WHERE status = $1 ORDER BY id LIMIT 2000")
            .bind(Status::Pending.as_str())
            .fetch_all(&mut **tx)
            .await?;
        let mut candidates: Vec<(i64, i64)> = Vec::new();
        for r in &pending {
            let project: i64 = r.try_get("project_id")?;
            let tags = tags_from(r.try_get("tags")?);
            if tags.iter().all(|t| runner_tags.contains(t)) && !candidates.iter().any(|(p, _)| *p == project) {
                candidates.push((project, r.try_get("id")?));
            }
        }
        // Then the project served least recently, then the oldest job.
        let mut last_start = std::collections::HashMap::new();
        for (project, _) in &candidates {
            let row = sqlx::query("SELECT MAX(started_at) AS t FROM jobs WHERE project_id = $1")
                .bind(project)
                .fetch_one(&mut **tx)
                .await?;
            last_start.insert(*project, row.try_get::<Option<String>, _>("t")?);
        }
        candidates.sort_by_key(|(project, job)| (busy.get(project).copied().unwrap_or(0), last_start[project].clone(), *job));
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE OF j, p SKIP LOCKED",
            Backend::Sqlite => "",
        };
        for (_, job_id) in candidates {
            let row = sqlx::query(&format!(
                "SELECT j.id, j.pipeline_id FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
                 WHERE j.id = $1 AND j.status = $2{lock}"
            ))
            .bind(job_id)
            .bind(Status::Pending.as_str())
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(r) = row {
                return Ok(Some((r.try_get("id")?, r.try_get("pipeline_id")?)));
            }
        }
        Ok(None)
    }
}
