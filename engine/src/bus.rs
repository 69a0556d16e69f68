//! The in-process event bus: every committed status change is published here, after
//! its transaction commits. The event websocket and the runner sessions subscribe.
//! (With PostgreSQL replicas, a LISTEN/NOTIFY bridge will feed the same bus.)

use tokio::sync::broadcast;
use usher_core::api::{Job, Pipeline};

#[derive(Clone, Debug)]
pub enum BusEvent {
    Job(Job),
    /// A pipeline whose derived status changed (without its jobs).
    Pipeline(Pipeline),
}

#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<BusEvent>,
}

impl Bus {
    pub fn new(capacity: usize) -> Bus {
        let (sender, _) = broadcast::channel(capacity);
        Bus { sender }
    }

    pub fn publish(&self, event: BusEvent) {
        // No subscriber is fine: nobody is watching.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.sender.subscribe()
    }
}
