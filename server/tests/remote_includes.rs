//! `include: remote` against a real HTTPS server (Python's, with a certificate of a CA
//! this test makes): the file is fetched and merged when the pipeline is made; a URL on
//! the server's own network is refused unless the operator allows it; a missing or
//! oversized file is refused with why. One test in its own binary: it points the
//! process's trusted roots (`SSL_CERT_FILE`) at the test's CA.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use usher_testkit::*;

/// A CA and a certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

async fn create(t: &TestServer, config: &str) -> (u16, serde_json::Value) {
    let (status, project) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": format!("r-{}", rand_suffix()), "ci_config": "x:\n  script: [x]\n"})),
        )
        .await;
    assert_eq!(status, 201, "{project}");
    t.call(
        "POST",
        &format!("/api/v1/projects/{}/pipelines", project["id"]),
        Some(json!({"ref": "main", "ci_config": config})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_file_is_included_and_the_servers_network_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(
        site.join("common.yml"),
        ".defaults:\n  variables: {FROM: remote}\nfrom-remote:\n  extends: .defaults\n  script: [\"echo $FROM\"]\n",
    )
    .unwrap();
    std::fs::write(site.join("huge.yml"), format!("# {}\n", "x".repeat(1024 * 1024 + 10))).unwrap();
    let port = free_port();
    let serve = format!(
        "import http.server, ssl, functools\n\
         handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={site:?})\n\
         httpd = http.server.HTTPServer(('127.0.0.1', {port}), handler)\n\
         context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         context.load_cert_chain({cert:?}, {key:?})\n\
         httpd.socket = context.wrap_socket(httpd.socket, server_side=True)\n\
         httpd.serve_forever()\n",
        site = site.display().to_string(),
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    let _https = OwnedChild::spawn(
        Command::new("python3")
            .args(["-c", &serve])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // The process trusts the test's CA (rustls-native-certs reads SSL_CERT_FILE).
    // SAFETY: set before this binary's only test starts anything that reads it.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the https server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = |file: &str| format!("https://127.0.0.1:{port}/{file}");

    // By default the server's own network is out of reach.
    let t = TestServer::start(0).await;
    let (status, body) = create(&t, &format!("include: {}\nown:\n  script: [x]\n", url("common.yml"))).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("local network") && message.contains("USHER_REMOTE_INCLUDES_LOCAL_NETWORK"),
        "{message}"
    );
    t.stop().await;

    let settings = usher_engine::Settings {
        remote_includes_local_network: true,
        ..Default::default()
    };
    let t = TestServer::start_with(None, 0, settings).await;
    let (status, pipeline) = create(&t, &format!("include:\n  - remote: {}\nown:\n  script: [x]\n", url("common.yml"))).await;
    assert_eq!(status, 201, "{pipeline}");
    let names: Vec<&str> = pipeline["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["from-remote", "own"], "{pipeline}");
    for (file, why) in [("missing.yml", "404"), ("huge.yml", "larger than")] {
        let (status, body) = create(&t, &format!("include: {}\nown:\n  script: [x]\n", url(file))).await;
        assert_eq!(status, 422, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why) && message.contains(&url(file)), "{message}");
    }
    let (status, body) = create(&t, "include: http://127.0.0.1:1/plain.yml\nown:\n  script: [x]\n").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("only https"), "{body}");
    t.stop().await;
}
