//! The `usher` client commands against a real server: `usher login` keeps the URL and
//! token in a file only the user can read; `pipeline run/show`, `job log -f` (following
//! the log live and exiting with the job's outcome), `job cancel --message`; tables for
//! people, JSON for scripts; refusals with the server's words and the documented exit
//! codes; the token never printed.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

/// `usher ARGS` with `config` as XDG_CONFIG_HOME, `stdin` as its input.
fn usher(config: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(USHER)
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("USHER_URL")
        .env_remove("USHER_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_run_follow_and_cancel_from_the_terminal() {
    let t = TestServer::start(1).await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path();
    // No server known yet: a usage error.
    let out = usher(dir, &["pipeline", "show", "1"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A wrong token is refused by the server, and nothing is kept.
    let out = usher(dir, &["login", &t.base], "not-a-token\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));
    let out = usher(dir, &["login", &t.base], &format!("{ADMIN_TOKEN}\n"));
    assert!(out.status.success(), "{}", text(&out));
    let kept = dir.join("usher/credentials");
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.join("usher")).unwrap().permissions().mode() & 0o777, 0o700);

    let first = t.pipeline("hello:\n  script: [\"echo hello from the job\"]\n").await;
    let project = first["project_id"].as_i64().unwrap().to_string();
    let out = usher(dir, &["pipeline", "run", "--project", &project, "--ref", "main", "--json"], "");
    assert!(out.status.success(), "{}", text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = created["jobs"][0]["id"].as_i64().unwrap().to_string();
    let out = usher(dir, &["job", "log", &job, "-f"], "");
    assert_eq!(out.status.code(), Some(0), "the job succeeded: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from the job"),
        "{}",
        text(&out)
    );
    let out = usher(dir, &["pipeline", "show", &created["id"].to_string()], "");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("STATUS") && table.contains("hello") && table.contains("success"),
        "{table}"
    );
    let out = usher(dir, &["pipeline", "list", "--project", &project], "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        3,
        "a header and two pipelines: {}",
        text(&out)
    );

    // Follow a job that runs on, and cancel it with a message from another command.
    let sleeper = t.pipeline("sleeper:\n  script: [\"echo started\", \"sleep 300\"]\n").await;
    let job = TestServer::job_id(&sleeper, "sleeper").to_string();
    t.wait_for_log(job.parse().unwrap(), "started").await;
    let follower = {
        let (dir, job) = (dir.to_path_buf(), job.clone());
        std::thread::spawn(move || usher(&dir, &["job", "log", &job, "-f"], ""))
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let out = usher(dir, &["job", "cancel", &job, "--message", "not today"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("canceling") || String::from_utf8_lossy(&out.stdout).contains("canceled"));
    let followed = follower.join().unwrap();
    assert_eq!(followed.status.code(), Some(3), "a canceled job: {}", text(&followed));
    let log = String::from_utf8_lossy(&followed.stdout).to_string();
    assert!(log.contains("Cancel requested by admin (user): “not today”"), "{log}");

    // The server's refusal, in its words: a job that is not manual cannot be played.
    let out = usher(dir, &["job", "play", &job], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("409") && text(&out).contains("manual"), "{}", text(&out));
    // --url/--token win over the login file; the token is printed nowhere.
    let out = usher(dir, &["job", "show", &job, "--url", &t.base, "--token", "wrong"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for args in [vec!["job", "show", job.as_str()], vec!["pipeline", "show", "1", "--json"]] {
        let out = usher(dir, &args, "");
        assert!(!text(&out).contains(ADMIN_TOKEN), "{args:?} printed the token");
    }
    t.stop().await;
}
