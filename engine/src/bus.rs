//! The in-process event bus: every committed status change is published here, after
//! its transaction commits. The event websocket and the runner sessions subscribe.
//! On SQLite the engine publishes directly; on PostgreSQL each replica's one listener
//! connection receives every replica's changes (LISTEN/NOTIFY) and fans them out here,
//! so a cancel made on replica A reaches websockets and runners on replica B. New log
//! output travels the same two ways, on a channel of its own.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;
use usher_core::api::{EventFrame, Job, LogAppend, Pipeline};

// Published once into an `Arc` (see [`Published`]) and shared by every subscriber: the
// larger variant is never copied around, so it is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum BusEvent {
    Job(Job),
    /// A pipeline whose derived status changed (without its jobs).
    Pipeline(Pipeline),
}

/// An event as subscribers receive it: shared, not copied, between them — 10,000 event
/// websockets get one allocation — with its websocket frame serialized once, by the
/// first subscriber that sends it.
#[derive(Debug)]
pub struct Published {
    pub event: BusEvent,
    frame: OnceLock<Arc<str>>,
}

impl Published {
    /// The event as the event websocket's JSON frame (`EventFrame`).
    pub fn frame_json(&self) -> Arc<str> {
        self.frame
            .get_or_init(|| {
                let frame = match &self.event {
                    BusEvent::Job(job) => EventFrame::Job { job: job.clone() },
                    BusEvent::Pipeline(pipeline) => EventFrame::Pipeline {
                        pipeline: pipeline.clone(),
                    },
                };
                serde_json::to_string(&frame).expect("serialisable").into()
            })
            .clone()
    }
}

/// Status changes and log output travel separately: only sockets watching one job's log
/// take log pieces, so a flood of output never makes a status subscriber fall behind.
#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<Arc<Published>>,
    logs: broadcast::Sender<LogAppend>,
}

impl Bus {
    pub fn new(capacity: usize) -> Bus {
        let (sender, _) = broadcast::channel(capacity);
        let (logs, _) = broadcast::channel(capacity);
        Bus { sender, logs }
    }

    pub fn publish_log(&self, piece: LogAppend) {
        let _ = self.logs.send(piece);
    }

    pub fn subscribe_logs(&self) -> broadcast::Receiver<LogAppend> {
        self.logs.subscribe()
    }

    pub fn publish(&self, event: BusEvent) {
        // No subscriber is fine: nobody is watching.
        let _ = self.sender.send(Arc::new(Published {
            event,
            frame: OnceLock::new(),
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.sender.subscribe()
    }
}

/// LISTENs on the store's change channel and publishes what arrives; reconnects by itself.
pub async fn spawn_postgres_listener(
    url: &str,
    bus: Bus,
    store: crate::store::Store,
) -> Result<tokio::task::JoinHandle<()>, crate::EngineError> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener
        .listen_all([crate::store::CHANGES_CHANNEL, crate::store::LOGS_CHANNEL])
        .await?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(notification) if notification.channel() == crate::store::LOGS_CHANNEL => {
                    match serde_json::from_str::<LogAppend>(notification.payload()) {
                        Ok(piece) => bus.publish_log(piece),
                        Err(e) => tracing::warn!("unreadable log notice: {e}"),
                    }
                }
                Ok(notification) => match serde_json::from_str::<crate::store::ChangeNotice>(notification.payload()) {
                    Ok(notice) => {
                        if let Some(job) = notice.job {
                            bus.publish(BusEvent::Job(job));
                        }
                        // A job too large for its notice is read (as it is now).
                        if let Some(id) = notice.job_id {
                            match store.get_job(id).await {
                                Ok(Some(job)) => bus.publish(BusEvent::Job(job)),
                                Ok(None) => {}
                                Err(e) => tracing::warn!("reading job {id} of a change notice: {e}"),
                            }
                        }
                        if let Some(p) = notice.pipeline {
                            bus.publish(BusEvent::Pipeline(p));
                        }
                    }
                    Err(e) => tracing::warn!("unreadable change notice: {e}"),
                },
                Err(e) => {
                    tracing::warn!("change listener: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }))
}
