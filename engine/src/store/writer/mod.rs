//! The gate's writer: the steps of a status change whose SQL differs between the two
//! databases, with one implementation for each ([`sqlite`], [`postgres`]). Everything
//! else the gate writes is plain SQL both accept, in the modules of its concept
//! (`moves`, `pipeline_status`, `claims`); no other module of the store asks which
//! database it runs on.
//!
//! What differs, and why:
//! - *Round trips.* On SQLite every call is a round trip to the connection's worker
//!   thread (about 45 µs here); the SQLite writer sends a change's statements in three
//!   calls where a statement a call would take six or seven (see [`sqlite`] for which,
//!   and benchmarks.md for what that saves). PostgreSQL does the same with
//!   data-modifying CTEs, one statement each.
//! - *Concurrency.* SQLite has one writer; PostgreSQL has several replicas, so a change
//!   locks its pipeline and a claim skips rows another replica holds.
//! - *Notices.* PostgreSQL sends every committed change to every replica (NOTIFY, at
//!   commit, in commit order); on SQLite the engine publishes in-process.

mod postgres;
mod sqlite;

use std::borrow::Cow;

use sqlx::AnyConnection;
use usher_core::api::{CancelMode, Job, LogAppend};

use super::Backend;
use super::change::Committed;
use super::claims::{Candidate, ClaimTarget};
use super::moves::SingleWrite;
use super::pipeline_status::PipelineFacts;
use super::transaction::Tx;
use crate::EngineError;

/// The gate's database-specific steps, for the database the store runs on.
#[derive(Clone, Copy, Debug)]
pub(super) enum Writer {
    Sqlite,
    Postgres,
}

impl Writer {
    pub(super) fn of(backend: Backend) -> Writer {
        match backend {
            Backend::Sqlite => Writer::Sqlite,
            Backend::Postgres => Writer::Postgres,
        }
    }

    pub(super) fn backend(self) -> Backend {
        match self {
            Writer::Sqlite => Backend::Sqlite,
            Writer::Postgres => Backend::Postgres,
        }
    }

    /// `sql` as the first statement of a change's transaction: on SQLite it carries the
    /// transaction's `BEGIN` (a round trip fewer).
    pub(super) fn opening<'s>(self, tx: &mut Tx<'_>, sql: &'s str) -> Cow<'s, str> {
        match self {
            Writer::Sqlite => sqlite::opening(tx, sql),
            Writer::Postgres => Cow::Borrowed(sql),
        }
    }

    /// The job a single-job change moves, with its pipeline's cancel mode, read as the
    /// change's first statement (on PostgreSQL with the lock on its pipeline).
    pub(super) async fn read_for_move(self, tx: &mut Tx<'_>, job_id: i64) -> Result<(Job, Option<CancelMode>), EngineError> {
        match self {
            Writer::Sqlite => sqlite::read_for_move(tx, job_id).await,
            Writer::Postgres => postgres::read_for_move(tx, job_id).await,
        }
    }

    /// Whether [`Writer::read_for_move`] read the job while waiting for its pipeline's
    /// lock (a row that may predate a change committed meanwhile).
    pub(super) fn reads_with_lock(self) -> bool {
        matches!(self, Writer::Postgres)
    }

    /// One job's compare-and-set and its timeline entry; None when the job had moved
    /// already. SQLite also reads the pipeline's facts after the move in the same call.
    pub(super) async fn write_single(
        self,
        tx: &mut Tx<'_>,
        single: &SingleWrite<'_>,
    ) -> Result<Option<(Job, Option<PipelineFacts>)>, EngineError> {
        match self {
            Writer::Sqlite => sqlite::write_single(tx, single).await,
            Writer::Postgres => postgres::write_single(tx, single).await,
        }
    }

    /// `insert` (a statement returning no rows), then the read of the pipeline's facts
    /// (its id parameter `$facts_param`), as one statement text whose rows are the facts.
    pub(super) fn insert_then_facts(self, insert: &str, facts_param: usize) -> String {
        match self {
            Writer::Sqlite => sqlite::insert_then_facts(insert, facts_param),
            Writer::Postgres => postgres::insert_then_facts(insert, facts_param),
        }
    }

    /// Makes the transitions of one pipeline take turns (PostgreSQL's row lock; SQLite
    /// has one writer already).
    pub(super) async fn lock_pipeline(self, tx: &mut Tx<'_>, pipeline_id: i64) -> Result<(), EngineError> {
        match self {
            Writer::Sqlite => Ok(()),
            Writer::Postgres => postgres::lock_pipeline(tx, pipeline_id).await,
        }
    }

    /// The job a claim takes among `candidates` (in the order they are to be tried).
    pub(super) async fn pick_claim(self, tx: &mut Tx<'_>, candidates: Vec<Candidate>) -> Result<Option<ClaimTarget>, EngineError> {
        match self {
            Writer::Sqlite => Ok(sqlite::pick_claim(candidates)),
            Writer::Postgres => postgres::pick_claim(tx, candidates).await,
        }
    }

    /// Ends a change: writes the pipeline's re-derived status (when it changed), sends the
    /// change's notices (PostgreSQL) and commits.
    pub(super) async fn finish(self, mut tx: Tx<'_>, committed: &Committed) -> Result<(), EngineError> {
        match self {
            Writer::Sqlite => sqlite::finish(&mut tx, committed).await?,
            Writer::Postgres => postgres::finish(&mut tx, committed).await?,
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sends an appended piece of log to every replica's watchers (PostgreSQL; on SQLite
    /// the engine publishes it in-process).
    pub(super) async fn log_notice(self, conn: &mut AnyConnection, piece: &LogAppend) -> Result<(), EngineError> {
        match self {
            Writer::Sqlite => Ok(()),
            Writer::Postgres => postgres::log_notice(conn, piece).await,
        }
    }

    /// SQL for the bytes of the text column `column` (SQL's string functions count
    /// characters; log offsets are bytes).
    pub(super) fn bytes_of(self, column: &str) -> String {
        match self {
            Writer::Sqlite => format!("CAST({column} AS BLOB)"),
            Writer::Postgres => format!("convert_to({column}, 'UTF8')"),
        }
    }

    /// SQL for the length in bytes of the text expression `text`. (SQLite's `length()`
    /// of text stops at a NUL, which a log may hold.)
    pub(super) fn byte_length(self, text: &str) -> String {
        match self {
            Writer::Sqlite => format!("length(CAST({text} AS BLOB))"),
            Writer::Postgres => format!("octet_length({text})"),
        }
    }
}
