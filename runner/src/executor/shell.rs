//! The shell executor: a job's shells are `bash` processes on this machine, in a process
//! group of their own, as the job's user and inside its cgroup (see `JobRun::spawn_bash`).
//! A stop signals the script's process group, and the script's directory at the stop is
//! read from `/proc`.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use usher_core::api::DockerRemoved;
use usher_core::protocol::JobReport;

use super::JobExecutor;
use crate::job_run::JobRun;
use crate::output::OutputPump;
use crate::procs;
use crate::script::Shell;
use crate::spawn::JobProcess;

/// One job under the shell executor: nothing to start or tear down besides its processes.
pub(crate) struct ShellJob;

impl JobExecutor for ShellJob {
    fn shell(&self) -> Shell {
        Shell::Bash
    }

    // bash gets the job's variables in its environment.
    fn exports(&self, _run: &JobRun<'_>) -> String {
        String::new()
    }

    fn start<'a>(&'a self, run: &'a JobRun<'a>) -> BoxFuture<'a, Result<(), JobReport>> {
        if let Some(image) = &run.job.image {
            run.log
                .note(&format!("This runner uses the shell executor: `image: {image}` is ignored."));
        }
        Box::pin(async { Ok(()) })
    }

    fn spawn_shell(&self, run: &JobRun<'_>, file: &Path) -> std::io::Result<(JobProcess, OutputPump)> {
        run.spawn_bash(file)
    }

    fn signal(&self, pgid: u32, signal: Signal) -> BoxFuture<'_, ()> {
        procs::signal_group(pgid, signal);
        Box::pin(async {})
    }

    fn cwd_at_stop(&self, pgid: u32) -> Option<PathBuf> {
        procs::cwd_of(pgid)
    }

    fn quiesce(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn reads_artifacts_as_job_user(&self) -> bool {
        true
    }

    fn finish<'a>(&'a self, _run: &'a JobRun<'a>) -> BoxFuture<'a, (DockerRemoved, u32)> {
        Box::pin(async { (DockerRemoved::default(), 0) })
    }
}
