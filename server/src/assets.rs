//! The built site's files under `/pkg` (the WASM, its JS glue, the stylesheet): served
//! from disk, as the `.br` or `.gz` file cargo-leptos made beside each one
//! (`--precompress`) when the browser accepts it, and cached by browsers for a year when
//! the name carries the build's content hash (cargo-leptos `hash-files`: a new build
//! has new names, so a cached file is never stale). Unhashed names must be revalidated.
//! The pages' WASM chunks (`--split`) carry hashes of their own, listed in the split
//! manifest; those count as the build's too.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tower_http::services::ServeDir;

/// Where the build's `hash.txt` is: beside the server binary (where cargo-leptos writes
/// it), else in the site root (where `make build-release` copies it, so an installed
/// binary finds its site's names). None: the files are not hashed.
pub fn hash_file(site_root: &str) -> Option<PathBuf> {
    let beside_binary = std::env::current_exe().ok()?.parent()?.join("hash.txt");
    let in_site = Path::new(site_root).join("hash.txt");
    [beside_binary, in_site]
        .into_iter()
        .find(|file| file.is_file())
        .and_then(|file| std::path::absolute(file).ok())
}

/// The content hashes cargo-leptos gave this build's files, from its `hash.txt`
/// ([`hash_file`]).
pub fn build_hashes(hash_file: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(hash_file).ok()?;
    let hashes: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(_, hash)| hash.trim().to_string())
        .filter(|hash| !hash.is_empty())
        .collect();
    (!hashes.is_empty()).then_some(hashes)
}

/// The hashes in the names of the page chunks: the split manifest (named with one of
/// the build's `hashes`) maps each page to the chunks it loads, each as `name.hash`.
fn chunk_hashes(pkg: &Path, hashes: &[String]) -> Vec<String> {
    let Some(manifest) = hashes
        .iter()
        .find_map(|hash| std::fs::read(pkg.join(format!("__wasm_split_manifest.{hash}.json"))).ok())
    else {
        return Vec::new();
    };
    let pages: HashMap<String, Vec<String>> = serde_json::from_slice(&manifest).unwrap_or_default();
    let mut chunks: Vec<String> = pages
        .into_values()
        .flatten()
        .filter_map(|chunk| chunk.split_once('.').map(|(_, hash)| hash.to_string()))
        .collect();
    chunks.sort();
    chunks.dedup();
    chunks
}

/// The `/pkg` router for the site at `site_root`.
pub fn router(site_root: &str, hashes: Option<Vec<String>>) -> Router {
    let pkg = Path::new(site_root).join("pkg");
    let mut hashes = hashes.unwrap_or_default();
    hashes.extend(chunk_hashes(&pkg, &hashes));
    let hashes = std::sync::Arc::new(hashes);
    let files = ServeDir::new(pkg).precompressed_br().precompressed_gzip();
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
