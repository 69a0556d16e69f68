//! The plan over every status × event, and over random sequences of changes replayed on
//! a pipeline of jobs held in memory.

use rand::{Rng, SeedableRng, rngs::StdRng};
use usher_core::api::AfterScriptResult;

use super::*;

const T: &str = "2026-12-06T23:00:00.000Z";

fn job(id: i64, status: Status) -> Job {
    Job {
        id,
        pipeline_id: 1,
        project_id: 1,
        name: format!("j{id}"),
        stage: "test".into(),
        status,
        interruptible: false,
        created_at: T.into(),
        started_at: status.has_started().then(|| T.to_string()),
        finished_at: status.is_terminal().then(|| T.to_string()),
        runner_id: status.has_started().then_some(7),
        exit_code: None,
        failure_reason: None,
        cancel: None,
        after_script: None,
        tags: Vec::new(),
        waiting_for: None,
        retry_of: None,
        retried: false,
        when: When::OnSuccess,
        teardown: None,
        deferred: Vec::new(),
        allow_failure: false,
        coverage: None,
        resource_group: None,
        start_in: None,
        play_at: None,
    }
}

fn report(exit_code: Option<i32>, failure_reason: Option<FailureReason>) -> JobReport {
    JobReport {
        exit_code,
        failure_reason,
        duration_ms: 5,
        after_script: Some(AfterScriptResult {
            exit_code: Some(0),
            duration_ms: 12,
            timed_out: false,
        }),
        detail: None,
        dotenv: None,
        teardown: None,
    }
}

/// One event of each kind (and each kind of report).
fn sample_events() -> Vec<Event> {
    vec![
        Event::Enqueue,
        Event::Skip,
        Event::AwaitPlay,
        Event::Play,
        Event::Start { runner_id: 7 },
        Event::Report {
            runner_id: 7,
            report: report(Some(0), None),
            allowed_failure: false,
        },
        Event::Report {
            runner_id: 7,
            report: report(Some(3), None),
            allowed_failure: false,
        },
        Event::Report {
            runner_id: 7,
            report: report(None, Some(FailureReason::Timeout)),
            allowed_failure: false,
        },
        Event::Cancel {
            reason: CancelReason::User,
            deadline: "2026-12-06T23:05:00.000Z".into(),
            detail: None,
            message: None,
        },
        Event::Abort {
            reason: CancelReason::Pipeline,
            detail: Some("why".into()),
            message: Some("because".into()),
        },
        Event::CancelDeadline,
        Event::RunnerLost,
    ]
}

fn mv(job_id: i64, event: Event) -> Move {
    Move {
        job_id,
        event,
        by: "alice".into(),
    }
}

/// Every status × every event: the plan moves a job where core's table says, refuses
/// what the table refuses, and records exactly what the event carries.
#[test]
fn every_status_and_event() {
    for status in Status::ALL {
        for event in sample_events() {
            let current = job(1, status);
            let table = next(status, event.table_event(status));
            let decision = plan_move(&current, None, &mv(1, event.clone()), T);
            let (write, audit) = match (table, decision) {
                // Only the runner holding a job reports it; these jobs have none.
                (_, Err(EngineError::Conflict(_))) if matches!(event, Event::Report { .. }) && current.runner_id.is_none() => continue,
                (Err(_), Err(EngineError::InvalidTransition(_))) => continue,
                (Ok(Outcome::Unchanged), Ok(Decision::Unchanged)) => continue,
                (Ok(Outcome::Move(to)), Ok(Decision::Write { write, audit })) => {
                    assert_eq!((write.from, write.to), (status, to), "{status} × {event:?}");
                    (write, audit)
                }
                (table, decision) => panic!("{status} × {event:?}: table {table:?}, plan {decision:?}"),
            };
            let to = write.to;
            assert_eq!((audit.from, audit.to, audit.by.as_str()), (status, to, "alice"));
            assert_eq!(write.finished_at.is_some(), to.is_terminal(), "{status} × {event:?}");
            let starts = matches!(event, Event::Start { .. });
            assert_eq!(write.started_at.is_some(), starts);
            assert_eq!(write.runner_id, starts.then_some(7));
            let is_report = matches!(event, Event::Report { .. });
            assert_eq!(write.after_duration_ms, is_report.then_some(12), "{status} × {event:?}");
            match &event {
                Event::Cancel { deadline, .. } => {
                    assert_eq!(write.cancel_mode, Some("graceful"));
                    assert_eq!(write.cancel_deadline.as_ref(), Some(deadline));
                    assert_eq!(write.cancel_by.as_deref(), Some("alice"));
                    assert_eq!((audit.mode, audit.reason), (Some(CancelMode::Graceful), Some("user")));
                }
                Event::Abort { .. } => {
                    assert_eq!((write.cancel_mode, write.cancel_reason), (Some("abort"), Some("pipeline")));
                    assert_eq!(write.cancel_deadline, None);
                    assert_eq!(audit.detail.as_deref(), Some("why: because"));
                    assert_eq!(write.cancel_message.as_deref(), Some("because"));
                }
                Event::CancelDeadline => assert_eq!(write.cancel_reason, Some("cancel_timeout")),
                Event::RunnerLost if status == Status::Canceling => {
                    assert_eq!(
                        (to, write.cancel_reason, write.failure_reason),
                        (Status::Canceled, Some("runner_lost"), None)
                    );
                }
                Event::RunnerLost => {
                    assert_eq!(
                        (to, write.cancel_reason, write.failure_reason),
                        (Status::Failed, None, Some("runner_lost"))
                    );
                }
                Event::Report { report, .. } => {
                    assert_eq!(write.exit_code, report.exit_code.map(i64::from));
                    assert_eq!(write.failure_reason, report.recorded_failure().map(|f| f.as_str()));
                    assert_eq!(audit.detail.as_deref(), Some("after_script exited 0 in 12 ms"));
                    assert_eq!(write.cancel_mode, None);
                }
                Event::Enqueue | Event::Skip | Event::AwaitPlay | Event::Play | Event::Start { .. } => {
                    assert_eq!((write.cancel_mode, write.failure_reason, audit.detail.as_ref()), (None, None, None));
                }
            }
        }
    }
}

#[test]
fn a_timeout_reported_while_canceling_finishes_the_cancel() {
    let timeout = Event::Report {
        runner_id: 7,
        report: report(None, Some(FailureReason::Timeout)),
        allowed_failure: false,
    };
    let Decision::Write { write, .. } = plan_move(&job(1, Status::Canceling), None, &mv(1, timeout.clone()), T).unwrap() else {
        panic!("unchanged")
    };
    assert_eq!(write.to, Status::Canceled);
    let Decision::Write { write, .. } = plan_move(&job(1, Status::Running), None, &mv(1, timeout), T).unwrap() else {
        panic!("unchanged")
    };
    assert_eq!((write.to, write.failure_reason), (Status::Failed, Some("timeout")));
}

#[test]
fn a_cleanup_job_of_a_cancelled_pipeline_is_only_aborted() {
    let cancel = Event::Cancel {
        reason: CancelReason::User,
        deadline: T.into(),
        detail: None,
        message: None,
    };
    let abort = Event::Abort {
        reason: CancelReason::User,
        detail: None,
        message: None,
    };
    for status in [Status::Created, Status::Pending, Status::Running] {
        let destroy = Job {
            when: When::OnCancel,
            ..job(1, status)
        };
        let refused = plan_move(&destroy, Some(CancelMode::Graceful), &mv(1, cancel.clone()), T);
        assert!(matches!(refused, Err(EngineError::InvalidTransition(_))), "{status}: {refused:?}");
        let aborted = plan_move(&destroy, Some(CancelMode::Graceful), &mv(1, abort.clone()), T).unwrap();
        assert!(
            matches!(aborted, Decision::Write { ref write, .. } if write.to == Status::Canceled),
            "{status}"
        );
        // Outside a pipeline's teardown it is a job like any other.
        assert!(plan_move(&destroy, None, &mv(1, cancel.clone()), T).is_ok(), "{status}");
    }
}

#[test]
fn only_the_runner_holding_a_job_reports_it() {
    let from_other = Event::Report {
        runner_id: 8,
        report: report(Some(0), None),
        allowed_failure: false,
    };
    let refused = plan_move(&job(1, Status::Running), None, &mv(1, from_other), T);
    assert!(matches!(refused, Err(EngineError::Conflict(_))), "{refused:?}");
}

#[test]
fn a_batch_groups_equal_writes_and_leaves_out_what_cannot_move() {
    let jobs: HashMap<i64, Job> = [
        job(1, Status::Running),
        job(2, Status::Pending),
        job(3, Status::Running),
        job(4, Status::Success),
        job(5, Status::Canceled),
    ]
    .into_iter()
    .map(|j| (j.id, j))
    .collect();
    let cancel = Event::Cancel {
        reason: CancelReason::Pipeline,
        deadline: "2026-12-06T23:05:00.000Z".into(),
        detail: None,
        message: None,
    };
    let moves: Vec<Move> = [1, 2, 3, 4, 5].map(|id| mv(id, cancel.clone())).into();
    let plan = plan_batch(&jobs, &moves, T).unwrap();
    let groups: Vec<(Status, Status, Vec<i64>)> = plan.groups.iter().map(|(w, ids)| (w.from, w.to, ids.clone())).collect();
    assert_eq!(
        groups,
        [
            (Status::Running, Status::Canceling, vec![1, 3]),
            (Status::Pending, Status::Canceled, vec![2])
        ]
    );
    let audited: Vec<i64> = plan.audits.iter().map(|a| a.job_id).collect();
    assert_eq!(audited, [1, 2, 3]);

    let twice = [
        mv(
            1,
            Event::Abort {
                reason: CancelReason::User,
                detail: None,
                message: None,
            },
        ),
        mv(
            1,
            Event::Abort {
                reason: CancelReason::User,
                detail: None,
                message: None,
            },
        ),
    ];
    assert!(matches!(plan_batch(&jobs, &twice, T), Err(EngineError::Internal(_))));
    let unknown = [mv(99, Event::Enqueue)];
    assert!(matches!(plan_batch(&jobs, &unknown, T), Err(EngineError::NotFound(_))));
}

/// A job's row as the store's compare-and-set leaves it: the move's values where it
/// has them, the row's own elsewhere.
fn apply(job: &mut Job, w: &JobWrite) {
    assert_eq!(job.status, w.from, "a write planned from another status");
    job.status = w.to;
    job.started_at = w.started_at.clone().or(job.started_at.take());
    job.finished_at = w.finished_at.clone().or(job.finished_at.take());
    job.runner_id = w.runner_id.or(job.runner_id);
    if let Some(mode) = w.cancel_mode {
        job.cancel = Some(usher_core::api::CancelInfo {
            mode: CancelMode::parse(mode).unwrap(),
            requested_by: w.cancel_by.clone().unwrap(),
            requested_at: w.cancel_at.clone().unwrap(),
            reason: CancelReason::parse(w.cancel_reason.unwrap()).unwrap(),
            message: w.cancel_message.clone(),
        });
    }
    if let Some(reason) = w.failure_reason {
        job.failure_reason = FailureReason::parse(reason);
    }
}

fn random_event(rng: &mut StdRng) -> Event {
    let runner_id = rng.gen_range(7..=8);
    match rng.gen_range(0..11) {
        0 => Event::Enqueue,
        1 => Event::Skip,
        2 => Event::Start { runner_id },
        3 => Event::Report {
            runner_id,
            report: report(
                [None, Some(0), Some(1)][rng.gen_range(0..3)],
                [None, Some(FailureReason::Timeout), Some(FailureReason::RunnerShutdown)][rng.gen_range(0..3)],
            ),
            allowed_failure: false,
        },
        4 => Event::Cancel {
            reason: CancelReason::User,
            deadline: T.into(),
            detail: None,
            message: None,
        },
        5 => Event::Abort {
            reason: CancelReason::User,
            detail: None,
            message: None,
        },
        6 => Event::CancelDeadline,
        7 => Event::RunnerLost,
        8 => Event::AwaitPlay,
        9 => Event::Play,
        _ => Event::Enqueue,
    }
}

/// Random changes (single moves and batches) replayed on eight jobs held in memory: each
/// applied plan keeps what must always hold — a finished job never moves again, a job
/// has its end time exactly when it is finished, a started job names its runner, a
/// canceling job has a graceful cancel, the timeline of a job is an unbroken chain from
/// `created` to its status, and the pipeline's status is core's derivation of its jobs'.
#[test]
fn random_change_sequences_keep_the_invariants() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut jobs: HashMap<i64, Job> = (1..=8).map(|id| (id, job(id, Status::Created))).collect();
        for j in jobs.values_mut() {
            j.runner_id = None;
        }
        let mut timelines: HashMap<i64, Vec<Audit>> = HashMap::new();
        let mut pipeline = Pipeline {
            id: 1,
            project_id: 1,
            git_ref: "main".into(),
            status: Status::Created,
            created_at: T.into(),
            started_at: None,
            finished_at: None,
            triggered_by: "alice".into(),
            cancel: None,
            sha: None,
            commit_title: None,
            jobs: None,
        };
        for _ in 0..40 {
            let size = rng.gen_range(1..=4);
            let mut ids: Vec<i64> = (1..=8).collect();
            let moves: Vec<Move> = (0..size)
                .map(|_| {
                    let id = ids.remove(rng.gen_range(0..ids.len()));
                    mv(id, random_event(&mut rng))
                })
                .collect();
            let before: HashMap<i64, Status> = jobs.iter().map(|(id, j)| (*id, j.status)).collect();
            let plan = if size == 1 {
                match plan_move(&jobs[&moves[0].job_id], None, &moves[0], T) {
                    Ok(Decision::Write { write, audit }) => BatchPlan {
                        groups: vec![(*write, vec![moves[0].job_id])],
                        audits: vec![audit],
                    },
                    Ok(Decision::Unchanged) | Err(_) => BatchPlan::default(),
                }
            } else {
                match plan_batch(&jobs, &moves, T) {
                    Ok(plan) => plan,
                    Err(EngineError::Conflict(_)) => continue,
                    Err(e) => panic!("seed {seed}: {e}"),
                }
            };
            for (write, ids) in &plan.groups {
                for id in ids {
                    assert!(!before[id].is_terminal(), "seed {seed}: finished job {id} moved");
                    apply(jobs.get_mut(id).unwrap(), write);
                }
            }
            for audit in plan.audits {
                timelines.entry(audit.job_id).or_default().push(audit);
            }
            for (id, j) in &jobs {
                let why = format!("seed {seed}, job {id}: {j:?}");
                assert_eq!(j.finished_at.is_some(), j.status.is_terminal(), "{why}");
                if j.status.is_active() {
                    assert!(j.started_at.is_some() && j.runner_id.is_some(), "{why}");
                }
                if j.status == Status::Canceling {
                    assert_eq!(j.cancel.as_ref().map(|c| c.mode), Some(CancelMode::Graceful), "{why}");
                }
                let chain = timelines.get(id).map(Vec::as_slice).unwrap_or_default();
                let mut at = Status::Created;
                for entry in chain {
                    assert_eq!(entry.from, at, "{why}: timeline {chain:?}");
                    at = entry.to;
                }
                assert_eq!(at, j.status, "{why}: timeline {chain:?}");
            }
            let statuses: Vec<(Status, When)> = jobs.values().map(|j| (j.status, j.when)).collect();
            if let Some(after) = pipeline_after(&pipeline, &statuses, T) {
                pipeline = after;
            }
            assert_eq!(pipeline.status, pipeline_status(statuses.iter().copied(), None), "seed {seed}");
            assert_eq!(pipeline.finished_at.is_some(), pipeline.status.is_terminal(), "seed {seed}");
        }
    }
}
