//! The Docker engine as the docker executor uses it, through the `docker` command line:
//! images, the job's network, its containers, and removing everything that carries a
//! job's label.
//!
//! The command line rather than an API crate: it is what operators already have and
//! debug with, its errors are the sentences they know, `docker exec` streams a process's
//! output into the same pipe the shell executor reads, and it negotiates the API version
//! with whatever engine is installed. Only `unix://` engines are supported.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

/// The label every container, network and volume of a job carries: `usher.job=<id>`.
pub const JOB_LABEL: &str = "usher.job";
/// The second label they carry: which runner made them (`usher.runner=<instance>`), so
/// that runners of different servers sharing one engine — whose job ids overlap — never
/// touch each other's objects.
pub const RUNNER_LABEL: &str = "usher.runner";

/// A runner's instance name on the engine: a stable hash of its builds directory, which
/// identifies it on this machine and survives its restarts (so a runner that crashed
/// finds its jobs' objects again). FNV-1a, 48 bits, hex.
pub fn instance_id(builds_dir: &std::path::Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in builds_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

/// `--executor`: how a runner runs its jobs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// In bash on the runner's machine, as the job user.
    #[default]
    Shell,
    /// In a container of the job's `image`, with its `services`.
    Docker,
}

impl ExecutorKind {
    /// The engine for `--executor docker` (`--docker-host`, else `DOCKER_HOST`, else
    /// /var/run/docker.sock), checked to answer, with `--docker-image` for jobs that name
    /// no image; None for the shell executor.
    pub async fn engine(self, docker_host: Option<&str>, default_image: Option<String>) -> Result<Option<Docker>, String> {
        if self == ExecutorKind::Shell {
            return match default_image {
                Some(_) => Err("--docker-image needs --executor docker".into()),
                None => Ok(None),
            };
        }
        let from_env = std::env::var("DOCKER_HOST").ok();
        let host = docker_host.or(from_env.as_deref()).unwrap_or("unix:///var/run/docker.sock");
        let docker = Docker::from_host(host)?.with_default_image(default_image)?;
        docker
            .ping()
            .await
            .map_err(|e| format!("--executor docker: the Docker engine at {host} does not answer: {e}"))?;
        Ok(Some(docker))
    }
}

/// A directory of the runner's own, made at first use with a random name and mode 0700:
/// the `docker` command's configuration (`DOCKER_CONFIG`: at a path others can guess in
/// a shared /tmp, another local user could write a `config.json` that makes the
/// runner's docker run plugins or hooks as the runner) and the services' environment
/// files. Without one (no temporary directory can be made), a path nobody can create.
pub(crate) fn private_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<Option<tempfile::TempDir>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("usher-runner-").tempdir().ok())
        .as_ref()
        .map_or(std::path::Path::new("/dev/null/usher-runner"), |d| d.path())
}

/// A Docker engine reached over its unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Docker {
    /// The engine's socket.
    pub socket: PathBuf,
    /// This runner's [`instance_id`] (set by [`Docker::for_runner`]).
    pub instance: String,
    /// `--docker-image`: the image of a job that names none.
    pub default_image: Option<String>,
}

/// What [`Docker::remove_everything_of`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
}

impl Removed {
    pub fn total(&self) -> usize {
        self.containers + self.networks + self.volumes
    }

    /// As a teardown receipt counts them.
    pub fn as_receipt(&self) -> usher_core::api::DockerRemoved {
        let count = |n: usize| n as u32;
        usher_core::api::DockerRemoved {
            containers: count(self.containers),
            networks: count(self.networks),
            volumes: count(self.volumes),
        }
    }
}

impl Docker {
    /// `--docker-host`: `unix:///var/run/docker.sock` (or a bare path).
    pub fn from_host(host: &str) -> Result<Docker, String> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if !path.starts_with('/') {
            return Err(format!("--docker-host {host}: only unix:///path/to/docker.sock is supported"));
        }
        Ok(Docker {
            socket: path.into(),
            instance: String::new(),
            default_image: None,
        })
    }

    /// `--docker-image`: the image jobs without `image:` run in; refused when it is not
    /// an image name (it must never read as a flag to `docker`).
    fn with_default_image(mut self, image: Option<String>) -> Result<Docker, String> {
        if let Some(image) = &image
            && !usher_core::config::is_image_name(image)
        {
            return Err(format!("--docker-image {image}: not an image name (e.g. alpine:3.20)"));
        }
        self.default_image = image;
        Ok(self)
    }

    /// The engine as the runner with this builds directory uses it.
    pub fn for_runner(mut self, builds_dir: &std::path::Path) -> Docker {
        self.instance = instance_id(builds_dir);
        self
    }

    /// The two labels of the job's objects, as `key=value`.
    pub fn labels(&self, job_id: i64) -> [String; 2] {
        [format!("{JOB_LABEL}={job_id}"), format!("{RUNNER_LABEL}={}", self.instance)]
    }

    /// The name of the job's container and network: `usher-<instance>-job-<id>`.
    pub fn job_name(&self, job_id: i64) -> String {
        format!("usher-{}-job-{job_id}", self.instance)
    }

    /// `DOCKER_HOST` for the `docker` commands of the runner.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command aimed at this engine, with nothing of the runner's environment
    /// but PATH (no stray DOCKER_* settings, no secrets).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", private_dir().join("docker-config"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `docker args…`; its standard output, or its error message.
    pub async fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(|e| format!("could not run docker: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err.trim().trim_start_matches("Error response from daemon: ").to_string())
        }
    }

    /// Whether the engine answers.
    pub async fn ping(&self) -> Result<(), String> {
        self.run(&["version", "--format", "{{.Server.Version}}"]).await.map(|_| ())
    }

    /// The image is here, or pulled now; else why not.
    pub async fn ensure_image(&self, image: &str) -> Result<(), String> {
        if self.run(&["image", "inspect", "--format", "{{.Id}}", image]).await.is_ok() {
            return Ok(());
        }
        self.run(&["pull", "--quiet", image]).await.map(|_| ())
    }

    /// Ids of the job's objects of one kind (`container`, `network`, `volume`).
    async fn labelled(&self, kind: &str, job_id: i64) -> Vec<String> {
        let [job, runner] = self.labels(job_id).map(|l| format!("label={l}"));
        let mut args: Vec<&str> = match kind {
            "container" => vec!["container", "ls", "--all", "--quiet"],
            "network" => vec!["network", "ls", "--quiet"],
            _ => vec!["volume", "ls", "--quiet"],
        };
        args.extend(["--filter", &job, "--filter", &runner]);
        match self.run(&args).await {
            Ok(out) => out.split_whitespace().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Removes every container (with its anonymous volumes), network and volume labelled
    /// with the job and this runner, until none is left (a container being created meanwhile shows up in
    /// the next round).
    pub async fn remove_everything_of(&self, job_id: i64) -> Removed {
        let mut removed = Removed::default();
        for _ in 0..5 {
            let containers = self.labelled("container", job_id).await;
            if !containers.is_empty() {
                let mut args = vec!["container", "rm", "--force", "--volumes"];
                args.extend(containers.iter().map(String::as_str));
                let _ = self.run(&args).await;
                removed.containers += containers.len();
            }
            let networks = self.labelled("network", job_id).await;
            for network in &networks {
                if self.run(&["network", "rm", network]).await.is_ok() {
                    removed.networks += 1;
                }
            }
            let volumes = self.labelled("volume", job_id).await;
            if !volumes.is_empty() {
                let mut args = vec!["volume", "rm", "--force"];
                args.extend(volumes.iter().map(String::as_str));
                let _ = self.run(&args).await;
                removed.volumes += volumes.len();
            }
            if containers.is_empty() && networks.is_empty() && volumes.is_empty() {
                break;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_default_image_must_be_an_image_name_and_needs_the_docker_executor() {
        let shell = ExecutorKind::Shell.engine(None, Some("alpine:3.20".into())).await;
        assert_eq!(shell.unwrap_err(), "--docker-image needs --executor docker");
        assert_eq!(ExecutorKind::Shell.engine(None, None).await, Ok(None));
        let docker = Docker::from_host("unix:///nowhere.sock").unwrap();
        let flag = docker.clone().with_default_image(Some("--privileged".into()));
        assert_eq!(
            flag.unwrap_err(),
            "--docker-image --privileged: not an image name (e.g. alpine:3.20)"
        );
        let image = docker.with_default_image(Some("registry.example:5000/team/build:1.2".into()));
        assert_eq!(
            image.unwrap().default_image.as_deref(),
            Some("registry.example:5000/team/build:1.2")
        );
    }
}
