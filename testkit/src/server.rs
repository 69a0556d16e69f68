//! Usher in the test's own process: a real server (SQLite in a temporary directory by
//! default, or any database URL such as [`crate::fresh_postgres`]'s) with real local
//! runners running bash, on a free loopback port, and an API client for it. The same
//! client drives a server started elsewhere ([`TestServer::detached`]). Every job a test
//! starts carries a marker in its environment, and whatever still runs with it is killed
//! when the test's `TestServer` is dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use usher_server::{ServeOptions, Server, start};

use crate::events::EventSocket;
use crate::procs::pids_with_env;
use crate::rand_suffix;

/// The admin token every harness-started server is given.
pub const ADMIN_TOKEN: &str = "usher_test_admin_token";

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub data_dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// Every job of this test carries USHER_TEST_RUN=<this> in its environment.
    pub run_marker: String,
}

impl TestServer {
    pub async fn start(local_runners: u32) -> TestServer {
        TestServer::start_on(None, local_runners).await
    }

    /// A server on `database_url` (default: SQLite in its own temp dir).
    pub async fn start_on(database_url: Option<String>, local_runners: u32) -> TestServer {
        TestServer::start_with(database_url, local_runners, Default::default()).await
    }

    pub async fn start_with(database_url: Option<String>, local_runners: u32, settings: usher_engine::Settings) -> TestServer {
        TestServer::start_opts(|defaults| ServeOptions {
            database_url: database_url.unwrap_or(defaults.database_url.clone()),
            settings,
            local_runners,
            ..defaults
        })
        .await
    }

    /// A server whose local runners use the docker executor on the engine `docker_host`.
    pub async fn start_docker(docker_host: &str, local_runners: u32) -> TestServer {
        TestServer::start_opts(|defaults| ServeOptions {
            local_runners,
            executor: usher_runner::docker::ExecutorKind::Docker,
            docker_host: Some(docker_host.to_string()),
            ..defaults
        })
        .await
    }

    /// A server with the options `opts` makes of the defaults (SQLite in a temp dir).
    pub async fn start_opts(opts: impl FnOnce(ServeOptions) -> ServeOptions) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let defaults = ServeOptions::new(data_dir.path());
        let server = start(ServeOptions {
            admin_token: Some(ADMIN_TOKEN.into()),
            ..opts(defaults)
        })
        .await
        .expect("server starts");
        let base = format!("http://{}", server.addr);
        let run_marker = format!("{}-{}", std::process::id(), rand_suffix());
        TestServer {
            server: Some(server),
            base,
            data_dir,
            client: reqwest::Client::new(),
            run_marker,
        }
    }

    /// The harness (client, marker, cleanup) for a server started elsewhere, such as a
    /// real `usher` process; set `base` once it listens.
    pub fn detached() -> TestServer {
        TestServer {
            server: None,
            base: String::new(),
            data_dir: tempfile::tempdir().unwrap(),
            client: reqwest::Client::new(),
            run_marker: format!("{}-{}", std::process::id(), rand_suffix()),
        }
    }

    pub fn builds_dir(&self) -> PathBuf {
        self.data_dir.path().join("builds").join("local-1")
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(ADMIN_TOKEN, method, path, body).await
    }

    pub async fn call_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "PUT" => self.client.put(url),
            "DELETE" => self.client.delete(url),
            other => panic!("method {other}"),
        }
        .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates a project and a pipeline; the config gets USHER_TEST_RUN added.
    pub async fn pipeline(&self, ci_config: &str) -> Value {
        let config = format!("variables:\n  USHER_TEST_RUN: \"{}\"\n{ci_config}", self.run_marker);
        let name = format!("p-{}", rand_suffix());
        let (status, project) = self
            .call("POST", "/api/v1/projects", Some(json!({"name": name, "ci_config": config})))
            .await;
        assert_eq!(status, 201, "{project}");
        self.pipeline_of_main(&project).await
    }

    /// Creates a project on the git repository at `url` (named `name` and a suffix) and
    /// a pipeline of its `main`.
    pub async fn repository_pipeline(&self, name: &str, url: &str) -> Value {
        let body = json!({"name": format!("{name}-{}", rand_suffix()), "repository_url": url});
        let (status, project) = self.call("POST", "/api/v1/projects", Some(body)).await;
        assert_eq!(status, 201, "{project}");
        self.pipeline_of_main(&project).await
    }

    /// A new pipeline of `main` of the project `pipeline` is of.
    pub async fn next_pipeline(&self, pipeline: &Value) -> Value {
        self.pipeline_of_main(&json!({"id": pipeline["project_id"]})).await
    }

    /// A new pipeline of `project`'s `main`.
    pub async fn pipeline_of_main(&self, project: &Value) -> Value {
        let (status, pipeline) = self
            .call(
                "POST",
                &format!("/api/v1/projects/{}/pipelines", project["id"]),
                Some(json!({"ref": "main"})),
            )
            .await;
        assert_eq!(status, 201, "{pipeline}");
        pipeline
    }

    /// The event websocket with `query`, authenticated as admin.
    pub async fn events(&self, query: &str) -> EventSocket {
        let url = format!("ws://{}/api/v1/events?{query}", self.base.trim_start_matches("http://"));
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
        tokio_tungstenite::connect_async(request).await.expect("event websocket").0
    }

    pub fn job_id(pipeline: &Value, name: &str) -> i64 {
        pipeline["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .expect("job")["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn job(&self, id: i64) -> Value {
        let (status, job) = self.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(status, 200, "{job}");
        job
    }

    pub async fn log(&self, id: i64) -> (String, bool) {
        let resp = self
            .client
            .get(format!("{}/api/v1/jobs/{id}/log", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let complete = resp.headers().get("x-log-complete").map(|v| v == "true").unwrap_or(false);
        (resp.text().await.unwrap(), complete)
    }

    pub async fn wait_for_log(&self, id: i64, needle: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (log, _) = self.log(id).await;
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < until, "job {id}: `{needle}` never appeared in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The job log as the owner of `token` sees it, once it contains `needle`.
    pub async fn wait_for_log_as(&self, token: &str, job: i64, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resp = self
                .client
                .get(format!("{}/api/v1/jobs/{job}/log", self.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let log = resp.text().await.unwrap();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_for_status(&self, id: i64, status: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(id).await;
            if job["status"] == status {
                return job;
            }
            assert!(Instant::now() < until, "job {id} never became {status}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    /// Whatever happened in the test, no process of its jobs outlives it.
    fn drop(&mut self) {
        for pid in pids_with_env(&format!("USHER_TEST_RUN={}", self.run_marker)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Signs in through the login form as a browser would; returns the `name=value` of the
/// session cookie, which must be HttpOnly and SameSite=Lax.
pub async fn sign_in(t: &TestServer, name: &str, password: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/auth/login", t.base))
        .header("origin", &t.base)
        .form(&[("name", name), ("password", password), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}
