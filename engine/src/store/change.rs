//! The vocabulary of the gate: a status [`Change`] as it is asked for, what it did once
//! [`Committed`], and the notice that carries a committed change to every replica.
//! What each move does is decided in [`crate::plan`]; [`super::Store::commit`] applies it.

use serde::{Deserialize, Serialize};
use usher_core::api::{CancelMode, CancelReason, Job, Pipeline};
use usher_core::status::Status;

use super::pipelines::NewPipeline;
use crate::plan::{Event, Move};

/// Who stopped a whole pipeline, recorded on it with a batch's moves.
#[derive(Clone, Copy, Debug)]
pub struct PipelineCancel<'a> {
    pub mode: CancelMode,
    pub by: &'a str,
    pub reason: CancelReason,
    pub message: Option<&'a str>,
}

/// A status change, as the gate accepts it.
pub enum Change<'a> {
    /// One event on one job (a cancel or abort, a runner's report, the reaper). A move
    /// the table refuses is an error.
    Job(&'a Move),
    /// Several jobs of one pipeline in one transaction with one re-derivation at the end
    /// (pipeline cancel/abort, auto-cancel, scheduling): the jobs making the same move are
    /// written by one statement (see [`super::moves`]). The jobs must be distinct. A move
    /// the table refuses (the job finished meanwhile) is left out. `cancel`
    /// is recorded on the pipeline when a job moved and the pipeline had no cancel yet or
    /// an abort escalates a graceful one, so a repeated cancel leaves it as it was.
    Batch {
        pipeline_id: i64,
        moves: &'a [Move],
        cancel: Option<PipelineCancel<'a>>,
        /// The environments' stop jobs the moves leave to run (a graceful cancel's
        /// teardown), as the caller found them: when the pipeline's jobs make another set
        /// by the time its lock is held (a job started meanwhile), the change is refused
        /// with [`crate::EngineError::Outdated`], for the caller to decide again.
        teardowns: Option<&'a [i64]>,
    },
    /// New attempts of finished jobs of one pipeline: each becomes a new `created` job with
    /// the same definition (`retry_of` the old one), the old ones are marked retried and
    /// stop counting for the pipeline's status; a cancel recorded on the pipeline is
    /// cleared (it runs again) unless `keep_cancel`. A job retried already is refused.
    Retry {
        pipeline_id: i64,
        job_ids: &'a [i64],
        actor: &'a str,
        /// The cancel stays: a cleanup job of a cancelled pipeline tried again by its
        /// `retry:` is part of the cancel, not a new run.
        keep_cancel: bool,
    },
    /// A new pipeline and its jobs, all `created`, and in the same transaction the first
    /// moves core decided from their definitions (`ready`: an index into `new.jobs` and
    /// its event, each made by `by`), so a pipeline is never seen created but not yet
    /// scheduled and its creation costs one commit. Its id is [`Committed::created`].
    Create {
        new: &'a NewPipeline<'a>,
        ready: &'a [(usize, Event)],
        by: &'a str,
    },
    /// The oldest pending job goes to runner `runner_id` (the `Start` event). On
    /// PostgreSQL the candidate is locked with `FOR UPDATE SKIP LOCKED`, so replicas
    /// claiming at once take different jobs instead of queueing on one row. Only jobs
    /// whose tags the runner all has are candidates.
    Claim { runner_id: i64, runner_tags: &'a [String] },
}

/// What a [`Change`] did, once committed.
#[derive(Default)]
pub struct Committed {
    /// The jobs it touched, in commit order. A single-job change always has its job here
    /// (with `changed: false` when the table answered `Unchanged`); a batch lists only
    /// jobs that moved; a claim that found no pending job is empty.
    pub jobs: Vec<Transitioned>,
    /// The pipeline, when its derived status changed.
    pub pipeline: Option<Pipeline>,
    /// A [`Change::Create`]'s new pipeline id.
    pub created: Option<i64>,
}

/// One job's part of a committed change.
pub struct Transitioned {
    pub job: Job,
    /// The status the job had when the event was applied.
    pub from: Status,
    /// False when the table answered `Unchanged` (idempotent repeat).
    pub changed: bool,
}

/// The PostgreSQL NOTIFY channel that carries committed changes to every replica.
pub const CHANGES_CHANNEL: &str = "usher_changes";

/// One committed job or pipeline change, as sent on [`CHANGES_CHANNEL`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeNotice {
    #[serde(default)]
    pub job: Option<Job>,
    pub pipeline: Option<Pipeline>,
    /// A job too large for a notice (PostgreSQL's payloads are under 8,000 bytes; a
    /// job's deferred commands and receipt can be more): its id, for listeners to read.
    #[serde(default)]
    pub job_id: Option<i64>,
}
