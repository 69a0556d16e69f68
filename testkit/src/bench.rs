//! What the benchmarks (`server/examples/bench_*.rs`) print: one machine-readable
//! `BENCH {json}` line per figure, which `scripts/bench` gathers into its table, and the
//! quantiles those figures are made of.

/// Prints `BENCH {"figure":…,"db":…,…values}` for scripts/bench.
pub fn record(figure: &str, db: &str, values: serde_json::Value) {
    let mut line = serde_json::json!({ "figure": figure, "db": db });
    if let (Some(out), Some(values)) = (line.as_object_mut(), values.as_object()) {
        out.extend(values.clone());
    }
    println!("BENCH {line}");
}

/// The `at` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], at: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * at).round() as usize]
}
