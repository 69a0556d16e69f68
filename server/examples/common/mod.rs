//! What the benchmarks share: the databases to run on — SQLite in `dir` always, and a
//! fresh PostgreSQL database when TEST_DATABASE_URL is set (scripts/with-postgres) —
//! and the machine-readable line each figure is printed as, which `scripts/bench`
//! gathers into one table.

#![allow(dead_code)]

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

/// `USHER_BENCH_DB=SQLite` or `=PostgreSQL` keeps only that one.
pub async fn databases(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let only = std::env::var("USHER_BENCH_DB").ok();
    let mut out = vec![("SQLite", usher_server::default_database_url(dir))];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) => {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let name = format!("bench_{}_{}", std::process::id(), rand::random::<u32>());
            let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            out.push(("PostgreSQL", format!("{prefix}/{name}")));
        }
        Err(_) => println!("(PostgreSQL skipped: set TEST_DATABASE_URL or run under scripts/with-postgres)"),
    }
    out.retain(|(name, _)| only.as_deref().is_none_or(|o| o == *name));
    out
}

/// The real `usher` binary serving on a free loopback port, as its own process (for
/// figures that must not count the benchmark's own memory or threads).
pub struct UsherProcess {
    child: std::process::Child,
    pub base: String,
}

impl UsherProcess {
    pub fn start(bin: &std::path::Path, data_dir: &std::path::Path, database_url: &str, admin_token: &str) -> UsherProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--database-url", database_url, "serve", "--addr", "127.0.0.1:0"])
            .env("USHER_ADMIN_TOKEN", admin_token)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e} (build it: cargo leptos build --release)", bin.display()));
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let base = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("Usher is serving ").map(str::to_string))
            .expect("the server says where it serves");
        // Keep reading, so a later line of the server never meets a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        UsherProcess { child, base }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        // SAFETY: signals a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for UsherProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
