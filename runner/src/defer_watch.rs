//! `usher-defer`'s registrations, sent to the server as they happen. While a job runs,
//! the runner looks at the job's `state/defer` (where `usher-defer` appends) every
//! [`EVERY`] and sends each new command, masked as the job's log is, as a `Deferred`
//! message; the server shows it with the job at once. So a teardown command is known
//! outside the runner's machine even if that machine never comes back. The file is the
//! job's: it is read beneath the job's directory with the job user's rights, and only its
//! complete lines count.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use usher_core::protocol::RunnerMessage;

use crate::after_script::{parse_deferred, read_deferred_file};
use crate::isolation::JobUser;
use crate::logsink::LogHandle;

/// How often the file is looked at.
const EVERY: Duration = Duration::from_millis(200);

/// A job's watch; [`DeferWatch::stop`] ends it after a last look.
pub struct DeferWatch {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DeferWatch {
    /// Watches `state_dir/defer` of job `job_id`, read with `reader`'s rights.
    pub fn start(job_id: i64, state_dir: PathBuf, reader: Option<JobUser>, log: LogHandle) -> DeferWatch {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let last = tokio::select! {
                    _ = tokio::time::sleep(EVERY) => false,
                    _ = &mut stopped => true,
                };
                let first = sent;
                for (n, command) in new_commands(&state_dir, reader.clone(), &mut sent).into_iter().enumerate() {
                    log.send(RunnerMessage::Deferred {
                        job_id,
                        index: (first + n) as u32,
                        command: log.mask(&command),
                    });
                }
                if last {
                    return;
                }
            }
        });
        DeferWatch { stop, task }
    }

    /// Ends the watch once it has sent what the file holds now.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The commands of the file's complete lines after the first `sent`; `sent` counts them.
fn new_commands(state_dir: &Path, reader: Option<JobUser>, sent: &mut usize) -> Vec<String> {
    let Ok(text) = read_deferred_file(state_dir, reader) else {
        return Vec::new();
    };
    // A line still being written waits for the next look.
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let (commands, _) = parse_deferred(complete);
    let new = commands.get(*sent..).unwrap_or_default().to_vec();
    *sent = (*sent).max(commands.len());
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(command: &str) -> String {
        use base64::Engine as _;
        format!("{}\n", base64::engine::general_purpose::STANDARD.encode(command))
    }

    #[test]
    fn each_command_is_new_once_and_a_half_written_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("defer");
        let mut sent = 0;
        assert!(new_commands(dir.path(), None, &mut sent).is_empty(), "no file yet");
        std::fs::write(&file, line("./destroy env-1")).unwrap();
        assert_eq!(new_commands(dir.path(), None, &mut sent), ["./destroy env-1"]);
        assert!(new_commands(dir.path(), None, &mut sent).is_empty());
        let half = line("dns-delete x");
        std::fs::write(&file, line("./destroy env-1") + &half[..4]).unwrap();
        assert!(new_commands(dir.path(), None, &mut sent).is_empty());
        std::fs::write(&file, line("./destroy env-1") + &half).unwrap();
        assert_eq!(new_commands(dir.path(), None, &mut sent), ["dns-delete x"]);
    }

    #[test]
    fn a_link_in_place_of_the_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, line("root-only")).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&secret, state.join("defer")).unwrap();
        assert!(new_commands(&state, None, &mut 0).is_empty());
    }
}
