//! The job state machine (docs/architecture.md "The state machine"), as one table.
//!
//! Every change of a job's status anywhere in Usher (API, UI, runner reports, reaper,
//! auto-cancel) asks [`next`] first; the store then writes the answer with a
//! compare-and-set. The UI asks the same function which buttons to show.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Status of a job, and (derived from its jobs) of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Pending,
    Running,
    Canceling,
    Success,
    Failed,
    Canceled,
    Skipped,
    /// `when: manual`: its turn has come, and it waits for someone to play it.
    Manual,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Created,
        Status::Pending,
        Status::Running,
        Status::Canceling,
        Status::Success,
        Status::Failed,
        Status::Canceled,
        Status::Skipped,
        Status::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Canceling => "canceling",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Skipped => "skipped",
            Status::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The group this status belongs to. Every status is in exactly one; SQL and the UI
    /// ask these groups instead of listing statuses again.
    pub fn group(self) -> StatusGroup {
        match self {
            Status::Created | Status::Manual | Status::Pending => StatusGroup::Waiting,
            Status::Running | Status::Canceling => StatusGroup::Active,
            Status::Success | Status::Failed | Status::Canceled | Status::Skipped => StatusGroup::Finished,
        }
    }

    /// The statuses of one group, in table order (e.g. for an SQL `IN (…)` list).
    pub fn in_group(group: StatusGroup) -> Vec<Status> {
        Status::ALL.into_iter().filter(|s| s.group() == group).collect()
    }

    /// Finished for good: no event moves it any more.
    pub fn is_terminal(self) -> bool {
        self.group() == StatusGroup::Finished
    }

    /// A runner holds the job and processes may be alive.
    pub fn is_active(self) -> bool {
        self.group() == StatusGroup::Active
    }

    /// Whether a job in this status got as far as a runner or a decision about it:
    /// everything but waiting and `skipped` (a pipeline has started once one job has).
    pub fn has_started(self) -> bool {
        self.is_active() || (self.is_terminal() && self != Status::Skipped)
    }

    /// What the runner holding a job must do when the job reaches this status: stop the
    /// script gracefully (`canceling`), kill whatever is left (any finished status: the
    /// job was aborted or ended by the reaper), or nothing.
    pub fn runner_command(self) -> Option<RunnerCommand> {
        match self.group() {
            StatusGroup::Active if self == Status::Canceling => Some(RunnerCommand::Cancel),
            StatusGroup::Finished => Some(RunnerCommand::Abort),
            StatusGroup::Waiting | StatusGroup::Active => None,
        }
    }

    /// How far along a job is: every transition of the table moves a job to a strictly
    /// higher rank. So of two snapshots of one job, the one with the higher rank is the
    /// newer — which is how the UI merges websocket frames and answers that race.
    pub fn progress(self) -> u8 {
        match self {
            Status::Created => 0,
            Status::Manual => 1,
            Status::Pending => 2,
            Status::Running => 3,
            Status::Canceling => 4,
            Status::Success | Status::Failed | Status::Canceled | Status::Skipped => 5,
        }
    }

    /// Whether a graceful Cancel would change this job (the UI shows the button then).
    pub fn can_cancel(self) -> bool {
        matches!(next(self, JobEvent::Cancel), Ok(Outcome::Move(_)))
    }

    /// Whether a job that ended in this status may be tried again (a new attempt): it
    /// finished, and it ran or was cancelled (a skipped job is retried with what it
    /// waited on).
    pub fn can_retry(self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Canceled)
    }

    /// Whether a Play would start this job (a `manual` one).
    pub fn can_play(self) -> bool {
        matches!(next(self, JobEvent::Play), Ok(Outcome::Move(_)))
    }

    /// Whether an Abort would change this job.
    pub fn can_abort(self) -> bool {
        matches!(next(self, JobEvent::Abort), Ok(Outcome::Move(_)))
    }
}

/// The three groups of statuses (GitLab's `has_status` idea: declare them once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusGroup {
    /// Not started: `created`, `manual`, `pending`.
    Waiting,
    /// A runner holds the job: `running`, `canceling`.
    Active,
    /// Terminal: `success`, `failed`, `canceled`, `skipped`.
    Finished,
}

/// What the server tells the runner holding a job (see [`Status::runner_command`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerCommand {
    /// Stop the script (TERM, grace, KILL), then run after_script.
    Cancel,
    /// Kill every process of the job now; no after_script.
    Abort,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// Earlier stages / needs succeeded: the job may be picked.
    Enqueue,
    /// Something it waited on did not succeed: it will never run.
    Skip,
    /// Its turn has come, but it is a `when: manual` job: it waits for a Play.
    AwaitPlay,
    /// Someone played a manual job: it may be picked.
    Play,
    /// A runner took it.
    Start,
    /// The runner reported the end of the job.
    Finish { ok: bool },
    /// Graceful cancel: let after_script clean up.
    Cancel,
    /// Kill at once, no after_script.
    Abort,
    /// A canceling job's deadline passed without a report.
    CancelDeadline,
    /// The runner holding it stopped heartbeating.
    RunnerLost,
    /// The job's own timeout ran out (after_script still runs).
    Timeout,
}

impl JobEvent {
    pub const ALL: [JobEvent; 12] = [
        JobEvent::Enqueue,
        JobEvent::Skip,
        JobEvent::AwaitPlay,
        JobEvent::Play,
        JobEvent::Start,
        JobEvent::Finish { ok: true },
        JobEvent::Finish { ok: false },
        JobEvent::Cancel,
        JobEvent::Abort,
        JobEvent::CancelDeadline,
        JobEvent::RunnerLost,
        JobEvent::Timeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobEvent::Enqueue => "enqueue",
            JobEvent::Skip => "skip",
            JobEvent::AwaitPlay => "await-play",
            JobEvent::Play => "play",
            JobEvent::Start => "start",
            JobEvent::Finish { ok: true } => "finish",
            JobEvent::Finish { ok: false } => "fail",
            JobEvent::Cancel => "cancel",
            JobEvent::Abort => "abort",
            JobEvent::CancelDeadline => "cancel-deadline",
            JobEvent::RunnerLost => "runner-lost",
            JobEvent::Timeout => "time-out",
        }
    }
}

/// What an event does to a job in a given status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The job moves to this status.
    Move(Status),
    /// The event is accepted but changes nothing (a repeated cancel, say).
    Unchanged,
}

/// The event is not allowed in the job's current status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a job that is {from}", event.name())]
pub struct InvalidTransition {
    pub from: Status,
    pub event: JobEvent,
}

/// The transition table. Everything not listed is rejected.
pub fn next(from: Status, event: JobEvent) -> Result<Outcome, InvalidTransition> {
    use JobEvent as E;
    use Outcome::{Move, Unchanged};
    use Status as S;
    let outcome = match (event, from) {
        (E::Enqueue, S::Created) => Move(S::Pending),
        (E::Skip, S::Created) => Move(S::Skipped),
        (E::AwaitPlay, S::Created) => Move(S::Manual),
        (E::Play, S::Manual) => Move(S::Pending),
        (E::Start, S::Pending) => Move(S::Running),
        (E::Finish { ok: true }, S::Running) => Move(S::Success),
        (E::Finish { ok: false }, S::Running) => Move(S::Failed),
        (E::Finish { .. }, S::Canceling) => Move(S::Canceled),
        (E::Cancel, S::Created | S::Manual | S::Pending) => Move(S::Canceled),
        (E::Cancel, S::Running) => Move(S::Canceling),
        (E::Cancel, S::Canceling | S::Canceled) => Unchanged,
        (E::Abort, S::Created | S::Manual | S::Pending | S::Running | S::Canceling) => Move(S::Canceled),
        (E::Abort, S::Canceled) => Unchanged,
        (E::CancelDeadline, S::Canceling) => Move(S::Canceled),
        (E::RunnerLost, S::Running) => Move(S::Failed),
        (E::RunnerLost, S::Canceling) => Move(S::Canceled),
        (E::Timeout, S::Running) => Move(S::Failed),
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobEvent as E;
    use Outcome::{Move, Unchanged};
    use Status as S;

    /// The whole status × event matrix, written out so that a change to the table
    /// has to change this test too.
    #[test]
    fn every_status_and_event() {
        type Row = (Status, &'static [(JobEvent, Option<Outcome>)]);
        let expected: &[Row] = &[
            (
                S::Created,
                &[
                    (E::Enqueue, Some(Move(S::Pending))),
                    (E::Skip, Some(Move(S::Skipped))),
                    (E::AwaitPlay, Some(Move(S::Manual))),
                    (E::Cancel, Some(Move(S::Canceled))),
                    (E::Abort, Some(Move(S::Canceled))),
                ],
            ),
            (
                S::Manual,
                &[
                    (E::Play, Some(Move(S::Pending))),
                    (E::Cancel, Some(Move(S::Canceled))),
                    (E::Abort, Some(Move(S::Canceled))),
                ],
            ),
            (
                S::Pending,
                &[
                    (E::Start, Some(Move(S::Running))),
                    (E::Cancel, Some(Move(S::Canceled))),
                    (E::Abort, Some(Move(S::Canceled))),
                ],
            ),
            (
                S::Running,
                &[
                    (E::Finish { ok: true }, Some(Move(S::Success))),
                    (E::Finish { ok: false }, Some(Move(S::Failed))),
                    (E::Cancel, Some(Move(S::Canceling))),
                    (E::Abort, Some(Move(S::Canceled))),
                    (E::RunnerLost, Some(Move(S::Failed))),
                    (E::Timeout, Some(Move(S::Failed))),
                ],
            ),
            (
                S::Canceling,
                &[
                    (E::Finish { ok: true }, Some(Move(S::Canceled))),
                    (E::Finish { ok: false }, Some(Move(S::Canceled))),
                    (E::Cancel, Some(Unchanged)),
                    (E::Abort, Some(Move(S::Canceled))),
                    (E::CancelDeadline, Some(Move(S::Canceled))),
                    (E::RunnerLost, Some(Move(S::Canceled))),
                ],
            ),
            (S::Canceled, &[(E::Cancel, Some(Unchanged)), (E::Abort, Some(Unchanged))]),
            (S::Success, &[]),
            (S::Failed, &[]),
            (S::Skipped, &[]),
        ];
        for (from, allowed) in expected {
            for event in JobEvent::ALL {
                let want = allowed.iter().find(|(e, _)| *e == event).and_then(|(_, o)| *o);
                let got = next(*from, event).ok();
                assert_eq!(got, want, "{from} × {}", event.name());
            }
        }
    }

    #[test]
    fn terminal_statuses_never_move() {
        for from in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in JobEvent::ALL {
                assert!(!matches!(next(from, event), Ok(Move(_))), "{from} moved on {}", event.name());
            }
        }
    }

    #[test]
    fn every_move_makes_progress() {
        for from in Status::ALL {
            for event in JobEvent::ALL {
                if let Ok(Move(to)) = next(from, event) {
                    assert!(to.progress() > from.progress(), "{from} → {to} on {}", event.name());
                }
            }
        }
    }

    #[test]
    fn buttons_follow_the_table() {
        let cancelable: Vec<_> = Status::ALL.into_iter().filter(|s| s.can_cancel()).collect();
        assert_eq!(cancelable, [S::Created, S::Pending, S::Running, S::Manual]);
        let abortable: Vec<_> = Status::ALL.into_iter().filter(|s| s.can_abort()).collect();
        assert_eq!(abortable, [S::Created, S::Pending, S::Running, S::Canceling, S::Manual]);
        let playable: Vec<_> = Status::ALL.into_iter().filter(|s| s.can_play()).collect();
        assert_eq!(playable, [S::Manual]);
    }

    #[test]
    fn rejection_names_the_current_status() {
        let err = next(S::Success, E::Cancel).unwrap_err();
        assert_eq!(err.to_string(), "cannot cancel a job that is success");
    }

    /// `ALL` must list every status once: this match has to grow with the enum (it is
    /// exhaustive), and the assertion fails if `ALL` was not grown with it.
    #[test]
    fn all_lists_every_status_once_and_each_has_a_group() {
        let position = |s: Status| match s {
            S::Created => 0,
            S::Pending => 1,
            S::Running => 2,
            S::Canceling => 3,
            S::Success => 4,
            S::Failed => 5,
            S::Canceled => 6,
            S::Skipped => 7,
            S::Manual => 8,
        };
        for (i, s) in Status::ALL.into_iter().enumerate() {
            assert_eq!(position(s), i, "{s} is out of place in Status::ALL");
        }
        let mut grouped: Vec<Status> = [StatusGroup::Waiting, StatusGroup::Active, StatusGroup::Finished]
            .into_iter()
            .flat_map(Status::in_group)
            .collect();
        grouped.sort();
        assert_eq!(grouped, Status::ALL.to_vec(), "every status is in exactly one group");
    }

    #[test]
    fn runner_commands() {
        let cancel: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.runner_command() == Some(RunnerCommand::Cancel))
            .collect();
        assert_eq!(cancel, [S::Canceling]);
        let abort: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.runner_command() == Some(RunnerCommand::Abort))
            .collect();
        assert_eq!(abort, [S::Success, S::Failed, S::Canceled, S::Skipped]);
    }

    #[test]
    fn status_strings_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }
}
