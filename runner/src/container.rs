//! A job's containers with the docker executor: its network, its service containers,
//! and the one long-lived container its script and after_script both run in.
//!
//! The job container's first process only sleeps; the script and after_script are
//! `docker exec`s of the job's shell into it, so what the script left behind — files,
//! the saved state (exported variables, directory), background processes until they
//! are stopped — is there for after_script, as with the shell executor. The build
//! directory and the job's script directory are mounted at the same paths as on the
//! host, so the generated scripts work unchanged. Stopping the script signals every
//! process in the container but the sleeper (`kill -1` from inside).

use std::path::Path;

use nix::sys::signal::Signal;

use crate::docker::Docker;
use crate::job_run::JobRun;
use crate::logsink::LogHandle;
use usher_core::api::{DockerRemoved, FailureReason};
use usher_core::protocol::JobReport;

/// Where the per-job Docker API proxy is mounted inside the job container.
pub const PROXY_IN_CONTAINER: &str = "/var/run/usher/docker.sock";

/// The running job container.
#[derive(Debug)]
pub struct JobContainer {
    pub docker: Docker,
    /// The container's name (`usher-<instance>-job-<id>`).
    pub name: String,
}

/// Why the containers could not be started.
pub enum StartError {
    /// An image is not here and could not be pulled.
    Image(String),
    /// Anything else (the engine refused, went away…).
    Engine(String),
}

impl StartError {
    /// What the job's log says, and the failure the runner reports: `image_pull_failed`
    /// for a missing image, else `runner_system_failure`.
    pub fn into_report(self, log: &LogHandle) -> JobReport {
        let (reason, why) = match self {
            StartError::Image(why) => (FailureReason::ImagePullFailed, why),
            StartError::Engine(why) => (FailureReason::RunnerSystemFailure, why),
        };
        log.note(&format!("Could not start the job's containers: {why}"));
        JobReport {
            exit_code: None,
            failure_reason: Some(reason),
            duration_ms: 0,
            after_script: None,
            detail: Some(log.mask(&why)),
            dotenv: None,
            teardown: None,
        }
    }
}

/// Starts the network, the services and the job container; the images first, so a
/// missing image fails the job before anything runs.
pub(crate) async fn start(run: &JobRun<'_>, docker: &Docker, proxy_socket: Option<&Path>) -> Result<JobContainer, StartError> {
    let job = run.job;
    let Some(image) = job.image.as_deref().or(docker.default_image.as_deref()) else {
        return Err(StartError::Engine(
            "the docker executor needs an image: give the job `image:` (e.g. image: alpine:3.20), or the runner --docker-image".into(),
        ));
    };
    for wanted in std::iter::once(image).chain(job.services.iter().map(|s| s.name.as_str())) {
        run.log.note(&format!("Using image {wanted}"));
        // The server expanded the job's variables in it; one nothing set is still there,
        // and whatever they were set to must not reach docker as anything but a name.
        if !usher_core::config::is_image_name(wanted) {
            let unset = usher_core::variables::names(wanted);
            return Err(StartError::Image(match unset.first() {
                Some(name) => format!("image {wanted} names `${name}`, which nothing sets: set it as a project variable"),
                None => format!("{wanted} is not an image name (e.g. alpine:3.20)"),
            }));
        }
        docker
            .ensure_image(wanted)
            .await
            .map_err(|e| StartError::Image(format!("image {wanted} is not available: {e}")))?;
    }
    let [label, runner_label] = docker.labels(job.job_id);
    // The job's network (its services and containers share it) and container are named
    // alike: `usher-<instance>-job-<id>`.
    let network = docker.job_name(job.job_id);
    docker
        .run(&["network", "create", "--label", &label, "--label", &runner_label, &network])
        .await
        .map_err(StartError::Engine)?;
    // `docker run --detach` of a container of the job's, labelled, on its network.
    let detached = |name: &str| -> Vec<String> {
        [
            "run",
            "--detach",
            "--label",
            &label,
            "--label",
            &runner_label,
            "--name",
            name,
            "--network",
            &network,
        ]
        .map(str::to_string)
        .to_vec()
    };
    for (i, service) in job.services.iter().enumerate() {
        run.log.note(&format!("Starting service {} as {}", service.name, service.alias));
        let mut args = detached(&format!("{network}-service-{}", i + 1));
        args.extend(["--network-alias".to_string(), service.alias.clone()]);
        // Its environment in a file only root reads (not on a command line others can
        // read, nor in docker's own environment, where `PATH` or `LD_PRELOAD` would
        // change what the runner runs as root).
        let environment = service_environment(job.service_variables.iter().chain(&service.variables), &run.log)
            .map_err(|e| StartError::Engine(format!("service {}: its variables: {e}", service.name)))?;
        args.push(format!("--env-file={}", environment.path().display()));
        // An entrypoint of several words: the first replaces the image's, the others
        // come before the command (what exec form does with them).
        let (entrypoint, entrypoint_rest) = match service.entrypoint.as_deref() {
            Some([first, rest @ ..]) => (Some(first), rest),
            _ => (None, &[][..]),
        };
        if let Some(first) = entrypoint {
            args.push(format!("--entrypoint={first}"));
        }
        args.push(service.name.clone());
        args.extend(entrypoint_rest.iter().cloned());
        args.extend(service.command.iter().flatten().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker
            .run(&args)
            .await
            .map_err(|e| StartError::Engine(format!("service {}: {e}", service.name)))?;
    }
    let name = network.clone();
    let build = run.build_dir.to_string_lossy().into_owned();
    let meta = run.meta_dir.to_string_lossy().into_owned();
    let [home, state] = [crate::rooms::HOME, crate::rooms::STATE].map(|d| run.meta_dir.join(d).to_string_lossy().into_owned());
    let mut args = detached(&name);
    // The scripts' directory is read-only in the container, whose root could otherwise
    // plant a link where the runner writes after_script (see `beneath`).
    args.extend(
        [
            "--workdir",
            &build,
            "--volume",
            &format!("{build}:{build}"),
            "--volume",
            &format!("{meta}:{meta}:ro"),
            "--volume",
            &format!("{home}:{home}"),
            "--volume",
            &format!("{state}:{state}"),
        ]
        .map(str::to_string),
    );
    if let Some(socket) = proxy_socket {
        args.extend([
            "--volume".into(),
            format!("{}:{PROXY_IN_CONTAINER}", socket.display()),
            "--env".into(),
            format!("DOCKER_HOST=unix://{PROXY_IN_CONTAINER}"),
        ]);
    }
    // The sleeper ignores TERM so that stopping the script's processes leaves it be.
    args.extend(["--entrypoint", "sh", image, "-c", "trap '' TERM INT; while :; do sleep 3600; done"].map(str::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker.run(&args).await.map_err(StartError::Engine)?;
    Ok(JobContainer {
        docker: docker.clone(),
        name,
    })
}

/// The longest line of an `--env-file` docker reads.
const ENV_FILE_LINE_BYTES: usize = 64 * 1024;

/// A service's variables as a `docker run --env-file` (one `NAME=value` a line, read
/// as written): a temporary file of the runner's, removed when dropped. A value with a
/// line break, or too long for docker to read, cannot be written so; it is left out,
/// and the log says so.
fn service_environment<'a>(
    variables: impl Iterator<Item = &'a (String, String)>,
    log: &LogHandle,
) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new_in(crate::docker::private_dir())?;
    let mut text = String::new();
    for (name, value) in variables {
        if !usher_core::variables::is_name(name) {
            continue;
        }
        if value.contains(['\n', '\r', '\0']) {
            log.note(&format!(
                "The service does not get `{name}`: its value has a line break, which docker cannot pass to a service."
            ));
            continue;
        }
        // docker reads the file a line at a time, 64 KiB at most.
        if name.len() + value.len() + 2 > ENV_FILE_LINE_BYTES {
            log.note(&format!(
                "The service does not get `{name}`: its value is longer than docker passes to a service ({ENV_FILE_LINE_BYTES} bytes a variable)."
            ));
            continue;
        }
        text.push_str(&format!("{name}={value}\n"));
    }
    file.write_all(text.as_bytes())?;
    file.flush()?;
    Ok(file)
}

impl JobContainer {
    /// The command that runs a generated script file in the container: with bash where
    /// the image has it, else with sh (the scripts are written for both).
    pub(crate) fn exec_args(&self, run: &JobRun<'_>, file: &Path) -> Vec<String> {
        [
            "exec",
            "--workdir",
            &run.build_dir.to_string_lossy(),
            &self.name,
            "sh",
            "-c",
            "if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc \"$0\"; fi; exec sh \"$0\"",
            &file.to_string_lossy(),
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Sends `signal` to every process of the container but its sleeper.
    pub async fn signal_all(&self, signal: Signal) {
        let name = match signal {
            Signal::SIGKILL => "KILL",
            _ => "TERM",
        };
        let _ = self
            .docker
            .run(&["exec", &self.name, "sh", "-c", &format!("kill -s {name} -1 2>/dev/null; true")])
            .await;
    }
}

/// Removes every container, network and volume of the job — its own and what it made
/// through its Docker API — and says so in the log.
pub async fn tear_down(docker: &Docker, job_id: i64, log: &LogHandle) -> (DockerRemoved, u32) {
    let started = std::time::Instant::now();
    let removed = docker.remove_everything_of(job_id).await;
    if removed.total() > 0 {
        log.note(&format!(
            "Removed the job's Docker objects: {} container(s), {} network(s), {} volume(s) in {} ms.",
            removed.containers,
            removed.networks,
            removed.volumes,
            started.elapsed().as_millis()
        ));
    }
    // The final sweep: anything labelled for the job still there was missed above.
    let leftovers = docker.remove_everything_of(job_id).await.total() as u32;
    if leftovers > 0 {
        log.note(&format!(
            "The final sweep found and removed {leftovers} more Docker object(s) of the job."
        ));
    }
    (removed.as_receipt(), leftovers)
}
