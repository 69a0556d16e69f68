//! The site's files under /pkg: the pre-compressed variant a browser accepts, and a year
//! of caching only for names that carry the build's hash; and a server whose binary was
//! installed without its `hash.txt` still names (and serves) the hashed files, from the
//! site's copy.

use axum::body::Body;
use axum::http::{Request, header};
use tower::ServiceExt;

async fn get(router: &axum::Router, path: &str, accept: &str) -> (u16, Option<String>, Option<String>, Vec<u8>) {
    let resp = router
        .clone()
        .oneshot(
            Request::get(path)
                .header(header::ACCEPT_ENCODING, accept)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let h = |name| {
        resp.headers()
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_string())
    };
    let (status, encoding, cache) = (resp.status().as_u16(), h(header::CONTENT_ENCODING), h(header::CACHE_CONTROL));
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
    (status, encoding, cache, body)
}

#[tokio::test]
async fn hashed_files_are_immutable_and_served_precompressed() {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("usher.AbC123_-xyz.wasm"), b"plain wasm").unwrap();
    std::fs::write(pkg.join("usher.AbC123_-xyz.wasm.br"), b"brotli wasm").unwrap();
    std::fs::write(pkg.join("usher.AbC123_-xyz.wasm.gz"), b"gzip wasm").unwrap();
    std::fs::write(pkg.join("other.css"), b"body{}").unwrap();
    let router = usher_server::assets::router(site.path().to_str().unwrap(), Some(vec!["AbC123_-xyz".into()]));

    let (status, encoding, cache, body) = get(&router, "/usher.AbC123_-xyz.wasm", "gzip, deflate, br").await;
    assert_eq!(
        (status, encoding.as_deref(), body.as_slice()),
        (200, Some("br"), &b"brotli wasm"[..])
    );
    assert_eq!(cache.as_deref(), Some("public, max-age=31536000, immutable"));
    let (_, encoding, _, body) = get(&router, "/usher.AbC123_-xyz.wasm", "gzip").await;
    assert_eq!((encoding.as_deref(), body.as_slice()), (Some("gzip"), &b"gzip wasm"[..]));
    let (_, encoding, _, body) = get(&router, "/usher.AbC123_-xyz.wasm", "identity").await;
    assert_eq!((encoding, body.as_slice()), (None, &b"plain wasm"[..]));

    let (status, _, cache, _) = get(&router, "/other.css", "br").await;
    assert_eq!(
        (status, cache.as_deref()),
        (200, Some("no-cache")),
        "unhashed names are revalidated"
    );
    let (status, _, cache, _) = get(&router, "/usher.wasm", "br").await;
    assert_eq!((status, cache), (404, None));
}

#[tokio::test]
async fn page_chunks_named_in_the_split_manifest_are_immutable() {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("__wasm_split_manifest.Man1fest.json"),
        br#"{"__job_page_view_1": ["chunk_3.Chunk3hash", "split___job_page_view_1.JobH4sh"]}"#,
    )
    .unwrap();
    for name in [
        "chunk_3.Chunk3hash.wasm",
        "split___job_page_view_1.JobH4sh.wasm",
        "chunk_4.Stale.wasm",
    ] {
        std::fs::write(pkg.join(name), b"chunk").unwrap();
    }
    let router = usher_server::assets::router(site.path().to_str().unwrap(), Some(vec!["Man1fest".into()]));
    let immutable = Some("public, max-age=31536000, immutable");
    for path in ["/chunk_3.Chunk3hash.wasm", "/split___job_page_view_1.JobH4sh.wasm"] {
        let (status, _, cache, _) = get(&router, path, "br").await;
        assert_eq!((status, cache.as_deref()), (200, immutable), "{path}");
    }
    let (_, _, cache, _) = get(&router, "/chunk_4.Stale.wasm", "br").await;
    assert_eq!(
        cache.as_deref(),
        Some("no-cache"),
        "a chunk the manifest does not name is revalidated"
    );
}

#[tokio::test]
async fn an_installed_server_reads_the_hashed_names_from_the_sites_hash_txt() {
    // The test binary has no hash.txt beside it, like `usher` copied to /usr/local/bin.
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(site.path().join("hash.txt"), "js: Js_H4sh\nwasm: Wasm_H4sh\ncss: Css_H4sh\n").unwrap();
    for name in ["usher.Js_H4sh.js", "usher.Wasm_H4sh.wasm", "usher.Css_H4sh.css"] {
        std::fs::write(pkg.join(name), b"built").unwrap();
    }
    let site_root = site.path().to_str().unwrap().to_string();
    let t = usher_testkit::TestServer::start_opts(|defaults| usher_server::ServeOptions { site_root, ..defaults }).await;
    let page = t
        .client
        .get(format!("{}/login", t.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["usher.Js_H4sh.js", "usher.Wasm_H4sh.wasm", "usher.Css_H4sh.css"] {
        assert!(page.contains(&format!("/pkg/{name}")), "{name} not named in:\n{page}");
        let resp = t.client.get(format!("{}/pkg/{name}", t.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(
            resp.headers()[header::CACHE_CONTROL.as_str()],
            "public, max-age=31536000, immutable",
            "{name}"
        );
    }
    t.stop().await;
}
