//! The server's side of runner protocol v1 (`/api/runner/v1/connect`, documented in
//! docs/runner-protocol.md). One session per connected runner: it hands out pending
//! jobs when the runner has free slots, turns its log and report frames into engine
//! calls, and pushes `cancel`/`abort` the moment a held job's status changes on the bus.
//! Files come over plain HTTP (see [`crate::runner_files`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use usher_core::protocol::{PROTOCOL_VERSION, RunnerMessage, ServerMessage};
use usher_core::status::RunnerCommand;
use usher_engine::{BusEvent, Engine, EngineError};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use usher_core::api::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::caller::bearer;
use crate::error::ApiError;
use crate::runner_hub::{Routed, RunnerHub};

/// The routes runners use, with their descriptions (they join `openapi.json`).
pub fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(connect))
        .merge(crate::runner_files::documented_routes())
}

/// Runner protocol v1 (docs/runner-protocol.md) over a websocket.
#[utoipa::path(get, path = "/api/runner/v1/connect", tag = "runners",
    responses(
        (status = 101, description = "Switching to the runner protocol websocket"),
        (status = 400, description = "Not a websocket upgrade request", body = ErrorBody),
        (status = 401, description = "No valid runner token", body = ErrorBody)))]
pub async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or(EngineError::Unauthorized)?;
    let token_id = state.engine.authenticate_runner(&token).await?;
    let upgrade = upgrade.map_err(crate::error::not_a_websocket)?;
    let engine = state.engine.clone();
    let shutdown = state.shutdown.clone();
    let hub = state.runner_hub.clone();
    Ok(upgrade.max_message_size(4 * 1024 * 1024).on_upgrade(move |socket| async move {
        if let Err(e) = session(engine, hub, token_id, socket, shutdown).await {
            tracing::info!("runner session ended: {e}");
        }
    }))
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), String> {
    let text = serde_json::to_string(msg).expect("serialisable");
    socket.send(Message::Text(text.into())).await.map_err(|e| e.to_string())
}

async fn recv(socket: &mut WebSocket) -> Result<Option<RunnerMessage>, String> {
    loop {
        match socket.recv().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).map(Some).map_err(|e| format!("unreadable frame: {e}")),
            Some(Ok(_)) => continue,
        }
    }
}

async fn session(
    engine: Engine,
    hub: RunnerHub,
    token_id: i64,
    mut socket: WebSocket,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    // Changes committed during the handshake wait here; the hub takes over once it knows
    // which runner this is. A change in both arrives once more from the hub: harmless,
    // and skipped when it is the same event.
    let mut early = engine.bus().subscribe();
    let (runner_id, held, tags) = handshake(&engine, token_id, &mut socket).await?;
    let mut routed = hub.register(runner_id, &held);
    tracing::info!(runner = runner_id, "runner connected");
    engine.metrics().runners_connected.inc();
    engine.runner_connected(runner_id);
    let _connected = Connected(engine.clone(), runner_id);
    let mut runner = HeldBy {
        engine,
        token_id,
        runner_id,
        held,
        tags,
        free_slots: 0,
    };
    let mut seen_early = Vec::new();
    loop {
        let event = match early.try_recv() {
            Ok(event) => event,
            Err(TryRecvError::Lagged(n)) => {
                runner.on_bus(&mut socket, Err(&RecvError::Lagged(n))).await?;
                continue;
            }
            Err(_) => break,
        };
        runner.on_bus(&mut socket, Ok(&event.event)).await?;
        seen_early.push(event);
    }
    drop(early);
    let mut try_claim = false;
    let mut safety_net = tokio::time::interval(Duration::from_secs(1));
    loop {
        if std::mem::take(&mut try_claim) {
            runner.hand_out_jobs(&mut socket).await?;
        }
        tokio::select! {
            msg = recv(&mut socket) => match msg? {
                None => return Ok(()),
                Some(RunnerMessage::Log { job_id, offset, data }) => {
                    let (pieces, after) = waiting_log_pieces(&mut socket, job_id, (offset, data))?;
                    runner.on_log_pieces(&mut socket, job_id, pieces).await?;
                    match after {
                        Some(Some(msg)) => try_claim = runner.on_message(&mut socket, msg).await?,
                        Some(None) => return Ok(()),
                        None => {}
                    }
                }
                Some(msg) => try_claim = runner.on_message(&mut socket, msg).await?,
            },
            change = routed.changes.recv() => match change {
                None => return Ok(()),
                Some(Routed::Change(event)) if seen_early.iter().any(|e| Arc::ptr_eq(e, &event)) => {}
                Some(Routed::Change(event)) => try_claim = runner.on_bus(&mut socket, Ok(&event.event)).await?,
                Some(Routed::Missed) => try_claim = runner.on_bus(&mut socket, Err(&RecvError::Lagged(0))).await?,
            },
            _ = routed.pending.changed() => try_claim = runner.free_slots > 0,
            _ = safety_net.tick() => {
                seen_early.clear();
                try_claim = runner.free_slots > 0;
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                let _ = socket.send(Message::Close(None)).await;
                return Ok(());
            }
        }
    }
}

/// The most log pieces (and bytes) stored in one transaction.
const LOG_BATCH_PIECES: usize = 256;
const LOG_BATCH_BYTES: usize = 1024 * 1024;

/// `first` and the further `log` frames of the same job that have already arrived (a
/// runner streams them without waiting for acks), without waiting for more. Also returns
/// what ended the run, if anything: another frame (`Some(Some)`), or the socket closing
/// (`Some(None)`).
#[allow(clippy::type_complexity)]
fn waiting_log_pieces(
    socket: &mut WebSocket,
    job_id: i64,
    first: (u64, String),
) -> Result<(Vec<(u64, String)>, Option<Option<RunnerMessage>>), String> {
    use futures::FutureExt;
    let mut bytes = first.1.len();
    let mut pieces = vec![first];
    while pieces.len() < LOG_BATCH_PIECES && bytes < LOG_BATCH_BYTES {
        match recv(socket).now_or_never() {
            None => break,
            Some(Ok(Some(RunnerMessage::Log { job_id: j, offset, data }))) if j == job_id => {
                bytes += data.len();
                pieces.push((offset, data));
            }
            Some(Ok(other)) => return Ok((pieces, Some(other))),
            Some(Err(e)) => return Err(e),
        }
    }
    Ok((pieces, None))
}

/// `hello` → `welcome`: checks the protocol version and registers the runner (keeping
/// its previous id when it reconnects with the same token). Returns the runner's id and
/// the unfinished jobs among those it says it holds.
async fn handshake(engine: &Engine, token_id: i64, socket: &mut WebSocket) -> Result<(i64, HashSet<i64>, Vec<String>), String> {
    let Some(RunnerMessage::Hello {
        version,
        name,
        held_jobs,
        runner_id,
        tags,
        executor,
        ..
    }) = recv(socket).await?
    else {
        return Err("the first frame must be `hello`".into());
    };
    if version != PROTOCOL_VERSION {
        let message = format!("this server speaks runner protocol {PROTOCOL_VERSION}, not {version}");
        send(socket, &ServerMessage::Error { message }).await?;
        return Err("protocol version mismatch".into());
    }
    let runner_id = engine
        .register_runner(&name, token_id, runner_id, &tags)
        .await
        .map_err(|e| e.to_string())?;
    engine
        .runner_said_hello(runner_id, executor.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    send(
        socket,
        &ServerMessage::Welcome {
            runner_id,
            version: PROTOCOL_VERSION,
        },
    )
    .await?;
    // The jobs it says it holds: tell it each one's status (it stops those that ended).
    let mut held = HashSet::new();
    for job_id in held_jobs {
        let status = engine.job_status(job_id).await.map_err(|e| e.to_string())?;
        if !status.is_terminal() {
            held.insert(job_id);
        }
        send(socket, &ServerMessage::JobStatus { job_id, status }).await?;
    }
    Ok((runner_id, held, tags))
}

/// A runner's connection, counted for `/metrics` and logged while it lives.
struct Connected(Engine, i64);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.metrics().runners_connected.dec();
        self.0.runner_disconnected(self.1);
        tracing::info!(runner = self.1, "runner disconnected");
    }
}

/// One connected runner: the jobs it holds and the slots it asked jobs for.
struct HeldBy {
    engine: Engine,
    token_id: i64,
    runner_id: i64,
    held: HashSet<i64>,
    /// What the runner advertised: only jobs whose tags it all has are claimed for it.
    tags: Vec<String>,
    free_slots: u32,
}

impl HeldBy {
    /// Claims pending jobs for every free slot and sends them.
    async fn hand_out_jobs(&mut self, socket: &mut WebSocket) -> Result<(), String> {
        while self.free_slots > 0 {
            match self.engine.claim_job(self.runner_id, &self.tags).await.map_err(|e| e.to_string())? {
                Some(job) => {
                    self.free_slots -= 1;
                    self.held.insert(job.job_id);
                    send(socket, &ServerMessage::Job { job: Box::new(job) }).await?;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Log pieces of one job, stored together; each gets its `log_ack`.
    async fn on_log_pieces(&mut self, socket: &mut WebSocket, job_id: i64, pieces: Vec<(u64, String)>) -> Result<(), String> {
        use futures::SinkExt;
        let refs: Vec<(u64, &str)> = pieces.iter().map(|(offset, data)| (*offset, data.as_str())).collect();
        match self.engine.append_log_pieces(self.runner_id, job_id, &refs).await {
            Ok(lengths) => {
                for (log_length, status) in lengths {
                    let ack = ServerMessage::LogAck {
                        job_id,
                        log_length,
                        status,
                    };
                    let text = serde_json::to_string(&ack).expect("serialisable");
                    socket.feed(Message::Text(text.into())).await.map_err(|e| e.to_string())?;
                }
                socket.flush().await.map_err(|e| e.to_string())
            }
            Err(e) => send(socket, &ServerMessage::Error { message: e.to_string() }).await,
        }
    }

    /// A frame from the runner; true when it is worth trying to hand out jobs.
    async fn on_message(&mut self, socket: &mut WebSocket, msg: RunnerMessage) -> Result<bool, String> {
        let engine = &self.engine;
        match msg {
            RunnerMessage::RequestJob => {
                self.free_slots += 1;
                return Ok(true);
            }
            RunnerMessage::Log { job_id, offset, data } => match engine.append_log(self.runner_id, job_id, offset, &data).await {
                Ok((log_length, status)) => {
                    send(
                        socket,
                        &ServerMessage::LogAck {
                            job_id,
                            log_length,
                            status,
                        },
                    )
                    .await?
                }
                Err(e) => send(socket, &ServerMessage::Error { message: e.to_string() }).await?,
            },
            RunnerMessage::Finished { job_id, report } => {
                self.held.remove(&job_id);
                match engine.finish_job(self.runner_id, job_id, report).await {
                    Ok(status) => send(socket, &ServerMessage::FinishedAck { job_id, status }).await?,
                    Err(e) => send(socket, &ServerMessage::Error { message: e.to_string() }).await?,
                }
            }
            RunnerMessage::Deferred { job_id, index, command } => {
                // Only for a job it holds; a refused one is said in the runner's log.
                let kept = match self.held.contains(&job_id) {
                    false => Ok(false),
                    true => engine.record_deferred(self.runner_id, job_id, index, &command).await,
                };
                match kept {
                    Ok(true) => {}
                    Ok(false) => {
                        let message = format!("job {job_id}: the deferred command was not recorded (not held, ended, or too many)");
                        send(socket, &ServerMessage::Error { message }).await?
                    }
                    Err(e) => send(socket, &ServerMessage::Error { message: e.to_string() }).await?,
                }
            }
            RunnerMessage::Recovered { job_id, teardown } => {
                if let Err(e) = engine.recovered_receipt(self.token_id, job_id, &teardown).await {
                    send(socket, &ServerMessage::Error { message: e.to_string() }).await?
                }
            }
            RunnerMessage::Heartbeat => {
                if !engine.runner_token_is_live(self.token_id).await.map_err(|e| e.to_string())? {
                    let close = CloseFrame {
                        code: close_code::POLICY,
                        reason: "the runner token was revoked".into(),
                    };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return Err("runner token revoked".into());
                }
                engine.runner_seen(self.runner_id).await.map_err(|e| e.to_string())?;
                // A paused runner that was resumed meanwhile (perhaps on another
                // replica) gets its jobs within a heartbeat.
                return Ok(self.free_slots > 0);
            }
            RunnerMessage::Draining => engine.runner_draining(self.runner_id).await.map_err(|e| e.to_string())?,
            RunnerMessage::Hello { .. } => {
                send(
                    socket,
                    &ServerMessage::Error {
                        message: "already said hello".into(),
                    },
                )
                .await?
            }
        }
        Ok(false)
    }

    /// A committed change: a held job's new status becomes a runner command. True when
    /// it is worth trying to hand out jobs.
    async fn on_bus(&mut self, socket: &mut WebSocket, event: Result<&BusEvent, &RecvError>) -> Result<bool, String> {
        match event {
            Ok(BusEvent::Job(job)) if self.held.contains(&job.id) => match job.status.runner_command() {
                Some(RunnerCommand::Cancel) => {
                    let cancel = ServerMessage::Cancel {
                        job_id: job.id,
                        requested_by: job.cancel.as_ref().map(|c| c.requested_by.clone()),
                        reason: job.cancel.as_ref().map(|c| c.reason.as_str().to_string()),
                        message: job.cancel.as_ref().and_then(|c| c.message.clone()),
                    };
                    send(socket, &cancel).await?;
                    if let Some(cancel) = &job.cancel {
                        let waited = usher_engine::metrics::seconds_since(&cancel.requested_at);
                        self.engine.metrics().cancel_to_runner.observe(waited);
                    }
                }
                Some(RunnerCommand::Abort) => {
                    // Ended by someone else (abort, reaper): kill what is left.
                    self.held.remove(&job.id);
                    send(socket, &ServerMessage::Abort { job_id: job.id }).await?;
                }
                None => {}
            },
            Ok(_) | Err(RecvError::Closed) => {}
            Err(RecvError::Lagged(_)) => {
                // Missed events: re-read the status of every held job.
                for job_id in self.held.clone() {
                    let status = self.engine.job_status(job_id).await.map_err(|e| e.to_string())?;
                    if status.is_terminal() {
                        self.held.remove(&job_id);
                    }
                    send(socket, &ServerMessage::JobStatus { job_id, status }).await?;
                }
                return Ok(self.free_slots > 0);
            }
        }
        Ok(false)
    }
}
