//! The S3-compatible server artifact tests keep files in: moto's, started by
//! scripts/with-s3 (`USHER_TEST_S3_ENDPOINT`, bucket `usher-test`). Each test takes a
//! prefix of its own, so tests running at once never see each other's files.
//! `USHER_REQUIRE_S3` turns a missing server into a failure.

use usher_engine::artifact_storage::Bucket;

/// The bucket scripts/with-s3 creates.
pub const BUCKET: &str = "usher-test";

/// USHER_TEST_S3_ENDPOINT when it is set (and not empty).
pub fn endpoint() -> Option<String> {
    std::env::var("USHER_TEST_S3_ENDPOINT").ok().filter(|url| !url.is_empty())
}

/// Whether a missing S3 server is a failure (`USHER_REQUIRE_S3` is set).
pub fn required() -> bool {
    std::env::var("USHER_REQUIRE_S3").is_ok()
}

/// The settings a server (or a test reading behind its back) reaches the test server
/// with, as the standard `AWS_*` variables would give them; moto takes any key.
pub fn settings() -> Vec<(String, String)> {
    let endpoint = endpoint().expect("USHER_TEST_S3_ENDPOINT is set (scripts/with-s3)");
    [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "usher-test"),
        ("AWS_SECRET_ACCESS_KEY", "usher-test-secret"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `s3://usher-test/<a new prefix>`: a place no other test uses.
pub fn fresh_url() -> String {
    format!("s3://{BUCKET}/test-{}", crate::rand_suffix())
}

/// The key prefix of a [`fresh_url`] (its part after the bucket).
pub fn prefix_of(url: &str) -> String {
    url.trim_start_matches(&format!("s3://{BUCKET}/")).to_string()
}

/// The bucket at `url` on the test server.
pub fn bucket(url: &str) -> Bucket {
    Bucket::open(url, settings()).expect("the test bucket opens")
}

/// The keys below `prefix` in the test bucket and their sizes, listed by a client of our
/// own (not Usher's).
pub async fn keys_under(prefix: &str) -> Vec<(String, u64)> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_allow_http(true);
    for (key, value) in settings() {
        builder = builder.with_config(key.to_ascii_lowercase().parse().unwrap(), value);
    }
    let store = builder.build().unwrap();
    let prefix = object_store::path::Path::from(prefix);
    let listed: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let mut keys: Vec<(String, u64)> = listed.into_iter().map(|meta| (meta.location.to_string(), meta.size)).collect();
    keys.sort();
    keys
}

/// How many multipart uploads below `prefix` were started and neither finished nor
/// aborted (moto answers this listing without a signature).
pub async fn unfinished_uploads(prefix: &str) -> usize {
    let endpoint = endpoint().unwrap();
    let listing = reqwest::get(format!("{endpoint}/{BUCKET}?uploads&prefix={prefix}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("ListMultipartUploadsResult"), "{listing}");
    listing.matches("<Upload>").count()
}
