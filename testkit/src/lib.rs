//! The harness the server's integration tests (`server/tests`) and benchmarks
//! (`server/examples`, run by `scripts/bench`) share, so that both start Usher, its
//! runners and their fixtures the same way. [`server`] runs Usher in the test's own
//! process; [`process`] runs the real `usher` and `usher-runner` binaries; [`events`],
//! [`procs`] and [`db`] watch what they do; [`runner_socket`] speaks a runner's protocol
//! by hand; [`docker`], [`git`] and [`s3`] are the outside
//! services jobs talk to; [`harness`] runs a test binary whose tests need a service
//! that may be missing, and reports those tests as ignored instead of passed.
//!
//! The `usher` binary's path is only known to the `usher` package's own tests and
//! examples (`env!("CARGO_BIN_EXE_usher")`), so whatever starts it takes the path as
//! an argument.

pub mod bench;
pub mod db;
pub mod docker;
pub mod events;
pub mod git;
pub mod harness;
pub mod process;
pub mod procs;
pub mod runner_socket;
pub mod s3;
pub mod server;

pub use db::fresh_postgres;
pub use events::{EventSocket, assert_pieces_tile, job_statuses_until, log_frames_until_done};
pub use process::{OwnedChild, free_port, run_usher_cli, runner_binary, runner_command, serve_with_log_file, spawn_usher};
pub use procs::{dies_within, is_alive, job_processes, pids_with_env, wait_until_gone};
pub use server::{ADMIN_TOKEN, TestServer, sign_in};

use std::path::Path;

/// A temporary directory jobs may write into (they run as an unprivileged user, and a
/// test's own temporary directories are private to root).
pub fn job_writable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// A short string unique within this process (names of projects, databases, markers).
pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// `key=value` from the job output line that contains `key=` (not the echoed command,
/// which starts with `$ ` in the runner's colour).
pub fn log_value(log: &str, key: &str) -> String {
    let needle = format!("{key}=");
    let line = log
        .lines()
        // Not a command's echo, even when a stderr fragment ran into it on one line
        // (busybox writes `script.sh: line 27: ` and its message in two pieces).
        .filter(|l| !l.contains("\u{1b}[32;1m$ "))
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no `{needle}` in log:\n{log}"));
    line.split(&needle)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches("\u{1b}[0m")
        .to_string()
}

pub fn path_exists(p: &str) -> bool {
    Path::new(p).exists()
}
