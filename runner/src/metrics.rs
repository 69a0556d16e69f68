//! What a runner reports on `--metrics-addr` (`GET /metrics`, the OpenMetrics text that
//! Prometheus reads): how many jobs it runs, how they ended, how long a cancel took from
//! the server's frame to the job's report, whether it is connected and how often it had
//! to reconnect, and the process's own CPU, memory, file descriptors and threads. Counts
//! and timings only: no job names, projects or tokens. The session updates the numbers;
//! [`serve`] answers scrapes on a listener of its own, apart from the job traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`RunnerMetrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// One runner's numbers since it started.
#[derive(Debug)]
pub struct RunnerMetrics {
    registry: Registry,
    jobs_running: Gauge<i64, AtomicI64>,
    connected: Gauge<i64, AtomicI64>,
    reconnects: Counter,
    jobs_finished: Family<OutcomeLabel, Counter>,
    cancel_handling: Histogram,
}

impl Default for RunnerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RunnerMetrics {
    pub fn new() -> RunnerMetrics {
        let mut registry = Registry::default();
        let jobs_running = Gauge::<i64, AtomicI64>::default();
        registry.register("usher_runner_jobs_running", "Jobs this runner holds now", jobs_running.clone());
        let connected = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "usher_runner_connected",
            "1 while the runner is connected to the server",
            connected.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "usher_runner_reconnects",
            "Connections made after the first (each follows a lost one)",
            reconnects.clone(),
        );
        let jobs_finished = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "usher_runner_jobs_finished",
            "Jobs this runner ran to their end, by outcome (success, failed, canceled, aborted)",
            jobs_finished.clone(),
        );
        // From 1 ms to ~4.5 h: a graceful cancel lasts as long as the job's cleanup.
        let cancel_handling = Histogram::new(exponential_buckets(0.001, 2.0, 24));
        registry.register(
            "usher_runner_cancel_handling_seconds",
            "From the server's cancel frame to the job's report (script stopped, after_script and uploads done)",
            cancel_handling.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("usher_runner_build_info", "The runner's version", build_info);
        registry.register_collector(Box::new(usher_core::process_metrics::ProcessCollector));
        RunnerMetrics {
            registry,
            jobs_running,
            connected,
            reconnects,
            jobs_finished,
            cancel_handling,
        }
    }

    pub(crate) fn job_started(&self) {
        self.jobs_running.inc();
    }

    /// A job's task ended: `outcome` is how, `cancel_received` when its cancel arrived.
    pub(crate) fn job_ended(&self, outcome: &str, cancel_received: Option<Instant>) {
        self.jobs_running.dec();
        self.jobs_finished
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(at) = cancel_received {
            self.cancel_handling.observe(at.elapsed().as_secs_f64());
        }
    }

    /// The connection came up (`first`: the runner's first since it started) or went down.
    pub(crate) fn connection(&self, up: bool, first: bool) {
        self.connected.set(i64::from(up));
        if up && !first {
            self.reconnects.inc();
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// Answers `GET /metrics` on `addr` until the runner exits; anything else is 404.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<RunnerMetrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&req, &metrics)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

/// Binds `--metrics-addr` before the runner connects, so that a taken port is an error
/// at start rather than a silent absence.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

fn answer(req: &Request<hyper::body::Incoming>, metrics: &RunnerMetrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if req.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the runner serves only /metrics\n".to_string(),
        )
    } else if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        (StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "use GET\n".to_string())
    } else {
        (StatusCode::OK, CONTENT_TYPE, metrics.render())
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text() {
        let m = RunnerMetrics::new();
        m.connection(true, true);
        m.connection(false, false);
        m.connection(true, false);
        m.job_started();
        m.job_started();
        m.job_ended("canceled", Some(Instant::now()));
        let text = m.render();
        for line in [
            "usher_runner_jobs_running 1",
            "usher_runner_connected 1",
            "usher_runner_reconnects_total 1",
            "usher_runner_jobs_finished_total{outcome=\"canceled\"} 1",
            "usher_runner_cancel_handling_seconds_count 1",
            "usher_runner_build_info{version=",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
