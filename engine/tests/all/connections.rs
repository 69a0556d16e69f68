//! The engine's database connections outlive the database dropping them: a PostgreSQL
//! connection the server ended (a restart, a failover, an administrator's
//! `pg_terminate_backend`) is noticed before it is handed out, once it has been idle,
//! so no request fails on it. And a change cut off anywhere (it failed, or the request
//! waiting for it went away) leaves all of itself or nothing, and the connection fit for
//! the next one.

use crate::common::*;
use sqlx::Connection;
use usher_core::api::CancelReason;
use usher_core::api::CreateProject;
use usher_core::status::Status;
use usher_engine::Store;
use usher_engine::plan::{Event, Move};
use usher_engine::store::Change;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_cut_off_anywhere_leaves_all_of_it_or_nothing() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let config: String = (0..60).map(|n| format!("j{n}:\n  script: [echo hi]\n")).collect();
        let (pipeline_id, jobs) = pipeline(&engine, &admin, &config).await;
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        // A store of the test's own on the same database, whose futures it can drop.
        let store = Store::connect(&db.url).await.unwrap();
        let cancel = |job_id| Move {
            job_id,
            event: Event::Cancel {
                reason: CancelReason::User,
                deadline: "2099-01-01T00:00:00.000Z".into(),
                detail: None,
                message: None,
            },
            by: "admin".into(),
        };

        // A change that fails after its transaction began (no such job).
        assert!(store.commit(&Change::Job(&cancel(i64::MAX))).await.is_err(), "{}", db.name);

        // Cancels dropped after ever more polls (20 µs apart, the database working on
        // meanwhile): cut off at every step, from before BEGIN to COMMIT in flight.
        let mut cut = 0;
        for (n, id) in ids.iter().enumerate() {
            match poll_then_drop(store.commit(&Change::Job(&cancel(*id))), n) {
                None => {
                    cut += 1;
                    // A statement already sent (a COMMIT, say) still ends on the server:
                    // give it the moment it needs before looking.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Some(done) => assert!(done.is_ok(), "{}: job {id}: {:?}", db.name, done.err()),
            }
            let job = store.get_job(*id).await.unwrap().unwrap();
            let entries = store.timeline(*id).await.unwrap();
            let recorded = entries.iter().any(|e| e.to == Status::Canceled);
            assert_eq!(
                job.status == Status::Canceled,
                recorded,
                "{}: job {id} is {} with timeline {entries:?}",
                db.name,
                job.status
            );
        }
        assert!(cut > 0, "{}: no change was cut off", db.name);

        // Whatever was cut off, every cancel goes through now, and the pipeline follows.
        for id in &ids {
            let committed = store
                .commit(&Change::Job(&cancel(*id)))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", db.name));
            assert_eq!(committed.jobs[0].job.status, Status::Canceled);
        }
        let pipeline = store.get_pipeline(pipeline_id).await.unwrap().unwrap();
        assert_eq!(pipeline.status, Status::Canceled, "{}", db.name);
        store.close().await;
    }
}

/// Polls `change` up to `polls` times, 20 µs apart, and drops it: its result if it ended
/// by then, else None (cut off).
fn poll_then_drop<T>(change: impl std::future::Future<Output = T>, polls: usize) -> Option<T> {
    let mut change = std::pin::pin!(change);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..polls {
        if let std::task::Poll::Ready(done) = change.as_mut().poll(&mut cx) {
            return Some(done);
        }
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
    None
}
