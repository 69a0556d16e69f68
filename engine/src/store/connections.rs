//! How the store reaches its database: the connections it opens, the settings each
//! gets, how a statement or transaction borrows one, and the SQLite checkpointer that
//! runs beside them.
//!
//! PostgreSQL gets a pool: requests' statements run side by side on several
//! connections. SQLite has one writer, so it gets one connection, lent to one
//! statement or transaction at a time behind a fair mutex. sqlx's pool would serialise
//! the same way with one connection, but it pings every connection handed back to it
//! (sqlx 0.8.6, no option turns that off): on SQLite a round trip to the connection's
//! worker thread that the next borrower waits for, about 40 µs on every request.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::{Backend, Store};
use crate::EngineError;

/// Where the store's statements run.
#[derive(Clone)]
pub(super) enum Connections {
    /// PostgreSQL's pool.
    Pool(AnyPool),
    /// SQLite's one connection; None once the store is closed.
    One(Arc<Mutex<Option<SqliteConn>>>),
}

/// SQLite's one connection, and whether a transaction of the store's own (see
/// [`super::transaction`]) was begun on it and not ended: a change whose future was
/// dropped between its `BEGIN` and its `COMMIT`, or whose rollback failed. The next
/// borrower rolls that transaction back before anything else runs.
pub(super) struct SqliteConn {
    pub(super) conn: AnyConnection,
    pub(super) open_transaction: bool,
}

/// A connection lent to one statement or transaction; it goes back when dropped.
pub(super) enum Lent<'a> {
    Pooled(PoolConnection<Any>),
    One(MappedMutexGuard<'a, SqliteConn>),
}

impl Lent<'_> {
    /// SQLite's one connection (None on PostgreSQL).
    pub(super) fn writer(&mut self) -> Option<&mut SqliteConn> {
        match self {
            Lent::Pooled(_) => None,
            Lent::One(writer) => Some(writer),
        }
    }
}

impl Deref for Lent<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Lent::Pooled(conn) => conn,
            Lent::One(writer) => &writer.conn,
        }
    }
}

impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Lent::Pooled(conn) => conn,
            Lent::One(writer) => &mut writer.conn,
        }
    }
}

/// Opens the connections to `url` (`sqlite://…` or `postgres://…`).
pub(super) async fn open(url: &str) -> Result<(Connections, Backend), EngineError> {
    sqlx::any::install_default_drivers();
    if url.starts_with("postgres") {
        return Ok((Connections::Pool(connect_postgres(url).await?), Backend::Postgres));
    }
    let conn = Arc::new(Mutex::new(Some(SqliteConn {
        conn: connect_sqlite(url).await?,
        open_transaction: false,
    })));
    spawn_checkpointer(url, Arc::downgrade(&conn)).await?;
    Ok((Connections::One(conn), Backend::Sqlite))
}

impl Store {
    /// Migrates the database to the schema this build needs.
    pub(super) async fn migrate(&self) -> Result<(), EngineError> {
        let mut conn = self.conn().await?;
        match self.backend() {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&mut *conn).await?,
            Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&mut *conn).await?,
        }
        Ok(())
    }

    fn backend(&self) -> Backend {
        self.writer.backend()
    }

    /// Whether the database itself sends every committed change and log piece to every
    /// replica's listener (PostgreSQL's NOTIFY); otherwise (SQLite, one server) the
    /// engine publishes them in-process.
    pub fn notifies_replicas(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// A connection for one statement or transaction, waiting for one to be free. Borrow
    /// it for that only: on SQLite a second borrow while one is held waits forever (so
    /// `for row in query.fetch_all(&mut *self.conn().await?)…` must not borrow again in
    /// its body; read the rows first).
    pub(super) async fn conn(&self) -> Result<Lent<'_>, sqlx::Error> {
        match &self.connections {
            Connections::Pool(pool) => Ok(Lent::Pooled(pool.acquire().await?)),
            Connections::One(conn) => {
                let mut writer = MutexGuard::try_map(conn.lock().await, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)?;
                if writer.open_transaction {
                    // Fails only if the BEGIN never ran: nothing to roll back then.
                    let _ = sqlx::query("ROLLBACK").execute(&mut writer.conn).await;
                    writer.open_transaction = false;
                }
                Ok(Lent::One(writer))
            }
        }
    }

    /// Closes the connections once every statement in flight has ended; any use after
    /// this fails.
    pub async fn close(&self) {
        match &self.connections {
            Connections::Pool(pool) => pool.close().await,
            Connections::One(conn) => {
                if let Some(writer) = conn.lock().await.take() {
                    let _ = writer.conn.close().await;
                }
            }
        }
    }
}

/// PostgreSQL: up to 16 connections.
///
/// No idle timeout and no max lifetime, so sqlx starts no pool maintenance task: in sqlx
/// 0.8.6 that task can spin forever at 100% CPU once its idle count underflows
/// (sqlx#3645, fixed only after 0.8.6); seen here as `usher token revoke` never exiting.
///
/// sqlx pings every connection it hands out by default, a round trip costing every
/// request about 60–80 µs on this kind of machine, so only a connection idle for a
/// second or more is checked (the server may have restarted or dropped it meanwhile);
/// one in use just now is not.
async fn connect_postgres(url: &str) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .max_connections(16)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await
}

/// SQLite: its one connection. One connection serialises every transaction, so a
/// compare-and-set never meets SQLITE_BUSY and commit order is publish order.
///
/// synchronous=NORMAL in WAL mode: a commit is written to the WAL but not fsynced; the
/// WAL is synced at checkpoints. A crash of Usher (even kill -9) loses nothing; a power
/// cut or kernel crash may lose the last transactions before the checkpoint, never
/// corrupt the database (docs/deploy.md). That fsync was most of a cancel's time. The
/// checkpoints themselves (which do fsync) are not left to whichever commit crosses
/// 1,000 WAL pages: the checkpointer runs them on a connection of its own, beside the
/// writer.
async fn connect_sqlite(url: &str) -> Result<AnyConnection, sqlx::Error> {
    let mut conn = AnyConnection::connect(url).await?;
    for pragma in [
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA wal_autocheckpoint=0",
    ] {
        sqlx::query(pragma).fetch_all(&mut conn).await?;
    }
    Ok(conn)
}

/// A PostgreSQL connection idle this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the SQLite checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// SQLite: checkpoints the WAL on a connection of its own every [`CHECKPOINT_EVERY`]
/// (PASSIVE: it never blocks the writer or readers), so no commit pays for copying pages
/// and fsyncing; a cancel's p99 was such commits. Stops when the store is closed or
/// dropped.
async fn spawn_checkpointer(url: &str, writer: std::sync::Weak<Mutex<Option<SqliteConn>>>) -> Result<(), EngineError> {
    let mut conn = sqlx::sqlite::SqliteConnection::connect(url).await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // In use means open; a free connection is looked at without waiting.
            let open = writer.upgrade().is_some_and(|w| w.try_lock().map_or(true, |c| c.is_some()));
            if !open {
                break;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_all(&mut conn).await {
                tracing::warn!("WAL checkpoint: {e}");
            }
        }
        let _ = conn.close().await;
    });
    Ok(())
}
