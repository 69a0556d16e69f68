//! The transaction a status change runs in ([`super::Store::commit`]).
//!
//! On PostgreSQL it is sqlx's. On SQLite it is one of the store's own on its one
//! connection, so that the SQLite writer can send `BEGIN` with the change's first
//! statement and `COMMIT` with its last (see [`super::writer`]): sqlx's transaction
//! makes `BEGIN` and `COMMIT` calls of their own, each a round trip to the connection's
//! worker thread.
//!
//! A change that fails rolls its transaction back at once. One that is neither committed
//! nor rolled back (its future was dropped, or the rollback failed) leaves its mark on
//! the connection ([`SqliteConn`]), and the next borrower rolls it back before anything else
//! runs.

use std::ops::{Deref, DerefMut};

use sqlx::{Any, AnyConnection, Connection};

use super::connections::{Lent, SqliteConn};

/// A change's transaction; derefs to the connection its statements run on.
pub(super) enum Tx<'c> {
    Sqlx(sqlx::Transaction<'c, Any>),
    Own { writer: &'c mut SqliteConn, begun: bool },
}

impl<'c> Tx<'c> {
    /// A transaction on `lent`. With `begin_with_first_statement`, an own transaction's
    /// `BEGIN` waits for the writer to send it with the first statement
    /// ([`super::writer::Writer::opening`]); otherwise it is sent now.
    pub(super) async fn begin(lent: &'c mut Lent<'_>, begin_with_first_statement: bool) -> Result<Tx<'c>, sqlx::Error> {
        if lent.writer().is_none() {
            return Ok(Tx::Sqlx(Connection::begin(&mut **lent).await?));
        }
        let writer = lent.writer().expect("SQLite");
        let mut tx = Tx::Own { writer, begun: false };
        if !begin_with_first_statement && tx.begin_with_next_statement() {
            sqlx::query("BEGIN").execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Whether the next statement must begin the transaction (an own transaction not yet
    /// begun). The transaction counts as open from here on (if that statement never
    /// runs, the next borrower's `ROLLBACK` finds nothing to undo).
    pub(super) fn begin_with_next_statement(&mut self) -> bool {
        match self {
            Tx::Own {
                writer,
                begun: begun @ false,
            } => {
                *begun = true;
                writer.open_transaction = true;
                true
            }
            _ => false,
        }
    }

    /// Marks a statement that ended with the transaction's `COMMIT` as run: then
    /// [`Tx::commit`] has nothing left to do.
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

async fn end_own(writer: &mut SqliteConn, statement: &str) -> Result<(), sqlx::Error> {
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
