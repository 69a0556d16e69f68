//! Pipeline rules that follow from the jobs: the derived pipeline status, and which
//! waiting (`created`) jobs may now be enqueued or must be skipped.
//!
//! A pipeline's status is never decided on its own: it is always [`derive_status`] of its
//! jobs (the store keeps a copy, rewritten in the same transaction as every job change).

use crate::config::AutoCancel;
use crate::status::{JobEvent, Status};

/// GitLab's composite rule. While any job still works the pipeline is `running`
/// (`pending`/`created` if nothing has started yet); it is `canceling` only when every
/// unfinished job is `canceling`. When all are finished: failed > canceled > success > skipped.
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
    let started = all.iter().any(|s| s.has_started());
    if started {
        Status::Running
    } else if unfinished.contains(&Status::Pending) {
        Status::Pending
    } else {
        Status::Created
    }
}

/// A job as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct JobNode<'a> {
    pub name: &'a str,
    pub stage_index: usize,
    /// `None`: the job waits for every job of earlier stages. `Some`: only for these.
    pub needs: Option<&'a [String]>,
    pub status: Status,
}

/// For each `created` job whose prerequisites have all finished: `Enqueue` if they all
/// succeeded, `Skip` otherwise. Returns indexes into `jobs`.
pub fn ready_decisions(jobs: &[JobNode<'_>]) -> Vec<(usize, JobEvent)> {
    let mut out = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if job.status != Status::Created {
            continue;
        }
        let prerequisites: Vec<Status> = match job.needs {
            Some(needs) => jobs
                .iter()
                .filter(|j| needs.iter().any(|n| n == j.name))
                .map(|j| j.status)
                .collect(),
            None => jobs.iter().filter(|j| j.stage_index < job.stage_index).map(|j| j.status).collect(),
        };
        if prerequisites.iter().all(|s| s.is_terminal()) {
            let event = if prerequisites.iter().all(|s| *s == Status::Success) {
                JobEvent::Enqueue
            } else {
                JobEvent::Skip
            };
            out.push((i, event));
        }
    }
    out
}

/// A job of an older pipeline, as auto-cancel sees it.
#[derive(Clone, Copy, Debug)]
pub struct OlderJob {
    pub id: i64,
    pub interruptible: bool,
    pub status: Status,
    /// A runner has taken it at some point.
    pub started: bool,
}

/// Which jobs of an older pipeline on the same ref a new pipeline cancels
/// (`workflow.auto_cancel.on_new_commit`, GitLab's semantics):
/// - `conservative`: every unfinished job, but only while no `interruptible: false` job
///   has started;
/// - `interruptible`: only the unfinished `interruptible: true` jobs;
/// - `none`: nothing.
pub fn auto_cancel_targets(mode: AutoCancel, jobs: &[OlderJob]) -> Vec<i64> {
    let unfinished = jobs.iter().filter(|j| !j.status.is_terminal() && j.status != Status::Canceling);
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
mod tests {
    use super::*;
    use Status as S;

    fn older(id: i64, interruptible: bool, status: Status, started: bool) -> OlderJob {
        OlderJob {
            id,
            interruptible,
            status,
            started,
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
        }
    }

    #[test]
    fn later_stage_waits_then_runs_or_skips() {
        let jobs = [node("a", 0, None, S::Running), node("b", 1, None, S::Created)];
        assert!(ready_decisions(&jobs).is_empty());
        let jobs = [node("a", 0, None, S::Success), node("b", 1, None, S::Created)];
        assert_eq!(ready_decisions(&jobs), vec![(1, JobEvent::Enqueue)]);
        let jobs = [node("a", 0, None, S::Canceled), node("b", 1, None, S::Created)];
        assert_eq!(ready_decisions(&jobs), vec![(1, JobEvent::Skip)]);
    }

    #[test]
    fn needs_only_waits_for_what_it_names() {
        let needs = vec!["a".to_string()];
        let jobs = [
            node("a", 0, None, S::Success),
            node("slow", 0, None, S::Running),
            node("b", 1, Some(&needs), S::Created),
        ];
        assert_eq!(ready_decisions(&jobs), vec![(2, JobEvent::Enqueue)]);
        let empty: Vec<String> = vec![];
        let jobs = [node("slow", 0, None, S::Running), node("c", 1, Some(&empty), S::Created)];
        assert_eq!(ready_decisions(&jobs), vec![(1, JobEvent::Enqueue)]);
    }
}
