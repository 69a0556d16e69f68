//! The one interface between a job's steps (`executor`) and where its shells run: the
//! shell executor (`executor::shell`) and the docker executor (`executor::docker`)
//! implement it, and the steps call nothing else of either.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use usher_core::api::DockerRemoved;
use usher_core::protocol::JobReport;

use crate::job_run::JobRun;
use crate::output::OutputPump;
use crate::script::Shell;
use crate::spawn::JobProcess;

/// Where one job's shells run and how they are stopped: what differs between the shell
/// and the docker executor, and nothing else.
pub(crate) trait JobExecutor: Send + Sync {
    /// The shell the generated files are written for.
    fn shell(&self) -> Shell;
    /// What a generated file starts with (the job's variables, where the shell does not
    /// get them from its environment).
    fn exports(&self, run: &JobRun<'_>) -> String;
    /// Makes ready what the shells run in, after the checkout; the report is the job's
    /// failure.
    fn start<'a>(&'a self, run: &'a JobRun<'a>) -> BoxFuture<'a, Result<(), JobReport>>;
    /// Starts the job's shell on a generated file, with its output in the job log.
    fn spawn_shell(&self, run: &JobRun<'_>, file: &Path) -> std::io::Result<(JobProcess, OutputPump)>;
    /// Sends `signal` to the shell started as `pgid` and to everything it started.
    fn signal(&self, pgid: u32, signal: Signal) -> BoxFuture<'_, ()>;
    /// The stopped script's working directory, where the executor can see it.
    fn cwd_at_stop(&self, pgid: u32) -> Option<PathBuf>;
    /// Stops everything of the job that could still write files (before artifacts).
    fn quiesce(&self) -> BoxFuture<'_, ()>;
    /// Whether artifacts are read with the job user's rights (else the executor confines
    /// the job to the build directory's file system itself).
    fn reads_artifacts_as_job_user(&self) -> bool;
    /// Removes what the executor made for the job, after its processes are gone: what it
    /// removed, and how many objects a second sweep still found (and removed).
    fn finish<'a>(&'a self, run: &'a JobRun<'a>) -> BoxFuture<'a, (DockerRemoved, u32)>;
}
