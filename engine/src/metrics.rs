//! What `GET /metrics` reports (Prometheus text format): counts and timings only, never
//! names of users or projects. Gauges of jobs per status are read from the database at
//! scrape time; runners and event subscribers are counted as they connect and leave; the
//! cancel histograms are filled by real cancels: from the cancel's commit until the cancel
//! frame is written to the runner's connection (`usher_cancel_to_runner_seconds`), and
//! from the cancel request until the job is terminal (`usher_cancel_to_terminal_seconds`).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

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
        }
    }
}

impl Metrics {
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
