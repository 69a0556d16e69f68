//! Real git for the tests: a bare repository with commits made by a work clone, `git
//! daemon` serving it on a loopback port, and a proxy in front of the daemon that can
//! trickle (to make a checkout slow on purpose).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::process::{OwnedChild, free_port};

/// A bare repository (`origin.git`, default branch `main`) and a work clone to commit in.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
}

pub fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Usher Test",
            "-c",
            "user.email=test@usher.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(cwd)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Default for GitRepo {
    fn default() -> GitRepo {
        GitRepo::new()
    }
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet", "--bare", "origin.git"]);
        git(dir.path(), &["init", "--quiet", "work"]);
        git(&dir.path().join("work"), &["remote", "add", "origin", "../origin.git"]);
        GitRepo { dir }
    }

    /// The bare repository's path (a URL `git clone` accepts).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Writes `files`, commits them with `message` on `branch` and pushes; the commit id.
    pub fn commit(&self, branch: &str, files: &[(&str, &[u8])], message: &str) -> String {
        let work = self.work();
        let has_commits = Command::new("git")
            .args(["rev-parse", "--verify", "HEAD"])
            .current_dir(&work)
            .output()
            .unwrap()
            .status
            .success();
        if has_commits {
            git(&work, &["checkout", "--quiet", "-B", branch]);
        } else {
            git(&work, &["checkout", "--quiet", "--orphan", branch]);
        }
        for (name, content) in files {
            let path = work.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "--quiet", "-m", message]);
        git(
            &work,
            &["push", "--quiet", "--force", "origin", &format!("HEAD:refs/heads/{branch}")],
        );
        git(&work, &["rev-parse", "HEAD"])
    }

    /// Commits a symbolic link `name` → `target` on `branch` (made from the current
    /// branch if new); the commit id.
    pub fn link(&self, branch: &str, name: &str, target: &Path, message: &str) -> String {
        let work = self.work();
        git(&work, &["checkout", "--quiet", "-B", branch]);
        std::os::unix::fs::symlink(target, work.join(name)).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "--quiet", "-m", message]);
        git(
            &work,
            &["push", "--quiet", "--force", "origin", &format!("HEAD:refs/heads/{branch}")],
        );
        git(&work, &["rev-parse", "HEAD"])
    }

    /// Deletes `name` on `branch` (made from the current branch if new) in a commit.
    pub fn remove(&self, branch: &str, name: &str, message: &str) -> String {
        let work = self.work();
        git(&work, &["checkout", "--quiet", "-B", branch]);
        git(&work, &["rm", "--quiet", name]);
        git(&work, &["commit", "--quiet", "-m", message]);
        git(
            &work,
            &["push", "--quiet", "--force", "origin", &format!("HEAD:refs/heads/{branch}")],
        );
        git(&work, &["rev-parse", "HEAD"])
    }

    pub fn tag(&self, name: &str) {
        git(&self.work(), &["tag", "-f", name]);
        git(
            &self.work(),
            &["push", "--quiet", "--force", "origin", &format!("refs/tags/{name}")],
        );
    }
}

/// `git daemon` serving the directory that holds `origin.git`, on a free loopback port.
pub struct GitDaemon {
    _child: OwnedChild,
    pub port: u16,
}

impl GitDaemon {
    pub fn serve(base: &Path) -> GitDaemon {
        let port = free_port();
        let child = OwnedChild(
            Command::new("git")
                .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("git daemon starts"),
        );
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return GitDaemon { _child: child, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("git daemon did not listen on {port}");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

/// A TCP proxy to `target` that, while `slow` is set, passes the server's answer on a
/// few hundred bytes at a time (a transport that trickles).
pub struct Trickle {
    pub port: u16,
    pub slow: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Trickle {
    pub async fn start(target: u16) -> Trickle {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let slow = Arc::new(AtomicBool::new(false));
        let flag = slow.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        let _ = server_write.shutdown().await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let size = if flag.load(Ordering::Relaxed) { 256 } else { buf.len() };
                        let n = match server_read.read(&mut buf[..size]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if flag.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    let _ = client_write.shutdown().await;
                    up.abort();
                });
            }
        });
        Trickle { port, slow, task }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Smart HTTP for git on a loopback port: `git http-backend` as a CGI program behind
/// Basic authentication (one user and password), one connection at a time per thread.
pub struct GitHttp {
    pub port: u16,
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl GitHttp {
    pub fn serve(root: &Path, user: &str, password: &str) -> GitHttp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, expected) = (root.clone(), expected.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &root, &expected);
                });
            }
        });
        GitHttp { port }
    }
}

fn serve_one(mut stream: std::net::TcpStream, root: &Path, expected_auth: &str) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("GET").to_string(), parts.next().unwrap_or("/").to_string());
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if headers.get("authorization").map(String::as_str) != Some(expected_auth) {
        stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", headers.get("content-type").cloned().unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            headers.get("content-encoding").cloned().unwrap_or_default(),
        )
        .env("REMOTE_USER", "git")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    cgi.stdin.take().unwrap().write_all(&body)?;
    let out = cgi.wait_with_output()?;
    let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head_len, sep) = split.unwrap_or((0, 0));
    let head = String::from_utf8_lossy(&out.stdout[..head_len]).to_string();
    let content = &out.stdout[head_len + sep..];
    let status = head
        .lines()
        .find_map(|l| l.strip_prefix("Status:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "200 OK".into());
    let mut response = format!("HTTP/1.1 {status}\r\n");
    for line in head.lines().filter(|l| !l.starts_with("Status:") && !l.is_empty()) {
        response.push_str(line.trim_end());
        response.push_str("\r\n");
    }
    response.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", content.len()));
    stream.write_all(response.as_bytes())?;
    stream.write_all(content)?;
    Ok(())
}
