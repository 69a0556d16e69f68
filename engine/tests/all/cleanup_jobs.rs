//! Cleanup jobs (`when: on_failure | always | on_cancel`): what a pipeline's end — a
//! success, a failure, a graceful cancel, an abort — runs of them, the pipeline's status
//! while they run, and who may stop them.

use crate::common::*;
use usher_core::api::{Job, When};
use usher_core::status::Status;
use usher_engine::{Actor, Engine, EngineError};

const CONFIG: &str = "stages: [provision, test, cleanup]
provision:
  stage: provision
  script: [up]
test:
  stage: test
  script: [run]
destroy:
  stage: cleanup
  when: on_cancel
  script: [down]
report:
  stage: cleanup
  when: always
  script: [report]
notify:
  stage: cleanup
  when: on_failure
  script: [notify]
";

async fn status_of(engine: &Engine, admin: &Actor, jobs: &[Job], name: &str) -> Status {
    let id = jobs.iter().find(|j| j.name == name).unwrap().id;
    engine.get_job(admin, id).await.unwrap().status
}

/// Claims the next job and runs it to `exit_code`; returns its name and variables.
async fn run_next(engine: &Engine, runner: i64, exit_code: Option<i32>) -> (String, Vec<(String, String)>) {
    let job = engine.claim_job(runner, &[]).await.unwrap().expect("a pending job");
    engine.finish_job(runner, job.job_id, report(exit_code)).await.unwrap();
    (job.name, job.variables)
}

#[tokio::test]
async fn a_graceful_cancel_runs_the_teardown_and_ends_canceled() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (pipeline_id, jobs) = pipeline(&engine, &admin, CONFIG).await;
        assert_eq!(jobs.iter().find(|j| j.name == "destroy").unwrap().when, When::OnCancel);
        run_next(&engine, r, Some(0)).await;
        let test = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(test.name, "test");

        let p = engine.cancel_pipeline(&admin, pipeline_id, Default::default()).await.unwrap();
        assert_eq!(p.status, Status::Canceling, "{}", db.name);
        assert_eq!(status_of(&engine, &admin, &jobs, "test").await, Status::Canceling);
        // The teardown waits for the job being cancelled.
        assert_eq!(status_of(&engine, &admin, &jobs, "destroy").await, Status::Created);
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none(), "{}", db.name);

        // The runner reports test's end: destroy and report run, notify does not.
        engine.finish_job(r, test.job_id, report(None)).await.unwrap();
        assert_eq!(status_of(&engine, &admin, &jobs, "test").await, Status::Canceled);
        assert_eq!(status_of(&engine, &admin, &jobs, "destroy").await, Status::Pending, "{}", db.name);
        assert_eq!(status_of(&engine, &admin, &jobs, "report").await, Status::Pending);
        assert_eq!(status_of(&engine, &admin, &jobs, "notify").await, Status::Skipped);
        assert_eq!(engine.get_pipeline(&admin, pipeline_id).await.unwrap().status, Status::Canceling);

        let cleanup = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let status = cleanup.variables.iter().find(|(k, _)| k == "CI_PIPELINE_STATUS");
        assert_eq!(status.map(|(_, v)| v.as_str()), Some("canceled"), "{}: {}", db.name, cleanup.name);
        // While it runs: a second graceful cancel, and a cancel of the cleanup job, are refused.
        let again = engine.cancel_pipeline(&admin, pipeline_id, Default::default()).await;
        assert!(matches!(again, Err(EngineError::InvalidTransition(_))), "{}: {again:?}", db.name);
        let own = engine.cancel_job(&admin, cleanup.job_id, Default::default()).await;
        assert!(matches!(own, Err(EngineError::InvalidTransition(_))), "{}: {own:?}", db.name);
        // Nor may a retry of the cancelled test turn the teardown back into a run.
        let retry = engine.retry_job(&admin, test.job_id).await;
        assert!(matches!(retry, Err(EngineError::InvalidTransition(_))), "{}: {retry:?}", db.name);
        assert_eq!(engine.get_pipeline(&admin, pipeline_id).await.unwrap().status, Status::Canceling);

        // A failing teardown does not turn the cancelled pipeline into a failed one.
        engine.finish_job(r, cleanup.job_id, report(Some(1))).await.unwrap();
        run_next(&engine, r, Some(0)).await;
        let p = engine.get_pipeline(&admin, pipeline_id).await.unwrap();
        assert_eq!(p.status, Status::Canceled, "{}", db.name);
        engine.close().await;
    }
}

#[tokio::test]
async fn success_and_failure_run_their_own_cleanup_jobs() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;

        let (ok, jobs) = pipeline(&engine, &admin, CONFIG).await;
        run_next(&engine, r, Some(0)).await;
        run_next(&engine, r, Some(0)).await;
        let (name, variables) = run_next(&engine, r, Some(0)).await;
        assert_eq!(name, "report");
        assert!(
            variables.contains(&("CI_PIPELINE_STATUS".into(), "success".into())),
            "{variables:?}"
        );
        assert_eq!(status_of(&engine, &admin, &jobs, "destroy").await, Status::Skipped, "{}", db.name);
        assert_eq!(status_of(&engine, &admin, &jobs, "notify").await, Status::Skipped);
        assert_eq!(engine.get_pipeline(&admin, ok).await.unwrap().status, Status::Success);

        let (failed, jobs) = pipeline(&engine, &admin, CONFIG).await;
        run_next(&engine, r, Some(0)).await;
        run_next(&engine, r, Some(3)).await;
        let mut ran = [run_next(&engine, r, Some(0)).await, run_next(&engine, r, Some(0)).await];
        ran.sort();
        assert_eq!(
            ran.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["notify", "report"],
            "{}",
            db.name
        );
        assert!(ran[0].1.contains(&("CI_PIPELINE_STATUS".into(), "failed".into())));
        assert_eq!(status_of(&engine, &admin, &jobs, "destroy").await, Status::Skipped);
        assert_eq!(engine.get_pipeline(&admin, failed).await.unwrap().status, Status::Failed);
        engine.close().await;
    }
}

#[tokio::test]
async fn an_abort_runs_no_cleanup_and_stops_a_running_one() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        // Aborted outright: nothing of the teardown runs.
        let (aborted, jobs) = pipeline(&engine, &admin, CONFIG).await;
        run_next(&engine, r, Some(0)).await;
        engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(
            engine.abort_pipeline(&admin, aborted, Default::default()).await.unwrap().status,
            Status::Canceled,
            "{}",
            db.name
        );
        for name in ["destroy", "report", "notify"] {
            assert_eq!(
                status_of(&engine, &admin, &jobs, name).await,
                Status::Canceled,
                "{}: {name}",
                db.name
            );
        }

        // Cancelled, then aborted while the teardown runs: it stops.
        let (p, _) = pipeline(&engine, &admin, CONFIG).await;
        run_next(&engine, r, Some(0)).await;
        let test = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        engine.finish_job(r, test.job_id, report(None)).await.unwrap();
        let cleanup = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(
            engine.abort_pipeline(&admin, p, Default::default()).await.unwrap().status,
            Status::Canceled,
            "{}",
            db.name
        );
        assert_eq!(engine.get_job(&admin, cleanup.job_id).await.unwrap().status, Status::Canceled);
        engine.close().await;
    }
}

#[tokio::test]
async fn a_retried_pipeline_is_no_longer_cancelled() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (p, _) = pipeline(&engine, &admin, "a:\n  script: [x]\n").await;
        engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.abort_pipeline(&admin, p, Default::default()).await.unwrap();
        let retried = engine.retry_pipeline(&admin, p).await.unwrap();
        assert!(retried.cancel.is_none(), "{}: {:?}", db.name, retried.cancel);
        assert_eq!(retried.status, Status::Pending, "{}", db.name);
        engine.close().await;
    }
}

/// A job's dotenv report reaches the jobs after it: those of later stages, or those
/// that `need` it; not the jobs before it, and not Usher's own variables.
#[tokio::test]
async fn handed_over_variables_reach_later_jobs_only() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let config = "stages: [provision, test]\nprovision:\n  stage: provision\n  script: [up]\n  artifacts:\n    reports:\n      dotenv: env.txt\nbeside:\n  stage: provision\n  script: [x]\ntest:\n  stage: test\n  variables: {ENV_ID: from-yaml}\n  script: [run]\n";
        let (_, _) = pipeline(&engine, &admin, config).await;
        let provision = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(provision.name, "provision");
        assert_eq!(provision.artifacts.as_ref().unwrap().dotenv, ["env.txt"], "{}", db.name);
        let reported = usher_core::protocol::JobReport {
            dotenv: Some(vec![("ENV_ID".into(), "env-42".into()), ("CI_COMMIT_SHA".into(), "forged".into())]),
            ..report(Some(0))
        };
        engine.finish_job(r, provision.job_id, reported).await.unwrap();
        let beside = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert!(!beside.variables.iter().any(|(k, _)| k == "ENV_ID"), "{}: same stage", db.name);
        engine.finish_job(r, beside.job_id, report(Some(0))).await.unwrap();
        let test = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let env_ids: Vec<&str> = test
            .variables
            .iter()
            .filter(|(k, _)| k == "ENV_ID")
            .map(|(_, v)| v.as_str())
            .collect();
        // The YAML's value first, the handed-over one after it: it wins in the environment.
        assert_eq!(env_ids, ["from-yaml", "env-42"], "{}", db.name);
        let sha: Vec<&(String, String)> = test.variables.iter().filter(|(k, _)| k == "CI_COMMIT_SHA").collect();
        assert!(sha.iter().all(|(_, v)| v != "forged"), "{}: {sha:?}", db.name);
        engine.close().await;
    }
}

/// A job whose registered teardown commands are larger than a PostgreSQL notice may be
/// (8,000 bytes) still changes status, and every subscriber still gets the whole job.
#[tokio::test]
async fn a_job_with_many_deferred_commands_still_moves_and_is_published_whole() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (_, jobs) = pipeline(&engine, &admin, "a:\n  script: [x]\n").await;
        let mut events = engine.bus().subscribe();
        let job = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let long = "x".repeat(600);
        for index in 0..20 {
            let command = format!("destroy {index} {long}");
            assert!(engine.record_deferred(r, job.job_id, index, &command).await.unwrap(), "{}", db.name);
        }
        // Sent again after a reconnect: counted once. A gap or a job not held: refused.
        assert!(engine.record_deferred(r, job.job_id, 3, "destroy 3 again").await.unwrap());
        assert!(!engine.record_deferred(r, job.job_id, 30, "a gap").await.unwrap());
        assert!(!engine.record_deferred(r + 1, job.job_id, 20, "not held").await.unwrap());
        engine.cancel_job(&admin, job.job_id, Default::default()).await.unwrap();
        let canceling = engine.get_job(&admin, jobs[0].id).await.unwrap();
        assert_eq!((canceling.status, canceling.deferred.len()), (Status::Canceling, 20), "{}", db.name);
        // The bus carries the canceling job with all its commands.
        let published = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if let Ok(published) = events.recv().await
                    && let usher_engine::BusEvent::Job(j) = &published.event
                    && j.status == Status::Canceling
                {
                    return j.clone();
                }
            }
        })
        .await
        .expect("the canceling job is published");
        assert_eq!(published.deferred.len(), 20, "{}", db.name);
        assert!(published.deferred[3].starts_with("destroy 3 x"), "{}", db.name);
        engine.close().await;
    }
}

/// A review app: `deploy_review` makes an environment, `stop_review` (its `on_stop`, to
/// be played by hand) removes it.
const REVIEW_APP: &str = "stages: [build, review, test]
build:
  stage: build
  interruptible: true
  script: [b]
deploy_review:
  stage: review
  interruptible: true
  script: [deploy]
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    on_stop: stop_review
stop_review:
  stage: review
  when: manual
  script: [stop]
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    action: stop
test:
  stage: test
  interruptible: true
  script: [t]
";

/// A pipeline cancelled after its deploy job started plays the environment's stop job
/// once the jobs being cancelled have ended, so the environment does not outlive it; a
/// cancel before the deploy started, or an abort, runs nothing.
#[tokio::test]
async fn a_cancel_runs_the_stop_job_of_an_environment_the_pipeline_began() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;

        // Cancelled during test, the deploy done: stop_review waits for test, then runs.
        let (p, jobs) = pipeline(&engine, &admin, REVIEW_APP).await;
        run_next(&engine, r, Some(0)).await;
        assert_eq!(run_next(&engine, r, Some(0)).await.0, "deploy_review");
        assert_eq!(status_of(&engine, &admin, &jobs, "stop_review").await, Status::Manual);
        let test = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(test.name, "test");
        let cancelled = engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        assert_eq!(cancelled.status, Status::Canceling, "{}", db.name);
        assert_eq!(
            status_of(&engine, &admin, &jobs, "stop_review").await,
            Status::Manual,
            "{}",
            db.name
        );
        assert!(
            engine.claim_job(r, &[]).await.unwrap().is_none(),
            "{}: not before test ends",
            db.name
        );
        engine.finish_job(r, test.job_id, report(None)).await.unwrap();
        let stop = engine.claim_job(r, &[]).await.unwrap().expect("the stop job runs");
        assert_eq!(stop.name, "stop_review", "{}", db.name);
        let timeline = engine.job_timeline(&admin, stop.job_id).await.unwrap();
        assert!(
            timeline.iter().any(|e| e.from == Some(Status::Manual) && e.to == Status::Pending),
            "{}: played: {timeline:?}",
            db.name
        );
        assert_eq!(engine.get_pipeline(&admin, p).await.unwrap().status, Status::Canceling);
        engine.finish_job(r, stop.job_id, report(Some(0))).await.unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, p).await.unwrap().status,
            Status::Canceled,
            "{}",
            db.name
        );

        // Cancelled while the deploy runs: the stop job runs after it ends, whatever it
        // made of the environment by then.
        let (p, jobs) = pipeline(&engine, &admin, REVIEW_APP).await;
        run_next(&engine, r, Some(0)).await;
        let deploy = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(deploy.name, "deploy_review");
        engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        assert_eq!(status_of(&engine, &admin, &jobs, "test").await, Status::Canceled, "{}", db.name);
        assert_eq!(status_of(&engine, &admin, &jobs, "stop_review").await, Status::Manual);
        engine.finish_job(r, deploy.job_id, report(Some(1))).await.unwrap();
        // The pipeline is not over before its teardown has run (the manual stop job is no
        // longer optional); and a teardown that fails makes it failed: the environment
        // may still be there.
        assert_eq!(
            engine.get_pipeline(&admin, p).await.unwrap().status,
            Status::Canceling,
            "{}",
            db.name
        );
        assert_eq!(run_next(&engine, r, Some(1)).await.0, "stop_review", "{}", db.name);
        assert_eq!(status_of(&engine, &admin, &jobs, "stop_review").await, Status::Failed);
        assert_eq!(engine.get_pipeline(&admin, p).await.unwrap().status, Status::Failed, "{}", db.name);

        // Cancelled before the deploy started: there is nothing to stop.
        let (p, jobs) = pipeline(&engine, &admin, REVIEW_APP).await;
        let build = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        engine.finish_job(r, build.job_id, report(None)).await.unwrap();
        assert_eq!(
            status_of(&engine, &admin, &jobs, "stop_review").await,
            Status::Canceled,
            "{}",
            db.name
        );
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none());
        assert_eq!(engine.get_pipeline(&admin, p).await.unwrap().status, Status::Canceled);

        // Aborted after the deploy: an abort runs nothing.
        let (p, jobs) = pipeline(&engine, &admin, REVIEW_APP).await;
        run_next(&engine, r, Some(0)).await;
        run_next(&engine, r, Some(0)).await;
        engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.abort_pipeline(&admin, p, Default::default()).await.unwrap();
        assert_eq!(
            status_of(&engine, &admin, &jobs, "stop_review").await,
            Status::Canceled,
            "{}",
            db.name
        );
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none());

        // Superseded by a newer pipeline on its ref (workflow auto_cancel, conservative):
        // the newer one deploys to the same environment, so the stop job does not run.
        let config = format!("workflow:\n  auto_cancel:\n    on_new_commit: conservative\n{REVIEW_APP}");
        let (old, jobs) = pipeline(&engine, &admin, &config).await;
        run_next(&engine, r, Some(0)).await;
        let deploy = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let project = engine.get_pipeline(&admin, old).await.unwrap().project_id;
        engine
            .create_pipeline(
                &admin,
                project,
                usher_core::api::CreatePipeline {
                    git_ref: "main".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, old).await.unwrap().status,
            Status::Canceling,
            "{}",
            db.name
        );
        assert_eq!(
            status_of(&engine, &admin, &jobs, "stop_review").await,
            Status::Canceled,
            "{}",
            db.name
        );
        engine.finish_job(r, deploy.job_id, report(None)).await.unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, old).await.unwrap().status,
            Status::Canceled,
            "{}",
            db.name
        );
        engine.close().await;
    }
}

/// The cancel decides which stop jobs run from the jobs that have started; a deploy
/// that a runner claims at the same moment must not leave its environment behind (its
/// stop job cancelled because the deploy had not started when the cancel looked). Each
/// round races a claim of the deploy against the cancel; whenever the deploy started,
/// its stop job must still be there to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_starting_as_the_pipeline_is_cancelled_still_gets_its_stop_job() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (mut started, mut not_started) = (0, 0);
        for _ in 0..60 {
            let (p, jobs) = pipeline(&engine, &admin, REVIEW_APP).await;
            run_next(&engine, r, Some(0)).await;
            let (claimer, canceller) = (engine.clone(), engine.clone());
            let admin_now = admin.clone();
            // The claim lands anywhere from before the cancel starts to after it ends.
            let delay = std::time::Duration::from_micros(rand::random::<u64>() % 400);
            let cancel = tokio::spawn(async move { canceller.cancel_pipeline(&admin_now, p, Default::default()).await });
            let claim = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                claimer.claim_job(r, &[]).await.unwrap()
            });
            let (claimed, cancelled) = (claim.await.unwrap(), cancel.await.unwrap());
            cancelled.unwrap_or_else(|e| panic!("{}: {e}", db.name));
            let deploy = status_of(&engine, &admin, &jobs, "deploy_review").await;
            let stop = status_of(&engine, &admin, &jobs, "stop_review").await;
            if deploy == Status::Canceling {
                started += 1;
                assert_eq!(stop, Status::Manual, "{}: the deploy started, so its stop job must run", db.name);
            } else {
                not_started += 1;
                assert_eq!((deploy, stop), (Status::Canceled, Status::Canceled), "{}", db.name);
            }
            if let Some(job) = claimed {
                engine.finish_job(r, job.job_id, report(Some(0))).await.unwrap();
            }
            while let Some(job) = engine.claim_job(r, &[]).await.unwrap() {
                engine.finish_job(r, job.job_id, report(Some(0))).await.unwrap();
            }
        }
        println!(
            "{}: the deploy started first {started} times, the cancel {not_started} times",
            db.name
        );
        engine.close().await;
    }
}

/// A cancelled pipeline's cleanup is tried again by its `retry:` as any job is, and
/// stays a cancel: a stop job (or an `on_cancel` job) that fails once runs again, and the
/// pipeline ends `canceled`. Its other jobs are never retried during the cancel.
#[tokio::test]
async fn a_cancels_cleanup_jobs_are_retried_by_their_retry() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let config = REVIEW_APP.replace("stop_review:\n  stage: review\n", "stop_review:\n  stage: review\n  retry: 1\n")
            + "notify:\n  stage: test\n  when: on_cancel\n  retry: 1\n  script: [n]\n";
        let (p, jobs) = pipeline(&engine, &admin, &config).await;
        run_next(&engine, r, Some(0)).await;
        let deploy = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(deploy.name, "deploy_review");
        engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        // The deploy ends as it is cancelled: not retried.
        engine.finish_job(r, deploy.job_id, report(Some(1))).await.unwrap();
        let mut ran = Vec::new();
        while let Some(job) = engine.claim_job(r, &[]).await.unwrap() {
            // Each cleanup job fails its first time.
            let first = !ran.contains(&job.name);
            ran.push(job.name.clone());
            engine
                .finish_job(r, job.job_id, report(Some(if first { 1 } else { 0 })))
                .await
                .unwrap();
        }
        ran.sort();
        assert_eq!(ran, ["notify", "notify", "stop_review", "stop_review"], "{}", db.name);
        assert_eq!(
            engine.get_pipeline(&admin, p).await.unwrap().status,
            Status::Canceled,
            "{}: still a cancel, its cleanup done",
            db.name
        );
        assert_eq!(
            status_of(&engine, &admin, &jobs, "deploy_review").await,
            Status::Canceled,
            "{}",
            db.name
        );
        engine.close().await;
    }
}

/// A deploy that never ran made nothing, even after a retry: cancelled before it started,
/// retried, and cancelled again before the new attempt started, the pipeline runs no
/// stop job (an attempt that started is another matter: see above).
#[tokio::test]
async fn a_retry_of_a_deploy_that_never_ran_began_no_environment() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let (p, _) = pipeline(&engine, &admin, REVIEW_APP).await;
        run_next(&engine, r, Some(0)).await;
        engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none(), "{}", db.name);
        engine.retry_pipeline(&admin, p).await.unwrap();
        engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        assert!(
            engine.claim_job(r, &[]).await.unwrap().is_none(),
            "{}: nothing was deployed, nothing to tear down",
            db.name
        );
        assert_eq!(
            engine.get_pipeline(&admin, p).await.unwrap().status,
            Status::Canceled,
            "{}",
            db.name
        );
        engine.close().await;
    }
}
