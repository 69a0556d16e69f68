//! The engine's database connections outlive the database dropping them: a PostgreSQL
//! connection the server ended (a restart, a failover, an administrator's
//! `pg_terminate_backend`) is noticed before it is handed out, once it has been idle,
//! so no request fails on it.

mod common;

use common::*;
use sqlx::Connection;
use usher_core::api::CreateProject;

#[tokio::test]
async fn connections_the_server_ended_are_replaced_not_handed_out() {
    for db in databases().await {
        if db.name != "postgres" {
            continue;
        }
        let (engine, admin) = engine(&db).await;
        // Several connections in the pool, each used once.
        let names: Vec<String> = (0..6).map(|n| format!("before-{n}")).collect();
        let created = futures_util::future::join_all(names.iter().map(|name| {
            engine.create_project(
                &admin,
                CreateProject {
                    name: name.clone(),
                    ci_config: Some("job:\n  script: [echo hi]\n".into()),
                    ..Default::default()
                },
            )
        }))
        .await;
        assert!(created.iter().all(Result::is_ok), "{created:?}");

        let mut admin_conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        let ended: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin_conn)
        .await
        .unwrap();
        assert!(ended.len() >= 2, "the pool had {} connections", ended.len());

        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
        for n in 0..10 {
            let projects = engine.list_projects(&admin).await;
            assert!(projects.is_ok(), "request {n} after the server ended the connections: {projects:?}");
        }
        let project = engine
            .create_project(
                &admin,
                CreateProject {
                    name: "after".into(),
                    ci_config: Some("job:\n  script: [echo hi]\n".into()),
                    ..Default::default()
                },
            )
            .await;
        assert!(project.is_ok(), "{project:?}");
    }
}
