//! The docker executor's test engine: the private dockerd of scripts/with-docker
//! (`USHER_TEST_DOCKER_HOST`), images built offline from Debian's static busybox with
//! `docker import`, and what the engine holds for a job (by its `usher.job` label).
//! Used by the tests of the docker executor and of the Docker API a job may be given.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every applet, a shell, `sleep`, `wget`, `httpd`…
pub const BUSYBOX: &str = "usher-test/busybox:1";
/// A web server answering `hello from the service` on port 80.
pub const SERVICE: &str = "usher-test/service:1";
/// busybox plus the docker command line, for jobs that use the Docker API they are given.
pub const DOCKER_CLI: &str = "usher-test/docker-cli:1";

/// Whether there is a test engine (`USHER_TEST_DOCKER_HOST`, set by scripts/with-docker).
pub fn available() -> bool {
    std::env::var_os("USHER_TEST_DOCKER_HOST").is_some()
}

/// Whether a missing engine is a failure (`USHER_REQUIRE_DOCKER=1`) rather than a reason
/// to skip the tests that need it.
pub fn required() -> bool {
    std::env::var("USHER_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// The test engine's DOCKER_HOST, with the test images built. Panics when there is
/// none: tests that need it are registered through [`crate::harness`] with
/// [`crate::harness::Needs::Docker`], which reports them ignored instead of running them
/// (unless USHER_REQUIRE_DOCKER=1).
pub fn engine() -> String {
    match std::env::var("USHER_TEST_DOCKER_HOST") {
        Ok(host) => {
            build_images(&host);
            host
        }
        Err(_) if required() => {
            panic!("USHER_REQUIRE_DOCKER=1 but no USHER_TEST_DOCKER_HOST (run under scripts/with-docker)")
        }
        Err(_) => panic!("no Docker engine: USHER_TEST_DOCKER_HOST is not set (run under scripts/with-docker)"),
    }
}

/// `docker args…` against `host`; its standard output (panics on failure).
pub fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers, networks and volumes labelled `usher.job=<job_id>` by one of the runners
/// with these builds directories (`usher.runner`: tests running at once on one engine
/// have overlapping job ids), as `kind:id`. `job_id` None: any job of theirs.
pub fn objects_of(host: &str, builds_dirs: &[PathBuf], job_id: Option<i64>) -> Vec<String> {
    let mut found = Vec::new();
    for dir in builds_dirs {
        let runner = format!("label=usher.runner={}", usher_runner::docker::instance_id(dir));
        let job = match job_id {
            Some(id) => format!("label=usher.job={id}"),
            None => "label=usher.job".to_string(),
        };
        for (kind, args) in [
            ("container", vec!["container", "ls", "--all", "--quiet"]),
            ("network", vec!["network", "ls", "--quiet"]),
            ("volume", vec!["volume", "ls", "--quiet"]),
        ] {
            let mut args = args;
            args.extend(["--filter", &runner, "--filter", &job]);
            found.extend(docker(host, &args).split_whitespace().map(|id| format!("{kind}:{id}")));
        }
    }
    found
}

/// Builds the test images once per engine (they are kept until the engine goes).
fn build_images(host: &str) {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if built.iter().any(|h| h == host) {
        return;
    }
    let have = |image: &str| {
        Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have(BUSYBOX) {
        let root = busybox_root();
        import(host, root.path(), BUSYBOX, &[]);
    }
    if !have(SERVICE) {
        let root = busybox_root();
        std::fs::create_dir_all(root.path().join("www")).unwrap();
        std::fs::write(root.path().join("www/index.html"), "hello from the service\n").unwrap();
        import(
            host,
            root.path(),
            SERVICE,
            &["CMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]"],
        );
    }
    if !have(DOCKER_CLI) {
        let root = busybox_root();
        copy_with_libraries(&which("docker"), &root.path().join("bin/docker"), root.path());
        import(host, root.path(), DOCKER_CLI, &[]);
    }
    built.push(host.to_string());
}

/// A directory holding /bin/busybox (Debian's busybox-static) and a link per applet.
fn busybox_root() -> tempfile::TempDir {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "no /bin/busybox (apt-get install busybox-static)");
    let root = tempfile::tempdir().unwrap();
    for dir in ["bin", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
    let applets = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet));
        }
    }
    std::fs::write(root.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    root
}

fn import(host: &str, root: &Path, tag: &str, changes: &[&str]) {
    let mut args = vec!["import".to_string()];
    for change in changes {
        args.extend(["--change".to_string(), change.to_string()]);
    }
    let tar = root.with_extension("tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    args.extend([tar.to_string_lossy().into_owned(), tag.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(host, &args);
    let _ = std::fs::remove_file(tar);
}

fn which(program: &str) -> std::path::PathBuf {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// Copies a program into an image root with the shared libraries it needs (none for a
/// static one), at the paths `ldd` names.
fn copy_with_libraries(program: &Path, to: &Path, root: &Path) {
    std::fs::copy(program, to).unwrap();
    let ldd = Command::new("ldd").arg(program).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/'));
        if let Some(lib) = path {
            let target = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(lib, &target).unwrap();
        }
    }
}
