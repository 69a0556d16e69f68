//! One job's run on this runner: its directories (build directory, script and state
//! beside it, the job user's home), its confinement and marks, and how it starts
//! processes (the job's bash, the runner's tools) so each is confined, marked as the
//! job's and logged.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use tokio::process::Command;
use usher_core::protocol::JobAssignment;

use crate::container::JobContainer;
use crate::docker::Docker;
use crate::isolation::Confinement;
use crate::logsink::LogHandle;
use crate::output::OutputPump;
use crate::procs::{COOKIE_VAR, JobMarks};
use crate::script::{PASSED_THROUGH, Shell};
use crate::spawn::{JobProcess, spawn_confined};

/// One job's run: what every step needs.
pub(crate) struct JobRun<'a> {
    pub(crate) job: &'a JobAssignment,
    pub(crate) build_dir: PathBuf,
    pub(crate) meta_dir: PathBuf,
    pub(crate) home_dir: PathBuf,
    pub(crate) state_file: PathBuf,
    pub(crate) marks: JobMarks,
    pub(crate) confinement: Confinement,
    pub(crate) log: LogHandle,
    /// Where this runner keeps its repository caches.
    pub(crate) caches: PathBuf,
    /// The docker executor's engine; None with the shell executor.
    pub(crate) docker: Option<Docker>,
    /// The job's Docker API (see `docker_proxy`), when it has one.
    pub(crate) proxy_socket: Option<PathBuf>,
    /// The container the job's shells run in, once started (docker executor).
    pub(crate) container: std::sync::OnceLock<JobContainer>,
}

impl JobRun<'_> {
    /// The shell the generated files are written for.
    pub(crate) fn shell(&self) -> Shell {
        if self.docker.is_some() { Shell::Posix } else { Shell::Bash }
    }

    /// What a generated file starts with: the job's variables for a container's shell
    /// (the shell executor's bash has them in its environment).
    pub(crate) fn exports(&self) -> String {
        if self.docker.is_none() {
            return String::new();
        }
        let mut vars = self.job.variables.clone();
        vars.push(("CI_PROJECT_DIR".into(), self.build_dir.to_string_lossy().into_owned()));
        crate::script::exports_text(&vars)
    }

    /// Starts the job's shell on `file`: in the job container with the docker executor,
    /// else [`Self::spawn_bash`].
    pub(crate) fn spawn_shell(&self, file: &Path) -> std::io::Result<(JobProcess, OutputPump)> {
        match self.container.get() {
            Some(container) => {
                let args = container.exec_args(self, file);
                let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
                let env = [("DOCKER_HOST".to_string(), container.docker.host())];
                self.spawn_tool("docker", &args, &self.build_dir, &env, false)
            }
            None => self.spawn_bash(file),
        }
    }

    /// Sends `signal` to the job's shell and what it started: the process group of the
    /// shell executor's bash, or every process of the job container.
    pub(crate) async fn signal_shell(&self, pgid: u32, signal: nix::sys::signal::Signal) {
        match self.container.get() {
            Some(container) => container.signal_all(signal).await,
            None => crate::procs::signal_group(pgid, signal),
        }
    }

    /// Starts `bash file` in its own process group, confined (job user, cgroup), with
    /// output into the job log.
    pub(crate) fn spawn_bash(&self, file: &Path) -> std::io::Result<(JobProcess, OutputPump)> {
        let (reader, writer) = std::io::pipe()?;
        self.marks.add_pipe(reader.as_fd());
        let mut cmd = Command::new("bash");
        cmd.arg("--noprofile")
            .arg("--norc")
            .arg(file)
            .current_dir(&self.build_dir)
            // Only a few variables of the runner's own environment reach a job: a local
            // runner lives in the server process, whose environment holds secrets.
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| PASSED_THROUGH.contains(&k.as_str())));
        if let Some(user) = self.confinement.user() {
            cmd.env("HOME", &self.home_dir).env("USER", &user.name).env("LOGNAME", &user.name);
        }
        cmd.envs(self.job.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CI_PROJECT_DIR", &self.build_dir)
            .env(COOKIE_VAR, &self.marks.cookie);
        // Returns once the child has exec'd: our copies of the pipe's write end are closed.
        let child = spawn_confined(cmd, writer.into(), &self.confinement)?;
        let pump = OutputPump::start(reader, self.log.clone())?;
        Ok((child, pump))
    }

    /// Starts a tool of the runner's (git, for the checkout) in its own process group,
    /// inside the job's cgroup, with its output in the job log. `as_job`: as the job user
    /// (what touches the build directory); else as the runner (what touches its cache).
    pub(crate) fn spawn_tool(
        &self,
        program: &str,
        args: &[&std::ffi::OsStr],
        cwd: &Path,
        env: &[(String, String)],
        as_job: bool,
    ) -> std::io::Result<(JobProcess, OutputPump)> {
        let (reader, writer) = std::io::pipe()?;
        self.marks.add_pipe(reader.as_fd());
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| PASSED_THROUGH.contains(&k.as_str())))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("LC_ALL", "C")
            .env(COOKIE_VAR, &self.marks.cookie);
        let confinement = if as_job {
            if let Some(user) = self.confinement.user() {
                cmd.env("HOME", &self.home_dir).env("USER", &user.name);
            }
            self.confinement.clone()
        } else {
            self.confinement.runner_side()
        };
        let child = spawn_confined(cmd, writer.into(), &confinement)?;
        let pump = OutputPump::start(reader, self.log.clone())?;
        Ok((child, pump))
    }

    /// Writes the new file `name` that the job's shell will read into the runner's
    /// directory beside the build directory: root's, readable by the job's group,
    /// created without following anything the job may have planted (see `beneath`).
    pub(crate) fn write_for_job(&self, name: &str, text: &str) -> std::io::Result<()> {
        crate::beneath::create_new(&self.meta_dir, name, text.as_bytes(), self.confinement.user().map(|u| u.gid))
    }
}
