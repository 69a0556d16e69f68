//! Job logs: appends from the runner holding the job, reads for everyone who may see it.

use usher_core::status::Status;

use crate::{Actor, Engine, EngineError};

/// How much of a log one page read takes from the database: what a reader that stalls
/// holds of it (besides the server's write buffer), however the log was stored.
pub const LOG_PAGE_BYTES: usize = 16 * 1024;

impl Engine {
    pub async fn job_log(&self, actor: &Actor, id: i64, offset: u64) -> Result<(String, bool), EngineError> {
        let job = self.get_job(actor, id).await?;
        let text = self.store().read_log(id, offset).await?;
        Ok((text, job.status.is_terminal()))
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
                let (text, end) = engine.store().read_log_page(id, from, LOG_PAGE_BYTES).await?;
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
        if let Some(piece) = piece.filter(|_| self.store().backend() == crate::store::Backend::Sqlite) {
            self.bus().publish_log(piece);
        }
        Ok(lengths)
    }
}
