//! Job logs: chunks appended in order by the runner holding the job, capped in size,
//! and read back from any byte offset.

use sqlx::Row;
use usher_core::api::LogAppend;
use usher_core::status::{Status, StatusGroup};

use super::{Store, bad_status, placeholders, sql_statuses};
use crate::EngineError;

/// The PostgreSQL channel that carries every replica's new log pieces.
pub const LOGS_CHANNEL: &str = "usher_logs";
/// The largest piece whose text travels with its notice (JSON escaping may double it).
pub(super) const NOTIFY_TEXT_BYTES: usize = 3000;
/// The largest piece whose text travels in a websocket frame.
const FRAME_TEXT_BYTES: usize = 32 * 1024;
/// The most bytes of log one stored row holds (a runner's batch of up to 1 MiB is cut
/// into rows of this size).
const CHUNK_BYTES: usize = 16 * 1024;
/// Rows inserted by one statement (3 parameters a row; SQLite allows 32,766 in all).
const CHUNK_ROWS_PER_INSERT: usize = 64;

impl Store {
    /// Finished jobs with a log, oldest first: (job, log length), at most `limit`.
    pub async fn oldest_finished_logs(&self, limit: i64) -> Result<Vec<(i64, u64)>, EngineError> {
        let finished = sql_statuses(StatusGroup::Finished);
        let rows = sqlx::query(&format!(
            "SELECT id, log_length FROM jobs WHERE status IN ({finished}) AND log_length > 200 ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get::<i64, _>("log_length")?.max(0) as u64)))
            .collect()
    }

    /// Replaces a finished job's whole log by `note` (to make room under the storage cap).
    pub async fn replace_log(&self, job_id: i64, note: &str) -> Result<(), EngineError> {
        let mut conn = self.conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query("DELETE FROM job_log_chunks WHERE job_id = $1")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO job_log_chunks (job_id, byte_offset, byte_end, data) VALUES ($1, 0, $2, $3)")
            .bind(job_id)
            .bind(note.len() as i64)
            .bind(note)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE jobs SET log_length = $1 WHERE id = $2")
            .bind(note.len() as i64)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends `pieces` (byte offset, text), in order, each only if it starts at the
    /// log's end at that point (a piece sent again after a reconnect may overlap what is
    /// stored: only its new tail is kept) and the job is still held by the runner; past
    /// `max_bytes` the log ends with a truncation line and takes nothing more. One
    /// transaction for all of them (stored in rows of at most `CHUNK_BYTES`): a runner
    /// streams its pieces without waiting, so a busy job's pieces arrive together.
    /// Returns, per piece, the log's length after it and the job's status, and what was
    /// added, if anything (on PostgreSQL also sent on [`LOGS_CHANNEL`]).
    pub async fn append_log(
        &self,
        job_id: i64,
        runner_id: i64,
        pieces: &[(u64, &str)],
        max_bytes: u64,
    ) -> Result<(Vec<(u64, Status)>, Option<LogAppend>), EngineError> {
        let mut conn = self.conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let row = sqlx::query("SELECT log_length, status, runner_id FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
        let length: i64 = row.try_get("log_length")?;
        let status_text: String = row.try_get("status")?;
        let status = Status::parse(&status_text).ok_or_else(|| bad_status(&status_text))?;
        let holder: Option<i64> = row.try_get("runner_id")?;
        if holder != Some(runner_id) {
            return Err(EngineError::Conflict(format!("job {job_id} is not held by this runner")));
        }
        let start = length.max(0) as u64;
        let mut length = start;
        let mut added = String::new();
        let mut lengths = Vec::with_capacity(pieces.len());
        for &(offset, data) in pieces {
            // Frames start at character boundaries, so the cut of an overlap does too.
            let (offset, data) = match length.checked_sub(offset) {
                Some(0) => (offset, data),
                Some(seen) if seen < data.len() as u64 && data.is_char_boundary(seen as usize) => (length, &data[seen as usize..]),
                _ => (offset, ""),
            };
            if offset == length && status.is_active() && !data.is_empty() && length < max_bytes {
                let room = (max_bytes - length) as usize;
                if data.len() > room {
                    let mut cut = room;
                    while !data.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    added.push_str(&data[..cut]);
                    added.push_str(&format!(
                        "\n\x1b[33;1m[usher] The log reached its limit of {max_bytes} bytes; the rest is not kept.\x1b[0m\n"
                    ));
                } else {
                    added.push_str(data);
                }
                length = start + added.len() as u64;
            }
            lengths.push((length, status));
        }
        if added.is_empty() {
            tx.commit().await?;
            return Ok((lengths, None));
        }
        // Stored as rows of at most CHUNK_BYTES, cut at character boundaries, so that a
        // page read (`read_log_page`) takes its few kilobytes out of a row or two of that
        // size, not out of a megabyte row each time.
        let mut rows = Vec::new();
        let mut at = 0;
        while at < added.len() {
            let mut end = (at + CHUNK_BYTES).min(added.len());
            while !added.is_char_boundary(end) {
                end -= 1;
            }
            rows.push((start + at as u64, start + end as u64, &added[at..end]));
            at = end;
        }
        for group in rows.chunks(CHUNK_ROWS_PER_INSERT) {
            let values: Vec<String> = (0..group.len()).map(|i| format!("($1, {})", placeholders(2 + 3 * i, 3))).collect();
            let sql = format!(
                "INSERT INTO job_log_chunks (job_id, byte_offset, byte_end, data) VALUES {}",
                values.join(", ")
            );
            let mut insert = sqlx::query(&sql).bind(job_id);
            for &(from, to, text) in group {
                insert = insert.bind(from as i64).bind(to as i64).bind(text);
            }
            insert.execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE jobs SET log_length = $1 WHERE id = $2")
            .bind(length as i64)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        let piece = LogAppend {
            job_id,
            offset: start,
            length,
            text: None,
        };
        let piece = LogAppend {
            text: Some(added),
            ..piece
        };
        self.writer.log_notice(&mut tx, &piece).await?;
        tx.commit().await?;
        Ok((
            lengths,
            Some(LogAppend {
                text: piece.text.filter(|t| t.len() <= FRAME_TEXT_BYTES),
                ..piece
            }),
        ))
    }

    /// At most `max_bytes` of the log from byte `offset` on (snapped forward to a
    /// character boundary, and cut back to one at the end), the offset of its first byte,
    /// and where the next page starts, or None when this page reaches the end of what is
    /// stored.
    ///
    /// Only the window's bytes leave the database, whatever the size of the stored chunks
    /// (a runner's batch may be stored as one chunk of a megabyte or more): each chunk
    /// that overlaps the window gives just its part of it, so a page costs `max_bytes`,
    /// not a chunk.
    pub async fn read_log_page(&self, job_id: i64, offset: u64, max_bytes: usize) -> Result<(String, u64, Option<u64>), EngineError> {
        // Room for the longest character, so that every page moves on.
        let max_bytes = max_bytes.max(4);
        let window_end = offset.saturating_add(max_bytes as u64);
        // The chunk's text as bytes, so that positions are byte offsets (SQL's string
        // functions count characters).
        let bytes = self.writer.bytes_of("data");
        // From the window's start (or the chunk's, if later) to the window's end: 1-based.
        let rows = sqlx::query(&format!(
            "SELECT substr({bytes}, \
                 CAST(CASE WHEN byte_offset < $2 THEN $2 - byte_offset + 1 ELSE 1 END AS INTEGER), \
                 CAST(CASE WHEN byte_offset < $2 THEN $3 - $2 ELSE $3 - byte_offset END AS INTEGER)) AS piece \
             FROM job_log_chunks WHERE job_id = $1 AND byte_end > $2 AND byte_offset < $3 ORDER BY byte_offset"
        ))
        .bind(job_id)
        .bind(offset as i64)
        .bind(window_end as i64)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut page = Vec::with_capacity(max_bytes);
        for r in rows {
            let piece: Vec<u8> = r.try_get("piece")?;
            page.extend_from_slice(&piece[..piece.len().min(max_bytes - page.len())]);
        }
        let full = page.len() == max_bytes;
        // An offset inside a character starts at the next one.
        let skip = page.iter().take_while(|b| (**b & 0xC0) == 0x80).count();
        let valid = match std::str::from_utf8(&page[skip..]) {
            Ok(_) => page.len() - skip,
            // The window's end cut a character: it starts the next page.
            Err(e) if full && e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(EngineError::Internal(format!("job {job_id}'s stored log is not UTF-8: {e}"))),
        };
        let next = offset + (skip + valid) as u64;
        page.truncate(skip + valid);
        page.drain(..skip);
        let text = String::from_utf8(page).map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok((text, offset + skip as u64, full.then_some(next)))
    }

    /// How many bytes of log a job has.
    pub async fn log_length(&self, job_id: i64) -> Result<u64, EngineError> {
        let row = sqlx::query("SELECT log_length FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("job {job_id}")))?;
        Ok(row.try_get::<i64, _>("log_length")?.max(0) as u64)
    }

    /// How many newlines a job's log has before byte `offset`: counted by the database
    /// in the rows wholly before it, and here in the part of the row it falls in (at
    /// most a row's bytes leave the database).
    pub async fn newlines_before(&self, job_id: i64, offset: u64) -> Result<u64, EngineError> {
        let bytes = format!(
            "{} - {}",
            self.writer.byte_length("data"),
            self.writer.byte_length("replace(data, $3, '')")
        );
        let row = sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM({bytes}), 0) AS BIGINT) AS newlines, \
                    CAST(COALESCE(MAX(byte_end), 0) AS BIGINT) AS covered \
             FROM job_log_chunks WHERE job_id = $1 AND byte_end <= $2"
        ))
        .bind(job_id)
        .bind(offset as i64)
        .bind("\n")
        .fetch_one(&mut *self.conn().await?)
        .await?;
        let mut newlines = row.try_get::<i64, _>("newlines")?.max(0) as u64;
        let covered = row.try_get::<i64, _>("covered")?.max(0) as u64;
        if covered < offset {
            let (part, _, _) = self.read_log_page(job_id, covered, (offset - covered) as usize).await?;
            newlines += part.bytes().filter(|&b| b == b'\n').count() as u64;
        }
        Ok(newlines)
    }
}
