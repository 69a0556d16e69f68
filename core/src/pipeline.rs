//! Pipeline rules that follow from the jobs: the derived pipeline status, which waiting
//! (`created`) jobs may now be enqueued or must be skipped, and which jobs a cancel of
//! the pipeline stops.
//!
//! A pipeline's status is never decided on its own: it is always [`pipeline_status`] of
//! its jobs and its cancel (the store keeps a copy, rewritten in the same transaction as
//! every job change).
//!
//! Cleanup jobs (`when: on_failure | always | on_cancel`, see [`When`]) are what a
//! pipeline's teardown is made of: a graceful cancel of the pipeline stops every other
//! unfinished job and leaves them waiting; once the jobs they wait for have ended they
//! run (or are skipped) by their own rule, the pipeline `canceling` meanwhile. An abort
//! stops them too.
//!
//! An environment's stop job (the job another job's `environment: on_stop` names) is a
//! cleanup job too once that job has started: a graceful cancel leaves it alone and runs
//! it (plays it, if it waits to be played) when the other jobs have ended, so a cancelled
//! pipeline does not leave the environment it began to make (see
//! [`tears_down_an_environment`]).

use crate::api::{CancelMode, When};
use crate::config::AutoCancel;
use crate::status::{JobEvent, Status};

/// The status a job counts as for its pipeline: an allowed failure (`allow_failure:
/// true`) counts as a success — it neither fails the pipeline nor stops later stages —
/// and an optional manual job (`when: manual` with `allow_failure: true`, GitLab's
/// default) that nobody played as skipped: it holds nothing up. A manual job that is
/// not optional blocks its pipeline until it is played.
pub fn counted(status: Status, allow_failure: bool) -> Status {
    match status {
        Status::Failed if allow_failure => Status::Success,
        Status::Manual if allow_failure => Status::Skipped,
        status => status,
    }
}

/// GitLab's composite rule. While any job still works the pipeline is `running`
/// (`pending`/`created` if nothing has started yet); it is `canceling` only when every
/// unfinished job is `canceling`, and `manual` (blocked) when nothing works and a manual
/// job waits to be played. When all are finished: failed > canceled > success > skipped.
/// Statuses as [`counted`].
pub fn derive_status(jobs: impl IntoIterator<Item = Status> + Clone) -> Status {
    let all: Vec<Status> = jobs.into_iter().collect();
    let unfinished: Vec<Status> = all.iter().copied().filter(|s| !s.is_terminal()).collect();
    if unfinished.is_empty() {
        for s in [Status::Failed, Status::Canceled, Status::Success] {
            if all.contains(&s) {
                return s;
            }
        }
        return Status::Skipped;
    }
    if unfinished.iter().all(|s| *s == Status::Canceling) {
        return Status::Canceling;
    }
    let working = unfinished
        .iter()
        .any(|s| matches!(s, Status::Pending | Status::Running | Status::Canceling));
    if !working && unfinished.contains(&Status::Manual) {
        return Status::Manual;
    }
    let started = all.iter().any(|s| s.has_started());
    if started {
        Status::Running
    } else if unfinished.contains(&Status::Pending) {
        Status::Pending
    } else {
        Status::Created
    }
}

/// A pipeline's status from its jobs' (the newest attempt of each, with its `when`) and
/// its cancel, if it has one. A cancelled pipeline is `canceling` while any of its jobs
/// has not finished (its cleanup jobs running, say), and once all have, its status is
/// what the other jobs ended as (a cleanup job's end does not change it). Otherwise
/// [`derive_status`].
pub fn pipeline_status(jobs: impl IntoIterator<Item = (Status, When)>, cancel: Option<CancelMode>) -> Status {
    let jobs: Vec<(Status, When)> = jobs.into_iter().collect();
    let statuses = jobs.iter().map(|(s, _)| *s);
    if cancel.is_none() {
        return derive_status(statuses);
    }
    if jobs.iter().any(|(s, _)| !s.is_terminal()) {
        return Status::Canceling;
    }
    let rest: Vec<Status> = jobs.iter().filter(|(_, w)| !w.is_cleanup()).map(|(s, _)| *s).collect();
    if rest.is_empty() {
        derive_status(statuses)
    } else {
        derive_status(rest)
    }
}

/// A job as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct JobNode<'a> {
    pub name: &'a str,
    pub stage_index: usize,
    /// `None`: the job waits for every job of earlier stages. `Some`: only for these.
    pub needs: Option<&'a [String]>,
    /// As it is (not as [`counted`]).
    pub status: Status,
    pub when: When,
    pub allow_failure: bool,
    /// `environment: on_stop`: the job that stops the environment this one makes.
    pub on_stop: Option<&'a str>,
    /// A runner has taken it at some point (it may have made something).
    pub started: bool,
}

/// Whether job `i` is an environment's stop job whose environment a started job
/// began to make: a graceful cancel of the pipeline must then run it, not stop it. A
/// job that is a cleanup job by its own `when` is one already.
pub fn tears_down_an_environment(jobs: &[JobNode<'_>], i: usize) -> bool {
    Teardowns::of(jobs).has(&jobs[i])
}

/// The indexes of the jobs that [`tears_down_an_environment`].
pub fn environment_teardowns(jobs: &[JobNode<'_>]) -> Vec<usize> {
    let teardowns = Teardowns::of(jobs);
    (0..jobs.len()).filter(|&i| teardowns.has(&jobs[i])).collect()
}

/// The names of the stop jobs whose environments started jobs began to make, read once
/// per decision (a pipeline may have thousands of jobs).
struct Teardowns<'a>(std::collections::HashSet<&'a str>);

impl<'a> Teardowns<'a> {
    fn of(jobs: &[JobNode<'a>]) -> Teardowns<'a> {
        Teardowns(jobs.iter().filter(|s| s.started).filter_map(|s| s.on_stop).collect())
    }

    fn has(&self, job: &JobNode<'_>) -> bool {
        !job.when.is_cleanup() && self.0.contains(job.name)
    }
}

/// Whether every job of the pipeline that is not a cleanup job (nor a stop job that
/// tears down an environment) has finished, except the jobs that wait for job `i`: when
/// an `on_cancel` job, or a stop job after a cancel, may run.
fn others_finished(jobs: &[JobNode<'_>], teardowns: &Teardowns<'_>, i: usize) -> bool {
    let waiting = waiting_for(jobs, i);
    (0..jobs.len())
        .filter(|&j| j != i && !jobs[j].when.is_cleanup() && !waiting[j] && !teardowns.has(&jobs[j]))
        .all(|j| jobs[j].status.is_terminal())
}

impl JobNode<'_> {
    /// The status this job counts as for a job waiting for it: as [`counted`], except
    /// that a job that `needs` a manual job waits until it is played and has ended, as in
    /// GitLab (only later stages go on without an optional one).
    fn as_prerequisite(&self, by_needs: bool) -> Status {
        match self.status {
            Status::Manual if by_needs => Status::Manual,
            status => counted(status, self.allow_failure),
        }
    }

    /// Whether this finished (or optional) job lets the jobs waiting for it go on as if it
    /// succeeded: a cleanup job that had no reason to run (skipped), or, for later
    /// stages, an optional manual job nobody played.
    fn holds_nothing_up(&self, by_needs: bool) -> bool {
        self.as_prerequisite(by_needs) == Status::Skipped && (self.when.is_cleanup() || self.status == Status::Manual)
    }
}

/// For each `created` job whose prerequisites have all finished (an optional manual job
/// nobody played counts as finished for later stages, not for a job that `needs` it),
/// whether it runs (`Enqueue`), waits to be played
/// (`AwaitPlay`) or never runs (`Skip`), by its `when`:
/// - `on_success`: runs if they all succeeded (an allowed failure counts as a success; a
///   cleanup job among them that was skipped, having had no reason to run, and an
///   optional manual job nobody played do not count);
/// - `manual`: as `on_success`, but waits to be played;
/// - `delayed`: the same; Usher plays it after its `start_in` (the engine's reaper);
/// - `on_failure`: runs if one of them failed;
/// - `always`: runs;
/// - `on_cancel`: waits also until every job of the pipeline that is not a cleanup job
///   has finished (except the jobs that wait for it, directly or not), then runs if the
///   pipeline was cancelled gracefully (`cancel`).
///
/// After a graceful cancel, a stop job that [`tears_down_an_environment`] (`created`, or
/// `manual` waiting to be played) waits as an `on_cancel` job does and then runs
/// (`Enqueue`, or `Play`), whatever became of the jobs before it.
///
/// Returns indexes into `jobs`.
pub fn ready_decisions(jobs: &[JobNode<'_>], cancel: Option<CancelMode>) -> Vec<(usize, JobEvent)> {
    let mut out = Vec::new();
    let teardowns = Teardowns::of(jobs);
    for (i, job) in jobs.iter().enumerate() {
        if cancel == Some(CancelMode::Graceful) && matches!(job.status, Status::Created | Status::Manual) && teardowns.has(job) {
            if others_finished(jobs, &teardowns, i) {
                out.push((
                    i,
                    if job.status == Status::Manual {
                        JobEvent::Play
                    } else {
                        JobEvent::Enqueue
                    },
                ));
            }
            continue;
        }
        if job.status != Status::Created {
            continue;
        }
        let by_needs = job.needs.is_some();
        let prerequisites: Vec<Status> = prerequisites_of(jobs, i).map(|j| jobs[j].as_prerequisite(by_needs)).collect();
        if !prerequisites.iter().all(|s| s.is_terminal()) {
            continue;
        }
        let mut held_up_by = prerequisites_of(jobs, i).filter(|&j| !jobs[j].holds_nothing_up(by_needs));
        let all_succeeded = held_up_by.all(|j| jobs[j].as_prerequisite(by_needs) == Status::Success);
        let runs = match job.when {
            When::OnSuccess => all_succeeded,
            When::Manual | When::Delayed => {
                out.push((i, if all_succeeded { JobEvent::AwaitPlay } else { JobEvent::Skip }));
                continue;
            }
            When::OnFailure => prerequisites.contains(&Status::Failed),
            When::Always => true,
            When::OnCancel => {
                if !others_finished(jobs, &teardowns, i) {
                    continue;
                }
                cancel == Some(CancelMode::Graceful)
            }
        };
        out.push((i, if runs { JobEvent::Enqueue } else { JobEvent::Skip }));
    }
    out
}

/// The jobs job `i` waits for: those it `needs`, or without `needs:` every job of an
/// earlier stage.
fn prerequisites_of<'a>(jobs: &'a [JobNode<'a>], i: usize) -> impl Iterator<Item = usize> + 'a {
    let job = &jobs[i];
    (0..jobs.len()).filter(move |&j| match job.needs {
        Some(needs) => needs.iter().any(|n| n == jobs[j].name),
        None => jobs[j].stage_index < job.stage_index,
    })
}

/// For each job, whether it waits for job `i`, directly or through others.
fn waiting_for(jobs: &[JobNode<'_>], i: usize) -> Vec<bool> {
    let mut waiting = vec![false; jobs.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for j in 0..jobs.len() {
            if !waiting[j] && prerequisites_of(jobs, j).any(|p| p == i || waiting[p]) {
                waiting[j] = true;
                changed = true;
            }
        }
    }
    waiting
}

/// Whether a cancel of the pipeline in `mode` stops a job that runs `when`: an abort
/// stops every job, a graceful cancel all but the cleanup jobs.
pub fn cancel_stops(mode: CancelMode, when: When) -> bool {
    mode == CancelMode::Abort || !when.is_cleanup()
}

/// A job of an older pipeline, as auto-cancel sees it.
#[derive(Clone, Copy, Debug)]
pub struct OlderJob {
    pub id: i64,
    pub interruptible: bool,
    pub status: Status,
    /// A runner has taken it at some point.
    pub started: bool,
    pub when: When,
}

/// Which jobs of an older pipeline on the same ref a new pipeline cancels
/// (`workflow.auto_cancel.on_new_commit`, GitLab's semantics):
/// - `conservative`: every unfinished job, but only while no `interruptible: false` job
///   has started;
/// - `interruptible`: only the unfinished `interruptible: true` jobs;
/// - `none`: nothing.
///
/// An auto-cancel is a graceful cancel: cleanup jobs are never its targets.
pub fn auto_cancel_targets(mode: AutoCancel, jobs: &[OlderJob]) -> Vec<i64> {
    let unfinished = jobs
        .iter()
        .filter(|j| !j.status.is_terminal() && j.status != Status::Canceling && cancel_stops(CancelMode::Graceful, j.when));
    match mode {
        AutoCancel::None => Vec::new(),
        AutoCancel::Interruptible => unfinished.filter(|j| j.interruptible).map(|j| j.id).collect(),
        AutoCancel::Conservative => {
            if jobs.iter().any(|j| !j.interruptible && j.started) {
                Vec::new()
            } else {
                unfinished.map(|j| j.id).collect()
            }
        }
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
