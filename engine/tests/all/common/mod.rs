//! Engines on both databases: SQLite in a temp dir, and PostgreSQL when
//! TEST_DATABASE_URL is set (`make test` always sets it via scripts/with-postgres; a
//! fresh database is created per test).

use sqlx::Connection;
use usher_core::api::{CreatePipeline, CreateProject, Job};
use usher_engine::{Actor, Engine};

pub struct Db {
    pub name: &'static str,
    pub url: String,
    pub _dir: Option<tempfile::TempDir>,
}

pub async fn databases() -> Vec<Db> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![Db {
        name: "sqlite",
        url: format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
        _dir: Some(dir),
    }];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            sqlx::any::install_default_drivers();
            let name = format!("t_{}_{}", std::process::id(), rand::random::<u32>());
            let mut conn = sqlx::AnyConnection::connect(&base).await.expect("connect to TEST_DATABASE_URL");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            out.push(Db {
                name: "postgres",
                url: format!("{prefix}/{name}"),
                _dir: None,
            });
        }
        _ if std::env::var("USHER_REQUIRE_POSTGRES").is_ok() => panic!("USHER_REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not"),
        _ => {
            // Once per test binary, straight to the terminal (eprintln! is captured
            // and shown only for a failing test): nothing here claims PostgreSQL ran.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: PostgreSQL (TEST_DATABASE_URL not set; run under scripts/with-postgres): these tests ran on SQLite only"
                );
            });
        }
    }
    out
}

/// An engine with `admin` bootstrapped; returns the admin actor too.
pub async fn engine(db: &Db) -> (Engine, Actor) {
    let engine = Engine::open(&db.url).await.unwrap_or_else(|e| panic!("{}: {e}", db.name));
    engine.bootstrap_admin(Some("admin-token")).await.unwrap();
    let admin = engine.authenticate_token("admin-token").await.unwrap();
    (engine, admin)
}

/// A registered runner id.
pub async fn runner(engine: &Engine, name: &str) -> i64 {
    let token = engine.create_runner_token().await.unwrap();
    let token_id = engine.authenticate_runner(&token).await.unwrap();
    engine.register_runner(name, token_id, None, &[]).await.unwrap()
}

/// A new project with `config` and its first pipeline (on `main`): its id and jobs.
pub async fn pipeline(engine: &Engine, actor: &Actor, config: &str) -> (i64, Vec<Job>) {
    let project = engine
        .create_project(
            actor,
            CreateProject {
                name: format!("p{}", rand::random::<u32>()),
                ci_config: Some(config.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let p = engine
        .create_pipeline(
            actor,
            project.id,
            CreatePipeline {
                git_ref: "main".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (p.id, p.jobs.unwrap())
}

/// A job's log from byte `offset` on, read a page at a time as the API streams it.
pub async fn whole_log(engine: &Engine, actor: &Actor, job: i64, offset: u64) -> String {
    use futures_util::StreamExt;
    let (pages, _) = engine.job_log_pages(actor, job, offset).await.unwrap();
    let pages: Vec<String> = pages.map(|p| p.unwrap()).collect().await;
    pages.concat()
}

/// A runner's report of a job that ended with `exit_code` (None: no exit, e.g. stopped).
pub fn report(exit_code: Option<i32>) -> usher_core::protocol::JobReport {
    usher_core::protocol::JobReport {
        exit_code,
        failure_reason: None,
        duration_ms: 1,
        after_script: None,
        detail: None,
        dotenv: None,
        teardown: None,
    }
}
