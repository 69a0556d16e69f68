//! Job logs: appends from the runner holding the job, reads for everyone who may see it.

use usher_core::status::Status;

use crate::{Actor, Engine, EngineError};

impl Engine {
    pub async fn job_log(&self, actor: &Actor, id: i64, offset: u64) -> Result<(String, bool), EngineError> {
        let job = self.get_job(actor, id).await?;
        let text = self.store().read_log(id, offset).await?;
        Ok((text, job.status.is_terminal()))
    }

    pub async fn append_log(&self, runner_id: i64, job_id: i64, offset: u64, data: &str) -> Result<(u64, Status), EngineError> {
        self.store()
            .append_log(job_id, runner_id, offset, data, self.inner.settings.max_log_bytes)
            .await
    }
}
