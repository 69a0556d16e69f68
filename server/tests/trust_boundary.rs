//! The runner is root and the job is hostile: these tests are the attacks a developer
//! with a token tried on the runner's host, written the way the attacker wrote them,
//! against a server started as root with local runners (the default, as `make run`).
//! Each once got root's files or another job's secrets; each must now get nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use usher_testkit::git::GitRepo;
use usher_testkit::*;

/// A directory only root may enter, as `/root/.ssh` is.
fn root_only_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn skip_unless_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the job user boundary exists only when the runner is root");
        return true;
    }
    false
}

/// The job plants links where the runner writes its scripts (`$HOME/..` is the
/// directory beside the build directory), hoping root writes after_script's lines
/// through them into a file of root's choosing (an `authorized_keys`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_make_the_runner_write_through_a_planted_link() {
    if skip_unless_root() {
        return;
    }
    let secret_dir = root_only_dir();
    let target = secret_dir.path().join("authorized_keys");
    let existing = secret_dir.path().join("existing");
    std::fs::write(&existing, "root's own\n").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o600)).unwrap();
    let t = TestServer::start(1).await;
    let config = format!(
        r#"
planter:
  variables:
    TARGET: "{}"
    EXISTING: "{}"
  script:
    - if ln -s "$TARGET" "$HOME/../after_script.sh" 2>/dev/null; then echo planted=yes; else echo planted=no; fi
    - if ln -sf "$EXISTING" "$HOME/../script.sh" 2>/dev/null; then echo replaced=yes; else echo replaced=no; fi
    - if echo x > "$HOME/../planted" 2>/dev/null; then echo wrote_beside=yes; else echo wrote_beside=no; fi
    - export LEFT_BY_SCRIPT=still-here
  after_script:
    - echo "ssh-ed25519 AAAA attacker"
    - echo "after_script_sees=$LEFT_BY_SCRIPT"
"#,
        target.display(),
        existing.display()
    );
    let pipeline = t.pipeline(&config).await;
    let job = TestServer::job_id(&pipeline, "planter");
    t.wait_for_status(job, "success").await;
    let (log, _) = t.log(job).await;
    for probe in ["planted", "replaced", "wrote_beside"] {
        assert_eq!(log_value(&log, probe), "no", "the job could do {probe}:\n{log}");
    }
    // after_script still ran, with the script's state.
    assert_eq!(log_value(&log, "after_script_sees"), "still-here", "{log}");
    assert!(!target.exists(), "root wrote the job's after_script into {}", target.display());
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "root's own\n");
    t.stop().await;
}

/// Two jobs run at once on one machine. The attacker reads every process's environment
/// looking for the victim's secret, then kills every process it may signal; each job
/// runs as a user of its own, so it finds nothing and kills nothing of the victim's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_read_or_kill_another_running_job() {
    if skip_unless_root() {
        return;
    }
    let shared = job_writable_dir();
    let secret = format!("s3cret-{}", rand_suffix());
    let t = TestServer::start(2).await;
    let config = format!(
        r#"
victim:
  variables:
    VICTIM_SECRET: "{secret}"
    SHARED: "{shared}"
  script:
    - echo "uid=$(id -u)"
    - touch "$SHARED/victim-ready"
    - sleep 6
    - echo victim-done
attacker:
  variables:
    SHARED: "{shared}"
  script:
    - echo "uid=$(id -u)"
    - for i in $(seq 1 100); do [ -e "$SHARED/victim-ready" ] && break; sleep 0.1; done
    - if cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -q "{secret}"; then echo read_env=yes; else echo read_env=no; fi
    - if ls -l /proc/[0-9]*/cwd 2>/dev/null | grep -q "job-"; then echo saw_cwd=yes; else echo saw_cwd=no; fi
    - echo attacking
    - kill -9 -1
"#,
        shared = shared.path().display()
    );
    let pipeline = t.pipeline(&config).await;
    let (victim, attacker) = (TestServer::job_id(&pipeline, "victim"), TestServer::job_id(&pipeline, "attacker"));
    // kill(-1) spares the caller itself: the attacker's shell goes on and ends well.
    t.wait_for_status(attacker, "success").await;
    let victim_job = t.wait_for_status(victim, "success").await;
    let (victim_log, _) = t.log(victim).await;
    let (attacker_log, _) = t.log(attacker).await;
    assert!(victim_log.contains("victim-done"), "the victim was killed:\n{victim_log}");
    assert_eq!(victim_job["status"], "success");
    assert!(attacker_log.contains("attacking"), "{attacker_log}");
    assert_eq!(log_value(&attacker_log, "read_env"), "no", "{attacker_log}");
    assert_eq!(log_value(&attacker_log, "saw_cwd"), "no", "{attacker_log}");
    let (victim_uid, attacker_uid) = (log_value(&victim_log, "uid"), log_value(&attacker_log, "uid"));
    assert_ne!(victim_uid, attacker_uid, "two running jobs shared a uid");
    assert_ne!(victim_uid, "0");
    t.stop().await;
}

/// While the victim's large artifact uploads, a second job swaps the victim's next
/// listed file for a link to /etc/shadow; and the victim itself lists a FIFO (which
/// once blocked the upload forever) and links. Nothing of root's comes back, the
/// upload ends, and the victim's own file is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_never_yield_roots_files_nor_hang() {
    if skip_unless_root() {
        return;
    }
    let t = TestServer::start(2).await;
    let config = r#"
victim:
  artifacts:
    paths: [out/, out/pipe]
  script:
    - mkdir -p out && head -c 30000000 /dev/urandom > out/a-big.bin && echo mine > out/z-victim.txt
    - mkfifo out/pipe && ln -s /etc/shadow out/shadow-link
    - if ln /etc/shadow out/hard 2>/dev/null; then echo hardlinked=yes; else echo hardlinked=no; fi
    - echo victim-ready
swapper:
  script:
    - victim="$CI_PROJECT_DIR/../job-$((CI_JOB_ID - 1))/out"
    - swapped=no; for i in $(seq 1 150); do if ln -sfn /etc/shadow "$victim/z-victim.txt" 2>/dev/null; then swapped=yes; fi; sleep 0.05; done; echo "swapped=$swapped"
"#;
    let pipeline = t.pipeline(config).await;
    let victim = TestServer::job_id(&pipeline, "victim");
    let swapper = TestServer::job_id(&pipeline, "swapper");
    assert_eq!(swapper, victim + 1, "the swapper guesses the victim's directory from its id");
    t.wait_for_status(victim, "success").await;
    t.wait_for_status(swapper, "success").await;
    let (victim_log, _) = t.log(victim).await;
    let (swapper_log, _) = t.log(swapper).await;
    assert_eq!(log_value(&swapper_log, "swapped"), "no", "{swapper_log}");
    assert_eq!(log_value(&victim_log, "hardlinked"), "no", "{victim_log}");
    // Named directly, the FIFO is refused at once (it once blocked the upload forever);
    // inside a listed directory it is skipped like the link.
    assert!(victim_log.contains("out/pipe is skipped: it is a FIFO"), "{victim_log}");

    let (status, list) = t.call("GET", &format!("/api/v1/jobs/{victim}/artifacts"), None).await;
    assert_eq!(status, 200, "{list}");
    let paths: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["out/a-big.bin", "out/z-victim.txt"], "{victim_log}");
    let resp = t
        .client
        .get(format!("{}/api/v1/jobs/{victim}/artifacts/out/z-victim.txt", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "mine\n");
    t.stop().await;
}

/// A job's artifact files are counted, not only their bytes: empty files once filled
/// the server with 20,000 entries in 35 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_artifacts_are_limited_in_number() {
    let t = TestServer::start_with(
        None,
        1,
        usher_engine::Settings {
            max_artifact_files: 5,
            ..Default::default()
        },
    )
    .await;
    let config = r#"
many:
  artifacts:
    paths: [empty/]
  script:
    - mkdir empty && for i in $(seq 1 20); do touch "empty/$i"; done
"#;
    let pipeline = t.pipeline(config).await;
    let job = TestServer::job_id(&pipeline, "many");
    t.wait_for_status(job, "success").await;
    let (status, list) = t.call("GET", &format!("/api/v1/jobs/{job}/artifacts"), None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(5), "{list}");
    let (log, _) = t.log(job).await;
    assert!(log.contains("at most 5 files"), "{log}");
    t.stop().await;
}

/// A project whose repository is a relative path (or a plain local path inside the
/// server's data dir) would read another project's mirror: refused when saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_cannot_name_another_projects_mirror() {
    let t = TestServer::start(0).await;
    let data = t.data_dir.path().display().to_string();
    for url in [
        "../project-1.git".to_string(),
        "repos/project-1.git".to_string(),
        format!("{data}/repos/project-1.git"),
        format!("file://{data}/repos/project-1.git"),
    ] {
        let body: Value = serde_json::json!({"name": format!("p{}", rand_suffix()), "repository_url": url});
        let (status, answer) = t.call("POST", "/api/v1/projects", Some(body)).await;
        assert_eq!(status, 400, "{url} was accepted: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
    }
    assert!(Path::new(&data).exists());
    t.stop().await;
}

/// A private project's job checks its repository out and keeps running; a job of
/// another project, running at the same time in the other slot, looks for the runners'
/// repository caches (`<builds>/<runner>/.usher-cache/<slot user>/`) and tries to read
/// the private one (its files, its objects through git). It reads nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_read_the_repository_cache_of_another_slot() {
    if skip_unless_root() {
        return;
    }
    let shared = job_writable_dir();
    let secret = format!("private-{}", rand_suffix());
    let t = TestServer::start(2).await;
    let repo = GitRepo::new();
    let victim_ci = format!(
        "victim:\n  script:\n    - echo \"user=$(id -un)\"\n    - cat private.txt\n    - touch {shared}/victim-ready\n    - sleep 8\n",
        shared = shared.path().display()
    );
    repo.commit(
        "main",
        &[
            (".usher-ci.yml", victim_ci.as_bytes()),
            ("private.txt", format!("{secret}\n").as_bytes()),
        ],
        "Private",
    );
    let body = serde_json::json!({"name": format!("private-{}", rand_suffix()), "repository_url": repo.path().display().to_string()});
    let (status, project) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{project}");
    let (status, victim_pipeline) = t
        .call(
            "POST",
            &format!("/api/v1/projects/{}/pipelines", project["id"]),
            Some(serde_json::json!({"ref": "main"})),
        )
        .await;
    assert_eq!(status, 201, "{victim_pipeline}");
    let victim = TestServer::job_id(&victim_pipeline, "victim");

    let attacker_ci = format!(
        r#"
attacker:
  script:
    - for i in $(seq 1 200); do [ -e "{shared}/victim-ready" ] && break; sleep 0.1; done
    - echo "user=$(id -un)"
    - builds="$(dirname "$(dirname "$PWD")")"
    - slots=""; for r in local-1 local-2; do for u in usher-job-1 usher-job-2; do slots="$slots $builds/$r/.usher-cache/$u"; done; done
    - for slot in $slots; do (ls -a "$slot" 2>/dev/null || true) | sed "s|^|listed $slot/|"; done
    - found=no; for f in $(find $slots 2>/dev/null); do if cat "$f" 2>/dev/null | grep -qa "{secret}"; then found=yes; fi; done; echo "read_file=$found"
    - found=no; for g in $(for s in $slots; do ls -d "$s"/*.git 2>/dev/null; done); do if git --git-dir="$g" log -p --all 2>/dev/null | grep -q "{secret}"; then found=yes; fi; done; echo "read_git=$found"
"#,
        shared = shared.path().display()
    );
    let attacker_pipeline = t.pipeline(&attacker_ci).await;
    let attacker = TestServer::job_id(&attacker_pipeline, "attacker");
    t.wait_for_status(attacker, "success").await;
    t.wait_for_status(victim, "success").await;
    let (victim_log, _) = t.log(victim).await;
    let (attacker_log, _) = t.log(attacker).await;
    assert!(victim_log.contains(&secret), "the victim checked out its repository:\n{victim_log}");
    let (victim_user, attacker_user) = (log_value(&victim_log, "user"), log_value(&attacker_log, "user"));
    assert_ne!(victim_user, attacker_user, "the two jobs ran as one user");
    assert_eq!(log_value(&attacker_log, "read_file"), "no", "{attacker_log}");
    assert_eq!(log_value(&attacker_log, "read_git"), "no", "{attacker_log}");
    assert!(
        !attacker_log.contains(&format!("listed {}", victim_user)) && !attacker_log.contains(&format!("/{victim_user}/")),
        "the attacker listed the victim slot's caches:\n{attacker_log}"
    );
    t.stop().await;
}
