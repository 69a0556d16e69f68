//! The one wait of the runner: a process of the job (its shell, after_script, git) runs
//! until it exits, its time is up, or a stop it must heed arrives. While the script runs
//! every stop counts (cancel, shutdown, abort); once a job is already stopping (the
//! grace after SIGTERM, after_script, a stopped checkout) only an abort does, because
//! cleanup is what a cancel asked for. Every wait in the runner goes through
//! [`supervise`], so each listens to the same stop signal in the same way.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::control::Control;
use crate::spawn::JobProcess;

/// Which stops end a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Heed {
    /// Cancel, shutdown and abort: the job's work is under way.
    EveryStop,
    /// Only an abort: the job is already stopping or cleaning up.
    AbortOnly,
}

/// How a supervised wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The process exited with this code (None: killed by a signal).
    Exited(Option<i32>),
    /// The time given ran out; the process still runs.
    TimedOut,
    /// A stop the caller heeds came in; the process still runs.
    Stopped(Control),
}

/// Waits for `child` to exit, for `timeout` (None: no limit), or for a stop of `heed`.
/// A stop not heeded is dropped (the job already does what it asks). When the session
/// is gone (the channel closed) only the process and the time are waited for.
pub(crate) async fn supervise(
    child: &mut JobProcess,
    control: &mut mpsc::UnboundedReceiver<Control>,
    timeout: Option<Duration>,
    heed: Heed,
) -> Waited {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut listening = true;
    loop {
        tokio::select! {
            status = child.wait() => return Waited::Exited(status.ok().and_then(|s| s.code())),
            _ = &mut deadline => return Waited::TimedOut,
            c = control.recv(), if listening => match c {
                Some(stop) if heed == Heed::EveryStop || stop == Control::Abort => return Waited::Stopped(stop),
                Some(_) => {}
                None => listening = false,
            },
        }
    }
}
