//! The transaction a status change runs in ([`super::Store::commit`]).
//!
//! On PostgreSQL it is sqlx's. On SQLite it is one of the store's own on its one
//! connection, so that `BEGIN` can go to the database with the change's first statement
//! and `COMMIT` with its last: every call is a round trip to the connection's worker
//! thread (about 50 µs here, more when that thread has to be woken), and sqlx's
//! transaction makes `BEGIN` and `COMMIT` calls of their own. A single-job change (a
//! cancel) is three calls instead of five, a claim of a pending job three instead of
//! five.
//!
//! A change that fails rolls its transaction back at once. One that is neither committed
//! nor rolled back (its future was dropped, or the rollback failed) leaves its mark on
//! the connection ([`Writer`]), and the next borrower rolls it back before anything else
//! runs.

use std::ops::{Deref, DerefMut};

use sqlx::{Any, AnyConnection, Connection};

use super::connections::{Lent, Writer};

/// A change's transaction; derefs to the connection its statements run on.
pub(super) enum Tx<'c> {
    Sqlx(sqlx::Transaction<'c, Any>),
    Own { writer: &'c mut Writer, begun: bool },
}

impl<'c> Tx<'c> {
    /// A transaction on `lent`. With `begin_with_first_statement`, an own transaction's
    /// `BEGIN` waits for the caller to put [`Tx::begin_prefix`] before its first
    /// statement; otherwise it is sent now.
    pub(super) async fn begin(lent: &'c mut Lent<'_>, begin_with_first_statement: bool) -> Result<Tx<'c>, sqlx::Error> {
        if lent.writer().is_none() {
            return Ok(Tx::Sqlx(Connection::begin(&mut **lent).await?));
        }
        let writer = lent.writer().expect("SQLite");
        let mut tx = Tx::Own { writer, begun: false };
        if !begin_with_first_statement {
            tx.begin_prefix();
            sqlx::query("BEGIN").execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// `"BEGIN; "` for the first statement of an own transaction not yet begun, else
    /// `""`. The transaction counts as open from here on (if that statement never runs,
    /// the next borrower's `ROLLBACK` finds nothing to undo).
    pub(super) fn begin_prefix(&mut self) -> &'static str {
        match self {
            Tx::Own {
                writer,
                begun: begun @ false,
            } => {
                *begun = true;
                writer.open_transaction = true;
                "BEGIN; "
            }
            _ => "",
        }
    }

    /// `"; COMMIT"` to end the transaction's last statement with on SQLite; the
    /// transaction is over once that statement has run (then [`Tx::commit`] does
    /// nothing). `""` on PostgreSQL.
    pub(super) fn commit_suffix(&self) -> &'static str {
        match self {
            Tx::Own { .. } => "; COMMIT",
            Tx::Sqlx(_) => "",
        }
    }

    /// Marks a statement ending with [`Tx::commit_suffix`] as run.
    pub(super) fn committed_by_last_statement(&mut self) {
        if let Tx::Own { writer, .. } = self {
            writer.open_transaction = false;
        }
    }

    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlx(tx) => tx.commit().await,
            Tx::Own { writer, .. } => end_own(writer, "COMMIT").await,
        }
    }

    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlx(tx) => tx.rollback().await,
            Tx::Own { writer, .. } => end_own(writer, "ROLLBACK").await,
        }
    }
}

async fn end_own(writer: &mut Writer, statement: &str) -> Result<(), sqlx::Error> {
    if writer.open_transaction {
        sqlx::query(statement).execute(&mut writer.conn).await?;
        writer.open_transaction = false;
    }
    Ok(())
}

impl Deref for Tx<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Tx::Sqlx(tx) => tx,
            Tx::Own { writer, .. } => &writer.conn,
        }
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Tx::Sqlx(tx) => tx,
            Tx::Own { writer, begun } => {
                debug_assert!(*begun, "a statement of an own transaction before its BEGIN");
                &mut writer.conn
            }
        }
    }
}
