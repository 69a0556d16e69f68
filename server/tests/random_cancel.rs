//! Cleanup under cancels at random moments, with real resources: a job starts a
//! detached process, a process listening on a TCP port, a temp directory, a daemon that
//! after_script does not know about, and two that also scrubbed their environment (one
//! still in the build directory, one in `/` with its stderr on the job's log) — Usher
//! must find them all. Then it is cancelled early, in before_script, in script, inside a
//! pipeline, inside a subshell, or during its artifact upload, after a random delay.
//! Afterwards nothing of it may be left: no process, no listening port, no directory;
//! and after_script must have seen the script's directory and variables.
//!
//! `cargo test -p usher --test random_cancel -- --ignored` runs the 1,000-cancel soak
//! and prints the leak counts.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use usher_testkit::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Right after the job starts, while its resources are being set up.
    Early,
    BeforeScript,
    Script,
    Pipeline,
    Subshell,
    Upload,
}

const PHASES: [Phase; 6] = [
    Phase::Early,
    Phase::BeforeScript,
    Phase::Script,
    Phase::Pipeline,
    Phase::Subshell,
    Phase::Upload,
];

impl Phase {
    fn marker(self) -> &'static str {
        match self {
            Phase::Early => "",
            Phase::BeforeScript => "phase=before",
            Phase::Script => "phase=script",
            Phase::Pipeline => "phase=pipeline",
            Phase::Subshell => "phase=subshell",
            Phase::Upload => "Uploading",
        }
    }

    /// The job's `script:` lines for this phase (each after `cd sub`).
    fn script(self) -> &'static str {
        match self {
            Phase::Early | Phase::BeforeScript | Phase::Script => "    - echo phase=script\n    - sleep 30\n",
            Phase::Pipeline => "    - echo phase=pipeline\n    - sleep 30 | cat | cat\n",
            Phase::Subshell => "    - echo phase=subshell\n    - ( sleep 30; echo never ) && ( bash -c 'sleep 30' & wait )\n",
            Phase::Upload => {
                "    - mkdir -p ../out && for i in $(seq 1 150); do head -c 8000 /dev/urandom > ../out/f$i; done\n    - echo phase=files-written\n"
            }
        }
    }
}

fn job_config(phase: Phase, run_marker: &str) -> String {
    let before_wait = if phase == Phase::BeforeScript { "    - sleep 30\n" } else { "" };
    format!(
        r#"
stages: [test]
resourceful:
  stage: test
  cancel_grace: 3s
  artifacts:
    paths: [out/]
    when: always
  before_script:
    - export RES_DIR=/tmp/usher-res-{run_marker}-$CI_JOB_ID
    - mkdir -p "$RES_DIR"
    - setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
    - export BG_PID=$!
    - (setsid bash -c 'sleep 1000' < /dev/null > /dev/null 2>&1 &)
    - env -i USHER_TEST_RUN="$USHER_TEST_RUN" CI_JOB_ID="$CI_JOB_ID" setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
    - (cd / && env -i USHER_TEST_RUN="$USHER_TEST_RUN" CI_JOB_ID="$CI_JOB_ID" setsid sleep 1000 < /dev/null > /dev/null &)
    - python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); open('$RES_DIR/port.tmp','w').write(str(s.getsockname()[1])); __import__('os').rename('$RES_DIR/port.tmp','$RES_DIR/port'); time.sleep(1000)" &
    - export LISTENER_PID=$!
    - while [ ! -f "$RES_DIR/port" ]; do sleep 0.01; done; echo "port=$(cat "$RES_DIR/port")"
    - echo phase=before
{before_wait}  script:
    - mkdir -p sub && cd sub
{script}  after_script:
    - echo "after_status=$CI_JOB_STATUS after_cwd=$PWD after_res=${{RES_DIR:-none}}"
    - '[ -n "$LISTENER_PID" ] && kill "$LISTENER_PID" 2>/dev/null || true'
    - '[ -n "$BG_PID" ] && kill "$BG_PID" 2>/dev/null || true'
    - '[ -n "$RES_DIR" ] && rm -rf "$RES_DIR" || true'
"#,
        script = phase.script()
    )
}

/// What one random cancel left behind.
#[derive(Default, Debug)]
struct Leaks {
    processes: usize,
    dirs: usize,
    ports: usize,
    /// Anything else wrong (wrong final status, after_script missing the state).
    problems: Vec<String>,
}

async fn cancel_once(t: &TestServer, phase: Phase, rng: &mut StdRng) -> Leaks {
    let mut leaks = Leaks::default();
    let pipeline = t.pipeline(&job_config(phase, &t.run_marker)).await;
    let job_id = TestServer::job_id(&pipeline, "resourceful");
    let res_dir = format!("/tmp/usher-res-{}-{job_id}", t.run_marker);
    if phase == Phase::Early {
        t.wait_for_status(job_id, "running").await;
    } else {
        t.wait_for_log(job_id, phase.marker()).await;
    }
    let delay = rng.gen_range(0..if phase == Phase::Early { 150 } else { 40 });
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let (status, answer) = t.call("POST", &format!("/api/v1/jobs/{job_id}/cancel"), None).await;
    let upload_finished_first = phase == Phase::Upload && status == 409;
    if status != 200 && !upload_finished_first {
        leaks.problems.push(format!("{phase:?}: cancel answered {status}: {answer}"));
    }
    let job = wait_terminal(t, job_id).await;
    let (log, _) = t.log(job_id).await;
    let port: Option<u16> = log
        .lines()
        .find_map(|l| l.strip_prefix("port=").and_then(|p| p.trim().parse().ok()));

    let expected = if upload_finished_first { "success" } else { "canceled" };
    if job["status"] != expected {
        leaks
            .problems
            .push(format!("{phase:?}: ended {} instead of {expected}", job["status"]));
    }
    if !log.contains(&format!(
        "after_status={}",
        if upload_finished_first { "success" } else { "canceled" }
    )) && phase != Phase::Upload
    {
        leaks
            .problems
            .push(format!("{phase:?}: after_script did not run as a cancelled job's:\n{log}"));
    }
    // after_script sees what the script left behind.
    if log.lines().any(|l| l.starts_with("phase=before")) && !log.contains(&format!("after_res={res_dir}")) {
        leaks.problems.push(format!("{phase:?}: after_script did not see RES_DIR:\n{log}"));
    }
    if log
        .lines()
        .any(|l| l.starts_with("phase=script") || l.starts_with("phase=pipeline") || l.starts_with("phase=subshell"))
    {
        let cwd = log_value(&log, "after_cwd");
        if !cwd.ends_with("/sub") {
            leaks
                .problems
                .push(format!("{phase:?}: after_script started in {cwd}, not the script's sub/:\n{log}"));
        }
    }
    if phase == Phase::Upload {
        let (_, list) = t.call("GET", &format!("/api/v1/jobs/{job_id}/artifacts"), None).await;
        let n = list.as_array().map(|a| a.len()).unwrap_or(0);
        if n != 150 {
            leaks.problems.push(format!(
                "Upload: a cancel during the upload must not cut it short: {n} of 150 files"
            ));
        }
    }

    leaks.processes = wait_until_gone(job_id, &t.run_marker).await.len();
    if std::path::Path::new(&res_dir).exists() {
        leaks.dirs += 1;
        let _ = std::fs::remove_dir_all(&res_dir);
    }
    if let Some(port) = port
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    {
        leaks.ports += 1;
    }
    leaks
}

async fn wait_terminal(t: &TestServer, job_id: i64) -> serde_json::Value {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = t.job(job_id).await;
        if ["success", "failed", "canceled", "skipped"].contains(&job["status"].as_str().unwrap_or("")) {
            return job;
        }
        assert!(std::time::Instant::now() < until, "job {job_id} never ended: {job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn run_many(rounds: usize, random_phases: bool, seed: u64) -> (Leaks, usize) {
    let t = std::sync::Arc::new(TestServer::start(4).await);
    let mut total = Leaks::default();
    let mut done = 0;
    let mut handles = Vec::new();
    for worker in 0..4u64 {
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed + worker);
            let mut leaks = Vec::new();
            let mut i = worker as usize;
            while i < rounds {
                let phase = if random_phases {
                    PHASES[rng.gen_range(0..PHASES.len())]
                } else {
                    PHASES[i % PHASES.len()]
                };
                leaks.push(cancel_once(&t, phase, &mut rng).await);
                i += 4;
            }
            leaks
        }));
    }
    for h in handles {
        for l in h.await.unwrap() {
            done += 1;
            total.processes += l.processes;
            total.dirs += l.dirs;
            total.ports += l.ports;
            total.problems.extend(l.problems);
        }
    }
    std::sync::Arc::try_unwrap(t).ok().expect("no task holds the server").stop().await;
    (total, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancels_at_random_moments_leave_nothing_behind() {
    let seed = rand::random::<u64>();
    let (leaks, runs) = run_many(18, false, seed).await;
    assert_eq!(runs, 18);
    assert!(
        leaks.processes == 0 && leaks.dirs == 0 && leaks.ports == 0 && leaks.problems.is_empty(),
        "seed {seed}: {leaks:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: 1,000 random cancels (several minutes)"]
async fn soak_a_thousand_random_cancels() {
    let seed = rand::random::<u64>();
    let started = std::time::Instant::now();
    let (leaks, runs) = run_many(1000, true, seed).await;
    println!(
        "random-cancel soak (seed {seed}): {runs} cancels in {:.0} s; leaked processes: {}, leaked temp dirs: {}, open ports: {}, other problems: {}",
        started.elapsed().as_secs_f64(),
        leaks.processes,
        leaks.dirs,
        leaks.ports,
        leaks.problems.len()
    );
    for p in leaks.problems.iter().take(10) {
        println!("  {p}");
    }
    assert!(leaks.processes == 0 && leaks.dirs == 0 && leaks.ports == 0 && leaks.problems.is_empty());
}
