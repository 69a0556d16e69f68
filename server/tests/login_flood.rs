//! A login flood, alone in its test binary: the server runs in this process, so its
//! memory is this process's, and no other test may run beside it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use usher_core::roles::Role;

/// Resident memory of this process (the server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

async fn post_login(client: &reqwest::Client, base: &str, name: &str, password: &str) -> u16 {
    client
        .post(format!("{base}/auth/login"))
        .header("origin", base)
        .form(&[("name", name), ("password", password)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// 1,000 wrong passwords, 100 at a time: memory stays bounded (argon2 takes turns and
/// throttled attempts are refused before hashing), most attempts get 429, and an
/// unrelated request is still answered promptly. Before the throttle: 3.1 GB RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_throttled_and_bounded() {
    let t = TestServer::start(0).await;
    t.server
        .as_ref()
        .unwrap()
        .engine
        .add_user("victim", Role::Developer, Some("the-real-password"))
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(100)
        .build()
        .unwrap();
    let before = rss_bytes();
    let started = Instant::now();
    let flood = {
        let (client, base) = (client.clone(), t.base.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for batch in 0..10 {
                let attempts = (0..100).map(|i| {
                    let (client, base) = (client.clone(), base.clone());
                    // Half aim at one user, half at a new name each time.
                    let name = if i % 2 == 0 {
                        "victim".to_string()
                    } else {
                        format!("nobody-{batch}-{i}")
                    };
                    async move { post_login(&client, &base, &name, "wrong").await }
                });
                statuses.extend(futures::future::join_all(attempts).await);
            }
            statuses
        })
    };
    // Meanwhile an API client reads projects.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let asked = Instant::now();
    let (status, _) = t.call("GET", "/api/v1/projects", None).await;
    let unrelated = asked.elapsed();
    assert_eq!(status, 200);
    let statuses = flood.await.unwrap();
    let flood_took = started.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "login flood: {} attempts in {flood_took:?}, {throttled} answered 429, RSS grew {} MB, unrelated request {unrelated:?}",
        statuses.len(),
        grown / 1_000_000
    );
    assert!(statuses.iter().all(|s| *s == 429 || *s == 303), "{statuses:?}");
    assert!(throttled >= 900, "only {throttled} of 1,000 were throttled");
    assert!(grown < 300_000_000, "RSS grew by {grown} bytes");
    assert!(unrelated < Duration::from_secs(5), "an unrelated request took {unrelated:?}");
    // The victim is locked out for a while, even with the right password…
    assert_eq!(post_login(&client, &t.base, "victim", "the-real-password").await, 429);
    t.stop().await;
}

/// A failed sign-in takes as long for a user that does not exist as for one that does
/// (before: 1.2 ms vs 17 ms, which told an attacker which names exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_time_does_not_reveal_whether_a_user_exists() {
    let t = TestServer::start(0).await;
    t.server
        .as_ref()
        .unwrap()
        .engine
        .add_user("alice", Role::Viewer, Some("alice-password"))
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    post_login(&client, &t.base, "warm-up", "x").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        assert_eq!(post_login(&client, &t.base, "alice", "wrong").await, 303);
        known.push(started.elapsed());
        let started = Instant::now();
        assert_eq!(post_login(&client, &t.base, &format!("ghost-{i}"), "wrong").await, 303);
        unknown.push(started.elapsed());
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[2].as_secs_f64(), unknown[2].as_secs_f64());
    println!("median failed sign-in: existing user {k:.4} s, unknown user {u:.4} s");
    assert!(u > k / 3.0 && u < k * 3.0, "existing {k} s vs unknown {u} s");
    t.stop().await;
}
