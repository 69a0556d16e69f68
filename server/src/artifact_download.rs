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
            let range = headers
                .get(header::RANGE)
                .filter(|_| !headers.contains_key(header::IF_RANGE))
                .map(|value| requested_range(value, size));
            match range {
                Some(None) => {
                    let mut refused = Response::new(axum::body::Body::empty());
                    *refused.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    refused
                        .headers_mut()
                        .insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
                    return Ok(refused);
                }
                Some(Some(range)) => {
                    let body = bucket.read(key, Some(*range.start()..range.end() + 1)).await?;
                    let mut partial = Response::new(axum::body::Body::from_stream(body));
                    *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
                    let h = partial.headers_mut();
                    h.insert(
                        header::CONTENT_RANGE,
                        header_value(&format!("bytes {}-{}/{size}", range.start(), range.end())),
                    );
                    h.insert(header::CONTENT_LENGTH, header_value(&(range.end() - range.start() + 1).to_string()));
                    partial
                }
                None => {
                    let body = bucket.read(key, None).await?;
                    let mut whole = Response::new(axum::body::Body::from_stream(body));
                    whole.headers_mut().insert(header::CONTENT_LENGTH, header_value(&size.to_string()));
                    whole
                }
            }
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

/// The one range of a `Range` header within a file of `size` bytes; None when it is not
/// satisfiable (or not understood), which is answered 416. Several ranges get the whole
/// file, as HTTP allows (a download never needs a multipart answer).
fn requested_range(value: &HeaderValue, size: u64) -> Option<std::ops::RangeInclusive<u64>> {
    let ranges = http_range_header::parse_range_header(value.to_str().ok()?)
        .ok()?
        .validate(size)
        .ok()?;
    match ranges.as_slice() {
        [one] => Some(one.clone()),
        _ => Some(0..=size.saturating_sub(1)),
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
