//! The job state machine of DESIGN.md §1, as one table.
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
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Created,
        Status::Pending,
        Status::Running,
        Status::Canceling,
        Status::Success,
        Status::Failed,
        Status::Canceled,
        Status::Skipped,
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
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Finished for good: no event moves it any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Canceled | Status::Skipped)
    }

    /// A runner holds the job and processes may be alive.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Canceling)
    }

    /// How far along a job is: every transition of the table moves a job to a strictly
    /// higher rank. So of two snapshots of one job, the one with the higher rank is the
    /// newer — which is how the UI merges websocket frames and answers that race.
    pub fn progress(self) -> u8 {
        match self {
            Status::Created => 0,
            Status::Pending => 1,
            Status::Running => 2,
            Status::Canceling => 3,
            Status::Success | Status::Failed | Status::Canceled | Status::Skipped => 4,
        }
    }

    /// Whether a graceful Cancel would change this job (the UI shows the button then).
    pub fn can_cancel(self) -> bool {
        matches!(next(self, JobEvent::Cancel), Ok(Outcome::Move(_)))
    }

    /// Whether an Abort would change this job.
    pub fn can_abort(self) -> bool {
        matches!(next(self, JobEvent::Abort), Ok(Outcome::Move(_)))
    }
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
    pub const ALL: [JobEvent; 10] = [
        JobEvent::Enqueue,
        JobEvent::Skip,
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
            JobEvent::Start => "start",
            JobEvent::Finish { ok: true } => "finish",
            JobEvent::Finish { ok: false } => "fail",
            JobEvent::Cancel => "cancel",
            JobEvent::Abort => "abort",
            JobEvent::CancelDeadline => "cancel-deadline",
            JobEvent::RunnerLost => "runner-lost",
            JobEvent::Timeout => "time out",
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
        (E::Start, S::Pending) => Move(S::Running),
        (E::Finish { ok: true }, S::Running) => Move(S::Success),
        (E::Finish { ok: false }, S::Running) => Move(S::Failed),
        (E::Finish { .. }, S::Canceling) => Move(S::Canceled),
        (E::Cancel, S::Created | S::Pending) => Move(S::Canceled),
        (E::Cancel, S::Running) => Move(S::Canceling),
        (E::Cancel, S::Canceling | S::Canceled) => Unchanged,
        (E::Abort, S::Created | S::Pending | S::Running | S::Canceling) => Move(S::Canceled),
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
        let expected: &[(Status, &[(JobEvent, Option<Outcome>)])] = &[
            (
                S::Created,
                &[
                    (E::Enqueue, Some(Move(S::Pending))),
                    (E::Skip, Some(Move(S::Skipped))),
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
        assert_eq!(cancelable, [S::Created, S::Pending, S::Running]);
        let abortable: Vec<_> = Status::ALL.into_iter().filter(|s| s.can_abort()).collect();
        assert_eq!(abortable, [S::Created, S::Pending, S::Running, S::Canceling]);
    }

    #[test]
    fn rejection_names_the_current_status() {
        let err = next(S::Success, E::Cancel).unwrap_err();
        assert_eq!(err.to_string(), "cannot cancel a job that is success");
    }

    #[test]
    fn status_strings_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }
}
