//! Routes committed status changes to the runner sessions they concern. Every session
//! reading every change from the bus costs sessions × changes: cancelling a pipeline of
//! 1,000 jobs held by 500 runners was half a million wake-ups and the runners heard last
//! after 250 ms. Here one task reads the bus and hands a job's change only to the
//! sessions of the runner holding it (the job's `runner_id`, set by the claim in the
//! same commit), plus any session that said it holds the job when it connected. That a
//! job became pending is a counter every session watches (a free slot means a claim).
//! If this task falls behind the bus, every session is told to re-read its jobs.
//! On PostgreSQL it also reads the changes this replica commits as they commit
//! ([`Bus::subscribe_own_commits`]), ahead of their NOTIFY; whichever copy of a change
//! comes second is recognised (the same job state) and not routed again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use usher_core::api::Job;
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
    routed: RecentlyRouted,
}

/// The job states routed lately, so the second copy of a change (own commit, then its
/// NOTIFY, or the other way round) is not routed twice. A job's state carries its times,
/// so two different commits never look the same.
#[derive(Default)]
struct RecentlyRouted {
    states: HashMap<i64, Vec<Job>>,
    order: VecDeque<i64>,
}

/// How many job states [`RecentlyRouted`] keeps: a cancel of a pipeline of 2,000 jobs
/// is 2,000 changes at once.
const ROUTED_KEPT: usize = 4096;

impl RecentlyRouted {
    /// True the first time a state is seen.
    fn first_time(&mut self, job: &Job) -> bool {
        let states = self.states.entry(job.id).or_default();
        if states.contains(job) {
            return false;
        }
        states.push(job.clone());
        self.order.push_back(job.id);
        while self.order.len() > ROUTED_KEPT {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(states) = self.states.get_mut(&oldest) {
                states.remove(0);
                if states.is_empty() {
                    self.states.remove(&oldest);
                }
            }
        }
        true
    }
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
        let mut own_commits = bus.subscribe_own_commits();
        let router = hub.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Ok(change) => router.route(change),
                        Err(RecvError::Lagged(_)) => router.tell_all_missed(),
                        Err(RecvError::Closed) => return,
                    },
                    // Missing one of these costs nothing: its NOTIFY copy follows.
                    change = own_commits.recv() => if let Ok(change) = change {
                        router.route(change);
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
        let mut routes = self.routes.lock().expect("hub lock");
        if !routes.routed.first_time(job) {
            return;
        }
        if job.status == Status::Pending {
            self.pending.send_modify(|n| *n = n.wrapping_add(1));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use usher_engine::bus::Bus;

    fn job(id: i64, status: Status, at: &str) -> Job {
        Job {
            id,
            pipeline_id: 1,
            project_id: 1,
            name: "j".into(),
            stage: "test".into(),
            status,
            interruptible: false,
            created_at: at.into(),
            started_at: Some(at.into()),
            finished_at: None,
            runner_id: Some(7),
            exit_code: None,
            failure_reason: None,
            cancel: None,
            after_script: None,
            tags: vec![],
            waiting_for: None,
            retry_of: None,
            retried: false,
        }
    }

    /// A change this replica committed comes twice (at once, and back through NOTIFY);
    /// the runner's session gets it once, whichever copy is first, and every later
    /// change of the job still reaches it.
    #[tokio::test]
    async fn a_change_heard_twice_reaches_the_runner_once() {
        let bus = Bus::new(64);
        let (_stop, stop_rx) = watch::channel(false);
        let hub = RunnerHub::start(&bus, stop_rx);
        let mut session = hub.register(7, &HashSet::new());
        let canceling = job(1, Status::Canceling, "t1");
        let canceled = job(1, Status::Canceled, "t2");
        bus.publish_own_commit(canceling.clone());
        bus.publish(BusEvent::Job(canceling.clone()));
        bus.publish(BusEvent::Job(canceled.clone()));
        bus.publish_own_commit(canceled.clone());
        let other = job(2, Status::Running, "t3");
        bus.publish(BusEvent::Job(other.clone()));
        let mut heard = Vec::new();
        while heard.len() < 3 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), session.changes.recv()).await {
                Ok(Some(Routed::Change(change))) => match &change.event {
                    BusEvent::Job(job) => heard.push(job.clone()),
                    BusEvent::Pipeline(_) => {}
                },
                other => panic!("{:?}", other.map(|o| o.map(|_| ()))),
            }
        }
        assert_eq!(heard, [canceling, canceled, other]);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(session.changes.try_recv().is_err(), "a change came twice");
    }

    #[test]
    fn the_memory_of_routed_states_is_bounded() {
        let mut routed = RecentlyRouted::default();
        for n in 0..(ROUTED_KEPT as i64 + 10) {
            assert!(routed.first_time(&job(n, Status::Running, "t")));
        }
        assert_eq!(routed.order.len(), ROUTED_KEPT);
        assert!(routed.states.len() <= ROUTED_KEPT);
        // The oldest are forgotten, the newest remembered.
        assert!(routed.first_time(&job(0, Status::Running, "t")));
        assert!(!routed.first_time(&job(ROUTED_KEPT as i64 + 9, Status::Running, "t")));
    }
}
