//! What a status change does, decided without the database. The gate
//! ([`crate::store::Store::commit`]) reads the jobs a change names and asks this module
//! what to write: for each job, its row's new values ([`JobWrite`]) and its timeline
//! entry ([`Audit`]), or nothing (the table answers "unchanged"), or a refusal; and for
//! the pipeline, its status derived from its jobs' ([`pipeline_after`]). The store
//! writes exactly that. Each [`Event`] carries what it records (a cancel its reason and
//! deadline, a runner's report its exit code and after_script), so every rule about
//! what a move records lives here, next to core's table (`usher_core::status::next`)
//! that says where it moves. Nothing here does I/O: every status × event is tested
//! without a database.

use std::collections::{HashMap, HashSet};

use usher_core::api::{CancelMode, CancelReason, FailureReason, Job, Pipeline, When};
use usher_core::pipeline::pipeline_status;
use usher_core::protocol::JobReport;
use usher_core::status::{JobEvent, Outcome, Status, next};

use crate::EngineError;

/// Something that happens to a job, with what it records.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Its prerequisites succeeded: it may be picked.
    Enqueue,
    /// A prerequisite did not succeed: it will never run.
    Skip,
    /// Its turn came, and it is a manual job: it waits to be played.
    AwaitPlay,
    /// Someone played a manual job: it may be picked.
    Play,
    /// A runner took it.
    Start { runner_id: i64 },
    /// The final report of the runner holding it (a timeout is one). `allowed_failure`:
    /// the job's `allow_failure: exit_codes` names the exit code it failed with.
    Report {
        runner_id: i64,
        report: JobReport,
        allowed_failure: bool,
    },
    /// A graceful cancel: the runner must report by `deadline` (RFC 3339). `detail`:
    /// Usher's words (which pipeline superseded it, say); `message`: the canceller's.
    Cancel {
        reason: CancelReason,
        deadline: String,
        detail: Option<String>,
        message: Option<String>,
    },
    /// Canceled at once; the runner kills every process of the job.
    Abort {
        reason: CancelReason,
        detail: Option<String>,
        message: Option<String>,
    },
    /// A canceling job's deadline passed without a report.
    CancelDeadline,
    /// The runner holding it stopped heartbeating.
    RunnerLost,
}

impl Event {
    /// The scheduler's decisions (core's `ready_decisions`) as events.
    pub fn scheduled(event: JobEvent) -> Event {
        match event {
            JobEvent::Skip => Event::Skip,
            JobEvent::AwaitPlay => Event::AwaitPlay,
            JobEvent::Play => Event::Play,
            _ => Event::Enqueue,
        }
    }

    /// The event of core's table this is for a job in `status`. A timeout reported for
    /// a job that is canceling by now finishes it like any other report.
    pub fn table_event(&self, status: Status) -> JobEvent {
        match self {
            Event::Enqueue => JobEvent::Enqueue,
            Event::Skip => JobEvent::Skip,
            Event::AwaitPlay => JobEvent::AwaitPlay,
            Event::Play => JobEvent::Play,
            Event::Start { .. } => JobEvent::Start,
            Event::Report { report, .. } => match report.event() {
                JobEvent::Timeout if status == Status::Canceling => JobEvent::Finish { ok: false },
                event => event,
            },
            Event::Cancel { .. } => JobEvent::Cancel,
            Event::Abort { .. } => JobEvent::Abort,
            Event::CancelDeadline => JobEvent::CancelDeadline,
            Event::RunnerLost => JobEvent::RunnerLost,
        }
    }
}

/// One job's event, and who caused it: a user's name, `runner:<id>` or `system`.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub job_id: i64,
    pub event: Event,
    pub by: String,
}

/// What a move writes to the job's row besides which job: equal for every job of a
/// group of moves, so the store writes a group with one statement. `None` leaves a
/// column as it is. The write is a compare-and-set: only a job still in `from` moves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobWrite {
    pub from: Status,
    pub to: Status,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub runner_id: Option<i64>,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<&'static str>,
    pub cancel_mode: Option<&'static str>,
    pub cancel_by: Option<String>,
    pub cancel_at: Option<String>,
    pub cancel_reason: Option<&'static str>,
    pub cancel_message: Option<String>,
    pub cancel_deadline: Option<String>,
    pub after_exit_code: Option<i64>,
    pub after_duration_ms: Option<i64>,
    pub after_timed_out: Option<i64>,
    /// What the job's dotenv reports hand over (JSON), from its runner's report.
    pub dotenv: Option<String>,
    /// The receipt of its teardown (JSON), from its runner's report.
    pub teardown: Option<String>,
    /// [`ALLOWED_BY_EXIT_CODE`] when its failure turned out to be allowed
    /// (`allow_failure: exit_codes`).
    pub allow_failure: Option<i64>,
    /// When the reaper plays a delayed job that now waits in `manual` (its `start_in`
    /// after `t`).
    pub play_at: Option<String>,
}

/// The `allow_failure` column of an attempt whose failure its exit code made allowed:
/// true for this attempt (any value but 0 is), and not inherited by a retry of it, which
/// starts again from its definition's `allow_failure` (1 or 0).
pub const ALLOWED_BY_EXIT_CODE: i64 = 2;

/// One entry of a job's timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Audit {
    pub job_id: i64,
    pub from: Status,
    pub to: Status,
    pub by: String,
    /// The cancel's mode, when the move is a cancel.
    pub mode: Option<CancelMode>,
    /// The cancel's reason, or the failure's.
    pub reason: Option<&'static str>,
    pub detail: Option<String>,
}

/// What one move does to a job as it was read.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Accepted, and nothing changes (a repeated cancel, say).
    Unchanged,
    Write {
        write: Box<JobWrite>,
        audit: Audit,
    },
}

/// What a move records, apart from the status: a cancel (its mode and reason), a
/// failure reason, a runner's report and the timeline's words.
#[derive(Default)]
struct Records {
    cancel: Option<(CancelMode, CancelReason)>,
    deadline: Option<String>,
    runner_id: Option<i64>,
    failure: Option<FailureReason>,
    report: Option<JobReport>,
    detail: Option<String>,
    /// The canceller's words.
    message: Option<String>,
}

fn records(job: &Job, event: &Event) -> Records {
    match event {
        Event::Enqueue | Event::Skip | Event::AwaitPlay | Event::Play => Records::default(),
        Event::Start { runner_id } => Records {
            runner_id: Some(*runner_id),
            ..Records::default()
        },
        Event::Report { report, .. } => Records {
            failure: report.recorded_failure(),
            detail: report
                .detail
                .clone()
                .or_else(|| report.after_script.as_ref().map(after_script_words)),
            report: Some(report.clone()),
            ..Records::default()
        },
        Event::Cancel {
            reason,
            deadline,
            detail,
            message,
        } => Records {
            cancel: Some((CancelMode::Graceful, *reason)),
            deadline: Some(deadline.clone()),
            detail: detail.clone(),
            message: message.clone(),
            ..Records::default()
        },
        Event::Abort { reason, detail, message } => Records {
            cancel: Some((CancelMode::Abort, *reason)),
            detail: detail.clone(),
            message: message.clone(),
            ..Records::default()
        },
        Event::CancelDeadline => Records {
            cancel: Some((CancelMode::Graceful, CancelReason::CancelTimeout)),
            detail: Some("no report from the runner by the cancel deadline".into()),
            ..Records::default()
        },
        // A job being cancelled ends as cancelled; a running one failed.
        Event::RunnerLost if job.status == Status::Canceling => Records {
            cancel: Some((CancelMode::Graceful, CancelReason::RunnerLost)),
            detail: Some("the runner stopped answering".into()),
            ..Records::default()
        },
        Event::RunnerLost => Records {
            failure: Some(FailureReason::RunnerLost),
            detail: Some("the runner stopped answering".into()),
            ..Records::default()
        },
    }
}

/// `secs` seconds after the time `t` (RFC 3339).
fn seconds_after(t: &str, secs: u64) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&chrono::Utc);
    Some(crate::format_time(t + chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64)))
}

/// The timeline's words for an after_script's end.
fn after_script_words(a: &usher_core::api::AfterScriptResult) -> String {
    let how = match (a.timed_out, a.exit_code) {
        (true, _) => "timed out".to_string(),
        (false, Some(c)) => format!("exited {c}"),
        (false, None) => "was killed".to_string(),
    };
    format!("after_script {how} in {} ms", a.duration_ms)
}

/// What `mv` does to `job` (as read inside the change's transaction, with its
/// pipeline's cancel) at time `t`: a move core's table refuses is an error, as is a
/// report from a runner that does not hold the job, and a graceful cancel of a cleanup
/// job of a cancelled pipeline (it is the pipeline's teardown: only an abort stops it).
pub fn plan_move(job: &Job, pipeline_cancel: Option<CancelMode>, mv: &Move, t: &str) -> Result<Decision, EngineError> {
    if matches!(mv.event, Event::Cancel { .. })
        && job.when.is_cleanup()
        && pipeline_cancel.is_some()
        && matches!(job.status, Status::Created | Status::Pending | Status::Running)
    {
        return Err(EngineError::InvalidTransition(format!(
            "job {} cleans up after its pipeline's cancel (when: {}); only an abort stops it",
            job.id,
            job.when.as_str()
        )));
    }
    if let Event::Report { runner_id, .. } = &mv.event
        && job.runner_id != Some(*runner_id)
    {
        return Err(EngineError::Conflict(format!("job {} is not held by this runner", job.id)));
    }
    let event = mv.event.table_event(job.status);
    let to = match next(job.status, event)? {
        Outcome::Unchanged => return Ok(Decision::Unchanged),
        Outcome::Move(to) => to,
    };
    let r = records(job, &mv.event);
    let report = r.report.as_ref();
    let after = report.and_then(|r| r.after_script.as_ref());
    let write = JobWrite {
        from: job.status,
        to,
        started_at: (event == JobEvent::Start).then(|| t.to_string()),
        finished_at: to.is_terminal().then(|| t.to_string()),
        runner_id: r.runner_id,
        exit_code: report.and_then(|r| r.exit_code).map(i64::from),
        failure_reason: r.failure.map(|f| f.as_str()),
        cancel_mode: r.cancel.map(|(m, _)| m.as_str()),
        cancel_by: r.cancel.map(|_| mv.by.clone()),
        cancel_at: r.cancel.map(|_| t.to_string()),
        cancel_reason: r.cancel.map(|(_, reason)| reason.as_str()),
        cancel_message: r.message.clone(),
        cancel_deadline: r.deadline,
        after_exit_code: after.and_then(|a| a.exit_code).map(i64::from),
        after_duration_ms: after.map(|a| a.duration_ms as i64),
        after_timed_out: after.map(|a| a.timed_out as i64),
        dotenv: report
            .and_then(|r| r.dotenv.clone())
            .map(|reported| serde_json::to_string(&usher_core::dotenv::accept(reported)).unwrap_or_default()),
        teardown: report
            .and_then(|r| r.teardown.as_ref())
            .map(|t| serde_json::to_string(&bounded(t)).unwrap_or_default()),
        allow_failure: matches!(mv.event, Event::Report { allowed_failure: true, .. })
            .then_some(ALLOWED_BY_EXIT_CODE)
            .filter(|_| to == Status::Failed),
        play_at: job
            .start_in
            .filter(|_| event == JobEvent::AwaitPlay && job.when == When::Delayed)
            .and_then(|secs| seconds_after(t, secs)),
    };
    let audit = Audit {
        job_id: job.id,
        from: job.status,
        to,
        by: mv.by.clone(),
        mode: r.cancel.map(|(m, _)| m),
        reason: r.cancel.map(|(_, reason)| reason.as_str()).or(r.failure.map(|f| f.as_str())),
        // The timeline keeps the canceller's words, after Usher's own if there are both.
        detail: match (r.detail, r.message) {
            (Some(detail), Some(message)) => Some(format!("{detail}: {message}")),
            (detail, message) => detail.or(message),
        },
    };
    Ok(Decision::Write {
        write: Box::new(write),
        audit,
    })
}

/// A runner's receipt as stored: its deferred commands' words cut to a size a row holds.
fn bounded(t: &usher_core::api::Teardown) -> usher_core::api::Teardown {
    let mut t = t.clone();
    t.deferred.truncate(100);
    for d in &mut t.deferred {
        if d.command.len() > 1000 {
            let mut cut = 1000;
            while !d.command.is_char_boundary(cut) {
                cut -= 1;
            }
            d.command.truncate(cut);
        }
    }
    t.after_script.truncate(16);
    t
}

/// A batch's writes: the jobs making the same write in one group (in the order of their
/// first move), and every timeline entry in the batch's order.
#[derive(Debug, Default, PartialEq)]
pub struct BatchPlan {
    pub groups: Vec<(JobWrite, Vec<i64>)>,
    pub audits: Vec<Audit>,
}

/// What a batch of moves on distinct jobs does to them (`jobs`, as read): a move the
/// table refuses (the job finished meanwhile) or that changes nothing is left out; a
/// job named twice, a job not read, or a report from a runner that does not hold its
/// job is an error. Those who stop a pipeline choose their jobs by
/// `usher_core::pipeline::cancel_stops`, so a batch never cancels a cleanup job
/// gracefully.
pub fn plan_batch(jobs: &HashMap<i64, Job>, moves: &[Move], t: &str) -> Result<BatchPlan, EngineError> {
    let mut seen = HashSet::with_capacity(moves.len());
    if let Some(twice) = moves.iter().find(|m| !seen.insert(m.job_id)) {
        return Err(EngineError::Internal(format!("a batch names job {} twice", twice.job_id)));
    }
    let mut plan = BatchPlan::default();
    let mut group_of: HashMap<JobWrite, usize> = HashMap::new();
    for mv in moves {
        let job = jobs
            .get(&mv.job_id)
            .ok_or_else(|| EngineError::NotFound(format!("job {}", mv.job_id)))?;
        let (write, audit) = match plan_move(job, None, mv, t) {
            Ok(Decision::Write { write, audit }) => (*write, audit),
            Ok(Decision::Unchanged) | Err(EngineError::InvalidTransition(_)) => continue,
            Err(e) => return Err(e),
        };
        let group = *group_of.entry(write.clone()).or_insert_with(|| {
            plan.groups.push((write, Vec::new()));
            plan.groups.len() - 1
        });
        plan.groups[group].1.push(mv.job_id);
        plan.audits.push(audit);
    }
    Ok(plan)
}

/// The pipeline once its jobs have these statuses and `when`s (the newest attempt of
/// each; only which pairs occur matters) at time `t`, or None when its status stays.
pub fn pipeline_after(pipeline: &Pipeline, jobs: &[(Status, When)], t: &str) -> Option<Pipeline> {
    let derived = pipeline_status(jobs.iter().copied(), pipeline.cancel.as_ref().map(|c| c.mode));
    if pipeline.status == derived {
        return None;
    }
    let mut pipeline = pipeline.clone();
    if jobs.iter().any(|(s, _)| s.has_started()) && pipeline.started_at.is_none() {
        pipeline.started_at = Some(t.to_string());
    }
    pipeline.finished_at = derived.is_terminal().then(|| t.to_string());
    pipeline.status = derived;
    Some(pipeline)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
