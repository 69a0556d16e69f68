//! A log read a page at a time (what `GET /api/v1/jobs/{id}/log` streams): pages are
//! bounded whatever the size of the stored chunks, start and end on character
//! boundaries, and together are exactly the log from the offset asked for.

use crate::common::*;
use futures_util::StreamExt;

/// `LOG_PAGE_BYTES` in engine/src/logs.rs.
const PAGE: usize = 16 * 1024;

#[tokio::test]
async fn pages_are_bounded_and_tile_the_log_from_any_offset() {
    for db in databases().await {
        let (engine, admin) = engine(&db).await;
        let r = runner(&engine, "r").await;
        pipeline(&engine, &admin, "a:\n  script: [x]\n").await;
        let job = engine.claim_job(r, &[]).await.unwrap().unwrap().job_id;
        // A runner's batch of 300 KiB of 1-, 2-, 3- and 4-byte characters, then small
        // pieces.
        let big: String = "ab\u{e9}\u{20ac}\u{1f600}\n".chars().cycle().take(300 * 1024 / 2).collect();
        let mut length = engine.append_log(r, job, 0, &big).await.unwrap().0;
        for i in 0..50 {
            let piece = format!("line {i} \u{1f600}\n");
            length = engine.append_log(r, job, length, &piece).await.unwrap().0;
        }
        let log = whole_log(&engine, &admin, job, 0).await;
        assert_eq!(log.len() as u64, length, "{}", db.name);
        check_pages(&engine, &admin, job, &log, big.len(), db.name).await;
        check_stretches(&engine, &admin, job, &log, db.name).await;

        // A log stored before rows were cut to size: one row of all of it.
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
        sqlx::query("DELETE FROM job_log_chunks WHERE job_id = $1")
            .bind(job)
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO job_log_chunks (job_id, byte_offset, byte_end, data) VALUES ($1, 0, $2, $3)")
            .bind(job)
            .bind(log.len() as i64)
            .bind(&log)
            .execute(&mut conn)
            .await
            .unwrap();
        check_pages(&engine, &admin, job, &log, big.len(), db.name).await;
        check_stretches(&engine, &admin, job, &log, db.name).await;
        engine.close().await;
    }
}

/// Reads `job`'s log (`log`, whose first `big` bytes came in one append) a page at a
/// time from offsets around the interesting places.
async fn check_pages(engine: &usher_engine::Engine, admin: &usher_engine::Actor, job: i64, log: &str, big: usize, db: &str) {
    let near = |at: usize| (at.saturating_sub(3)..at + 4).filter(|o| *o <= log.len());
    let offsets = [0, 4, PAGE, big, log.len()].into_iter().flat_map(near).chain([log.len() + 10]);
    for offset in offsets {
        let (pages, _) = engine.job_log_pages(admin, job, offset as u64).await.unwrap();
        let pages: Vec<String> = pages.map(|p| p.unwrap()).collect().await;
        assert!(pages.iter().all(|p| p.len() <= PAGE && !p.is_empty()), "{db}: offset {offset}");
        // Snapped forward to a character boundary, as a whole read is.
        let from = (offset.min(log.len())..=log.len()).find(|&at| log.is_char_boundary(at)).unwrap();
        let expected = log[from..].to_string();
        assert_eq!(pages.concat(), expected, "{db}: offset {offset}");
    }
}

/// What the job page shows of a long log: its last lines, then the ones before them
/// ("Show earlier output"). Each stretch ends where asked, starts at a line's start,
/// fits its size, knows how many lines come before it, and walking back from the end
/// gives the whole log.
async fn check_stretches(engine: &usher_engine::Engine, admin: &usher_engine::Actor, job: i64, log: &str, db: &str) {
    for max in [1000, 4096, 32 * 1024] {
        let mut before = None;
        let mut pieces = Vec::new();
        loop {
            let stretch = engine.job_log_stretch(admin, job, before, max).await.unwrap();
            let end = before.unwrap_or(log.len() as u64);
            assert_eq!(stretch.end(), end, "{db}: max {max}, before {before:?}");
            assert!(stretch.text.len() <= max, "{db}: {} bytes", stretch.text.len());
            let start = stretch.start as usize;
            assert_eq!(stretch.text, log[start..end as usize], "{db}: max {max}, before {before:?}");
            assert!(start == 0 || log.as_bytes()[start - 1] == b'\n', "{db}: starts mid-line at {start}");
            assert_eq!(stretch.lines_before, log[..start].matches('\n').count() as u64, "{db}: at {start}");
            pieces.push(stretch.text);
            if start == 0 {
                break;
            }
            before = Some(start as u64);
        }
        pieces.reverse();
        assert_eq!(pieces.concat(), log, "{db}: max {max}");
    }
    // Tiny and odd ends: at most what was asked for, cut at characters, never a panic.
    let mid_char = log
        .char_indices()
        .find(|(_, c)| c.len_utf8() == 4)
        .map(|(i, _)| i as u64 + 2)
        .unwrap();
    for before in (0..=5).chain([mid_char]) {
        let stretch = engine.job_log_stretch(admin, job, Some(before), 64).await.unwrap();
        assert!(stretch.end() <= before, "{db}: before {before}: ends at {}", stretch.end());
        assert_eq!(
            stretch.text,
            log[stretch.start as usize..stretch.end() as usize],
            "{db}: before {before}"
        );
    }
    // A window that begins exactly at a line's start keeps that line.
    let last_line = log[..log.len() - 1].rfind('\n').unwrap() + 1;
    let exact = engine.job_log_stretch(admin, job, None, log.len() - last_line).await.unwrap();
    assert_eq!(exact.start as usize, last_line, "{db}");
    // A stretch asked to end past the log ends with it.
    let past = engine.job_log_stretch(admin, job, Some(log.len() as u64 + 99), 64).await.unwrap();
    assert_eq!(past.end(), log.len() as u64, "{db}");
}
