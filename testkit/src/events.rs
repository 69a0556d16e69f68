//! The event websocket (`/api/v1/events`) as a test reads it: the statuses a job goes
//! through, and the `log` frames of a job checked against its log.

use std::time::Duration;

use serde_json::Value;

pub type EventSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Statuses of `job_id` seen in job frames, until it reaches `until`.
pub async fn job_statuses_until(events: &mut EventSocket, job_id: i64, until: &str) -> Vec<String> {
    use futures::StreamExt;
    let mut seen = Vec::new();
    while !seen.iter().any(|s| s == until) {
        let frame = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert!(["job", "pipeline", "log"].contains(&v["type"].as_str().unwrap()), "{v}");
        if v["type"] == "job" && v["job"]["id"] == job_id {
            seen.push(v["job"]["status"].as_str().unwrap().to_string());
        }
    }
    seen
}

/// The `log` frames a socket watching `job_id` receives until the job has `finished` and
/// a second passes without a frame; checks each frame's own arithmetic on the way.
pub async fn log_frames_until_done(events: &mut EventSocket, job_id: i64, finished: &str) -> Vec<Value> {
    use futures::StreamExt;
    let mut pieces = Vec::new();
    let mut done = false;
    loop {
        let wait = if done { Duration::from_secs(1) } else { Duration::from_secs(30) };
        let Ok(frame) = tokio::time::timeout(wait, events.next()).await else {
            assert!(done, "job {job_id} never reached {finished}");
            return pieces;
        };
        let v: Value = serde_json::from_str(frame.unwrap().unwrap().to_text().unwrap()).unwrap();
        match v["type"].as_str().unwrap() {
            "log" => {
                assert_eq!(v["job_id"], job_id, "{v}");
                if let Some(text) = v["text"].as_str() {
                    assert_eq!(
                        v["offset"].as_u64().unwrap() + text.len() as u64,
                        v["length"].as_u64().unwrap(),
                        "{v}"
                    );
                }
                pieces.push(v);
            }
            "job" if v["job"]["status"] == finished => done = true,
            _ => {}
        }
    }
}

/// Checks that `pieces` (log frames in arrival order) tile the end of `log` without a
/// gap from the first one on, and returns how many carried their text.
pub fn assert_pieces_tile(pieces: &[Value], log: &str) -> usize {
    assert!(!pieces.is_empty(), "no log frames at all");
    let mut at = pieces[0]["offset"].as_u64().unwrap();
    let mut with_text = 0;
    for p in pieces {
        assert_eq!(p["offset"].as_u64().unwrap(), at, "a gap before {p}");
        let end = p["length"].as_u64().unwrap();
        if let Some(text) = p["text"].as_str() {
            assert_eq!(text, &log[at as usize..end as usize]);
            with_text += 1;
        }
        at = end;
    }
    assert_eq!(at, log.len() as u64, "the frames reach the end of the log");
    with_text
}
