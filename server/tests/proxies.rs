//! Behind a reverse proxy every client has the proxy's address. With the proxy in
//! `--trusted-proxies`, sign-in throttling counts the client the proxy names, so a flood
//! of failures from one client does not lock out another; without it, the forwarding
//! headers are not believed — a client cannot escape the throttle by writing one. And a
//! real nginx (Debian's, which `scripts/setup --test` installs), configured as
//! docs/deploy.md says, passes the API and the event websocket.

use usher_core::roles::Role;
use usher_server::ServeOptions;
use usher_server::client_address::TrustedProxies;
use usher_testkit::*;

/// One sign-in through "the proxy" (this process, on 127.0.0.1) for `client`; the status.
async fn sign_in_as(t: &TestServer, client: &str, name: &str, password: &str) -> u16 {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    http.post(format!("{}/auth/login", t.base))
        .header("origin", &t.base)
        .header("x-forwarded-for", client)
        .form(&[("name", name), ("password", password)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn flood_then_sign_in(t: &TestServer) -> u16 {
    let engine = &t.server.as_ref().unwrap().engine;
    engine.add_user("carol", Role::Viewer, Some("carols-long-password")).await.unwrap();
    // 50 failures from one client, each with another name (the per-name limit is lower).
    for i in 0..usher_engine::throttle::ADDRESS_FAILURES {
        let status = sign_in_as(t, "203.0.113.9", &format!("guess{i}"), "wrong").await;
        assert_eq!(status, 303, "failure {i} goes back to the form");
    }
    assert_eq!(
        sign_in_as(t, "203.0.113.9", "guess-more", "wrong").await,
        429,
        "the flooding client is throttled"
    );
    sign_in_as(t, "198.51.100.4", "carol", "carols-long-password").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_clients_are_throttled_one_by_one() {
    let trusted = TrustedProxies::parse(&["127.0.0.1/32".into()]).unwrap();
    let t = TestServer::start_opts(|o| ServeOptions {
        trusted_proxies: trusted,
        ..o
    })
    .await;
    assert_eq!(flood_then_sign_in(&t).await, 303, "another client signs in");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_a_forwarding_header_changes_nothing() {
    let t = TestServer::start(0).await;
    assert_eq!(
        flood_then_sign_in(&t).await,
        429,
        "the header is not believed: same address, still throttled"
    );
    t.stop().await;
}

/// A real nginx in front, set up as docs/deploy.md says: sign-in throttling counts the
/// client nginx names, the API answers, and the event websocket passes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_real_nginx() {
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("USHER_REQUIRE_NGINX").is_err(),
            "USHER_REQUIRE_NGINX is set but nginx is not installed"
        );
        eprintln!("skipped: nginx is not installed (scripts/setup --test installs it)");
        return;
    };
    let trusted = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
    let mut t = TestServer::start_opts(|o| ServeOptions {
        trusted_proxies: trusted,
        ..o
    })
    .await;
    let usher_addr = t.base.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n  \
         uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://{usher_addr};\n      proxy_http_version 1.1;\n      \
         proxy_set_header Host $host:$server_port;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
         proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n    }}\n  }}\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let _nginx = OwnedChild::spawn(
        std::process::Command::new(nginx)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    t.base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reqwest::get(format!("{}/healthz", t.base))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        assert!(std::time::Instant::now() < deadline, "nginx did not come up:\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // nginx appends the address it saw (127.0.0.1, trusted) to what the client sent:
    // each of our "clients" is counted on its own.
    assert_eq!(flood_then_sign_in(&t).await, 303, "another client signs in through nginx");
    // The API and the event websocket, through the proxy.
    let mut events = t.events("").await;
    let pipeline = t.pipeline("via:\n  script: [\"true\"]\n").await;
    let job = TestServer::job_id(&pipeline, "via");
    let seen = job_statuses_until(&mut events, job, "pending").await;
    assert_eq!(seen.last().map(String::as_str), Some("pending"), "{seen:?}");
    t.stop().await;
}
