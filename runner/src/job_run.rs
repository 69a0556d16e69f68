//! One job's run on this runner: its directories (build directory, script and state
//! beside it, the job user's home), its confinement and marks, and how it starts
//! processes (the job's bash, the runner's tools) so each is confined, marked as the
//! job's and logged.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use tokio::process::Command;
use usher_core::protocol::JobAssignment;

use crate::isolation::Confinement;
use crate::logsink::LogHandle;
use crate::output::OutputPump;
use crate::procs::{COOKIE_VAR, JobMarks};
use crate::script::PASSED_THROUGH;
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
}

impl JobRun<'_> {
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
