//! Routes committed status changes to the runner sessions they concern. Every session
//! reading every change from the bus costs sessions × changes: cancelling a pipeline of
//! 1,000 jobs held by 500 runners was half a million wake-ups and the runners heard last
//! after 250 ms. Here one task reads the bus and hands a job's change only to the
//! sessions of the runner holding it (the job's `runner_id`, set by the claim in the
//! same commit), plus any session that said it holds the job when it connected. That a
//! job became pending is a counter every session watches (a free slot means a claim).
//! If this task falls behind the bus, every session is told to re-read its jobs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use usher_core::status::Status;
use usher_engine::bus::Published;
use usher_engine::{Bus, BusEvent};

/// What a session receives.
pub enum Routed {
    /// A change of one of its jobs.
    Change(Arc<Published>),
    /// Changes were lost (the router fell behind the bus): re-read every held job.
    Missed,
}

#[derive(Clone)]
pub struct RunnerHub {
    routes: Arc<Mutex<Routes>>,
    pending: watch::Sender<u64>,
}

#[derive(Default)]
struct Routes {
    next_id: u64,
    sessions: HashMap<u64, mpsc::UnboundedSender<Routed>>,
    by_runner: HashMap<i64, Vec<u64>>,
    by_job: HashMap<i64, Vec<u64>>,
}

/// A session's place in the hub, removed when dropped. Its queue is unbounded on purpose:
/// it carries only the changes of the few jobs one runner holds, and a router that
/// waited on a slow session would hold up every other runner's cancels.
pub struct Registration {
    hub: RunnerHub,
    id: u64,
    runner_id: i64,
    jobs: Vec<i64>,
    /// The changes for this session (None once the hub has stopped).
    pub changes: mpsc::UnboundedReceiver<Routed>,
    pub pending: PendingJobs,
}

/// Tells a session that jobs have become pending.
pub struct PendingJobs(watch::Receiver<u64>);

impl RunnerHub {
    /// A hub and the task that feeds it from `bus` until `shutdown` turns true.
    pub fn start(bus: &Bus, mut shutdown: watch::Receiver<bool>) -> RunnerHub {
        let hub = RunnerHub {
            routes: Arc::default(),
            pending: watch::Sender::new(0),
        };
        let mut changes = bus.subscribe();
        let router = hub.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Ok(change) => router.route(change),
                        Err(RecvError::Lagged(_)) => router.tell_all_missed(),
                        Err(RecvError::Closed) => return,
                    },
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        });
        hub
    }

    /// Registers the session of runner `runner_id` that holds `held` (as it said when it
    /// connected). Changes committed from now on reach it.
    pub fn register(&self, runner_id: i64, held: &HashSet<i64>) -> Registration {
        let (sender, changes) = mpsc::unbounded_channel();
        let mut routes = self.routes.lock().expect("hub lock");
        routes.next_id += 1;
        let id = routes.next_id;
        routes.sessions.insert(id, sender);
        routes.by_runner.entry(runner_id).or_default().push(id);
        for job in held {
            routes.by_job.entry(*job).or_default().push(id);
        }
        Registration {
            hub: self.clone(),
            id,
            runner_id,
            jobs: held.iter().copied().collect(),
            changes,
            pending: PendingJobs(self.pending.subscribe()),
        }
    }

    fn route(&self, change: Arc<Published>) {
        let BusEvent::Job(job) = &change.event else {
            return;
        };
        // A job became pending, or one that held a resource group let it go: idle
        // runners may now find something to take.
        let frees_a_group = job.resource_group.is_some() && job.status.is_terminal();
        if job.status == Status::Pending || frees_a_group {
            self.pending.send_modify(|n| *n = n.wrapping_add(1));
        }
        let routes = self.routes.lock().expect("hub lock");
        let by_runner = job.runner_id.and_then(|r| routes.by_runner.get(&r));
        let by_job = routes.by_job.get(&job.id);
        let mut targets: Vec<u64> = by_runner.into_iter().chain(by_job).flatten().copied().collect();
        targets.sort_unstable();
        targets.dedup();
        for id in targets {
            if let Some(session) = routes.sessions.get(&id) {
                let _ = session.send(Routed::Change(change.clone()));
            }
        }
    }

    fn tell_all_missed(&self) {
        let routes = self.routes.lock().expect("hub lock");
        for session in routes.sessions.values() {
            let _ = session.send(Routed::Missed);
        }
    }
}

impl PendingJobs {
    /// Waits until a job has become pending since the last call.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self.hub.routes.lock().expect("hub lock");
        routes.sessions.remove(&self.id);
        let id = self.id;
        let unlink = |index: &mut HashMap<i64, Vec<u64>>, key: i64| {
            if let Some(ids) = index.get_mut(&key) {
                ids.retain(|s| *s != id);
                if ids.is_empty() {
                    index.remove(&key);
                }
            }
        };
        unlink(&mut routes.by_runner, self.runner_id);
        for job in std::mem::take(&mut self.jobs) {
            unlink(&mut routes.by_job, job);
        }
    }
}
