//! What `GET /metrics` reports (the OpenMetrics text format, which Prometheus reads):
//! counts and timings only, never names of users or projects. Gauges of jobs per status
//! are read from the database at scrape time; runners and event subscribers are counted
//! as they connect and leave; the cancel histograms are filled by real cancels: from the
//! cancel's commit until the cancel frame is written to the runner's connection
//! (`usher_cancel_to_runner_seconds`), and from the cancel request until the job is
//! terminal (`usher_cancel_to_terminal_seconds`). Every committed move counts where it
//! applies: jobs finished by status, cancels by mode and reason, and how long jobs
//! waited for a runner and ran. Counters are this replica's since it started; the
//! `process_*` metrics are this server process's.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use usher_core::api::Job;
use usher_core::status::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CancelLabels {
    mode: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One server's metrics (each engine has its own registry).
pub struct Metrics {
    registry: Registry,
    jobs: Family<StatusLabel, Gauge>,
    pub runners_connected: Gauge<i64, AtomicI64>,
    pub event_subscribers: Gauge<i64, AtomicI64>,
    pub cancel_to_runner: Histogram,
    pub cancel_to_terminal: Histogram,
    /// What final sweeps found that the usual teardown of a job missed (alert on it).
    pub teardown_leftovers: prometheus_client::metrics::counter::Counter,
    jobs_finished: Family<StatusLabel, Counter>,
    cancels: Family<CancelLabels, Counter>,
    queue_time: Histogram,
    job_duration: Histogram,
}

/// Buckets from 0.5 ms to ~65 s: Usher's cancel reaches a runner in milliseconds, a
/// graceful cancel ends when the job's cleanup has run.
fn buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<StatusLabel, Gauge>::default();
        let runners_connected = Gauge::<i64, AtomicI64>::default();
        let event_subscribers = Gauge::<i64, AtomicI64>::default();
        let cancel_to_runner = Histogram::new(buckets());
        let cancel_to_terminal = Histogram::new(buckets());
        let teardown_leftovers = prometheus_client::metrics::counter::Counter::default();
        let jobs_finished = Family::<StatusLabel, Counter>::default();
        let cancels = Family::<CancelLabels, Counter>::default();
        let queue_time = Histogram::new(long_buckets());
        let job_duration = Histogram::new(long_buckets());
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("usher_build_info", "The running version of Usher", build_info);
        registry.register_collector(Box::new(usher_core::process_metrics::ProcessCollector));
        registry.register(
            "usher_jobs_finished",
            "Jobs that reached a final status, by that status",
            jobs_finished.clone(),
        );
        registry.register(
            "usher_cancels",
            "Jobs cancelled gracefully or aborted, by mode and reason",
            cancels.clone(),
        );
        registry.register(
            "usher_job_queue_seconds",
            "From a job's creation until a runner took it",
            queue_time.clone(),
        );
        registry.register(
            "usher_job_duration_seconds",
            "From a job's start until it finished",
            job_duration.clone(),
        );
        registry.register(
            "usher_teardown_leftovers",
            "Processes and Docker objects of finished jobs that only the final sweep found (0 is the goal)",
            teardown_leftovers.clone(),
        );
        registry.register("usher_jobs", "Jobs in each status", jobs.clone());
        registry.register(
            "usher_runners_connected",
            "Runners connected to this server",
            runners_connected.clone(),
        );
        registry.register(
            "usher_event_subscribers",
            "Open event websockets on this server",
            event_subscribers.clone(),
        );
        registry.register(
            "usher_cancel_to_runner_seconds",
            "From a cancel's commit until the cancel frame is written to the runner holding the job",
            cancel_to_runner.clone(),
        );
        registry.register(
            "usher_cancel_to_terminal_seconds",
            "From a cancel request until the job is terminal",
            cancel_to_terminal.clone(),
        );
        Metrics {
            registry,
            jobs,
            runners_connected,
            event_subscribers,
            cancel_to_runner,
            cancel_to_terminal,
            teardown_leftovers,
            jobs_finished,
            cancels,
            queue_time,
            job_duration,
        }
    }
}

/// Buckets from 0.1 s to about 1.8 h: how long jobs wait and run.
fn long_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.1, 2.0, 17)
}

impl Metrics {
    /// Counts one committed move of a job from `from` to where it is now.
    pub fn count_move(&self, from: Status, job: &Job) {
        if job.status == Status::Running
            && from == Status::Pending
            && let Some(started) = &job.started_at
        {
            self.queue_time.observe(seconds_between(&job.created_at, started));
        }
        // A cancel is counted when it is recorded: the move into `canceling`, or straight
        // into `canceled` from a status that was not winding down already.
        let cancelled_now = job.status == Status::Canceling || (job.status == Status::Canceled && from != Status::Canceling);
        if let (true, Some(cancel)) = (cancelled_now, &job.cancel) {
            self.cancels
                .get_or_create(&CancelLabels {
                    mode: cancel.mode.as_str().to_string(),
                    reason: cancel.reason.as_str().to_string(),
                })
                .inc();
        }
        if job.status.is_terminal() {
            self.jobs_finished
                .get_or_create(&StatusLabel {
                    status: job.status.as_str().to_string(),
                })
                .inc();
            if let (Some(started), Some(finished)) = (&job.started_at, &job.finished_at) {
                self.job_duration.observe(seconds_between(started, finished));
            }
        }
    }

    /// The text of a scrape, with `job_counts` (status, count) as the jobs gauge.
    pub fn render(&self, job_counts: &[(String, i64)]) -> String {
        for status in usher_core::Status::ALL {
            let n = job_counts.iter().find(|(s, _)| s == status.as_str()).map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StatusLabel {
                    status: status.as_str().to_string(),
                })
                .set(n);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Seconds from one RFC 3339 time to a later one (0 when unreadable or earlier).
fn seconds_between(from: &str, to: &str) -> f64 {
    match (chrono::DateTime::parse_from_rfc3339(from), chrono::DateTime::parse_from_rfc3339(to)) {
        (Ok(a), Ok(b)) => (b - a).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6,
        _ => 0.0,
    }
}

/// Seconds from an RFC 3339 time until now (0 when unreadable or in the future).
pub fn seconds_since(at: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6
        })
        .unwrap_or(0.0)
}
