//! The pipeline rules of `pipeline.rs` over the cases that decide them: auto-cancel,
//! the derived pipeline status, cleanup jobs and environment stop jobs after a cancel,
//! stages, `needs` and manual jobs.

use super::*;
use Status as S;

fn older(id: i64, interruptible: bool, status: Status, started: bool) -> OlderJob {
    OlderJob {
        id,
        interruptible,
        status,
        started,
        when: When::OnSuccess,
    }
}

#[test]
fn auto_cancel_modes() {
    let waiting = [
        older(1, false, S::Pending, false),
        older(2, true, S::Running, true),
        older(3, false, S::Success, true),
    ];
    // Job 3 (not interruptible) has run: conservative leaves the pipeline alone.
    assert_eq!(auto_cancel_targets(AutoCancel::Conservative, &waiting), Vec::<i64>::new());
    assert_eq!(auto_cancel_targets(AutoCancel::Interruptible, &waiting), vec![2]);
    assert_eq!(auto_cancel_targets(AutoCancel::None, &waiting), Vec::<i64>::new());
    let fresh = [
        older(1, false, S::Pending, false),
        older(2, true, S::Running, true),
        older(4, false, S::Created, false),
    ];
    assert_eq!(auto_cancel_targets(AutoCancel::Conservative, &fresh), vec![1, 2, 4]);
}

#[test]
fn derived_pipeline_status() {
    let cases: &[(&[Status], Status)] = &[
        (&[S::Created, S::Created], S::Created),
        (&[S::Pending, S::Created], S::Pending),
        (&[S::Running, S::Pending], S::Running),
        (&[S::Canceling, S::Running], S::Running),
        (&[S::Canceling, S::Pending], S::Running),
        (&[S::Canceling, S::Canceling, S::Success], S::Canceling),
        (&[S::Canceling], S::Canceling),
        (&[S::Success, S::Created], S::Running),
        (&[S::Success, S::Success], S::Success),
        (&[S::Success, S::Skipped], S::Success),
        (&[S::Canceled, S::Success], S::Canceled),
        (&[S::Canceled, S::Failed, S::Success], S::Failed),
        (&[S::Skipped], S::Skipped),
        (&[S::Canceled, S::Skipped], S::Canceled),
    ];
    for (jobs, want) in cases {
        assert_eq!(derive_status(jobs.iter().copied()), *want, "{jobs:?}");
    }
}

fn node<'a>(name: &'a str, stage_index: usize, needs: Option<&'a [String]>, status: Status) -> JobNode<'a> {
    JobNode {
        name,
        stage_index,
        needs,
        status,
        when: When::OnSuccess,
        allow_failure: false,
        on_stop: None,
        started: status.has_started(),
    }
}

fn manual<'a>(name: &'a str, stage_index: usize, status: Status, optional: bool) -> JobNode<'a> {
    JobNode {
        when: When::Manual,
        allow_failure: optional,
        ..node(name, stage_index, None, status)
    }
}

fn cleanup<'a>(name: &'a str, stage_index: usize, when: When, status: Status) -> JobNode<'a> {
    JobNode {
        when,
        ..node(name, stage_index, None, status)
    }
}

/// provision → test → a cleanup job of each kind in the last stage, after each way
/// the pipeline can end.
#[test]
fn cleanup_jobs_run_by_their_when() {
    use When::*;
    let kinds = [OnFailure, Always, OnCancel];
    let decide = |test: Status, cancel: Option<CancelMode>| -> Vec<(When, JobEvent)> {
        let mut jobs = vec![node("provision", 0, None, S::Success), node("test", 1, None, test)];
        jobs.extend(kinds.iter().map(|w| cleanup(w.as_str(), 2, *w, S::Created)));
        ready_decisions(&jobs, cancel).into_iter().map(|(i, e)| (jobs[i].when, e)).collect()
    };
    use JobEvent::{Enqueue, Skip};
    // Everything went well: only `always` runs.
    assert_eq!(decide(S::Success, None), [(OnFailure, Skip), (Always, Enqueue), (OnCancel, Skip)]);
    // A failure: on_failure and always.
    assert_eq!(decide(S::Failed, None), [(OnFailure, Enqueue), (Always, Enqueue), (OnCancel, Skip)]);
    // A graceful pipeline cancel: always and on_cancel, once test has ended…
    assert!(decide(S::Canceling, Some(CancelMode::Graceful)).is_empty());
    assert_eq!(
        decide(S::Canceled, Some(CancelMode::Graceful)),
        [(OnFailure, Skip), (Always, Enqueue), (OnCancel, Enqueue)]
    );
    // …a job cancelled on its own is no pipeline cancel.
    assert_eq!(decide(S::Canceled, None), [(OnFailure, Skip), (Always, Enqueue), (OnCancel, Skip)]);
}

#[test]
fn on_cancel_waits_for_every_other_job_whatever_its_stage() {
    // The cleanup job sits in an early stage; a later job is still being cancelled.
    let jobs = [
        node("provision", 0, None, S::Success),
        cleanup("destroy", 1, When::OnCancel, S::Created),
        node("late", 2, Some(&[]), S::Canceling),
    ];
    assert!(ready_decisions(&jobs, Some(CancelMode::Graceful)).is_empty());
    let jobs = [jobs[0].clone(), jobs[1].clone(), node("late", 2, Some(&[]), S::Canceled)];
    assert_eq!(ready_decisions(&jobs, Some(CancelMode::Graceful)), vec![(1, JobEvent::Enqueue)]);
}

/// provision → cleanup (destroy, on_cancel) → report: report waits for destroy, so
/// destroy must not wait for report (it once did: neither ever ran).
#[test]
fn on_cancel_does_not_wait_for_the_jobs_that_wait_for_it() {
    let jobs = [
        node("provision", 0, None, S::Success),
        cleanup("destroy", 1, When::OnCancel, S::Created),
        node("report", 2, None, S::Created),
    ];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Skip)]);
    let jobs = [jobs[0].clone(), cleanup("destroy", 1, When::OnCancel, S::Skipped), jobs[2].clone()];
    // A skipped cleanup job holds nothing up: report runs.
    assert_eq!(ready_decisions(&jobs, None), vec![(2, JobEvent::Enqueue)]);
    // Through `needs`, two steps away.
    let needs_destroy = vec!["destroy".to_string()];
    let needs_report = vec!["report".to_string()];
    let jobs = [
        node("provision", 0, None, S::Success),
        cleanup("destroy", 0, When::OnCancel, S::Created),
        node("report", 0, Some(&needs_destroy), S::Created),
        node("notify", 0, Some(&needs_report), S::Created),
    ];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Skip)]);
}

/// build → review (deploy_review, on_stop: stop_review; stop_review, manual) → test.
fn review_app<'a>(deploy: Status, stop: Status, test: Status) -> [JobNode<'a>; 4] {
    [
        node("build", 0, None, S::Success),
        JobNode {
            on_stop: Some("stop_review"),
            ..node("deploy_review", 1, None, deploy)
        },
        manual("stop_review", 1, stop, true),
        node("test", 2, None, test),
    ]
}

#[test]
fn a_cancel_runs_the_stop_job_of_an_environment_a_started_job_made() {
    let graceful = Some(CancelMode::Graceful);
    // Not before deploy_review has started; and without a cancel it is a manual job
    // like any other.
    assert!(!tears_down_an_environment(&review_app(S::Pending, S::Manual, S::Created), 2));
    assert!(ready_decisions(&review_app(S::Running, S::Manual, S::Created), None).is_empty());
    // Cancelled while deploy_review runs: the stop job waits for it to end...
    let jobs = review_app(S::Canceling, S::Manual, S::Canceled);
    assert!(tears_down_an_environment(&jobs, 2));
    assert_eq!(environment_teardowns(&jobs), [2]);
    assert!(ready_decisions(&jobs, graceful).is_empty());
    // ...and is then played, whatever deploy_review ended as.
    for deploy in [S::Canceled, S::Failed, S::Success] {
        let jobs = review_app(deploy, S::Manual, S::Canceled);
        assert_eq!(ready_decisions(&jobs, graceful), vec![(2, JobEvent::Play)], "{deploy}");
    }
    // A stop job in a later stage, still `created` when the cancel came, runs too.
    let mut jobs = review_app(S::Canceled, S::Created, S::Canceled);
    jobs[2].stage_index = 3;
    assert_eq!(ready_decisions(&jobs, graceful), vec![(2, JobEvent::Enqueue)]);
    // deploy_review never started: nothing to tear down, the cancel stops it as usual.
    let jobs = review_app(S::Canceled, S::Manual, S::Canceled);
    let jobs = [
        jobs[0].clone(),
        JobNode {
            started: false,
            ..jobs[1].clone()
        },
        jobs[2].clone(),
        jobs[3].clone(),
    ];
    assert!(!tears_down_an_environment(&jobs, 2));
    // An abort plays nothing.
    assert!(ready_decisions(&review_app(S::Canceled, S::Manual, S::Canceled), Some(CancelMode::Abort)).is_empty());
}

#[test]
fn a_cancelled_pipeline_is_canceling_until_its_cleanup_ends_then_canceled() {
    use When::*;
    let graceful = Some(CancelMode::Graceful);
    let status = |jobs: &[(Status, When)], cancel| pipeline_status(jobs.iter().copied(), cancel);
    assert_eq!(status(&[(S::Canceled, OnSuccess), (S::Created, OnCancel)], graceful), S::Canceling);
    assert_eq!(status(&[(S::Canceled, OnSuccess), (S::Running, OnCancel)], graceful), S::Canceling);
    // The cleanup job's own end does not change how the pipeline ended.
    assert_eq!(status(&[(S::Canceled, OnSuccess), (S::Failed, OnCancel)], graceful), S::Canceled);
    assert_eq!(
        status(
            &[(S::Success, OnSuccess), (S::Canceled, OnSuccess), (S::Success, OnCancel)],
            graceful
        ),
        S::Canceled
    );
    // Without a cancel, cleanup jobs count like any other.
    assert_eq!(status(&[(S::Failed, OnSuccess), (S::Running, OnFailure)], None), S::Running);
    assert_eq!(status(&[(S::Success, OnSuccess), (S::Skipped, OnCancel)], None), S::Success);
    assert!(!cancel_stops(CancelMode::Graceful, OnCancel) && cancel_stops(CancelMode::Abort, OnCancel));
    assert!(cancel_stops(CancelMode::Graceful, OnSuccess));
}

#[test]
fn later_stage_waits_then_runs_or_skips() {
    let jobs = [node("a", 0, None, S::Running), node("b", 1, None, S::Created)];
    assert!(ready_decisions(&jobs, None).is_empty());
    let jobs = [node("a", 0, None, S::Success), node("b", 1, None, S::Created)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Enqueue)]);
    let jobs = [node("a", 0, None, S::Canceled), node("b", 1, None, S::Created)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Skip)]);
}

#[test]
fn needs_only_waits_for_what_it_names() {
    let needs = vec!["a".to_string()];
    let jobs = [
        node("a", 0, None, S::Success),
        node("slow", 0, None, S::Running),
        node("b", 1, Some(&needs), S::Created),
    ];
    assert_eq!(ready_decisions(&jobs, None), vec![(2, JobEvent::Enqueue)]);
    let empty: Vec<String> = vec![];
    let jobs = [node("slow", 0, None, S::Running), node("c", 1, Some(&empty), S::Created)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Enqueue)]);
}

/// A manual job waits to be played once its turn comes (or is skipped after a
/// failure); an optional one lets later stages go on and does not keep its pipeline
/// from succeeding, a blocking one holds both until it is played and succeeds.
#[test]
fn manual_jobs_wait_to_be_played() {
    let jobs = [node("build", 0, None, S::Success), manual("deploy", 1, S::Created, true)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::AwaitPlay)]);
    let jobs = [node("build", 0, None, S::Failed), manual("deploy", 1, S::Created, true)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Skip)]);

    // Optional: the next stage runs, and the pipeline is a success without it.
    let jobs = [manual("deploy", 0, S::Manual, true), node("notify", 1, None, S::Created)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Enqueue)]);
    let counted_jobs = [
        (counted(S::Success, false), When::OnSuccess),
        (counted(S::Manual, true), When::Manual),
    ];
    assert_eq!(pipeline_status(counted_jobs, None), S::Success);

    // Blocking: the next stage waits, and the pipeline is `manual` meanwhile.
    let jobs = [manual("deploy", 0, S::Manual, false), node("notify", 1, None, S::Created)];
    assert!(ready_decisions(&jobs, None).is_empty());
    let counted_jobs = [(counted(S::Manual, false), When::Manual), (S::Created, When::OnSuccess)];
    assert_eq!(pipeline_status(counted_jobs, None), S::Manual);
    // Played: it is pending, the pipeline works again.
    let counted_jobs = [(S::Pending, When::Manual), (S::Created, When::OnSuccess)];
    assert_eq!(pipeline_status(counted_jobs, None), S::Pending);
    let jobs = [manual("deploy", 0, S::Success, false), node("notify", 1, None, S::Created)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Enqueue)]);

    // A job that `needs` an optional manual job waits until it is played and done.
    let needs_deploy = vec!["deploy".to_string()];
    let jobs = [
        manual("deploy", 0, S::Manual, true),
        node("smoke", 1, Some(&needs_deploy), S::Created),
    ];
    assert!(ready_decisions(&jobs, None).is_empty());
    let jobs = [
        manual("deploy", 0, S::Success, true),
        node("smoke", 1, Some(&needs_deploy), S::Created),
    ];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Enqueue)]);

    // A manual job skipped for real (its stage's prerequisites failed) stops what needs it.
    let needs = vec!["deploy".to_string()];
    let jobs = [manual("deploy", 0, S::Skipped, true), node("smoke", 1, Some(&needs), S::Created)];
    assert_eq!(ready_decisions(&jobs, None), vec![(1, JobEvent::Skip)]);
    // A graceful pipeline cancel stops a manual job, like any other that is not cleanup.
    assert!(cancel_stops(CancelMode::Graceful, When::Manual));
}
