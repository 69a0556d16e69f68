//! The built site's files under `/pkg` (the WASM, its JS glue, the stylesheet): served
//! from disk, as the `.br` or `.gz` file cargo-leptos made beside each one
//! (`--precompress`) when the browser accepts it, and cached by browsers for a year when
//! the name carries the build's content hash (cargo-leptos `hash-files`: a new build
//! has new names, so a cached file is never stale). Unhashed names must be revalidated.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use tower_http::services::ServeDir;

/// The content hashes cargo-leptos gave this build's files: `hash.txt` beside the
/// server binary (where Leptos reads the script names from too). None: not hashed.
pub fn build_hashes() -> Option<Vec<String>> {
    let exe = std::env::current_exe().ok()?;
    let text = std::fs::read_to_string(exe.parent()?.join("hash.txt")).ok()?;
    let hashes: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(_, hash)| hash.trim().to_string())
        .filter(|hash| !hash.is_empty())
        .collect();
    (!hashes.is_empty()).then_some(hashes)
}

/// The `/pkg` router for the site at `site_root`.
pub fn router(site_root: &str, hashes: Option<Vec<String>>) -> Router {
    let hashes = std::sync::Arc::new(hashes.unwrap_or_default());
    let files = ServeDir::new(std::path::Path::new(site_root).join("pkg"))
        .precompressed_br()
        .precompressed_gzip();
    Router::new()
        .fallback_service(files)
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let hashes = hashes.clone();
            async move {
                let name = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
                let hashed = hashes.iter().any(|hash| name.contains(&format!(".{hash}.")));
                let mut response = next.run(req).await;
                if response.status().is_success() {
                    let policy = if hashed {
                        "public, max-age=31536000, immutable"
                    } else {
                        "no-cache"
                    };
                    response
                        .headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
                }
                response
            }
        }))
}
