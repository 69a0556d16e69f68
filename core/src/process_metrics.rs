//! The standard `process_*` metrics (CPU seconds, resident and virtual memory, open
//! file descriptors, threads, start time) of the process that reads them, from Linux's
//! `/proc`, as every Prometheus client library reports them. A `prometheus-client`
//! collector that the server and the runner both register; the only part of this crate
//! that reads anything (feature `process-metrics`, which the browser build leaves out).

/// The standard `process_*` metrics of the process that reads them (Linux `/proc`), as
/// every Prometheus client library reports them.
#[derive(Debug)]
pub struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&prometheus_client::registry::Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<prometheus_client::registry::Unit>, f64); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(prometheus_client::registry::Unit::Bytes),
                stats.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(prometheus_client::registry::Unit::Bytes),
                stats.virtual_bytes,
            ),
            ("process_open_fds", "Number of open file descriptors", None, stats.open_fds),
            ("process_threads", "Number of OS threads in the process", None, stats.threads),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds",
                Some(prometheus_client::registry::Unit::Seconds),
                stats.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// What `/proc/self` says of this process.
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    threads: f64,
    start_time_seconds: f64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and may hold spaces:
        // field 3 (state) is the first of `rest`.
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { rest.get(n - 3)?.parse().ok() };
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
        let boot_time: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            threads: field(20)?,
            start_time_seconds: boot_time + field(22)? / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_numbers_are_this_process() {
        let stats = ProcessStats::read().expect("/proc/self is readable");
        assert!(
            stats.resident_bytes > 1_000_000.0,
            "a test binary holds more than 1 MB: {}",
            stats.resident_bytes
        );
        assert!(stats.threads >= 1.0);
        assert!(stats.open_fds >= 3.0, "stdin, stdout, stderr at least");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stats.start_time_seconds <= now + 1.0 && stats.start_time_seconds > now - 86_400.0 * 30.0);
    }
}
