//! Artifact downloads: a stored artifact file sent as an attachment (never rendered as a
//! page of ours), answering `Range` requests (and conditional ones for files on disk), for
//! the API's download and for a runner fetching a dependency's files. A file in the
//! bucket (see `usher_engine::artifact_storage`) is streamed from it, the range read
//! there, so a replica never holds a whole file.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use usher_engine::EngineError;
use usher_engine::artifact_storage::StoredArtifact;

use crate::error::ApiResult;

/// How much of an artifact file one read takes (tower-http's default is 64 KiB). A
/// stalled download holds about four times this: the file's read buffer, and chunks in
/// the connection's write buffer.
const ARTIFACT_CHUNK_BYTES: usize = 8 * 1024;

/// A stored artifact (`path`: its name as listed; `size`: as recorded) as a download.
pub async fn artifact_download(stored: &StoredArtifact, size: u64, path: &str, headers: &HeaderMap) -> ApiResult<Response> {
    let mut response = match stored {
        StoredArtifact::File(file) => file_response(file, path, headers).await?,
        StoredArtifact::Object { bucket, key } => {
            let asked = match headers.get(header::RANGE) {
                // Without validators of ours, an `If-Range` cannot match: the whole file.
                Some(_) if headers.contains_key(header::IF_RANGE) => Asked::Whole,
                Some(value) => requested_range(value, size),
                None => Asked::Whole,
            };
            let range = match asked {
                Asked::Whole => None,
                Asked::Part(range) => Some(*range.start()..range.end() + 1),
                Asked::Unsatisfiable => {
                    let mut refused = Response::new(axum::body::Body::empty());
                    *refused.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    refused
                        .headers_mut()
                        .insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
                    return Ok(refused);
                }
            };
            let partial = range.is_some();
            // The headers say what the bucket sent, should the recorded size be stale.
            let read = bucket.read(key, range).await?;
            let length = read.range.end - read.range.start;
            let mut response = Response::new(axum::body::Body::from_stream(read.body));
            let h = response.headers_mut();
            h.insert(header::CONTENT_LENGTH, header_value(&length.to_string()));
            if partial {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let last = read.range.end.saturating_sub(1);
                let content_range = format!("bytes {}-{last}/{}", read.range.start, read.size);
                response.headers_mut().insert(header::CONTENT_RANGE, header_value(&content_range));
            }
            response
        }
    };
    let name = path.rsplit('/').next().unwrap_or("artifact");
    let ascii_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-+".contains(c) { c } else { '_' })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii_name}\"");
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// What a `Range` header asks of a file of `size` bytes.
enum Asked {
    Whole,
    Part(std::ops::RangeInclusive<u64>),
    Unsatisfiable,
}

/// One satisfiable range is sent as asked; none is 416. A header that is not a byte
/// range (or not understood), several ranges (a download never needs a multipart
/// answer), or any range of an empty file get the whole file, as HTTP allows.
fn requested_range(value: &axum::http::HeaderValue, size: u64) -> Asked {
    let Some(parsed) = value
        .to_str()
        .ok()
        .and_then(|text| http_range_header::parse_range_header(text).ok())
    else {
        return Asked::Whole;
    };
    if size == 0 {
        return Asked::Whole;
    }
    match parsed.validate(size).as_deref() {
        Ok([one]) => Asked::Part(one.clone()),
        Ok(_) => Asked::Whole,
        Err(_) => Asked::Unsatisfiable,
    }
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("digits and ASCII")
}

/// A file on this server's disk, streamed by tower-http.
async fn file_response(file_path: &std::path::Path, path: &str, headers: &HeaderMap) -> ApiResult<Response> {
    if !tokio::fs::try_exists(file_path).await.unwrap_or(false) {
        return Err(EngineError::NotFound(format!("artifact {path:?}")).into());
    }
    // tower-http streams the file in chunks, each read only when the connection has room
    // for it (so a client that stops reading holds one chunk and the connection's write
    // buffer), and answers `Range` requests (206) and conditional ones; the headers that
    // make it a safe download are ours.
    let mut request = axum::http::Request::new(axum::body::Body::empty());
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ] {
        if let Some(value) = headers.get(&name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let served = tower::ServiceExt::oneshot(
        tower_http::services::ServeFile::new(file_path).with_buf_chunk_size(ARTIFACT_CHUNK_BYTES),
        request,
    )
    .await
    .map_err(|e| EngineError::Internal(format!("reading artifact {path:?}: {e}")))?;
    Ok(served.map(axum::body::Body::new))
}
