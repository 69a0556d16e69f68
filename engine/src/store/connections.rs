//! How the store reaches its database: the connections it opens, the settings each
//! gets, and the SQLite checkpointer that runs beside them.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::{Backend, Store};
use crate::EngineError;

impl Store {
    /// Connects and migrates. `sqlite://…` or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, EngineError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        // No idle timeout and no max lifetime, so sqlx starts no pool maintenance task:
        // in sqlx 0.8.6 that task can spin forever at 100% CPU once its idle count
        // underflows (sqlx#3645, fixed only after 0.8.6); seen here as `usher token revoke`
        // never exiting.
        //
        // sqlx pings every connection it hands out by default: on SQLite a hand-off to the
        // connection's worker thread and back for nothing (a file cannot hang up), on
        // PostgreSQL a round trip. Both cost every request about 60–80 µs on this
        // kind of machine, so only a PostgreSQL connection idle for a second or more is
        // checked (the server may have restarted or dropped it meanwhile); one in use
        // just now is not. (sqlx also pings each connection it takes back; that one no
        // option turns off.)
        let options = AnyPoolOptions::new()
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false);
        let pool = match backend {
            // SQLite has one writer; one connection serialises every transaction, so a
            // compare-and-set never meets SQLITE_BUSY and commit order is publish order.
            // synchronous=NORMAL in WAL mode: a commit is written to the WAL but not
            // fsynced; the WAL is synced at checkpoints. A crash of Usher (even kill -9)
            // loses nothing; a power cut or kernel crash may lose the last transactions
            // before the checkpoint, never corrupt the database (docs/deploy.md). That
            // fsync was most of a cancel's time. The checkpoints themselves (which do
            // fsync) are not left to whichever commit crosses 1,000 WAL pages: the
            // checkpointer runs them on a connection of its own, beside the writer.
            Backend::Sqlite => {
                options
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for pragma in [
                                "PRAGMA journal_mode=WAL",
                                "PRAGMA synchronous=NORMAL",
                                "PRAGMA foreign_keys=ON",
                                "PRAGMA wal_autocheckpoint=0",
                            ] {
                                sqlx::query(pragma).fetch_all(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                options
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
                    .await?
            }
        };
        if backend == Backend::Sqlite {
            spawn_checkpointer(url, pool.clone()).await?;
        }
        match backend {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A PostgreSQL connection idle this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the SQLite checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// SQLite: checkpoints the WAL on a connection of its own every [`CHECKPOINT_EVERY`]
/// (PASSIVE: it never blocks the writer or readers), so no commit pays for copying pages
/// and fsyncing; a cancel's p99 was such commits. Stops when the pool is closed.
async fn spawn_checkpointer(url: &str, pool: AnyPool) -> Result<(), EngineError> {
    use sqlx::Connection;
    let mut conn = sqlx::sqlite::SqliteConnection::connect(url).await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !pool.is_closed() {
            tick.tick().await;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_all(&mut conn).await {
                tracing::warn!("WAL checkpoint: {e}");
            }
        }
        let _ = conn.close().await;
    });
    Ok(())
}
