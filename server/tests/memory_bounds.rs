//! Floods whose cost is memory, so these tests live alone in their binary and take turns:
//! a login flood (the server runs in this process, its RSS is this process's), and
//! clients that ask for a 4 MiB log or artifact and never read it (a real `usher serve`
//! process, measured from outside).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use usher_core::roles::Role;
use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

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

/// What one stalled reader may cost the server: one piece of the answer (a log page, an
/// artifact chunk) and the connection's write buffer, under 64 KiB in all.
const PER_STALLED_READER: u64 = 64 * 1024;

/// The noise one RSS difference may carry, for all the measured readers together. The
/// server's RSS is flat when idle (to the KiB over 10 s here), but the allocator takes
/// memory from the kernel in steps (a heap top grown by 128 KiB at a time, an arena of
/// its own for a thread that allocates for the first time), and RSS counts pages, not
/// bytes: 1 MiB over 200 readers is 5 KiB each.
const RSS_NOISE: u64 = 1024 * 1024;

/// Readers opened before each measurement, so that it sees what every further reader
/// costs, not what the first ones pay once (the allocator's arenas for the worker
/// threads, the database's page cache, first-use statics), nor memory the server freed
/// earlier (the job's output, a whole log read) that the allocator hands out again.
const WARM: usize = 100;
/// Readers measured.
const MEASURED: usize = 200;

/// A real `usher serve` process (one local runner), measured from outside: this build's
/// binary, or `USHER_BIN` (a release build, say, or an older one to compare with).
struct RealServer {
    t: TestServer,
    /// A `Cookie:` header line readers send (pages need a session), or empty.
    session: String,
    process: OwnedChild,
    _data_dir: tempfile::TempDir,
}

impl RealServer {
    fn start(env: &[(&str, &str)]) -> RealServer {
        let bin = std::env::var("USHER_BIN").unwrap_or(USHER.to_string());
        let data_dir = tempfile::tempdir().unwrap();
        let (process, base) = spawn_usher(bin, data_dir.path(), "127.0.0.1:0", 1, env);
        let mut t = TestServer::detached();
        t.base = base;
        RealServer {
            t,
            session: String::new(),
            process,
            _data_dir: data_dir,
        }
    }

    /// Adds a viewer with the command line and signs in as it: readers from now on ask
    /// with its session, as a browser would.
    async fn sign_in_viewer(&mut self) {
        let out = run_usher_cli(
            USHER,
            self._data_dir.path(),
            &["user", "add", "watcher", "--role", "viewer", "--password-stdin"],
            "watcher-password\n",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cookie = sign_in(&self.t, "watcher", "watcher-password").await;
        self.session = format!("Cookie: {cookie}\r\n");
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.t.base.trim_start_matches("http://").parse().unwrap()
    }

    /// The server process's resident memory, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// RSS once it has stopped moving: samples 250 ms apart until four in a row are
    /// within 64 KiB of each other (at most `limit`), the last of them.
    async fn settled_rss(&self, limit: Duration) -> u64 {
        let started = Instant::now();
        let mut samples = vec![self.rss()];
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            samples.push(self.rss());
            let last = &samples[samples.len().saturating_sub(4)..];
            let spread = last.iter().max().unwrap() - last.iter().min().unwrap();
            if (last.len() == 4 && spread <= 64 * 1024) || started.elapsed() > limit {
                return *samples.last().unwrap();
            }
        }
    }

    /// Opens [`WARM`] connections that ask for `path` (None: that send nothing), then
    /// [`MEASURED`] more, and returns what each of those cost the server's RSS; they
    /// stay open (in `open`).
    async fn cost_per_connection(&self, path: Option<&str>, open: &mut Vec<tokio::net::TcpStream>) -> u64 {
        for _ in 0..WARM {
            open.push(stalled_reader(self.addr(), path, &self.session).await);
        }
        let before = self.settled_rss(Duration::from_secs(20)).await;
        for _ in 0..MEASURED {
            open.push(stalled_reader(self.addr(), path, &self.session).await);
        }
        let after = self.settled_rss(Duration::from_secs(20)).await;
        after.saturating_sub(before) / MEASURED as u64
    }

    /// What a reader of `path` that never reads costs the server (and, for comparison,
    /// a connection that has sent nothing yet); checks the bound.
    async fn stalled_readers(&self, what: &str, path: &str) -> Vec<tokio::net::TcpStream> {
        let mut open = Vec::new();
        let start = self.rss();
        let stalled = self.cost_per_connection(Some(path), &mut open).await;
        let with_readers = self.rss();
        let idle = self.cost_per_connection(None, &mut open).await;
        println!(
            "{what}: a stalled reader (4 KiB receive buffer) costs the server {} KiB of RSS, an idle connection {} KiB \
             ({MEASURED} of each after {WARM}; server RSS {:.1} MB, {:.1} MB with the {} readers)",
            stalled / 1024,
            idle / 1024,
            start as f64 / 1e6,
            with_readers as f64 / 1e6,
            WARM + MEASURED,
        );
        assert!(
            stalled <= PER_STALLED_READER + RSS_NOISE / MEASURED as u64,
            "{what}: a stalled reader costs {stalled} bytes (goal {PER_STALLED_READER})"
        );
        open.truncate(WARM + MEASURED);
        open
    }
}

/// A connection with a 4 KiB receive buffer, set before it connects so that the window it
/// offers stays small, and the segment size of an Ethernet path (1,460 bytes) rather than
/// loopback's 64 KiB: the server's kernel sizes its send buffer from that (on loopback it
/// would take over a megabyte of each answer, which no real path lets it), so what the
/// client does not read soon waits in the server's own memory.
async fn small_window_connection(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use std::os::fd::AsRawFd;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mss: libc::c_int = 1460;
    // SAFETY: a valid socket, and a c_int option of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    socket.connect(addr).await.unwrap()
}

/// A client that sends `GET path` (None: nothing) and never reads a byte of the answer,
/// on a [`small_window_connection`]: the answer piles up on the server's side.
async fn stalled_reader(addr: std::net::SocketAddr, path: Option<&str>, session: &str) -> tokio::net::TcpStream {
    let mut tcp = small_window_connection(addr).await;
    if let Some(path) = path {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n{session}Connection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
    }
    tcp
}

/// A stalled reader's answer, read now to its end: the head, and the body (de-chunked).
async fn finish_reading(mut tcp: tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer))
        .await
        .expect("the rest of the answer within 30 s")
        .unwrap();
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]).to_string();
    let mut rest = &answer[head_end..];
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
}

/// 300 clients ask for a job's whole 4 MiB log and never read a byte, each with a 4 KiB
/// receive buffer: the server holds a page per reader, not the log, nor a stored chunk of
/// it (a runner's batch, up to 1 MiB), nor hyper's default ~400 KB of queued answer.
/// Before: 850 KiB–1.4 MB per reader (release build; docs/benchmarks.md). The log is
/// random base64, so no compression could hide it. Meanwhile a client that does read
/// gets all of it, a request with an offset still works, and a stalled reader that
/// starts reading gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_log_readers_cost_little_memory() {
    let _turn = TURN.lock().await;
    let mut server = RealServer::start(&[]);
    server.sign_in_viewer().await;
    let t = &server.t;
    let pipeline = t
        .pipeline("loud:\n  script:\n    - \"head -c 3300000 /dev/urandom | base64 -w 99\"\n")
        .await;
    let job = TestServer::job_id(&pipeline, "loud");
    t.wait_for_status(job, "success").await;
    let (full, complete) = t.log(job).await;
    assert!(complete);
    assert!(full.len() > 4_000_000 && full.contains("reached its limit"), "{}", full.len());

    let mut stalled = server.stalled_readers("log (4 MiB)", &format!("/api/v1/jobs/{job}/log")).await;
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
    let (head, body) = finish_reading(stalled.pop().unwrap()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == full.as_bytes(), "{} of {} bytes", body.len(), full.len());
    drop(stalled);

    // The job's page shows the log's last lines (numbered as in the whole log) and
    // offers the earlier ones; a reader of it that stalls holds the page, not the log.
    let page = t
        .client
        .get(format!("{}/jobs/{job}", t.base))
        .header("cookie", server.session.trim_start_matches("Cookie: ").trim_end())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.len() < 96 * 1024, "the job page is {} bytes", page.len());
    assert!(page.contains("Show earlier output"), "no way to the earlier lines");
    let lines = full.matches('\n').count();
    let last_line = full.lines().rev().find(|l| !l.is_empty() && !l.contains('\x1b')).unwrap();
    assert!(
        page.contains(&format!(r##"id="L{lines}"><a class="ln" href="#L{lines}">{lines}</a>"##)),
        "line numbers of the whole log"
    );
    assert!(
        !last_line.contains('<') && page.contains(last_line),
        "the log's last line is on the page"
    );
    let _pages = server.stalled_readers("job page (4 MiB log)", &format!("/jobs/{job}")).await;
}

/// The same for an artifact: 300 clients download a 4 MiB file of random bytes and never
/// read. Before: ≈ 700 KiB per reader (tower-http's 64 KiB reads, hyper's queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_artifact_downloads_cost_little_memory() {
    let _turn = TURN.lock().await;
    let server = RealServer::start(&[]);
    let t = &server.t;
    let pipeline = t
        .pipeline("build:\n  artifacts:\n    paths: [big.bin]\n  script:\n    - head -c 4194304 /dev/urandom > big.bin\n")
        .await;
    let job = TestServer::job_id(&pipeline, "build");
    t.wait_for_status(job, "success").await;
    let path = format!("/api/v1/jobs/{job}/artifacts/big.bin");
    let file = t
        .client
        .get(format!("{}{path}", t.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let file = file.bytes().await.unwrap();
    assert_eq!(file.len(), 4_194_304);

    let mut stalled = server.stalled_readers("artifact (4 MiB)", &path).await;
    let (head, body) = finish_reading(stalled.pop().unwrap()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == file, "{} of {} bytes", body.len(), file.len());
}

/// A websocket client of `/api/v1/events?job_id={job}` that reads the handshake's answer
/// and then nothing, on a [`small_window_connection`].
async fn stalled_event_socket(addr: std::net::SocketAddr, job: i64) -> tokio::net::TcpStream {
    use tokio::io::AsyncReadExt;
    let mut tcp = small_window_connection(addr).await;
    let request = format!(
        "GET /api/v1/events?job_id={job} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// 300 event websockets that follow a job printing ~200 KB/s (its output comes as `log`
/// frames) and read nothing: each costs the server at most 64 KiB while its frames wait
/// (the socket's write buffer is 4 KiB, the bus is a shared ring a slow socket only
/// falls behind on), and a socket whose frames have waited 10 s is dropped, not
/// buffered for. Before: 75–82 KiB (the waiting socket held the log piece as well as
/// its frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_event_sockets_cost_little_memory_and_are_dropped() {
    let _turn = TURN.lock().await;
    // A log cap the job does not reach while the sockets stall.
    let server = RealServer::start(&[("USHER_MAX_LOG_BYTES", "100000000")]);
    let t = &server.t;
    let pipeline = t
        .pipeline(
            "chatty:\n  script:\n    - echo started\n    - \"for i in $(seq 1 1200); do head -c 15000 /dev/urandom | base64 -w 99; sleep 0.1; done\"\n",
        )
        .await;
    let job = TestServer::job_id(&pipeline, "chatty");
    t.wait_for_log(job, "started").await;
    let subscribers = || async {
        let text = t
            .client
            .get(format!("{}/metrics", t.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("usher_event_subscribers "))
            .unwrap()
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize
    };
    let mut open = Vec::new();
    for _ in 0..WARM {
        open.push(stalled_event_socket(server.addr(), job).await);
    }
    // Measured within 10 s of the first sockets' frames starting to wait (then they go).
    let before = server.settled_rss(Duration::from_secs(3)).await;
    for _ in 0..MEASURED {
        open.push(stalled_event_socket(server.addr(), job).await);
    }
    let after = server.settled_rss(Duration::from_secs(3)).await;
    let per_socket = after.saturating_sub(before) / MEASURED as u64;
    let live = subscribers().await;
    assert_eq!(live, WARM + MEASURED, "all subscribed when measured");
    let started = Instant::now();
    while subscribers().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stalled event sockets still open after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "event websockets following a job's log, not reading (4 KiB receive buffers): RSS +{} KiB per socket \
         ({MEASURED} after {WARM}); all {} dropped {:.1} s after being measured",
        per_socket / 1024,
        WARM + MEASURED,
        started.elapsed().as_secs_f64()
    );
    assert!(
        per_socket <= PER_STALLED_READER + RSS_NOISE / MEASURED as u64,
        "a stalled event socket costs {per_socket} bytes (goal {PER_STALLED_READER})"
    );
    t.call("POST", &format!("/api/v1/jobs/{job}/abort"), None).await;
}
