//! Which pending job a runner gets when it asks for work: fair between projects (fewest
//! active jobs first, then the project served least recently, then the oldest job), only
//! jobs whose tags the runner all has, and no job of a `resource_group` that another job
//! of its project holds (is running or canceling) — the group's oldest pending job goes
//! first once it is free. Called inside the claim's transaction; the writer makes the
//! group check race-free between replicas ([`super::writer::Writer::pick_claim`]).

use std::collections::HashMap;

use sqlx::Row;
use usher_core::api::Job;
use usher_core::status::{Status, StatusGroup};

use super::transaction::Tx;
use super::{Store, sql_statuses, strings_from};
use crate::EngineError;

/// The job a claim takes, and on PostgreSQL the job as read with its lock (so the claim
/// does not read it again).
pub(super) struct ClaimTarget {
    pub job_id: i64,
    pub pipeline_id: i64,
    pub locked: Option<Job>,
}

/// The oldest pending job of one project that the runner may take.
pub(super) struct Candidate {
    pub project: i64,
    pub job: i64,
    pub pipeline: i64,
    /// Its `resource_group`, if it has one.
    pub resource_group: Option<String>,
}

/// The pending jobs, oldest first (a claim's first statement).
const PENDING_SQL: &str = "SELECT id, pipeline_id, project_id, tags, resource_group FROM jobs WHERE status = $1 ORDER BY id LIMIT 2000";

impl Store {
    /// The next pending job and its pipeline, shared fairly between projects: the oldest
    /// pending job of the project with the fewest active jobs, and among those the one
    /// served least recently (so one project's 10,000-job pipeline cannot hold every
    /// runner while other projects wait); the writer picks among them
    /// ([`super::writer::Writer::pick_claim`]).
    pub(super) async fn next_pending_in(&self, tx: &mut Tx<'_>, runner_tags: &[String]) -> Result<Option<ClaimTarget>, EngineError> {
        // The oldest pending job of each project that this runner may take (it has every
        // tag the job asks for).
        let sql = self.writer.opening(tx, PENDING_SQL);
        let pending = sqlx::query(&sql).bind(Status::Pending.as_str()).fetch_all(&mut **tx).await?;
        let held = if pending
            .iter()
            .any(|r| matches!(r.try_get::<Option<String>, _>("resource_group"), Ok(Some(_))))
        {
            self.held_resource_groups_in(tx).await?
        } else {
            Vec::new()
        };
        let mut candidates: Vec<Candidate> = Vec::new();
        for r in &pending {
            let project: i64 = r.try_get("project_id")?;
            let tags = strings_from(r.try_get("tags")?);
            let resource_group: Option<String> = r.try_get("resource_group")?;
            let group_held = resource_group
                .as_ref()
                .is_some_and(|g| held.iter().any(|(p, h)| *p == project && h == g));
            if tags.iter().all(|t| runner_tags.contains(t)) && !group_held && !candidates.iter().any(|c| c.project == project) {
                candidates.push(Candidate {
                    project,
                    job: r.try_get("id")?,
                    pipeline: r.try_get("pipeline_id")?,
                    resource_group,
                });
            }
        }
        if candidates.len() > 1 {
            self.order_fairly(tx, &mut candidates).await?;
        }
        self.writer.pick_claim(tx, candidates).await
    }

    /// The resource groups held now: (project, group) of every running or canceling job
    /// that has one.
    async fn held_resource_groups_in(&self, tx: &mut Tx<'_>) -> Result<Vec<(i64, String)>, EngineError> {
        let active = sql_statuses(StatusGroup::Active);
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT project_id, resource_group FROM jobs WHERE resource_group IS NOT NULL AND status IN ({active})"
        ))
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("project_id")?, r.try_get("resource_group")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Projects with the fewest active jobs first, then the project served least
    /// recently, then the oldest job.
    async fn order_fairly(&self, tx: &mut Tx<'_>, candidates: &mut [Candidate]) -> Result<(), EngineError> {
        let active = sql_statuses(StatusGroup::Active);
        let busy: HashMap<i64, i64> = sqlx::query(&format!(
            "SELECT project_id, COUNT(*) AS n FROM jobs WHERE status IN ({active}) GROUP BY project_id"
        ))
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("project_id")?, r.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let mut last_start = HashMap::new();
        for c in candidates.iter() {
            let row = sqlx::query("SELECT MAX(started_at) AS t FROM jobs WHERE project_id = $1")
                .bind(c.project)
                .fetch_one(&mut **tx)
                .await?;
            last_start.insert(c.project, row.try_get::<Option<String>, _>("t")?);
        }
        candidates.sort_by_key(|c| (busy.get(&c.project).copied().unwrap_or(0), last_start[&c.project].clone(), c.job));
        Ok(())
    }
}
