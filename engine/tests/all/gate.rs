//! The engine on SQLite and PostgreSQL: transitions, roles, pipelines, the reaper, and
//! a concurrency stress test that tries to break the state machine.

use crate::common::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use usher_core::api::{CancelMode, CreatePipeline, CreateProject, Job};
use usher_core::pipeline::derive_status;
use usher_core::protocol::JobReport;
use usher_core::roles::Role;
use usher_core::status::{JobEvent, Outcome, Status, next};
use usher_engine::{Actor, Engine, EngineError};

const TWO_STAGES: &str = "stages: [build, test]\nb1:\n  stage: build\n  script: [x]\nb2:\n  stage: build\n  script: [x]\nt1:\n  stage: test\n  script: [x]\nt2:\n  stage: test\n  needs: [b1]\n  script: [x]\n";

fn report(exit_code: i32) -> JobReport {
    JobReport {
        exit_code: Some(exit_code),
        failure_reason: None,
        duration_ms: 5,
        after_script: None,
        detail: None,
        dotenv: None,
        teardown: None,
    }
}

fn status_of(jobs: &[Job], name: &str) -> Status {
    jobs.iter().find(|j| j.name == name).unwrap().status
}

#[tokio::test]
async fn stages_and_needs_drive_the_pipeline() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (pid, jobs) = pipeline(&engine, &admin, TWO_STAGES).await;
        assert_eq!(status_of(&jobs, "b1"), Status::Pending, "{}", db.name);
        assert_eq!(status_of(&jobs, "t1"), Status::Created);
        let a = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let b = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none(), "{}: later stages wait", db.name);
        let b1 = if a.name == "b1" { a.job_id } else { b.job_id };
        let b2 = if a.name == "b1" { b.job_id } else { a.job_id };
        assert_eq!(engine.finish_job(r, b1, report(0)).await.unwrap(), Status::Success);
        // t2 needs only b1; t1 waits for the whole build stage.
        let p = engine.get_pipeline(&admin, pid).await.unwrap();
        let jobs = p.jobs.unwrap();
        assert_eq!(status_of(&jobs, "t2"), Status::Pending, "{}", db.name);
        assert_eq!(status_of(&jobs, "t1"), Status::Created);
        assert_eq!(p.status, Status::Running);
        assert_eq!(engine.finish_job(r, b2, report(1)).await.unwrap(), Status::Failed);
        let jobs = engine.get_pipeline(&admin, pid).await.unwrap().jobs.unwrap();
        assert_eq!(
            status_of(&jobs, "t1"),
            Status::Skipped,
            "{}: a failed stage skips what waits on it",
            db.name
        );
        let t2 = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(t2.name, "t2");
        engine.finish_job(r, t2.job_id, report(0)).await.unwrap();
        let p = engine.get_pipeline(&admin, pid).await.unwrap();
        assert_eq!(p.status, Status::Failed, "{}", db.name);
        assert!(p.finished_at.is_some());
        engine.close().await;
    }
}

#[tokio::test]
async fn roles_are_enforced_by_the_engine() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let (pid, jobs) = pipeline(&engine, &admin, TWO_STAGES).await;
        for (name, role) in [("v", Role::Viewer), ("d", Role::Developer), ("m", Role::Maintainer)] {
            engine.add_user(name, role, None).await.unwrap();
        }
        let token = |n: &'static str| {
            let engine = engine.clone();
            async move { engine.authenticate_token(&engine.create_api_token(n).await.unwrap()).await.unwrap() }
        };
        let (viewer, developer, maintainer) = (token("v").await, token("d").await, token("m").await);
        let job = jobs[0].id;
        assert!(
            matches!(
                engine.cancel_job(&viewer, job, Default::default()).await,
                Err(EngineError::Forbidden { .. })
            ),
            "{}",
            db.name
        );
        assert!(matches!(
            engine.abort_job(&developer, job, Default::default()).await,
            Err(EngineError::Forbidden { .. })
        ));
        assert!(matches!(
            engine.abort_pipeline(&developer, pid, Default::default()).await,
            Err(EngineError::Forbidden { .. })
        ));
        assert_eq!(
            engine.cancel_job(&developer, job, Default::default()).await.unwrap().status,
            Status::Canceled
        );
        assert_eq!(
            engine.abort_pipeline(&maintainer, pid, Default::default()).await.unwrap().status,
            Status::Canceled
        );
        assert!(engine.get_job(&viewer, job).await.is_ok());
        engine.close().await;
    }
}

#[tokio::test]
async fn an_overdue_cancel_is_reaped_and_the_runner_report_comes_too_late() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (_, _) = pipeline(
            &engine,
            &admin,
            "j:\n  script: [x]\n  cancel_grace: 1s\n  after_script_timeout: 1s\n",
        )
        .await;
        let job = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let canceling = engine.cancel_job(&admin, job.job_id, Default::default()).await.unwrap();
        assert_eq!(canceling.status, Status::Canceling);
        assert_eq!(engine.reap_overdue_cancels().await.unwrap(), 0, "{}: not overdue yet", db.name);
        // Overdue after cancel_grace + after_script_timeout + the engine's 30 s margin.
        let requested: chrono::DateTime<chrono::Utc> = canceling.cancel.unwrap().requested_at.parse().unwrap();
        let as_of = |secs: i64| {
            (requested + chrono::Duration::seconds(secs))
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        assert_eq!(
            engine.reap_overdue_cancels_as_of(&as_of(31)).await.unwrap(),
            0,
            "{}: overdue too early",
            db.name
        );
        assert_eq!(
            engine.reap_overdue_cancels_as_of(&as_of(33)).await.unwrap(),
            1,
            "{}: not overdue",
            db.name
        );
        let reaped = engine.get_job(&admin, job.job_id).await.unwrap();
        assert_eq!(reaped.status, Status::Canceled);
        assert_eq!(reaped.cancel.unwrap().reason, usher_core::api::CancelReason::CancelTimeout);
        // A late report leaves the job as it is.
        assert_eq!(
            engine.finish_job(r, job.job_id, report(0)).await.unwrap(),
            Status::Canceled,
            "{}",
            db.name
        );
        engine.close().await;
    }
}

/// Every job's timeline must be a chain of table transitions ending in its status,
/// nothing may follow a terminal status, and each pipeline's stored status must equal
/// its derivation from the jobs.
async fn check_invariants(engine: &Engine, admin: &Actor, pipelines: &[i64], db: &str) -> usize {
    let mut transitions = 0;
    for &pid in pipelines {
        let p = engine.get_pipeline(admin, pid).await.unwrap();
        let jobs = p.jobs.clone().unwrap();
        assert_eq!(
            p.status,
            derive_status(jobs.iter().map(|j| j.status)),
            "{db}: pipeline {pid} status {:?}",
            jobs
        );
        for job in jobs {
            let timeline = engine.job_timeline(admin, job.id).await.unwrap();
            assert_eq!(timeline[0].from, None);
            assert_eq!(timeline[0].to, Status::Created);
            for pair in timeline.windows(2) {
                let (before, after) = (&pair[0], &pair[1]);
                assert_eq!(
                    after.from,
                    Some(before.to),
                    "{db}: job {} timeline is not a chain: {timeline:?}",
                    job.id
                );
                assert!(
                    !before.to.is_terminal(),
                    "{db}: job {} moved after {}: {timeline:?}",
                    job.id,
                    before.to
                );
                let legal = JobEvent::ALL.iter().any(|e| next(before.to, *e) == Ok(Outcome::Move(after.to)));
                assert!(legal, "{db}: job {}: {} → {} is not in the table", job.id, before.to, after.to);
                transitions += 1;
            }
            assert_eq!(
                timeline.last().unwrap().to,
                job.status,
                "{db}: job {} ends elsewhere than its timeline",
                job.id
            );
        }
    }
    transitions
}

async fn stress(db: &Db, operations: usize, seed: u64) {
    let (engine, admin) = engine(db).await;
    let runners = [
        runner(&engine, "r1").await,
        runner(&engine, "r2").await,
        runner(&engine, "r3").await,
    ];
    let project = engine
        .create_project(
            &admin,
            CreateProject {
                name: "stress".into(),
                ci_config: Some(TWO_STAGES.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pipelines = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<i64>::new()));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = 0;
    while done < operations {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (engine, admin, pipelines) = (engine.clone(), admin.clone(), pipelines.clone());
            let op: u32 = rng.gen_range(0..100);
            let pick: usize = rng.r#gen();
            let runner = runners[pick % runners.len()];
            let project_id = project.id;
            batch.spawn(async move {
                let known = pipelines.lock().await.clone();
                if known.is_empty() || op < 8 {
                    let p = engine
                        .create_pipeline(
                            &admin,
                            project_id,
                            CreatePipeline {
                                git_ref: "main".into(),
                                ..Default::default()
                            },
                        )
                        .await
                        .unwrap();
                    pipelines.lock().await.push(p.id);
                    return;
                }
                let pid = known[pick % known.len()];
                let jobs = engine.get_pipeline(&admin, pid).await.unwrap().jobs.unwrap();
                let job = &jobs[(pick / 7) % jobs.len()];
                let result = match op {
                    8..=37 => engine.claim_job(runner, &[]).await.map(|_| ()),
                    38..=62 => match job.runner_id {
                        Some(holder) => {
                            let code = if pick.is_multiple_of(3) { 1 } else { 0 };
                            let mut r = report(code);
                            if pick.is_multiple_of(11) {
                                r.failure_reason = Some(usher_core::FailureReason::Timeout);
                            }
                            engine.finish_job(holder, job.id, r).await.map(|_| ())
                        }
                        None => Ok(()),
                    },
                    63..=77 => engine.cancel_job(&admin, job.id, Default::default()).await.map(|_| ()),
                    78..=85 => engine.abort_job(&admin, job.id, Default::default()).await.map(|_| ()),
                    86..=90 => engine.cancel_pipeline(&admin, pid, Default::default()).await.map(|_| ()),
                    91..=93 => engine.abort_pipeline(&admin, pid, Default::default()).await.map(|_| ()),
                    _ => engine.reap_overdue_cancels_as_of("2999-01-01T00:00:00.000Z").await.map(|_| ()),
                };
                match result {
                    Ok(()) | Err(EngineError::InvalidTransition(_)) | Err(EngineError::Conflict(_)) => {}
                    Err(e) => panic!("unexpected engine error: {e}"),
                }
            });
        }
        while let Some(r) = batch.join_next().await {
            r.unwrap();
        }
        done += 8;
    }
    let pipelines = pipelines.lock().await.clone();
    let transitions = check_invariants(&engine, &admin, &pipelines, db.name).await;
    println!(
        "{}: {operations} operations on {} pipelines, {transitions} transitions, all legal",
        db.name,
        pipelines.len()
    );
    assert!(transitions > operations / 10, "the stress did too little to mean anything");
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_operations_never_break_the_state_machine() {
    for db in databases().await {
        stress(&db, 800, 7).await;
    }
}

/// The soak: `cargo test -p usher-engine --test engine -- --ignored` (10,000 operations).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn soak_ten_thousand_operations() {
    for db in databases().await {
        stress(&db, 10_000, 42).await;
    }
}

async fn pipeline_on(engine: &Engine, actor: &Actor, project_id: i64, git_ref: &str) -> (i64, Vec<Job>) {
    let p = engine
        .create_pipeline(
            actor,
            project_id,
            CreatePipeline {
                git_ref: git_ref.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (p.id, p.jobs.unwrap())
}

async fn auto_cancel_project(engine: &Engine, admin: &Actor, mode: &str) -> i64 {
    let config = format!(
        "workflow:\n  auto_cancel:\n    on_new_commit: {mode}\nstages: [a, b]\nsafe:\n  stage: a\n  interruptible: true\n  script: [x]\nslow:\n  stage: a\n  script: [x]\nlater:\n  stage: b\n  script: [x]\n"
    );
    let name = format!("{mode}{}", rand::random::<u32>());
    engine
        .create_project(
            admin,
            CreateProject {
                name,
                ci_config: Some(config),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_new_pipeline_supersedes_older_ones_on_its_ref() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        // conservative, nothing started: the whole older pipeline is canceled.
        let p = auto_cancel_project(&engine, &admin, "conservative").await;
        let (old, _) = pipeline_on(&engine, &admin, p, "main").await;
        let (other_ref, _) = pipeline_on(&engine, &admin, p, "feature").await;
        let (new, _) = pipeline_on(&engine, &admin, p, "main").await;
        let old_p = engine.get_pipeline(&admin, old).await.unwrap();
        assert_eq!(old_p.status, Status::Canceled, "{}", db.name);
        assert_eq!(old_p.cancel.as_ref().unwrap().reason, usher_core::api::CancelReason::Superseded);
        let later = old_p.jobs.unwrap().into_iter().find(|j| j.name == "later").unwrap();
        let timeline = engine.job_timeline(&admin, later.id).await.unwrap();
        let last = timeline.last().unwrap();
        assert_eq!(last.reason.as_deref(), Some("superseded"));
        assert_eq!(last.detail.as_deref(), Some(format!("superseded by pipeline #{new}").as_str()));
        assert_ne!(
            engine.get_pipeline(&admin, other_ref).await.unwrap().status,
            Status::Canceled,
            "another ref is left alone"
        );

        // conservative, a non-interruptible job has started: left alone.
        let p = auto_cancel_project(&engine, &admin, "conservative").await;
        let (old, jobs) = pipeline_on(&engine, &admin, p, "main").await;
        let slow = jobs.iter().find(|j| j.name == "slow").unwrap().id;
        while engine.get_job(&admin, slow).await.unwrap().status != Status::Running {
            engine.claim_job(r, &[]).await.unwrap().expect("a pending job");
        }
        pipeline_on(&engine, &admin, p, "main").await;
        assert_eq!(
            engine.get_pipeline(&admin, old).await.unwrap().status,
            Status::Running,
            "{}",
            db.name
        );

        // interruptible: only the interruptible job goes (gracefully: it was running).
        let p = auto_cancel_project(&engine, &admin, "interruptible").await;
        let (old, jobs) = pipeline_on(&engine, &admin, p, "main").await;
        let safe = jobs.iter().find(|j| j.name == "safe").unwrap().id;
        while engine.get_job(&admin, safe).await.unwrap().status != Status::Running {
            engine.claim_job(r, &[]).await.unwrap().expect("a pending job");
        }
        pipeline_on(&engine, &admin, p, "main").await;
        let jobs = engine.get_pipeline(&admin, old).await.unwrap().jobs.unwrap();
        assert_eq!(status_of(&jobs, "safe"), Status::Canceling, "{}", db.name);
        assert_ne!(status_of(&jobs, "slow"), Status::Canceled);

        // none: nothing.
        let p = auto_cancel_project(&engine, &admin, "none").await;
        let (old, _) = pipeline_on(&engine, &admin, p, "main").await;
        pipeline_on(&engine, &admin, p, "main").await;
        assert_eq!(
            engine.get_pipeline(&admin, old).await.unwrap().status,
            Status::Pending,
            "{}",
            db.name
        );
        engine.close().await;
    }
}

#[tokio::test]
async fn a_lost_runners_jobs_end_runner_lost() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (_, _) = pipeline(&engine, &admin, "a:\n  script: [x]\nb:\n  script: [x]\n").await;
        let first = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let second = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.cancel_job(&admin, second.job_id, Default::default()).await.unwrap();
        assert_eq!(engine.reap_lost_runners().await.unwrap(), 0, "{}: just seen", db.name);
        assert_eq!(engine.reap_lost_runners_seen_before("2999-01-01T00:00:00.000Z").await.unwrap(), 2);
        let running = engine.get_job(&admin, first.job_id).await.unwrap();
        assert_eq!(
            (running.status, running.failure_reason),
            (Status::Failed, Some(usher_core::FailureReason::RunnerLost)),
            "{}",
            db.name
        );
        let canceling = engine.get_job(&admin, second.job_id).await.unwrap();
        assert_eq!(canceling.status, Status::Canceled);
        assert_eq!(canceling.cancel.unwrap().reason, usher_core::api::CancelReason::RunnerLost);
        engine.close().await;
    }
}

#[tokio::test]
async fn pipeline_cancel_winds_down_running_jobs_and_cancels_waiting_ones() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (pid, _) = pipeline(&engine, &admin, TWO_STAGES).await;
        let running = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let p = engine.cancel_pipeline(&admin, pid, Default::default()).await.unwrap();
        let jobs = p.jobs.unwrap();
        assert_eq!(status_of(&jobs, &running.name), Status::Canceling, "{}", db.name);
        for job in jobs.iter().filter(|j| j.id != running.job_id) {
            assert_eq!(
                job.status,
                Status::Canceled,
                "{}: {} was waiting, so it is canceled, not skipped",
                db.name,
                job.name
            );
        }
        assert_eq!(p.status, Status::Canceling, "{}: only canceling jobs are left", db.name);
        let first_cancel = p.cancel.clone().expect("the pipeline records its cancel");
        assert_eq!(
            (first_cancel.requested_by.as_str(), first_cancel.mode),
            ("admin", CancelMode::Graceful)
        );
        // Repeating it is not an error and changes nothing, whoever repeats it; the
        // runner's report then ends it.
        engine.add_user("dev2", Role::Developer, None).await.unwrap();
        let dev_token = engine.create_api_token("dev2").await.unwrap();
        let dev = engine.authenticate_token(&dev_token).await.unwrap();
        let again = engine.cancel_pipeline(&dev, pid, Default::default()).await.unwrap();
        assert_eq!((again.status, again.cancel), (Status::Canceling, Some(first_cancel)), "{}", db.name);
        assert_eq!(engine.finish_job(r, running.job_id, report(0)).await.unwrap(), Status::Canceled);
        assert_eq!(engine.get_pipeline(&admin, pid).await.unwrap().status, Status::Canceled);
        engine.close().await;
    }
}

#[tokio::test]
async fn artifacts_are_taken_from_the_holding_runner_within_the_limit() {
    for db in databases().await {
        let dir = tempfile::tempdir().unwrap();
        let settings = usher_engine::Settings {
            artifacts_dir: Some(dir.path().to_path_buf()),
            max_artifact_bytes: 10,
            ..Default::default()
        };
        let engine = Engine::open_with(&db.url, settings).await.unwrap();
        engine.bootstrap_admin(Some("admin-token")).await.unwrap();
        let admin = engine.authenticate_token("admin-token").await.unwrap();
        let token = engine.create_runner_token().await.unwrap();
        let token_id = engine.authenticate_runner(&token).await.unwrap();
        let r = engine.register_runner("r", token_id, None, &[]).await.unwrap();
        let other_token = engine.create_runner_token().await.unwrap();
        let other = engine.authenticate_runner(&other_token).await.unwrap();
        pipeline(&engine, &admin, "a:\n  script: [x]\n").await;
        let job = engine.claim_job(r, &[]).await.unwrap().unwrap().job_id;
        let body = |parts: &[&'static str]| {
            futures_util::stream::iter(parts.iter().map(|p| Ok::<_, std::io::Error>(p.as_bytes())).collect::<Vec<_>>())
        };

        let stored = engine
            .store_artifact(token_id, job, "./out//a.txt", body(&["abc", "def"]))
            .await
            .unwrap();
        assert_eq!((stored.path.as_str(), stored.size), ("out/a.txt", 6), "{}", db.name);
        // Replacing a file counts only the new size against the limit.
        engine
            .store_artifact(token_id, job, "out/a.txt", body(&["abcdefgh"]))
            .await
            .unwrap();
        let err = engine.store_artifact(token_id, job, "b.txt", body(&["abc"])).await.unwrap_err();
        assert!(matches!(err, EngineError::TooLarge(_)), "{}: {err}", db.name);
        assert!(
            std::fs::read_dir(dir.path().join(format!("job-{job}"))).unwrap().count() == 1,
            "a refused upload leaves no file behind"
        );
        let err = engine.store_artifact(other, job, "c.txt", body(&["x"])).await.unwrap_err();
        assert!(matches!(err, EngineError::Conflict(_)), "{}: {err}", db.name);
        let err = engine.store_artifact(token_id, job, "../c.txt", body(&["x"])).await.unwrap_err();
        assert!(matches!(err, EngineError::BadRequest(_)), "{}: {err}", db.name);

        let list = engine.list_artifacts(&admin, job).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].path.as_str(), list[0].size), ("out/a.txt", 8));
        let (stored, size) = engine.artifact_file(&admin, job, "out/a.txt").await.unwrap();
        let usher_engine::artifact_storage::StoredArtifact::File(file) = stored else {
            panic!("{}: not kept in the artifacts dir: {stored:?}", db.name)
        };
        assert_eq!((std::fs::read_to_string(file).unwrap().as_str(), size), ("abcdefgh", 8));

        engine.finish_job(r, job, report(0)).await.unwrap();
        let err = engine.store_artifact(token_id, job, "late.txt", body(&["x"])).await.unwrap_err();
        assert!(
            matches!(err, EngineError::Conflict(_)),
            "{}: a finished job takes no more: {err}",
            db.name
        );
        engine.close().await;
    }
}

#[tokio::test]
async fn a_log_frame_sent_again_after_a_reconnect_is_kept_once() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        pipeline(&engine, &admin, "a:\n  script: [x]\n").await;
        let job = engine.claim_job(r, &[]).await.unwrap().unwrap().job_id;
        assert_eq!(engine.append_log(r, job, 0, "one\n").await.unwrap().0, 4);
        assert_eq!(engine.append_log(r, job, 4, "two\n").await.unwrap().0, 8);
        // The runner did not see the acks and sends both again, then a frame that
        // overlaps the end, then one past a gap (ignored until the gap is filled).
        assert_eq!(engine.append_log(r, job, 0, "one\n").await.unwrap().0, 8);
        assert_eq!(engine.append_log(r, job, 4, "two\n").await.unwrap().0, 8);
        assert_eq!(engine.append_log(r, job, 6, "o\nthree\n").await.unwrap().0, 14);
        assert_eq!(engine.append_log(r, job, 20, "gap\n").await.unwrap().0, 14);
        let log = whole_log(&engine, &admin, job, 0).await;
        assert_eq!(log, "one\ntwo\nthree\n", "{}", db.name);
        // The same frames arriving together are stored in one go, with the same answers.
        let lengths = engine
            .append_log_pieces(
                r,
                job,
                &[(14, "four\n"), (14, "four\n"), (17, "r\nfive\n"), (40, "gap\n"), (24, "six\n")],
            )
            .await
            .unwrap();
        let lengths: Vec<u64> = lengths.iter().map(|(l, _)| *l).collect();
        assert_eq!(lengths, [19, 19, 24, 24, 28], "{}", db.name);
        let log = whole_log(&engine, &admin, job, 0).await;
        assert_eq!(log, "one\ntwo\nthree\nfour\nfive\nsix\n", "{}", db.name);
        engine.close().await;
    }
}

/// A project's fields change one by one on both databases: a rename (409 onto a taken
/// name), a repository added and removed with its credentials kept apart, the inline
/// YAML removed only while a repository remains.
#[tokio::test]
async fn projects_change_field_by_field() {
    use usher_core::api::UpdateProject;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let (_, _) = pipeline(&engine, &admin, "a:\n  script: [x]\n").await;
        let projects = engine.list_projects(&admin).await.unwrap();
        let taken = projects[0].name.clone();
        let other = engine
            .create_project(
                &admin,
                CreateProject {
                    name: format!("other-{}", db.name),
                    ci_config: Some("b:\n  script: [x]\n".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let change = |req: UpdateProject| engine.update_project(&admin, other.id, req);
        let err = change(UpdateProject {
            name: Some(taken),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), "conflict", "{}", db.name);
        let p = change(UpdateProject {
            repository_url: Some("https://bot:tok3n@git.example.com/app.git".into()),
            default_branch: Some("trunk".into()),
            webhook_secret: Some("s".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(p.repository_url.as_deref(), Some("https://git.example.com/app.git"), "{}", db.name);
        assert_eq!((p.default_branch.as_str(), p.ci_config.is_some()), ("trunk", true));
        let p = change(UpdateProject {
            ci_config: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(p.ci_config, None, "{}", db.name);
        let err = change(UpdateProject {
            repository_url: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), "bad_request", "a project keeps a repository or YAML ({})", db.name);
        let p = engine.get_project(&admin, other.id).await.unwrap();
        assert_eq!(p.repository_url.as_deref(), Some("https://git.example.com/app.git"), "{}", db.name);
    }
}

/// A failed job's retry is a new attempt that the pipeline's status follows, on both
/// databases; the old attempt is kept and refuses a second retry.
#[tokio::test]
async fn a_retry_is_a_new_attempt_the_pipeline_follows() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (pipeline_id, jobs) = pipeline(&engine, &admin, "a:\n  script: [x]\n").await;
        let claimed = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(claimed.job_id, jobs[0].id);
        engine.finish_job(r, jobs[0].id, report(1)).await.unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Failed,
            "{}",
            db.name
        );
        let attempt = engine.retry_job(&admin, jobs[0].id).await.unwrap();
        assert_eq!(
            (attempt.retry_of, attempt.status),
            (Some(jobs[0].id), Status::Pending),
            "{}",
            db.name
        );
        assert!(engine.get_job(&admin, jobs[0].id).await.unwrap().retried);
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Pending,
            "{}",
            db.name
        );
        assert_eq!(engine.retry_job(&admin, jobs[0].id).await.unwrap_err().code(), "invalid_transition");
        let again = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(again.job_id, attempt.id);
        engine.finish_job(r, attempt.id, report(0)).await.unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Success,
            "{}",
            db.name
        );
    }
}

/// SQLite commits never checkpoint (so none pays for copying pages and fsyncing), yet
/// what they wrote reaches the database file itself within a second: a reader that
/// ignores the WAL (`immutable=1`) sees a new project soon after it was created.
#[tokio::test]
async fn sqlite_wal_is_checkpointed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = Db {
        name: "sqlite",
        url: format!("sqlite://{}?mode=rwc", path.display()),
        _dir: None,
    };
    let (engine, admin) = engine(&db).await;
    let project = engine
        .create_project(
            &admin,
            CreateProject {
                name: "checkpointed".into(),
                ci_config: Some("j:\n  script: [x]\n".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let in_file = || async {
        use sqlx::{Connection, Row};
        let url = format!("sqlite://{}?immutable=1", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        // Before any checkpoint the file may not even have the tables yet.
        let row = sqlx::query("SELECT COUNT(*) AS n FROM projects WHERE id = ?")
            .bind(project.id)
            .fetch_one(&mut conn)
            .await;
        row.is_ok_and(|row| row.get::<i64, _>("n") == 1)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !in_file().await {
        assert!(std::time::Instant::now() < deadline, "the project never reached the database file");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
