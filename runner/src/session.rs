//! The runner's side of runner protocol v1 (docs/runner-protocol.md): one websocket to
//! the server, reconnected with backoff; jobs pushed to it run as tasks, and cancels and
//! aborts pushed to it reach those tasks at once. Log frames and reports wait for the
//! server's acknowledgement and are sent again after a reconnect.
//!
//! Stopping ([`Stop`]): `Drain` takes no new job, stops the running ones like a cancel
//! (after_script runs; they are reported failed with `runner_shutdown`) and returns once
//! the server has every report; `Now` kills every job at once. Either way `run` returns
//! only after the job tasks have killed their processes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use usher_core::protocol::{JobAssignment, JobReport, PROTOCOL_VERSION, RunnerMessage, ServerMessage};
use usher_core::status::{RunnerCommand, Status};

use crate::artifacts::Uploader;
pub use crate::config::RunnerConfig;
use crate::control::Control;
use crate::executor::{JobHost, JobOutcome, run_job};
use crate::logsink::LogHandle;

/// What the runner's owner asks of it; the value only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Keep taking and running jobs.
    No,
    /// Finish what runs: no new jobs, running ones run to their end and are reported
    /// (SIGQUIT; the owner moves on to `Drain` after its drain timeout).
    Finish,
    /// Finish now: no new jobs, running ones stopped gracefully and reported.
    Drain,
    /// Kill every job now and return.
    Now,
}

/// What the runner's signals ask, in order: SIGQUIT finishes what runs (and after
/// `drain_timeout` stops it gracefully); a first SIGTERM/SIGINT stops running jobs like a
/// cancel (after_script runs, reports reach the server); a second kills every job now.
pub async fn follow_signals(stop: watch::Sender<Stop>, drain_timeout: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut quit)) = (signal(SignalKind::terminate()), signal(SignalKind::quit())) else {
        tracing::warn!("no signal handlers: the runner stops only when killed");
        return;
    };
    let mut finish_by: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let now = *stop.borrow();
        let harder = match now {
            Stop::No | Stop::Finish => Stop::Drain,
            Stop::Drain | Stop::Now => Stop::Now,
        };
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => harder,
            _ = term.recv() => harder,
            _ = quit.recv() => {
                if now != Stop::No {
                    continue;
                }
                finish_by = Some(Box::pin(tokio::time::sleep(drain_timeout)));
                Stop::Finish
            }
            _ = async { finish_by.as_mut().expect("guarded").await }, if finish_by.is_some() => {
                finish_by = None;
                if now != Stop::Finish {
                    continue;
                }
                tracing::info!("the drain timeout ran out: stopping the running jobs");
                Stop::Drain
            }
        };
        tracing::info!("stopping: {next:?}");
        let _ = stop.send(next);
        if next == Stop::Now {
            return;
        }
    }
}

/// How long `run` waits, after `Stop::Now`, for job tasks to kill their processes.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// What job tasks tell the session.
enum Internal {
    Send(RunnerMessage),
    /// `outcome`: success, failed or aborted, for the metrics.
    Done {
        job_id: i64,
        report: Option<JobReport>,
        outcome: &'static str,
    },
}

/// The reconnect backoff: the first wait, the longest, and how long a connection must
/// have lasted for the next outage to start from the first wait again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(10);
const GOOD_CONNECTION: Duration = Duration::from_secs(30);

/// A job being worked on: the channel to its task, the task, and its log.
struct HeldJob {
    control: mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<()>,
    log: LogHandle,
    /// When the server's first cancel for it arrived (for the cancel-handling metric).
    cancel_received: Option<std::time::Instant>,
}

/// The log's line for a cancel: who asked, why, and their words (control characters,
/// which the server refuses anyway, are left out).
fn cancel_words(by: &str, reason: Option<&str>, message: Option<&str>) -> String {
    let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
    let said: String = message
        .map(|m| format!(": “{}”", m.chars().filter(|c| !c.is_control()).collect::<String>()))
        .unwrap_or_default();
    format!("Cancel requested by {by}{why}{said}")
}

struct State {
    runner_id: Option<i64>,
    held: HashMap<i64, HeldJob>,
    /// Reports not yet acknowledged by the server.
    unacked: HashMap<i64, JobReport>,
    /// Log frames sent but not yet acknowledged, per job, oldest first: sent again
    /// after a reconnect (the server keeps only what continues its log).
    unacked_logs: HashMap<i64, VecDeque<(u64, String)>>,
    /// `Stop::Drain` was asked: no new jobs; held ones are being stopped.
    draining: bool,
    /// `Stop::Finish` was asked: no new jobs; held ones run to their end.
    finishing: bool,
    /// Receipts of jobs a previous run of this runner left, not yet sent.
    recovered: Vec<(i64, usher_core::api::Teardown)>,
    /// The `deferred` frames of held jobs, sent again after a reconnect (the server
    /// keeps each index once).
    deferred: HashMap<i64, Vec<RunnerMessage>>,
    /// A connection has been made before (the next one is a reconnect).
    connected_before: bool,
}

impl State {
    fn remember_log(&mut self, msg: &RunnerMessage) {
        match msg {
            RunnerMessage::Log { job_id, offset, data } => {
                self.unacked_logs.entry(*job_id).or_default().push_back((*offset, data.clone()));
            }
            RunnerMessage::Deferred { job_id, .. } => self.deferred.entry(*job_id).or_default().push(msg.clone()),
            _ => {}
        }
    }

    /// One `log_ack` answers one `log` frame, in order; anything the log already holds
    /// is acknowledged too.
    fn log_acked(&mut self, job_id: i64, log_length: u64) {
        if let Some(frames) = self.unacked_logs.get_mut(&job_id) {
            frames.pop_front();
            while frames
                .front()
                .is_some_and(|(offset, data)| offset + data.len() as u64 <= log_length)
            {
                frames.pop_front();
            }
            if frames.is_empty() {
                self.unacked_logs.remove(&job_id);
            }
        }
    }

    /// Taking no new job.
    fn closing(&self) -> bool {
        self.draining || self.finishing
    }

    /// Taking no new job, none left, and the server has every report: nothing to do.
    fn drained(&self) -> bool {
        self.closing() && self.held.is_empty() && self.unacked.is_empty()
    }

    fn start_draining(&mut self) {
        if !self.draining {
            self.draining = true;
            for job in self.held.values() {
                let _ = job.control.send(Control::Shutdown);
            }
        }
    }
}

/// Runs until `stop` says so (see the module comment).
pub async fn run(config: RunnerConfig, mut stop: watch::Receiver<Stop>) {
    let host = crate::host::prepare_host(&config).await;
    let (internal_tx, mut internal_rx) = mpsc::unbounded_channel::<Internal>();
    let mut state = State {
        runner_id: None,
        held: HashMap::new(),
        unacked: HashMap::new(),
        unacked_logs: HashMap::new(),
        draining: false,
        finishing: false,
        recovered: host.recovered.clone(),
        deferred: HashMap::new(),
        connected_before: false,
    };
    let mut backoff = FIRST_RETRY;
    loop {
        match *stop.borrow() {
            Stop::Now => break,
            Stop::Drain => state.start_draining(),
            Stop::Finish => state.finishing = true,
            Stop::No => {}
        }
        if state.drained() {
            break;
        }
        let connected_at = std::time::Instant::now();
        let served = connect_and_serve(&config, &host, &mut state, &internal_tx, &mut internal_rx, &mut stop).await;
        config.metrics.connection(false, false);
        // A connection that lasted was a good one: the next outage starts from the
        // shortest wait again.
        if connected_at.elapsed() >= GOOD_CONNECTION {
            backoff = FIRST_RETRY;
        }
        // Each wait is drawn between half the backoff and all of it, so that runners a
        // server restart disconnected together do not all come back at one instant.
        let wait = backoff.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..=1.0));
        match served {
            Ok(()) => continue,
            Err(e) => {
                tracing::warn!(runner = %config.name, "connection to {} lost: {e}; retrying in {wait:?}", config.url);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(LONGEST_RETRY);
    }
    for job in state.held.values() {
        let _ = job.control.send(Control::Abort);
    }
    // The job tasks kill their processes; the runner must not exit before they have.
    let tasks: Vec<_> = state.held.into_values().map(|job| job.task).collect();
    if tokio::time::timeout(KILL_WAIT, futures::future::join_all(tasks)).await.is_err() {
        tracing::warn!(runner = %config.name, "job tasks did not end within {KILL_WAIT:?}");
    }
    // The next job's directories are not needed.
    host.rooms.clear();
    // Every job's cgroup is gone by now, so this runner's own (empty) one goes too: a
    // clean exit leaves nothing behind. rmdir refuses while anything is still in it,
    // which the next start then kills.
    if let Some(root) = &host.cgroups {
        let _ = std::fs::remove_dir(root);
    }
}

fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base.strip_prefix("http://").map(|r| format!("ws://{r}"));
    let rest = rest.or_else(|| base.strip_prefix("https://").map(|r| format!("wss://{r}")));
    format!("{}/api/runner/v1/connect", rest.unwrap_or_else(|| base.to_string()))
}

async fn connect_and_serve(
    config: &RunnerConfig,
    host: &JobHost,
    state: &mut State,
    internal_tx: &mpsc::UnboundedSender<Internal>,
    internal_rx: &mut mpsc::UnboundedReceiver<Internal>,
    stop: &mut watch::Receiver<Stop>,
) -> Result<(), String> {
    let mut request = ws_url(&config.url).into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", config.token)
            .parse()
            .map_err(|_| "the runner token is not a valid header value".to_string())?,
    );
    // Nagle off: small frames like a job's report go out at once.
    let connector = config.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
        .await
        .map_err(|e| crate::tls::explain(&e.to_string()))?;
    let (mut sink, mut stream) = ws.split();
    config.metrics.connection(true, !state.connected_before);
    state.connected_before = true;
    resume(config, state, &mut sink).await?;
    let uploader = Uploader::new(&config.url, &config.token, config.tls.as_ref());
    let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
    heartbeat.tick().await;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => return Err(format!("server closed the connection: {c:?}")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("connection closed".into()),
                };
                let msg: ServerMessage = match serde_json::from_str(&text) {
                    Ok(m) => m,
                    Err(e) => { tracing::warn!("unreadable frame from the server: {e}"); continue; }
                };
                if let ServerMessage::Job { job } = msg {
                    config.metrics.job_started();
                    start_job(host, state, *job, internal_tx, &uploader);
                } else if on_server_message(state, msg) {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok(());
                }
            }
            Some(internal) = internal_rx.recv() => match internal {
                Internal::Send(msg) => {
                    state.remember_log(&msg);
                    sink.send(frame(&msg)).await.map_err(|e| e.to_string())?
                }
                Internal::Done { job_id, report, outcome } => {
                    let cancel_received = state.held.remove(&job_id).and_then(|job| job.cancel_received);
                    let outcome = if cancel_received.is_some() && outcome != "aborted" { "canceled" } else { outcome };
                    config.metrics.job_ended(outcome, cancel_received);
                    // Its report now carries what the deferred commands did.
                    state.deferred.remove(&job_id);
                    if let Some(report) = report {
                        state.unacked.insert(job_id, report.clone());
                        sink.send(frame(&RunnerMessage::Finished { job_id, report })).await.map_err(|e| e.to_string())?;
                    }
                    if !state.closing() {
                        sink.send(frame(&RunnerMessage::RequestJob)).await.map_err(|e| e.to_string())?;
                    } else if state.drained() {
                        let _ = sink.send(Message::Close(None)).await;
                        return Ok(());
                    }
                }
            },
            _ = heartbeat.tick() => sink.send(frame(&RunnerMessage::Heartbeat)).await.map_err(|e| e.to_string())?,
            changed = stop.changed() => {
                let wanted = if changed.is_ok() { *stop.borrow() } else { Stop::Now };
                let was_closing = state.closing();
                match wanted {
                    Stop::Drain => state.start_draining(),
                    Stop::Finish => state.finishing = true,
                    Stop::No | Stop::Now => {}
                }
                if state.closing() && !was_closing {
                    sink.send(frame(&RunnerMessage::Draining)).await.map_err(|e| e.to_string())?;
                }
                if wanted == Stop::Now || state.drained() {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok(());
                }
            }
        }
    }
}

type Sink =
    futures::stream::SplitSink<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, Message>;

fn frame(msg: &RunnerMessage) -> Message {
    Message::Text(serde_json::to_string(msg).expect("serialisable").into())
}

/// The start of every connection: `hello` with the jobs this runner holds, then the log
/// frames a broken connection may have swallowed and the reports that were not
/// acknowledged (logs first, since a finished job takes no more log), then a job request
/// per free slot.
async fn resume(config: &RunnerConfig, state: &mut State, sink: &mut Sink) -> Result<(), String> {
    let send = frame;
    let hello = RunnerMessage::Hello {
        version: PROTOCOL_VERSION,
        name: config.name.clone(),
        concurrency: config.concurrency,
        held_jobs: state.held.keys().copied().chain(state.unacked.keys().copied()).collect(),
        runner_id: state.runner_id,
        tags: config.tags.clone(),
        executor: Some(if config.docker.is_some() { "docker" } else { "shell" }.to_string()),
    };
    sink.send(send(&hello)).await.map_err(|e| e.to_string())?;
    if state.closing() {
        sink.send(send(&RunnerMessage::Draining)).await.map_err(|e| e.to_string())?;
    }
    // Log frames the broken connection may have swallowed, then the reports that were
    // not acknowledged: logs first, since a finished job takes no more log.
    for (job_id, frames) in &state.unacked_logs {
        for (offset, data) in frames {
            let frame = RunnerMessage::Log {
                job_id: *job_id,
                offset: *offset,
                data: data.clone(),
            };
            sink.send(send(&frame)).await.map_err(|e| e.to_string())?;
        }
    }
    for (job_id, report) in &state.unacked {
        sink.send(send(&RunnerMessage::Finished {
            job_id: *job_id,
            report: report.clone(),
        }))
        .await
        .map_err(|e| e.to_string())?;
    }
    // Registrations the broken connection may have swallowed.
    for frames in state.deferred.values() {
        for frame in frames {
            sink.send(send(frame)).await.map_err(|e| e.to_string())?;
        }
    }
    // The receipts of the jobs a previous run of this runner left, once sent.
    while let Some((job_id, teardown)) = state.recovered.last().cloned() {
        sink.send(send(&RunnerMessage::Recovered { job_id, teardown }))
            .await
            .map_err(|e| e.to_string())?;
        state.recovered.pop();
    }
    let free = if state.closing() {
        0
    } else {
        config.concurrency.saturating_sub(state.held.len() as u32)
    };
    for _ in 0..free {
        sink.send(send(&RunnerMessage::RequestJob)).await.map_err(|e| e.to_string())?;
    }

    Ok(())
}

/// A job the server handed over: its task runs it and reports through `internal_tx`.
fn start_job(host: &JobHost, state: &mut State, job: JobAssignment, internal_tx: &mpsc::UnboundedSender<Internal>, uploader: &Uploader) {
    let job_id = job.job_id;
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    // Log frames and the final Done share one channel, so the report can never overtake
    // the job's last lines.
    let forward = internal_tx.clone();
    let log = crate::logsink::spawn(job_id, job.masked.clone(), move |m: RunnerMessage| {
        let _ = forward.send(Internal::Send(m));
    });
    let done = internal_tx.clone();
    let host = host.clone();
    let uploader = uploader.clone();
    let job_log = log.clone();
    let task = tokio::spawn(async move {
        let outcome = run_job(job, &host, Some(&uploader), control_rx, job_log).await;
        let how = match &outcome {
            JobOutcome::Report(r) if r.exit_code == Some(0) && r.failure_reason.is_none() => "success",
            JobOutcome::Report(_) => "failed",
            JobOutcome::Aborted(_) => "aborted",
        };
        let report = match outcome {
            JobOutcome::Report(r) => Some(r),
            // The job is canceled on the server already: only its teardown receipt goes.
            JobOutcome::Aborted(receipt) => receipt.map(|teardown| JobReport {
                exit_code: None,
                failure_reason: None,
                duration_ms: 0,
                after_script: None,
                detail: None,
                dotenv: None,
                teardown: Some(teardown),
            }),
        };
        let _ = done.send(Internal::Done {
            job_id,
            report,
            outcome: how,
        });
    });
    state.held.insert(
        job_id,
        HeldJob {
            control: control_tx,
            task,
            log,
            cancel_received: None,
        },
    );
    if state.draining {
        // Offered before the server knew: it stops at once.
        control(state, job_id, Control::Shutdown);
    }
}

/// Any other frame from the server; true when the runner has drained and should close.
fn on_server_message(state: &mut State, msg: ServerMessage) -> bool {
    match msg {
        ServerMessage::Welcome { runner_id, .. } => state.runner_id = Some(runner_id),
        ServerMessage::Job { .. } => {}
        ServerMessage::Cancel {
            job_id,
            requested_by,
            reason,
            message,
        } => {
            if let (Some(job), Some(by)) = (state.held.get(&job_id), requested_by) {
                job.log.note(&cancel_words(&by, reason.as_deref(), message.as_deref()));
            }
            cancel(state, job_id)
        }
        ServerMessage::Abort { job_id } => control(state, job_id, Control::Abort),
        ServerMessage::LogAck {
            job_id,
            status,
            log_length,
        } => {
            state.log_acked(job_id, log_length);
            follow_status(state, job_id, status);
        }
        ServerMessage::JobStatus { job_id, status } => {
            follow_status(state, job_id, status);
            if status.is_terminal() && !state.held.contains_key(&job_id) {
                state.unacked_logs.remove(&job_id);
            }
        }
        ServerMessage::FinishedAck { job_id, .. } => {
            state.unacked.remove(&job_id);
            state.unacked_logs.remove(&job_id);
            return state.drained();
        }
        ServerMessage::Error { message } => tracing::warn!("server: {message}"),
    }
    false
}

/// The fallback for a missed push: every answer carries the job's status.
fn follow_status(state: &mut State, job_id: i64, status: Status) {
    match status.runner_command() {
        Some(RunnerCommand::Cancel) => cancel(state, job_id),
        Some(RunnerCommand::Abort) => control(state, job_id, Control::Abort),
        None => {}
    }
}

/// A cancel, by frame or by a status that says so; the first one starts the job's
/// cancel-handling clock.
fn cancel(state: &mut State, job_id: i64) {
    if let Some(job) = state.held.get_mut(&job_id) {
        job.cancel_received.get_or_insert_with(std::time::Instant::now);
    }
    control(state, job_id, Control::Cancel)
}

fn control(state: &State, job_id: i64, c: Control) {
    if let Some(job) = state.held.get(&job_id) {
        let _ = job.control.send(c);
    }
}
