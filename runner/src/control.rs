//! What the session (for the server, or the runner's own shutdown) tells a job that is
//! running: the executor and the artifact uploader both listen for it, so it lives apart
//! from either.

/// What the server (or the runner's own shutdown) asks of a running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Cancel,
    Abort,
    /// The runner is stopping: stop the script like a cancel, run after_script, and
    /// report the job failed (`runner_shutdown`).
    Shutdown,
}
