//! Jobs are untrusted code. On the default settings (a server started as root with local
//! runners and no flags, as `make run` does) a job runs as an unprivileged user and can
//! neither read nor change the server's data, its log or any runner's token; the first
//! admin password never reaches the log. And every process a job starts dies with the
//! job, even one that escaped to `/` with a scrubbed environment and closed descriptors,
//! and even after the runner itself was killed with `kill -9` and started again.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

/// Each check prints `name=yes` when the job could do it.
const PROBES: &str = r#"
      probe() { if sh -c "$2" >/dev/null 2>&1; then echo "$1=yes"; else echo "$1=no"; fi; }
      probe read_db "head -c 16 \"$DATA/usher.db\""
      probe write_db "echo x >> \"$DATA/usher.db\""
      probe read_log "head -c 16 \"$DATA/usher.log\""
      probe read_credentials "cat \"$DATA/initial-admin-credentials\""
      probe list_data "ls \"$DATA\""
      probe list_artifacts "ls \"$DATA/artifacts\""
      probe server_environ "cat /proc/$PPID/environ"
      probe any_runner_token "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q usher_rt_"
      say() { echo "$1=$2"; }
      say uid "$(id -u)"
      say home "$HOME"
"#;

fn probe_config(data_dir: &Path) -> String {
    format!(
        "probe:\n  variables:\n    DATA: \"{}\"\n  script:\n    - |{PROBES}",
        data_dir.display()
    )
}

fn assert_nothing_reachable(log: &str) {
    for probe in [
        "read_db",
        "write_db",
        "read_log",
        "read_credentials",
        "list_data",
        "list_artifacts",
        "server_environ",
        "any_runner_token",
    ] {
        assert_eq!(log_value(log, probe), "no", "a job could {probe}:\n{log}");
    }
    assert_ne!(log_value(log, "uid"), "0", "the job ran as root:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_touch_the_servers_data_on_the_default_settings() {
    let data_dir = tempfile::tempdir().unwrap();
    let (mut server, base) = serve_with_log_file(USHER, data_dir.path());
    // The first admin's credentials are in a file only root can read, not in the log.
    let credentials = std::fs::read_to_string(data_dir.path().join("initial-admin-credentials")).unwrap();
    let password = credentials.lines().find_map(|l| l.strip_prefix("password: ")).unwrap().to_string();
    let token = credentials.lines().find_map(|l| l.strip_prefix("api token: ")).unwrap().to_string();
    let mut t = TestServer::detached();
    t.base = base;
    let (_, project) = t
        .call_as(
            &token,
            "POST",
            "/api/v1/projects",
            Some(json!({"name": "probe", "ci_config": probe_config(data_dir.path())})),
        )
        .await;
    let (status, pipeline) = t
        .call_as(
            &token,
            "POST",
            &format!("/api/v1/projects/{}/pipelines", project["id"]),
            Some(json!({"ref": "main"})),
        )
        .await;
    assert_eq!(status, 201, "{pipeline}");
    let job = TestServer::job_id(&pipeline, "probe");
    let log = t.wait_for_log_as(&token, job, "home=").await;
    assert_nothing_reachable(&log);
    let server_log = std::fs::read_to_string(data_dir.path().join("usher.log")).unwrap();
    assert!(!server_log.contains(&password), "the admin password is in the server's log");
    assert!(!server_log.contains(&token), "the admin token is in the server's log");
    assert!(server_log.contains("initial-admin-credentials"), "{server_log}");
    let _ = server.kill();
}

/// A standalone runner started as root with its token in its environment: the job
/// cannot read the token, whatever it tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_read_a_standalone_runners_token() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, base) = spawn_usher(USHER, data_dir.path(), &format!("127.0.0.1:{port}"), 0, &[]);
    let token = String::from_utf8(run_usher_cli(USHER, data_dir.path(), &["runner-token", "create"], "").stdout).unwrap();
    let builds = tempfile::tempdir().unwrap();
    let _runner = OwnedChild::spawn(
        runner_command(&base, "isolated", &builds.path().join("b"))
            .env("USHER_RUNNER_TOKEN", token.trim())
            .env_remove("USHER_JOB_USER"),
    );
    let mut t = TestServer::detached();
    t.base = base;
    let pipeline = t.pipeline(&probe_config(data_dir.path())).await;
    let job = TestServer::job_id(&pipeline, "probe");
    let log = t.wait_for_log(job, "home=").await;
    assert_nothing_reachable(&log);
}

/// A daemon that leaves for `/`, drops the job's environment and closes every
/// descriptor carries none of the marks a sweep could find; the job's cgroup still
/// holds it. It dies when the job succeeds, is cancelled, or is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaped_daemon_dies_with_its_job() {
    let t = TestServer::start(1).await;
    let mut runner_cgroup = None;
    for ending in ["success", "cancel", "abort"] {
        let rest = if ending == "success" { "sleep 2" } else { "sleep 300" };
        let yaml = format!(
            "escape:\n  script:\n    - \"(cd / && exec env -i setsid sleep 3600 </dev/null >/dev/null 2>&1) & echo \\\"daemon\\\"=$!\"\n    - {rest}\n"
        );
        let pipeline = t.pipeline(&yaml).await;
        let job = TestServer::job_id(&pipeline, "escape");
        let log = t.wait_for_log(job, "daemon=").await;
        let pid: i32 = log_value(&log, "daemon").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The subshell execs env, which execs setsid, which execs sleep: one pid.
        while !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .starts_with("sleep")
        {
            assert!(Instant::now() < deadline, "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        runner_cgroup = runner_cgroup.or_else(|| runner_cgroup_of(pid));
        match ending {
            "cancel" => assert_eq!(t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await.0, 200),
            "abort" => assert_eq!(t.call("POST", &format!("/api/v1/jobs/{job}/abort"), None).await.0, 200),
            _ => {}
        }
        let end = match ending {
            "success" => "success",
            _ => "canceled",
        };
        t.wait_for_status(job, end).await;
        assert!(
            dies_within(pid, Duration::from_secs(10)).await,
            "the escaped daemon {pid} outlived its job ({ending})"
        );
    }
    t.stop().await;
    // A clean stop leaves no cgroup of the runner behind.
    if let Some(dir) = runner_cgroup {
        assert!(!dir.exists(), "{} is left after a clean stop", dir.display());
    }
}

/// The directory of the runner's cgroups, from a job process's cgroup (its parent);
/// None without cgroup v2.
fn runner_cgroup_of(pid: i32) -> Option<std::path::PathBuf> {
    let mount = usher_runner::isolation::cgroup2_mount()?;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let job = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/');
    let dir = mount.join(job).parent()?.to_path_buf();
    dir.file_name()?.to_string_lossy().starts_with("usher-").then_some(dir)
}

/// `kill -9` of a runner leaves its job's processes running; when the runner starts
/// again it kills them before taking a job, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_kills_what_its_previous_life_left() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, base) = spawn_usher(
        USHER,
        data_dir.path(),
        &format!("127.0.0.1:{port}"),
        0,
        &[("USHER_RUNNER_LOST_SECS", "600")],
    );
    let token = String::from_utf8(run_usher_cli(USHER, data_dir.path(), &["runner-token", "create"], "").stdout).unwrap();
    let builds = tempfile::tempdir().unwrap();
    let runner_log = builds.path().join("runner.log");
    let start_runner = || {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&runner_log).unwrap();
        OwnedChild::spawn(
            runner_command(&base, "crashy", &builds.path().join("b"))
                .env("USHER_RUNNER_TOKEN", token.trim())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log)),
        )
    };
    let mut runner = start_runner();
    let mut t = TestServer::detached();
    t.base = base.clone();
    let pipeline = t
        .pipeline("left:\n  script:\n    - \"(cd / && exec env -i setsid sleep 3600 </dev/null >/dev/null 2>&1) & echo \\\"daemon\\\"=$!\"\n    - sleep 300\n")
        .await;
    let job = TestServer::job_id(&pipeline, "left");
    let pid: i32 = log_value(&t.wait_for_log(job, "daemon=").await, "daemon").parse().unwrap();
    runner.kill().unwrap(); // SIGKILL
    runner.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        is_alive(pid),
        "the daemon should outlive a kill -9 of its runner (nothing killed it yet)"
    );
    let _again = start_runner();
    assert!(
        dies_within(pid, Duration::from_secs(20)).await,
        "the restarted runner left the daemon {pid} alive"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&runner_log).unwrap_or_default();
        if text.contains("that a previous run of this runner left behind") {
            break;
        }
        assert!(Instant::now() < deadline, "the runner did not say what it killed:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
