//! GitLab's keywords at work, on both databases: which jobs a pipeline gets from
//! `rules`, `only`, `except` and `workflow: rules`; what a job sees (`CI_PIPELINE_SOURCE`,
//! a rule's variables, `CI_NODE_INDEX` of a `parallel` copy); the refusals when the rules
//! leave nothing; and `allow_failure`.

use crate::common::*;
use usher_core::api::{CreatePipeline, CreateProject};
use usher_engine::{Actor, Engine, EngineError, Origin};

async fn project(engine: &Engine, admin: &Actor, config: &str) -> i64 {
    let create = CreateProject {
        name: format!("p{}", rand::random::<u32>()),
        ci_config: Some(config.into()),
        ..Default::default()
    };
    engine.create_project(admin, create).await.unwrap().id
}

async fn run(engine: &Engine, admin: &Actor, project: i64, git_ref: &str, origin: Origin) -> Result<Vec<String>, EngineError> {
    let req = CreatePipeline {
        git_ref: git_ref.into(),
        ..Default::default()
    };
    let p = engine.create_pipeline_from(admin, project, req, origin).await?;
    Ok(p.jobs.unwrap().into_iter().map(|j| j.name).collect())
}

const CONFIG: &str = r#"
variables:
  DEPLOY_FROM: main
build:
  script: [make]
docs:
  script: [make docs]
  only: [main, /^docs-/]
nightly:
  script: [run]
  only:
    refs: [branches]
    variables: [$CI_PIPELINE_SOURCE == "web"]
not-on-main:
  script: [x]
  except: [main]
deploy:
  script: [deploy]
  rules:
    - if: $CI_COMMIT_BRANCH == $DEPLOY_FROM && $CI_PIPELINE_SOURCE != "web"
      variables: {TARGET: production}
    - if: $CI_COMMIT_REF_NAME =~ /^review\//
      when: always
      variables: {TARGET: review}
    - when: never
"#;

#[tokio::test]
async fn rules_only_and_except_choose_the_jobs_with_gitlab_meaning() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let p = project(&engine, &admin, CONFIG).await;
        let api_main = run(&engine, &admin, p, "main", Origin::Api).await.unwrap();
        assert_eq!(api_main, ["build", "docs", "deploy"], "{}", db.name);
        let web_main = run(&engine, &admin, p, "main", Origin::Web).await.unwrap();
        assert_eq!(web_main, ["build", "docs", "nightly"], "{}", db.name);
        let docs = run(&engine, &admin, p, "docs-fix", Origin::Api).await.unwrap();
        assert_eq!(docs, ["build", "docs", "not-on-main"], "{}", db.name);
        let review = run(&engine, &admin, p, "review/x", Origin::Push).await.unwrap();
        assert_eq!(review, ["build", "not-on-main", "deploy"], "{}", db.name);

        // What the job sees: the rule's variables, where the pipeline came from.
        let r = runner(&engine, "r").await;
        let mut deploy = None;
        while let Some(job) = engine.claim_job(r, &[]).await.unwrap() {
            if job.name == "deploy" {
                deploy = Some(job);
            }
        }
        let deploy = deploy.expect("a deploy job ran");
        let var = |k: &str| deploy.variables.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (target, source) = (var("TARGET"), var("CI_PIPELINE_SOURCE"));
        assert!(
            (target.as_deref(), source.as_deref()) == (Some("production"), Some("api"))
                || (target.as_deref(), source.as_deref()) == (Some("review"), Some("push")),
            "{}: {target:?} {source:?}",
            db.name
        );
        engine.close().await;
    }
}

#[tokio::test]
async fn rules_that_leave_nothing_make_no_pipeline_and_say_why() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let workflow =
            "workflow:\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"push\"\n      when: never\n    - when: always\njob:\n  script: [x]\n";
        let p = project(&engine, &admin, workflow).await;
        assert!(run(&engine, &admin, p, "main", Origin::Api).await.is_ok());
        let refused = run(&engine, &admin, p, "main", Origin::Push).await.unwrap_err();
        assert!(matches!(refused, EngineError::NoPipeline(_)), "{}: {refused:?}", db.name);
        assert!(refused.to_string().contains("workflow: rules"), "{refused}");

        let none = project(&engine, &admin, "a:\n  script: [x]\n  only: [release]\n").await;
        let refused = run(&engine, &admin, none, "main", Origin::Api).await.unwrap_err();
        assert!(refused.to_string().contains("leave every one out"), "{refused}");

        let needs_gone = "build:\n  script: [x]\n  only: [release]\ntest:\n  needs: [build]\n  script: [y]\n";
        let p = project(&engine, &admin, needs_gone).await;
        let refused = run(&engine, &admin, p, "main", Origin::Api).await.unwrap_err();
        assert!(refused.to_string().contains("needs `build`"), "{refused}");
        engine.close().await;
    }
}

#[tokio::test]
async fn parallel_copies_know_their_index() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let p = project(&engine, &admin, "test:\n  parallel: 2\n  script: [x]\n").await;
        assert_eq!(
            run(&engine, &admin, p, "main", Origin::Api).await.unwrap(),
            ["test 1/2", "test 2/2"]
        );
        let r = runner(&engine, "r").await;
        let first = engine.claim_job(r, &[]).await.unwrap().unwrap();
        let var = |k: &str| first.variables.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            (var("CI_NODE_INDEX"), var("CI_NODE_TOTAL")),
            (Some("1".into()), Some("2".into())),
            "{}",
            db.name
        );
        engine.close().await;
    }
}

#[tokio::test]
async fn an_allowed_failure_neither_fails_the_pipeline_nor_stops_later_stages() {
    use usher_core::status::Status;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let config = "lint:\n  stage: build\n  allow_failure: true\n  script: [x]\ntest:\n  stage: test\n  script: [y]\nnotify:\n  stage: deploy\n  when: on_failure\n  script: [z]\n";
        let (pipeline_id, jobs) = pipeline(&engine, &admin, config).await;
        assert!(jobs.iter().find(|j| j.name == "lint").unwrap().allow_failure);
        let r = runner(&engine, "r").await;
        let finish = |code| report(Some(code));
        let lint = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(engine.finish_job(r, lint.job_id, finish(1)).await.unwrap(), Status::Failed);
        let test = engine.claim_job(r, &[]).await.unwrap().expect("the next stage runs");
        assert_eq!(test.name, "test", "{}", db.name);
        engine.finish_job(r, test.job_id, finish(0)).await.unwrap();
        let p = engine.get_pipeline(&admin, pipeline_id).await.unwrap();
        assert_eq!(p.status, Status::Success, "{}", db.name);
        let notify = p.jobs.unwrap().into_iter().find(|j| j.name == "notify").unwrap();
        assert_eq!(notify.status, Status::Skipped, "{}: on_failure does not run", db.name);

        // `exit_codes`: only those exits are allowed failures. Reports as a runner sends
        // them: a non-zero exit says `script_failure`.
        let script_failed = |code: i32| usher_core::protocol::JobReport {
            failure_reason: Some(usher_core::api::FailureReason::ScriptFailure),
            ..report(Some(code))
        };
        let config = "flaky:\n  allow_failure:\n    exit_codes: [3, 137]\n  script: [x]\n";
        for (code, allowed, pipeline_status) in [(3, true, Status::Success), (1, false, Status::Failed)] {
            let (pipeline_id, jobs) = pipeline(&engine, &admin, config).await;
            assert!(!jobs[0].allow_failure, "{}: not known before it ends", db.name);
            let job = engine.claim_job(r, &[]).await.unwrap().unwrap();
            assert_eq!(engine.finish_job(r, job.job_id, script_failed(code)).await.unwrap(), Status::Failed);
            let p = engine.get_pipeline(&admin, pipeline_id).await.unwrap();
            assert_eq!(p.status, pipeline_status, "{}: exit {code}", db.name);
            assert_eq!(p.jobs.unwrap()[0].allow_failure, allowed, "{}: exit {code}", db.name);
        }
        // The allowance is the attempt's: a retry after an allowed exit starts without it.
        let config = "flaky:\n  retry: 1\n  allow_failure:\n    exit_codes: [3]\n  script: [x]\n";
        let (pipeline_id, _) = pipeline(&engine, &admin, config).await;
        let first = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.finish_job(r, first.job_id, script_failed(3)).await.unwrap();
        let second = engine.claim_job(r, &[]).await.unwrap().expect("retried by its `retry:`");
        assert!(!engine.get_job(&admin, second.job_id).await.unwrap().allow_failure, "{}", db.name);
        engine.finish_job(r, second.job_id, script_failed(1)).await.unwrap();
        let p = engine.get_pipeline(&admin, pipeline_id).await.unwrap();
        assert_eq!(p.status, Status::Failed, "{}: the second attempt's exit 1 is not allowed", db.name);
        engine.close().await;
    }
}

#[tokio::test]
async fn workflow_variables_reach_job_rules_and_optional_needs_of_left_out_jobs_drop() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let config = r#"
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "web"
      variables: {KIND: manual-run}
    - when: always
lint:
  script: [x]
  rules:
    - if: $KIND == "manual-run"
build:
  stage: build
  script: [y]
  only: [release]
test:
  needs: [{job: build, optional: true}, lint]
  script: [z]
"#;
        let p = project(&engine, &admin, config).await;
        let web = run(&engine, &admin, p, "main", Origin::Web).await.unwrap();
        assert_eq!(web, ["lint", "test"], "{}", db.name);
        // Without the workflow's variable lint is left out, and test's need on it is not
        // optional: refused.
        let refused = run(&engine, &admin, p, "main", Origin::Api).await.unwrap_err();
        assert!(refused.to_string().contains("needs `lint`"), "{}: {refused}", db.name);
        engine.close().await;
    }
}

#[tokio::test]
async fn retry_tries_a_failed_job_again_as_often_and_on_the_failures_it_says() {
    use usher_core::status::Status;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let config = "flaky:\n  retry: 1\n  script: [x]\nstrict:\n  retry:\n    max: 2\n    when: runner_system_failure\n  script: [y]\n";
        let (pipeline_id, _) = pipeline(&engine, &admin, config).await;
        let r = runner(&engine, "r").await;
        let failed = |code| report(Some(code));
        // Both fail by their script: flaky is tried once more, strict is not.
        for _ in 0..2 {
            let job = engine.claim_job(r, &[]).await.unwrap().unwrap();
            engine.finish_job(r, job.job_id, failed(1)).await.unwrap();
        }
        let again = engine.claim_job(r, &[]).await.unwrap().expect("flaky's second attempt");
        assert_eq!(again.name, "flaky", "{}", db.name);
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none(), "{}: no other attempt", db.name);
        engine.finish_job(r, again.job_id, failed(1)).await.unwrap();
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none(), "{}: one retry only", db.name);
        let p = engine.get_pipeline(&admin, pipeline_id).await.unwrap();
        assert_eq!(p.status, Status::Failed, "{}", db.name);
        let flaky: Vec<bool> = p.jobs.unwrap().iter().filter(|j| j.name == "flaky").map(|j| j.retried).collect();
        assert_eq!(flaky, [true, false], "{}: the first attempt, retried, and the second", db.name);
        engine.close().await;
    }
}

#[tokio::test]
async fn coverage_comes_from_the_last_matching_line_of_the_log() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let config = "test:\n  coverage: '/^TOTAL.+?(\\d+(?:\\.\\d+)?)%$/'\n  script: [pytest --cov]\n";
        let (_, jobs) = pipeline(&engine, &admin, config).await;
        let r = runner(&engine, "r").await;
        let job = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine
            .append_log(
                r,
                job.job_id,
                0,
                "Name    Stmts   Miss  Cover\nTOTAL      120     12    90%\nfix\nTOTAL      120      9    92.5%\n",
            )
            .await
            .unwrap();
        let done = report(Some(0));
        engine.finish_job(r, job.job_id, done).await.unwrap();
        let seen = engine.get_job(&admin, jobs[0].id).await.unwrap();
        assert_eq!(seen.coverage, Some(92.5), "{}", db.name);
        engine.close().await;
    }
}

/// `when: manual`: the job waits in `manual` once its turn comes, until someone who may
/// play it does. An optional one (GitLab's default for `when: manual`) lets the next stage
/// run and the pipeline succeed without it; one a rule makes manual blocks both.
#[tokio::test]
async fn manual_jobs_wait_to_be_played_optional_or_blocking() {
    use usher_core::roles::Role;
    use usher_core::status::Status;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let optional = "build:\n  stage: build\n  script: [b]\nreview:\n  stage: test\n  when: manual\n  script: [r]\nnotify:\n  stage: deploy\n  script: [n]\n";
        let (pipeline_id, jobs) = pipeline(&engine, &admin, optional).await;
        let review = jobs.iter().find(|j| j.name == "review").unwrap();
        assert!(review.allow_failure, "{}: a manual job may fail unless it says otherwise", db.name);
        let r = runner(&engine, "r").await;
        let build = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.finish_job(r, build.job_id, report(Some(0))).await.unwrap();
        let notify = engine.claim_job(r, &[]).await.unwrap().expect("the next stage runs without review");
        assert_eq!(notify.name, "notify", "{}", db.name);
        engine.finish_job(r, notify.job_id, report(Some(0))).await.unwrap();
        let p = engine.get_pipeline(&admin, pipeline_id).await.unwrap();
        assert_eq!(p.status, Status::Success, "{}: nobody played review", db.name);
        assert_eq!(engine.job_status(review.id).await.unwrap(), Status::Manual, "{}", db.name);

        // Only a developer or more may play it, and only while it is manual.
        engine.add_user("viewer", Role::Viewer, None).await.unwrap();
        let viewer = engine
            .authenticate_token(&engine.create_api_token("viewer").await.unwrap())
            .await
            .unwrap();
        assert!(
            matches!(engine.play_job(&viewer, review.id).await, Err(EngineError::Forbidden { .. })),
            "{}",
            db.name
        );
        assert!(
            matches!(engine.play_job(&admin, build.job_id).await, Err(EngineError::InvalidTransition(_))),
            "{}",
            db.name
        );
        let played = engine.play_job(&admin, review.id).await.unwrap();
        assert_eq!(played.status, Status::Pending, "{}", db.name);
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Running,
            "{}",
            db.name
        );
        let timeline = engine.job_timeline(&admin, review.id).await.unwrap();
        let play = timeline
            .iter()
            .find(|e| e.to == Status::Pending)
            .expect("the play is in the timeline");
        assert_eq!(
            (play.from, play.actor.as_str()),
            (Some(Status::Manual), admin.name.as_str()),
            "{}",
            db.name
        );
        let claimed = engine.claim_job(r, &[]).await.unwrap().expect("a runner takes the played job");
        assert_eq!(claimed.job_id, review.id, "{}", db.name);
        engine.finish_job(r, review.id, report(Some(0))).await.unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Success,
            "{}",
            db.name
        );

        // A rule's `when: manual` blocks: publish waits, the pipeline is `manual`.
        let blocking = "build:\n  stage: build\n  script: [b]\nrelease:\n  stage: test\n  script: [r]\n  rules:\n    - when: manual\npublish:\n  stage: deploy\n  script: [p]\n";
        let (pipeline_id, jobs) = pipeline(&engine, &admin, blocking).await;
        let release = jobs.iter().find(|j| j.name == "release").unwrap().id;
        let build = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.finish_job(r, build.job_id, report(Some(0))).await.unwrap();
        assert!(
            engine.claim_job(r, &[]).await.unwrap().is_none(),
            "{}: publish waits for release",
            db.name
        );
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Manual,
            "{}",
            db.name
        );
        engine.play_job(&admin, release).await.unwrap();
        let claimed = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(claimed.job_id, release, "{}", db.name);
        engine.finish_job(r, release, report(Some(0))).await.unwrap();
        let publish = engine
            .claim_job(r, &[])
            .await
            .unwrap()
            .expect("publish runs once release succeeded");
        assert_eq!(publish.name, "publish", "{}", db.name);
        engine.finish_job(r, publish.job_id, report(Some(0))).await.unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Success,
            "{}",
            db.name
        );

        // Cancelling a pipeline that waits for a manual job ends it: nothing is left waiting.
        let (pipeline_id, jobs) = pipeline(&engine, &admin, blocking).await;
        let build = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.finish_job(r, build.job_id, report(Some(0))).await.unwrap();
        let cancelled = engine.cancel_pipeline(&admin, pipeline_id, Default::default()).await.unwrap();
        assert_eq!(cancelled.status, Status::Canceled, "{}", db.name);
        let release = jobs.iter().find(|j| j.name == "release").unwrap().id;
        assert_eq!(engine.job_status(release).await.unwrap(), Status::Canceled, "{}", db.name);
        engine.close().await;
    }
}

/// `workflow: auto_cancel: on_job_failure: all`: an allowed failure changes nothing; the
/// first real failure cancels the rest gracefully (running jobs wind down, waiting ones
/// end), and the cleanup job still runs; the pipeline ends `failed`.
#[tokio::test]
async fn on_job_failure_all_cancels_the_rest_and_cleanup_still_runs() {
    use usher_core::api::CancelReason;
    use usher_core::status::Status;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let config = "workflow:\n  auto_cancel:\n    on_job_failure: all\nlint:\n  stage: build\n  allow_failure: true\n  script: [l]\nunit:\n  stage: build\n  script: [u]\nslow:\n  stage: build\n  script: [s]\nintegration:\n  stage: test\n  script: [i]\nteardown:\n  stage: deploy\n  when: always\n  script: [t]\n";
        let (pipeline_id, jobs) = pipeline(&engine, &admin, config).await;
        let id = |name: &str| jobs.iter().find(|j| j.name == name).unwrap().id;
        let r = runner(&engine, "r").await;
        let mut claimed = Vec::new();
        for _ in 0..3 {
            claimed.push(engine.claim_job(r, &[]).await.unwrap().unwrap().job_id);
        }
        assert_eq!(claimed, [id("lint"), id("unit"), id("slow")], "{}", db.name);
        engine.finish_job(r, id("lint"), report(Some(1))).await.unwrap();
        assert_eq!(
            engine.job_status(id("slow")).await.unwrap(),
            Status::Running,
            "{}: an allowed failure",
            db.name
        );

        engine.finish_job(r, id("unit"), report(Some(2))).await.unwrap();
        let slow = engine.get_job(&admin, id("slow")).await.unwrap();
        assert_eq!(slow.status, Status::Canceling, "{}", db.name);
        assert_eq!(slow.cancel.as_ref().map(|c| c.reason), Some(CancelReason::JobFailed), "{}", db.name);
        let timeline = engine.job_timeline(&admin, id("slow")).await.unwrap();
        let detail = timeline.last().and_then(|e| e.detail.clone()).unwrap_or_default();
        assert!(detail.contains("unit"), "{}: {detail}", db.name);
        assert_eq!(engine.job_status(id("integration")).await.unwrap(), Status::Canceled, "{}", db.name);
        assert_eq!(
            engine.job_status(id("teardown")).await.unwrap(),
            Status::Created,
            "{}: waits for slow",
            db.name
        );

        engine.finish_job(r, id("slow"), report(Some(0))).await.unwrap();
        let teardown = engine.claim_job(r, &[]).await.unwrap().expect("the cleanup job runs");
        assert_eq!(teardown.job_id, id("teardown"), "{}", db.name);
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Canceling,
            "{}",
            db.name
        );
        engine.finish_job(r, teardown.job_id, report(Some(0))).await.unwrap();
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Failed,
            "{}",
            db.name
        );
        engine.close().await;
    }
}

/// `workflow: timeout`: a pipeline still running when it runs out is cancelled
/// gracefully (reason `timeout`); its cleanup job still runs; one without a timeout, or
/// before it runs out, is left alone.
#[tokio::test]
async fn a_pipeline_past_its_workflow_timeout_is_cancelled_and_cleans_up() {
    use usher_core::api::CancelReason;
    use usher_core::status::Status;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let config = "workflow:\n  timeout: 1h\nwork:\n  script: [w]\nteardown:\n  stage: deploy\n  when: always\n  script: [t]\n";
        let (pipeline_id, jobs) = pipeline(&engine, &admin, config).await;
        let (untimed, _) = pipeline(&engine, &admin, "work:\n  script: [w]\n").await;
        let r = runner(&engine, "r").await;
        let work = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(work.job_id, jobs[0].id, "{}", db.name);
        let in_30_minutes = usher_engine::format_time(chrono::Utc::now() + chrono::Duration::minutes(30));
        assert_eq!(
            engine.reap_timed_out_pipelines_as_of(&in_30_minutes).await.unwrap(),
            0,
            "{}",
            db.name
        );
        let in_2_hours = usher_engine::format_time(chrono::Utc::now() + chrono::Duration::hours(2));
        assert_eq!(
            engine.reap_timed_out_pipelines_as_of(&in_2_hours).await.unwrap(),
            1,
            "{}: only the one with a timeout",
            db.name
        );
        let p = engine.get_pipeline(&admin, pipeline_id).await.unwrap();
        assert_eq!(p.cancel.as_ref().map(|c| c.reason), Some(CancelReason::Timeout), "{}", db.name);
        assert_eq!(engine.job_status(work.job_id).await.unwrap(), Status::Canceling, "{}", db.name);
        assert_eq!(engine.get_pipeline(&admin, untimed).await.unwrap().cancel, None, "{}", db.name);
        engine.finish_job(r, work.job_id, report(Some(0))).await.unwrap();
        // The other pipeline's job, then the cleanup job.
        let mut names = Vec::new();
        while let Some(job) = engine.claim_job(r, &[]).await.unwrap() {
            names.push(job.name.clone());
            engine.finish_job(r, job.job_id, report(Some(0))).await.unwrap();
        }
        assert!(names.contains(&"teardown".to_string()), "{}: {names:?}", db.name);
        assert_eq!(
            engine.get_pipeline(&admin, pipeline_id).await.unwrap().status,
            Status::Canceled,
            "{}",
            db.name
        );
        assert_eq!(
            engine.reap_timed_out_pipelines_as_of(&in_2_hours).await.unwrap(),
            0,
            "{}: once",
            db.name
        );
        // Finished, its timeout is spent: a retry runs without one.
        engine.retry_pipeline(&admin, pipeline_id).await.unwrap();
        let again = engine.reap_timed_out_pipelines_as_of(&in_2_hours).await.unwrap();
        assert_eq!(again, 0, "{}: after a retry", db.name);
        engine.close().await;
    }
}

/// `resource_group`: across the pipelines of a project at most one job of a group runs;
/// the others wait in `pending` (saying which job holds the group) while other jobs go
/// on, and the oldest goes next. Another project's group of the same name is its own.
/// On PostgreSQL, claimers on two replicas at once never start two of a group.
#[tokio::test]
async fn a_resource_group_runs_one_job_at_a_time_across_pipelines_and_replicas() {
    use usher_core::status::Status;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        // Pipelines on one ref would supersede each other: not here.
        let keep = "workflow:\n  auto_cancel:\n    on_new_commit: none\n";
        let config = format!("{keep}deploy:\n  resource_group: production\n  script: [d]\nlint:\n  script: [l]\n");
        let config = config.as_str();
        let p = project(&engine, &admin, config).await;
        run(&engine, &admin, p, "main", Origin::Api).await.unwrap();
        run(&engine, &admin, p, "main", Origin::Api).await.unwrap();
        let r = runner(&engine, "r").await;
        let mut claimed = Vec::new();
        while let Some(job) = engine.claim_job(r, &[]).await.unwrap() {
            claimed.push((job.name.clone(), job.job_id, job.pipeline_id));
        }
        let names: Vec<&str> = claimed.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["deploy", "lint", "lint"], "{}: the second deploy waits", db.name);
        let first_deploy = claimed[0].1;
        let second_pipeline = claimed[2].2;
        let waiting = engine.get_pipeline(&admin, second_pipeline).await.unwrap().jobs.unwrap();
        let waiting = waiting.into_iter().find(|j| j.name == "deploy").unwrap();
        assert_eq!(waiting.status, Status::Pending, "{}", db.name);
        assert_eq!(
            waiting.waiting_for.as_deref(),
            Some(format!("the resource group production (held by job #{first_deploy})").as_str()),
            "{}",
            db.name
        );
        // Another project's `production` is another group.
        let other = project(&engine, &admin, config).await;
        run(&engine, &admin, other, "main", Origin::Api).await.unwrap();
        let theirs = engine.claim_job(r, &[]).await.unwrap().expect("another project's group is free");
        assert_eq!(theirs.name, "deploy", "{}", db.name);
        engine.finish_job(r, theirs.job_id, report(Some(0))).await.unwrap();
        // The rest of that project; this project's deploy still waits meanwhile.
        while let Some(job) = engine.claim_job(r, &[]).await.unwrap() {
            assert_ne!(job.job_id, waiting.id, "{}", db.name);
            engine.finish_job(r, job.job_id, report(Some(0))).await.unwrap();
        }
        // Ended, the group goes to the oldest waiting job.
        engine.finish_job(r, first_deploy, report(Some(0))).await.unwrap();
        let next = engine.claim_job(r, &[]).await.unwrap().expect("the group is free again");
        assert_eq!(next.job_id, waiting.id, "{}", db.name);
        engine.finish_job(r, next.job_id, report(Some(0))).await.unwrap();
        while let Some(job) = engine.claim_job(r, &[]).await.unwrap() {
            engine.finish_job(r, job.job_id, report(Some(0))).await.unwrap();
        }

        if db.name == "postgres" {
            // Two replicas, eight claimers at once: runners with tag `a` on one, with
            // `b` on the other, and one deploy of the group for each tag — so each
            // claimer sees a job of the group it may take. One starts, each round.
            let replica = Engine::open(&db.url).await.unwrap();
            let two = format!(
                "{keep}deploy-a:\n  resource_group: production\n  tags: [a]\n  script: [d]\n\
                 deploy-b:\n  resource_group: production\n  tags: [b]\n  script: [d]\n"
            );
            let single = project(&engine, &admin, &two).await;
            let tagged = |e: Engine, name: &'static str| async move {
                let token = e.create_runner_token().await.unwrap();
                let token_id = e.authenticate_runner(&token).await.unwrap();
                e.register_runner(name, token_id, None, &[name.to_string()]).await.unwrap()
            };
            let runners = [
                (engine.clone(), tagged(engine.clone(), "a").await),
                (replica.clone(), tagged(replica.clone(), "b").await),
            ];
            for round in 0..5 {
                run(&engine, &admin, single, "main", Origin::Api).await.unwrap();
                let mut claims = Vec::new();
                for i in 0..8 {
                    let (e, r) = runners[i % 2].clone();
                    let tags = vec![if i % 2 == 0 { "a".to_string() } else { "b".to_string() }];
                    claims.push(tokio::spawn(
                        async move { e.claim_job(r, &tags).await.unwrap().map(|j| (r, j.job_id)) },
                    ));
                }
                let mut got = Vec::new();
                for claim in claims {
                    got.extend(claim.await.unwrap());
                }
                assert_eq!(got.len(), 1, "round {round}: {got:?}");
                let (r, job) = got[0];
                engine.finish_job(r, job, report(Some(0))).await.unwrap();
                // Then the round's other deploy, by whichever runner may take it.
                let mut next = None;
                for (e, r) in &runners {
                    let tags = vec![if *r == runners[0].1 { "a".to_string() } else { "b".to_string() }];
                    if let Some(j) = e.claim_job(*r, &tags).await.unwrap() {
                        next = Some((*r, j.job_id));
                    }
                }
                let (r, job) = next.expect("the other deploy of the round");
                engine.finish_job(r, job, report(Some(0))).await.unwrap();
            }
            replica.close().await;
        }
        engine.close().await;
    }
}

/// `when: delayed`: once its stage comes, the job waits in `manual` with a `play_at`
/// its `start_in` away, and the reaper plays it then; Play runs it sooner, a cancel
/// ends the wait.
#[tokio::test]
async fn a_delayed_job_waits_its_start_in_then_runs() {
    use usher_core::api::When;
    use usher_core::status::Status;
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        let config = "stages: [build, deploy, verify]\nbuild:\n  stage: build\n  script: [b]\ndeploy:\n  stage: deploy\n  when: delayed\n  start_in: 30 minutes\n  script: [d]\nverify:\n  stage: verify\n  script: [v]\n";
        let (_, jobs) = pipeline(&engine, &admin, config).await;
        let deploy = jobs.iter().find(|j| j.name == "deploy").unwrap().id;
        let later = |minutes: i64| usher_engine::format_time(chrono::Utc::now() + chrono::Duration::minutes(minutes));

        let before = later(0);
        let build = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.finish_job(r, build.job_id, report(Some(0))).await.unwrap();
        let waiting = engine.get_job(&admin, deploy).await.unwrap();
        assert_eq!(
            (waiting.status, waiting.when, waiting.start_in),
            (Status::Manual, When::Delayed, Some(1800)),
            "{}",
            db.name
        );
        let play_at = waiting.play_at.clone().expect("a waiting delayed job says when it runs");
        assert!(
            play_at >= later(29) && play_at > before && play_at <= later(31),
            "{}: {play_at}",
            db.name
        );
        assert!(
            engine.claim_job(r, &[]).await.unwrap().is_none(),
            "{}: verify waits for deploy",
            db.name
        );

        // Not yet; then, its time come, the reaper plays it as `system`.
        assert_eq!(engine.play_due_delayed_jobs_as_of(&later(20)).await.unwrap(), 0, "{}", db.name);
        assert_eq!(engine.get_job(&admin, deploy).await.unwrap().status, Status::Manual);
        assert_eq!(engine.play_due_delayed_jobs_as_of(&later(31)).await.unwrap(), 1, "{}", db.name);
        let played = engine.get_job(&admin, deploy).await.unwrap();
        assert_eq!((played.status, played.play_at), (Status::Pending, None), "{}", db.name);
        let timeline = engine.job_timeline(&admin, deploy).await.unwrap();
        let play = timeline.iter().find(|e| e.to == Status::Pending).unwrap();
        assert_eq!((play.from, play.actor.as_str()), (Some(Status::Manual), "system"), "{}", db.name);
        assert_eq!(
            engine.play_due_delayed_jobs_as_of(&later(31)).await.unwrap(),
            0,
            "{}: once",
            db.name
        );
        let claimed = engine.claim_job(r, &[]).await.unwrap().unwrap();
        assert_eq!(claimed.name, "deploy");
        engine.finish_job(r, claimed.job_id, report(Some(0))).await.unwrap();
        assert_eq!(engine.claim_job(r, &[]).await.unwrap().unwrap().name, "verify", "{}", db.name);

        // Played sooner by a user: it runs at once, and the reaper has nothing left to do.
        let (_, jobs) = pipeline(&engine, &admin, config).await;
        let build = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.finish_job(r, build.job_id, report(Some(0))).await.unwrap();
        let deploy = jobs.iter().find(|j| j.name == "deploy").unwrap().id;
        assert_eq!(
            engine.play_job(&admin, deploy).await.unwrap().status,
            Status::Pending,
            "{}",
            db.name
        );
        assert_eq!(engine.play_due_delayed_jobs_as_of(&later(31)).await.unwrap(), 0, "{}", db.name);
        engine
            .abort_pipeline(&admin, jobs[0].pipeline_id, Default::default())
            .await
            .unwrap();

        // Cancelled while it waits: it never runs.
        let (p, jobs) = pipeline(&engine, &admin, config).await;
        let build = engine.claim_job(r, &[]).await.unwrap().unwrap();
        engine.finish_job(r, build.job_id, report(Some(0))).await.unwrap();
        engine.cancel_pipeline(&admin, p, Default::default()).await.unwrap();
        let deploy = jobs.iter().find(|j| j.name == "deploy").unwrap().id;
        assert_eq!(
            engine.get_job(&admin, deploy).await.unwrap().status,
            Status::Canceled,
            "{}",
            db.name
        );
        assert_eq!(engine.play_due_delayed_jobs_as_of(&later(31)).await.unwrap(), 0, "{}", db.name);
        assert!(engine.claim_job(r, &[]).await.unwrap().is_none());
        engine.close().await;
    }
}
