//! Behind a reverse proxy every client has the proxy's address. With the proxy in
//! `--trusted-proxies`, sign-in throttling counts the client the proxy names, so a flood
//! of failures from one client does not lock out another; without it, the forwarding
//! headers are not believed — a client cannot escape the throttle by writing one.

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
