//! Floods whose cost is memory, measured as this process's RSS (the server runs in it),
//! so these tests live alone in their binary and take turns: a login flood, and 200
//! clients that ask for a 4 MiB log and never read it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use usher_core::roles::Role;

/// One memory test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _turn = TURN.lock().await;
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
    let _turn = TURN.lock().await;
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

/// 200 clients ask for a job's whole 4 MiB log and never read a byte: the server holds a
/// page per reader, not the log (before: RSS from 71 MB to 864 MB). Meanwhile a client
/// that does read gets all of it, and a request with an offset still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_log_readers_cost_little_memory() {
    let _turn = TURN.lock().await;
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline("loud:\n  script:\n    - \"head -c 6000000 /dev/zero | tr '\\\\0' x | fold -w 99\"\n")
        .await;
    let job = TestServer::job_id(&pipeline, "loud");
    t.wait_for_status(job, "success").await;
    let (full, complete) = t.log(job).await;
    assert!(complete);
    assert!(full.len() > 4_000_000 && full.contains("reached its limit"), "{}", full.len());

    let before = rss_bytes();
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET /api/v1/jobs/{job}/log HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        stalled.push(tcp);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss_bytes().saturating_sub(before);
    // Still answering, in full, while they stall.
    let (again, _) = t.log(job).await;
    assert_eq!(again.len(), full.len());
    let tail = t
        .client
        .get(format!("{}/api/v1/jobs/{job}/log?offset={}", t.base, full.len() - 200))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tail, full[full.len() - 200..]);
    println!(
        "200 stalled readers of a {} byte log: RSS grew {} MB",
        full.len(),
        grown / 1_000_000
    );
    assert!(grown < 250_000_000, "RSS grew by {grown} bytes");
    drop(stalled);
    t.stop().await;
}
