//! The job log on its way to the server: bytes from the job's processes and the runner's
//! own notes go through one sink, which turns them into `Log` messages with byte offsets
//! (valid UTF-8, split only at character boundaries), batches what is already waiting,
//! and writes `[MASKED]` over the job's masked values (`usher_core::masking`) wherever
//! the pieces of output are cut — everything a job's log gets passes here, the script's,
//! after_script's, git's and the runner's own lines alike.

use tokio::sync::{mpsc, oneshot};
use usher_core::masking::Masker;
use usher_core::protocol::RunnerMessage;

const MAX_BATCH: usize = 64 * 1024;

pub enum SinkMsg {
    Data(Vec<u8>),
    /// Another message of the job's (`Deferred`), sent after the log written before it.
    Message(RunnerMessage),
    /// Acknowledged once everything sent before it is on its way to the server.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct LogHandle {
    tx: mpsc::UnboundedSender<SinkMsg>,
    /// The job's masked values, for text that leaves the runner outside its log.
    masker: std::sync::Arc<Masker>,
}

impl LogHandle {
    pub fn write(&self, bytes: impl Into<Vec<u8>>) {
        let _ = self.tx.send(SinkMsg::Data(bytes.into()));
    }

    /// A line from the runner itself, in yellow so it stands apart from the job's output.
    pub fn note(&self, text: &str) {
        self.write(format!("\x1b[33;1m{text}\x1b[0m\n"));
    }

    /// `text` with the job's masked values written over, as its log would have it.
    pub fn mask(&self, text: &str) -> String {
        self.masker.mask(text)
    }

    /// Sends `message` to the server after the log written before it.
    pub fn send(&self, message: RunnerMessage) {
        let _ = self.tx.send(SinkMsg::Message(message));
    }

    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(SinkMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the sink task for one job. `out` gets each `Log` message before a flush that
/// follows it is acknowledged, so whatever the caller sends after `flush` comes later.
pub fn spawn(job_id: i64, masked: Vec<String>, out: impl Fn(RunnerMessage) + Send + 'static) -> LogHandle {
    let (tx, mut rx) = mpsc::unbounded_channel::<SinkMsg>();
    let whole = std::sync::Arc::new(Masker::new(masked.clone()));
    tokio::spawn(async move {
        let mut masker = Masker::new(masked);
        let mut offset: u64 = 0;
        let mut carry: Vec<u8> = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut flushes = Vec::new();
            let mut messages = Vec::new();
            let push =
                |msg: SinkMsg, carry: &mut Vec<u8>, flushes: &mut Vec<oneshot::Sender<()>>, messages: &mut Vec<RunnerMessage>| match msg {
                    SinkMsg::Data(d) => carry.extend_from_slice(&d),
                    SinkMsg::Flush(f) => flushes.push(f),
                    SinkMsg::Message(m) => messages.push(m),
                };
            push(first, &mut carry, &mut flushes, &mut messages);
            // A message ends the batch: what is written after it goes after it.
            while carry.len() < MAX_BATCH && messages.is_empty() {
                match rx.try_recv() {
                    Ok(msg) => push(msg, &mut carry, &mut flushes, &mut messages),
                    Err(_) => break,
                }
            }
            let flushing = !flushes.is_empty();
            let mut text = masker.feed(&take_utf8(&mut carry, flushing));
            if flushing {
                text.push_str(&masker.finish());
            }
            if !text.is_empty() {
                let len = text.len() as u64;
                out(RunnerMessage::Log {
                    job_id,
                    offset,
                    data: text,
                });
                offset += len;
            }
            for m in messages {
                out(m);
            }
            for f in flushes {
                let _ = f.send(());
            }
        }
    });
    LogHandle { tx, masker: whole }
}

/// Takes the longest valid UTF-8 prefix of `buf` (invalid bytes become U+FFFD); keeps an
/// incomplete character at the end for the next batch unless `all` is set.
fn take_utf8(buf: &mut Vec<u8>, all: bool) -> String {
    let mut keep_from = buf.len();
    if !all {
        // An incomplete multi-byte sequence can only be in the last 3 bytes.
        for back in 1..=3.min(buf.len()) {
            let i = buf.len() - back;
            let b = buf[i];
            if b & 0xC0 == 0xC0 {
                let needed = if b >= 0xF0 {
                    4
                } else if b >= 0xE0 {
                    3
                } else {
                    2
                };
                if back < needed {
                    keep_from = i;
                }
                break;
            }
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let rest = buf.split_off(keep_from);
    let text = String::from_utf8_lossy(buf).into_owned();
    *buf = rest;
    text
}

#[cfg(test)]
mod tests {
    use super::take_utf8;

    #[test]
    fn keeps_a_split_character_for_later() {
        let mut buf = "añ".as_bytes().to_vec();
        buf.pop();
        assert_eq!(take_utf8(&mut buf, false), "a");
        buf.push("ñ".as_bytes()[1]);
        assert_eq!(take_utf8(&mut buf, false), "ñ");
        assert!(buf.is_empty());
    }
}
