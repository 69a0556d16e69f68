//! Carries a bash process's stdout/stderr pipe into the job log, and lets the executor wait
//! until everything the process wrote before it exited is in the log.
//!
//! The pipe can outlive the process (a background child still holds it), so "read to EOF"
//! cannot be the signal. Instead [`OutputPump::drain`] wakes the reading thread, which
//! reads the pipe until it is empty *right now*: whatever bash wrote before it exited was
//! already in the pipe, so it is all in the log before the executor writes its next note
//! or sends the final report. The thread goes on reading until the last writer closes.

use std::io::{ErrorKind, PipeReader, PipeWriter, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::oneshot;

use crate::logsink::LogHandle;

/// A drain stops after this much even if the pipe never runs dry (a background process
/// flooding it): bash's own output before exit is at most a pipe buffer.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// The reading side of one process's output; see the module comment.
pub struct OutputPump {
    /// Closed by `drain`: its EOF wakes the reading thread.
    wake: PipeWriter,
    drained: oneshot::Receiver<()>,
}

impl OutputPump {
    /// Starts a thread that copies `output` into `log`.
    pub fn start(output: PipeReader, log: LogHandle) -> std::io::Result<Self> {
        fcntl(output.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let (wake_rx, wake) = std::io::pipe()?;
        let (drained_tx, drained) = oneshot::channel();
        std::thread::Builder::new()
            .name("job-output".into())
            .spawn(move || pump(output, wake_rx, log, drained_tx))?;
        Ok(Self { wake, drained })
    }

    /// Returns once everything the process wrote before now is in the log (bounded by a
    /// few seconds in case the thread is stuck behind a flood).
    pub async fn drain(self) {
        let Self { wake, drained } = self;
        drop(wake);
        let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
    }
}

fn pump(mut output: PipeReader, wake: PipeReader, log: LogHandle, drained: oneshot::Sender<()>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = Some(drained);
    // Reads what is in the pipe now; false once the pipe is closed for good.
    let mut read_available = |output: &mut PipeReader, limit: usize| -> bool {
        let mut taken = 0;
        while taken < limit {
            match output.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    taken += n;
                    log.write(buf[..n].to_vec());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    };
    loop {
        let (output_ready, woken) = {
            let mut fds = vec![PollFd::new(output.as_fd(), PollFlags::POLLIN)];
            if drained.is_some() {
                fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if woken {
            let open = read_available(&mut output, DRAIN_LIMIT);
            if let Some(d) = drained.take() {
                let _ = d.send(());
            }
            if !open {
                return;
            }
        } else if output_ready && !read_available(&mut output, 256 * 1024) {
            break;
        }
    }
    if let Some(d) = drained.take() {
        let _ = d.send(());
    }
}
