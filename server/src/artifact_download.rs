//! Artifact downloads: a stored artifact file sent as an attachment (never rendered as a
//! page of ours), answering `Range` and conditional requests, for the API's download and
//! for a runner fetching a dependency's files.

use axum::http::header;
use axum::response::Response;
use usher_engine::EngineError;

use crate::error::ApiResult;

/// How much of an artifact file one read takes (tower-http's default is 64 KiB). A
/// stalled download holds about four times this: the file's read buffer, and chunks in
/// the connection's write buffer.
const ARTIFACT_CHUNK_BYTES: usize = 8 * 1024;

/// A stored artifact file as a download (`path`: its name as listed), answering `Range`
/// and conditional requests.
pub async fn artifact_download(file_path: &std::path::Path, path: &str, headers: &axum::http::HeaderMap) -> ApiResult<Response> {
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
    let mut response = served.map(axum::body::Body::new);
    let name = path.rsplit('/').next().unwrap_or("artifact");
    let ascii_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-+".contains(c) { c } else { '_' })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii_name}\"");
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    if let Ok(value) = header::HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
