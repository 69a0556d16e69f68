//! The real binaries as their own processes: `usher serve` (for tests that restart,
//! freeze or kill the server, and for benchmarks that must not count their own memory
//! or threads), one-shot `usher` commands, and standalone `usher-runner`s. Each process
//! is an [`OwnedChild`], killed and reaped when dropped, so a failing test leaves
//! nothing running. The `usher` binary's path comes from the caller
//! (`env!("CARGO_BIN_EXE_usher")` in the tests, the release build in the benchmarks).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::ADMIN_TOKEN;

/// A process the test started (a real `usher` or `usher-runner`), killed and reaped when
/// dropped, so a failing test leaves nothing running.
pub struct OwnedChild(pub std::process::Child);

impl OwnedChild {
    /// Starts `command`; panics (naming the program) if it cannot.
    pub fn spawn(command: &mut Command) -> OwnedChild {
        match command.spawn() {
            Ok(child) => OwnedChild(child),
            Err(e) => panic!("{:?} does not start: {e}", command.get_program()),
        }
    }

    /// Stops the process as a service manager would (SIGTERM) and waits for it.
    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        if let Ok(None) = self.0.try_wait() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for OwnedChild {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for OwnedChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A free TCP port on the loopback interface (free when asked; a test binds it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real `usher serve` process (binary `usher`) on `addr` over `data_dir` (SQLite
/// unless `env` names a DATABASE_URL) with the test admin token and `env` on top;
/// returns it once it listens, with its base URL. Its log output is discarded.
pub fn spawn_usher(usher: impl AsRef<Path>, data_dir: &Path, addr: &str, local_runners: u32, env: &[(&str, &str)]) -> (OwnedChild, String) {
    let mut child = OwnedChild::spawn(
        Command::new(usher.as_ref())
            .args(["serve", "--addr", addr, "--local-runners", &local_runners.to_string()])
            .env_remove("DATABASE_URL")
            .env("USHER_DATA_DIR", data_dir)
            .env("USHER_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("usher printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("Usher is serving ") {
            break rest.trim().to_string();
        }
    };
    // Keep reading, so a later line of the server never meets a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

/// `usher serve --local-runners 1`, as an operator starts it (no admin token), with its
/// output going to `<data>/usher.log` (mode 0600) as a service manager's log would; its
/// base URL.
pub fn serve_with_log_file(usher: impl AsRef<Path>, data_dir: &Path) -> (OwnedChild, String) {
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(data_dir.join("usher.log"))
        .unwrap();
    let port = free_port();
    let child = OwnedChild::spawn(
        Command::new(usher.as_ref())
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--local-runners", "1"])
            .env("USHER_DATA_DIR", data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("USHER_ADMIN_TOKEN")
            .env_remove("USHER_JOB_USER")
            .env_remove("USHER_TRUST_JOBS")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(data_dir.join("usher.log"))
        .unwrap_or_default()
        .contains("Usher is serving")
    {
        assert!(Instant::now() < deadline, "usher did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

/// Runs a one-shot `usher` command (token create, revoke…) against `data_dir` with
/// `stdin` as its input; fails the test instead of hanging if it does not exit within
/// 60 s (and kills it).
pub fn run_usher_cli(usher: impl AsRef<Path>, data_dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = OwnedChild::spawn(
        Command::new(usher.as_ref())
            .args(args)
            .env("USHER_DATA_DIR", data_dir)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "`usher {}` did not exit within 60 s", args.join(" "));
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The `usher-runner` binary next to the test binaries (built by `make test` first).
pub fn runner_binary() -> PathBuf {
    // target/debug/deps/<test> → target/debug/usher-runner
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("usher-runner");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p usher-runner` (make test does)",
        bin.display()
    );
    bin
}

/// A standalone runner's command line: `usher-runner --url <base> --name <name>
/// --builds-dir <builds>` with its output discarded. Add its token
/// (`USHER_RUNNER_TOKEN` or `--token-file`) and anything else, then
/// [`OwnedChild::spawn`] it.
pub fn runner_command(base: &str, name: &str, builds: &Path) -> Command {
    let mut command = Command::new(runner_binary());
    command
        .args(["--url", base, "--name", name])
        .arg("--builds-dir")
        .arg(builds)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}
