//! The event websocket `/api/v1/events` (docs/api.md "Event websocket"): every committed
//! status change, as `{"type":"job"|"pipeline", …}` text frames, filtered by project,
//! pipeline or job; a socket filtered by one job also gets that job's new log output as
//! `{"type":"log", …}` frames. A subscriber too slow to keep up with status changes is
//! closed with a reason rather than buffered without bound.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use usher_core::api::EventFrame;
use usher_engine::BusEvent;

use crate::AppState;
use crate::caller::{bearer, is_same_origin};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use usher_core::api::ErrorBody;

#[derive(Deserialize, Default)]
pub struct EventFilter {
    project_id: Option<i64>,
    pipeline_id: Option<i64>,
    job_id: Option<i64>,
}

impl EventFilter {
    fn keeps(&self, event: &BusEvent) -> bool {
        match event {
            BusEvent::Job(job) => {
                self.project_id.is_none_or(|p| p == job.project_id)
                    && self.pipeline_id.is_none_or(|p| p == job.pipeline_id)
                    && self.job_id.is_none_or(|j| j == job.id)
            }
            BusEvent::Pipeline(pipeline) => {
                self.job_id.is_none()
                    && self.project_id.is_none_or(|p| p == pipeline.project_id)
                    && self.pipeline_id.is_none_or(|p| p == pipeline.id)
            }
        }
    }
}

/// The most frames written at once.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// How long one frame may wait for a client that does not read.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every committed status change as a websocket text frame (`EventFrame`).
#[utoipa::path(get, path = "/events", tag = "events",
    params(
        ("project_id" = Option<i64>, Query, description = "Only this project's jobs and pipelines"),
        ("pipeline_id" = Option<i64>, Query, description = "Only this pipeline and its jobs"),
        ("job_id" = Option<i64>, Query, description = "Only this job")),
    responses(
        (status = 101, description = "Switching to the websocket; each text frame is an EventFrame"),
        (status = 400, description = "Not a websocket upgrade request, or a bad filter", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Role too low, or a cross-site browser request", body = ErrorBody)))]
pub async fn events_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    ApiQuery(filter): ApiQuery<EventFilter>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let actor = state.engine.authenticate_request(&headers).await?;
    actor.require(usher_core::roles::Action::Read)?;
    // A cookie-authenticated socket must be opened by one of our own pages.
    if bearer(&headers).is_none() && !is_same_origin(&headers, &uri) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "cross-site websocket refused"));
    }
    let upgrade = upgrade.map_err(crate::error::not_a_websocket)?;
    let receiver = state.engine.bus().subscribe();
    let logs = filter.job_id.map(|_| state.engine.bus().subscribe_logs());
    let shutdown = state.shutdown.clone();
    // Small buffers: at 10,000 subscribers tungstenite's 128 KiB defaults would be 1.3 GB.
    Ok(upgrade
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| stream_events(state.engine, socket, filter, receiver, logs, shutdown)))
}

/// Counts an open event websocket for `/metrics` while it lives.
struct Subscriber(usher_engine::Engine);

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.metrics().event_subscribers.dec();
    }
}

async fn stream_events(
    engine: usher_engine::Engine,
    mut socket: WebSocket,
    filter: EventFilter,
    mut receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<usher_engine::bus::Published>>,
    mut logs: Option<tokio::sync::broadcast::Receiver<usher_core::api::LogAppend>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    engine.metrics().event_subscribers.inc();
    let _counted = Subscriber(engine);
    loop {
        tokio::select! {
            event = receiver.recv() => {
                // This event and those already waiting behind it go out in one write: a
                // commit often publishes several (a job and its pipeline), and with
                // 10,000 sockets the writes, not the events, are the cost.
                let mut next = event;
                let mut waiting = 0;
                loop {
                    match next {
                        // Serialized once for every socket (the first one to get here pays).
                        Ok(published) if filter.keeps(&published.event) => {
                            if !feed_text(&mut socket, &*published.frame_json()).await {
                                return;
                            }
                            waiting += 1;
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(missed)) => {
                            let reason = format!("too slow: missed {missed} events; reconnect and re-read state");
                            let _ = socket.send(Message::Close(Some(CloseFrame { code: 1008, reason: reason.into() }))).await;
                            return;
                        }
                        Err(RecvError::Closed) => return,
                    }
                    next = match receiver.try_recv() {
                        Ok(published) if waiting < MAX_FRAMES_PER_WRITE => Ok(published),
                        Ok(published) => {
                            if !flush(&mut socket).await {
                                return;
                            }
                            waiting = 0;
                            Ok(published)
                        }
                        Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                        Err(TryRecvError::Closed) => Err(RecvError::Closed),
                        Err(TryRecvError::Empty) => break,
                    };
                }
                if waiting > 0 && !flush(&mut socket).await {
                    return;
                }
            },
            // A reader that misses log pieces sees a gap in the offsets and reads the log
            // from its own length, so lagging here costs nothing but a fetch.
            piece = async { logs.as_mut().expect("guarded").recv().await }, if logs.is_some() => match piece {
                Ok(piece) if Some(piece.job_id) == filter.job_id => {
                    // Serialized, and the piece let go, before the frame waits for the
                    // client: a socket that stalls holds the frame once (in its write
                    // buffer), not the piece as well.
                    let frame = serde_json::to_string(&EventFrame::Log(piece)).expect("serialisable");
                    if !send_text(&mut socket, frame).await {
                        return;
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                return;
            }
        }
    }
}

/// Sends one frame; false when the client is gone or has read nothing for
/// [`SEND_TIMEOUT`] (its socket buffers are full, so no close frame would get through).
async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    feed_text(socket, text).await && flush(socket).await
}

/// Queues one frame without writing it yet (see [`flush`]).
async fn feed_text(socket: &mut WebSocket, text: impl Into<Utf8Bytes>) -> bool {
    use futures::SinkExt;
    within_send_timeout(socket.feed(Message::Text(text.into()))).await
}

/// Writes the queued frames.
async fn flush(socket: &mut WebSocket) -> bool {
    use futures::SinkExt;
    within_send_timeout(socket.flush()).await
}

async fn within_send_timeout(write: impl std::future::Future<Output = Result<(), axum::Error>>) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!("event websocket dropped: the client read nothing for {SEND_TIMEOUT:?}");
            false
        }
    }
}
