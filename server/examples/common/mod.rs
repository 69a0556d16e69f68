//! What the benchmarks share: the databases to run on — SQLite in `dir` always, and a
//! fresh PostgreSQL database when TEST_DATABASE_URL is set (scripts/with-postgres).

pub async fn databases(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut out = vec![("SQLite", usher_server::default_database_url(dir))];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) => {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let name = format!("bench_{}_{}", std::process::id(), rand::random::<u32>());
            let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            out.push(("PostgreSQL", format!("{prefix}/{name}")));
        }
        Err(_) => println!("(PostgreSQL skipped: set TEST_DATABASE_URL or run under scripts/with-postgres)"),
    }
    out
}
