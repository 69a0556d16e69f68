//! The gate's writer on PostgreSQL: replicas side by side, so a change locks its
//! pipeline and a claim skips rows another replica holds; every change is sent to every
//! replica (NOTIFY, delivered at commit in commit order); and round trips are saved
//! with data-modifying CTEs, one statement each.

use sqlx::AnyConnection;
use usher_core::api::{CancelMode, Job, LogAppend};
use usher_core::status::Status;

use crate::EngineError;
use crate::store::change::{CHANGES_CHANNEL, ChangeNotice, Committed};
use crate::store::claims::{Candidate, ClaimTarget};
use crate::store::logs::{LOGS_CHANNEL, NOTIFY_TEXT_BYTES};
use crate::store::moves::{
    INSERT_AUDIT, SINGLE_AUDIT_FIRST, SINGLE_NEXT_PARAM, SingleWrite, bind_single, move_from_row, move_read_sql, update_sql,
};
use crate::store::pipeline_status::{PipelineFacts, bind_pipeline_status, pipeline_facts_sql, pipeline_status_sql};
use crate::store::transaction::Tx;
use crate::store::{JOB_COLUMNS, JOB_COLUMNS_OF_J, job_from_row, placeholders};

/// Notices to a statement.
const NOTICES_PER_STATEMENT: usize = 500;
/// The largest change notice sent whole (PostgreSQL's limit is 8,000 bytes).
const NOTIFY_MAX_BYTES: usize = 7_500;

/// The job read in the statement that locks its pipeline: one round trip instead of two.
pub(super) async fn read_for_move(tx: &mut Tx<'_>, job_id: i64) -> Result<(Job, Option<CancelMode>), EngineError> {
    let row = sqlx::query(&move_read_sql(" FOR UPDATE OF p"))
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
    move_from_row(&row)
}

/// The compare-and-set and its timeline entry in one statement; the facts are read
/// later (a CTE's read would not see the move).
pub(super) async fn write_single(tx: &mut Tx<'_>, single: &SingleWrite<'_>) -> Result<Option<(Job, Option<PipelineFacts>)>, EngineError> {
    let sql = format!(
        "WITH moved AS ({} RETURNING {JOB_COLUMNS}), \
         audit AS ({INSERT_AUDIT} SELECT {} FROM moved) \
         SELECT {JOB_COLUMNS} FROM moved",
        update_sql(1),
        placeholders(SINGLE_AUDIT_FIRST, SINGLE_NEXT_PARAM - SINGLE_AUDIT_FIRST),
    );
    let row = bind_single(sqlx::query(&sql), single).fetch_optional(&mut **tx).await?;
    row.map(|row| Ok((job_from_row(&row)?, None))).transpose()
}

/// The facts read by a statement whose CTE is the insert: it sees every move of the
/// change before it.
pub(super) fn insert_then_facts(insert: &str, facts_param: usize) -> String {
    format!("WITH audit AS ({insert}) {}", pipeline_facts_sql(facts_param))
}

/// Transitions of one pipeline take turns, so each re-derivation of the pipeline's
/// status sees every job change committed before it.
pub(super) async fn lock_pipeline(tx: &mut Tx<'_>, pipeline_id: i64) -> Result<(), EngineError> {
    sqlx::query("SELECT id FROM pipelines WHERE id = $1 FOR UPDATE")
        .bind(pipeline_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(())
}

/// The first candidate no other replica holds, read with the locks on it and its
/// pipeline (so the claim does not read it again).
pub(super) async fn pick_claim(tx: &mut Tx<'_>, candidates: Vec<Candidate>) -> Result<Option<ClaimTarget>, EngineError> {
    let sql = format!(
        "SELECT {} FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id \
         WHERE j.id = $1 AND j.status = $2 FOR UPDATE OF j, p SKIP LOCKED",
        *JOB_COLUMNS_OF_J
    );
    for c in candidates {
        if let Some(group) = &c.resource_group
            && !hold_resource_group(tx, c.project, group).await?
        {
            continue;
        }
        let row = sqlx::query(&sql)
            .bind(c.job)
            .bind(Status::Pending.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(row) = row {
            return Ok(Some(ClaimTarget {
                job_id: c.job,
                pipeline_id: c.pipeline,
                locked: Some(job_from_row(&row)?),
            }));
        }
    }
    Ok(None)
}

/// Whether this claim may take a job of `group` of `project`: it holds the group's
/// transaction-scoped advisory lock (so no other claim, on any replica, decides about
/// the group until this one commits) and, under that lock, no job of the group is
/// running or canceling. Two groups whose names hash alike only take turns.
async fn hold_resource_group(tx: &mut Tx<'_>, project: i64, group: &str) -> Result<bool, EngineError> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("usher resource_group {project} {group}"))
        .fetch_one(&mut **tx)
        .await?;
    if !locked {
        return Ok(false);
    }
    let active = crate::store::sql_statuses(usher_core::status::StatusGroup::Active);
    let holder = sqlx::query(&format!(
        "SELECT id FROM jobs WHERE project_id = $1 AND resource_group = $2 AND status IN ({active}) LIMIT 1"
    ))
    .bind(project)
    .bind(group)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(holder.is_none())
}

/// One notice per moved job, then the pipeline's. The first statement also writes the
/// pipeline's re-derived status (a data-modifying CTE): a round trip fewer.
pub(super) async fn finish(tx: &mut Tx<'_>, committed: &Committed) -> Result<(), EngineError> {
    let jobs = committed.jobs.iter().filter(|t| t.changed).map(|t| ChangeNotice {
        job: Some(t.job.clone()),
        pipeline: None,
        job_id: None,
    });
    let pipeline = committed.pipeline.iter().map(|p| ChangeNotice {
        job: None,
        pipeline: Some(p.clone()),
        job_id: None,
    });
    let to_text = |notice: &ChangeNotice| serde_json::to_string(notice).map_err(|e| EngineError::Internal(e.to_string()));
    let mut payloads = Vec::new();
    for notice in jobs.chain(pipeline) {
        let mut text = to_text(&notice)?;
        if text.len() > NOTIFY_MAX_BYTES {
            // Too large to carry: listeners read the job.
            text = to_text(&ChangeNotice {
                job: None,
                pipeline: None,
                job_id: notice.job.map(|j| j.id),
            })?;
        }
        payloads.push(text);
    }
    // A VALUES list is scanned in its order, so the notices are queued (and delivered)
    // in the order of the change.
    for (n, chunk) in payloads.chunks(NOTICES_PER_STATEMENT).enumerate() {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("(${})", i + 2)).collect();
        let pipeline = committed.pipeline.as_ref().filter(|_| n == 0);
        let with = match pipeline {
            Some(_) => format!("WITH derived AS ({}) ", pipeline_status_sql(chunk.len() + 2)),
            None => String::new(),
        };
        let sql = format!(
            "{with}SELECT pg_notify($1, v.payload) FROM (VALUES {}) AS v(payload)",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(CHANGES_CHANNEL);
        for payload in chunk {
            query = query.bind(payload.as_str());
        }
        if let Some(pipeline) = pipeline {
            query = bind_pipeline_status(query, pipeline);
        }
        query.fetch_all(&mut **tx).await?;
    }
    Ok(())
}

/// The piece on [`LOGS_CHANNEL`]; NOTIFY payloads are limited to 8,000 bytes, so a
/// larger piece goes without its text (watchers read it).
pub(super) async fn log_notice(conn: &mut AnyConnection, piece: &LogAppend) -> Result<(), EngineError> {
    let notice = LogAppend {
        job_id: piece.job_id,
        offset: piece.offset,
        length: piece.length,
        text: piece.text.as_ref().filter(|t| t.len() <= NOTIFY_TEXT_BYTES).cloned(),
    };
    let payload = serde_json::to_string(&notice).map_err(|e| EngineError::Internal(e.to_string()))?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(LOGS_CHANNEL)
        .bind(payload)
        .fetch_all(conn)
        .await?;
    Ok(())
}
