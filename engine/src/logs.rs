//! Job logs: appends from the runner holding the job, reads for everyone who may see it.

use usher_core::status::Status;

use crate::{Actor, Engine, EngineError};

/// How much of a log one page read takes from the database: what a reader that stalls
/// holds of it (besides the server's write buffer), however the log was stored.
pub const LOG_PAGE_BYTES: usize = 16 * 1024;

/// A stretch of a job's log that starts at a line's start (unless one line fills it):
/// what the job page shows first, and what "Show earlier output" puts above it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogStretch {
    /// Its first byte's offset in the log.
    pub start: u64,
    /// How many lines (newlines) the log has before `start`.
    pub lines_before: u64,
    pub text: String,
}

impl LogStretch {
    /// The offset just past its last byte.
    pub fn end(&self) -> u64 {
        self.start + self.text.len() as u64
    }
}

impl Engine {
    /// At most `max_bytes` of a job's log from byte `offset` on (snapped forward to a
    /// character boundary), and whether more is stored after it.
    pub async fn job_log_page(&self, actor: &Actor, id: i64, offset: u64, max_bytes: usize) -> Result<(String, bool), EngineError> {
        self.get_job(actor, id).await?;
        let (text, _, next) = self.store().read_log_page(id, offset, max_bytes).await?;
        Ok((text, next.is_some()))
    }

    /// The last lines of a job's log that end at byte `before` (the log's end when None)
    /// and fit in `max_bytes`: a whole number of lines where it can (the first, cut
    /// line is left out), and the count of lines before them, so that they keep their
    /// numbers. Costs `max_bytes` of memory whatever the log's size.
    pub async fn job_log_stretch(&self, actor: &Actor, id: i64, before: Option<u64>, max_bytes: usize) -> Result<LogStretch, EngineError> {
        self.get_job(actor, id).await?;
        let store = self.store();
        let length = store.log_length(id).await?;
        let end = before.map_or(length, |b| b.min(length));
        if end == 0 {
            return Ok(LogStretch::default());
        }
        // From one byte before the window: whether the window starts at a line's start.
        let from = end.saturating_sub(max_bytes as u64).saturating_sub(1);
        let (mut text, mut start, _) = store.read_log_page(id, from, (end - from) as usize).await?;
        // A page holds at least one character, which may reach past `end`: cut it back.
        let mut keep = (end.saturating_sub(start) as usize).min(text.len());
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
        text.truncate(keep);
        if start > 0 {
            // Begin at the first whole line, if the stretch holds one.
            if let Some(cut) = text.find('\n').filter(|&at| at + 1 < text.len()) {
                text.drain(..=cut);
                start += cut as u64 + 1;
            }
        }
        // One line longer than the window: its last `max_bytes`.
        while text.len() > max_bytes {
            let first = text.chars().next().map_or(1, char::len_utf8);
            text.drain(..first);
            start += first as u64;
        }
        let lines_before = store.newlines_before(id, start).await?;
        Ok(LogStretch { start, lines_before, text })
    }

    /// A job's log from byte `offset` on, read from the database a page (at most
    /// `LOG_PAGE_BYTES`) at a time, each only when the reader has taken the one before
    /// (the stream is polled when the connection has room): a reader that stalls holds
    /// one page, not the log. Also whether the job had finished when the read began (then
    /// this is the whole rest of its log).
    pub async fn job_log_pages(
        &self,
        actor: &Actor,
        id: i64,
        offset: u64,
    ) -> Result<(impl futures_util::Stream<Item = Result<String, EngineError>> + Send + 'static, bool), EngineError> {
        let job = self.get_job(actor, id).await?;
        let engine = self.clone();
        let pages = futures_util::stream::try_unfold(Some(offset), move |from| {
            let engine = engine.clone();
            async move {
                let Some(from) = from else { return Ok(None) };
                let (text, _, end) = engine.store().read_log_page(id, from, LOG_PAGE_BYTES).await?;
                Ok(match end {
                    Some(end) => Some((text, Some(end))),
                    None if text.is_empty() => None,
                    None => Some((text, None)),
                })
            }
        });
        Ok((pages, job.status.is_terminal()))
    }

    /// Stores output of a job the runner holds (see `Store::append_log`) and tells the
    /// job's log watchers (on PostgreSQL the store's notice does that, for every replica).
    pub async fn append_log(&self, runner_id: i64, job_id: i64, offset: u64, data: &str) -> Result<(u64, Status), EngineError> {
        let lengths = self.append_log_pieces(runner_id, job_id, &[(offset, data)]).await?;
        Ok(lengths[0])
    }

    /// Several pieces of one job's log, in order, in one transaction (see
    /// `Store::append_log`); per piece, the log's length after it and the job's status.
    pub async fn append_log_pieces(&self, runner_id: i64, job_id: i64, pieces: &[(u64, &str)]) -> Result<Vec<(u64, Status)>, EngineError> {
        let (lengths, piece) = self
            .store()
            .append_log(job_id, runner_id, pieces, self.inner.settings.max_log_bytes)
            .await?;
        if let Some(piece) = piece.filter(|_| !self.store().notifies_replicas()) {
            self.bus().publish_log(piece);
        }
        Ok(lengths)
    }
}
