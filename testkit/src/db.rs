//! The databases a test or benchmark runs on: SQLite in a temporary directory always,
//! and a fresh database on TEST_DATABASE_URL's PostgreSQL server (scripts/with-postgres
//! sets it) when there is one. `USHER_REQUIRE_POSTGRES` turns a missing server into a
//! failure; otherwise what needs PostgreSQL is skipped, and says so.

use std::path::Path;

/// TEST_DATABASE_URL when it is set (and not empty).
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.is_empty())
}

/// Whether a missing PostgreSQL server is a failure (`USHER_REQUIRE_POSTGRES` is set).
pub fn postgres_required() -> bool {
    std::env::var("USHER_REQUIRE_POSTGRES").is_ok()
}

/// A fresh PostgreSQL database on TEST_DATABASE_URL's server. Panics when there is no
/// server: a test that needs one is registered through [`crate::harness`], which
/// reports it ignored instead of running it (unless `USHER_REQUIRE_POSTGRES` is set).
pub async fn fresh_postgres() -> String {
    let Some(base) = postgres_url() else {
        if postgres_required() {
            panic!("USHER_REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not");
        }
        panic!("TEST_DATABASE_URL is not set (run under scripts/with-postgres)");
    };
    create_database(&base, "r").await
}

/// A new database named `<prefix>_<pid>_<suffix>` on the server of `base`; its URL.
async fn create_database(base: &str, prefix: &str) -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!("{prefix}_{}_{}", std::process::id(), crate::rand_suffix());
    let mut conn = sqlx::AnyConnection::connect(base).await.expect("connect to TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

/// The benchmarks' databases, by display name: SQLite in `dir`, and PostgreSQL when
/// TEST_DATABASE_URL is set. `USHER_BENCH_DB=SQLite` or `=PostgreSQL` keeps only that one.
pub async fn databases(dir: &Path) -> Vec<(&'static str, String)> {
    let only = std::env::var("USHER_BENCH_DB").ok();
    let mut out = vec![("SQLite", usher_server::default_database_url(dir))];
    match postgres_url() {
        Some(base) => out.push(("PostgreSQL", create_database(&base, "bench").await)),
        None => println!("skipped: PostgreSQL (TEST_DATABASE_URL not set; run under scripts/with-postgres)"),
    }
    out.retain(|(name, _)| only.as_deref().is_none_or(|o| o == *name));
    out
}
