//! Who may do what, over real HTTP: every state-changing API endpoint and server
//! function, tried by anonymous, viewer, developer, maintainer and admin callers. The
//! expected table is docs/api.md's, written out here on its own (not read from core), so a
//! change to the rules in code fails this test. A refused call changes nothing.
//! Also: revoked API and runner tokens stop working at once.

use serde_json::{Value, json};
use usher_core::roles::Role;
use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Anonymous,
    Viewer,
    Developer,
    Maintainer,
    Admin,
}

const EVERYONE: [Who; 5] = [Who::Anonymous, Who::Viewer, Who::Developer, Who::Maintainer, Who::Admin];

#[derive(Clone, Copy, Debug)]
enum Action {
    ReadJob,
    CreateProject,
    UpdateProject,
    CreatePipeline,
    CancelJob,
    AbortJob,
    CancelPipeline,
    AbortPipeline,
}

/// docs/api.md "Authentication and roles".
fn minimum(action: Action) -> Who {
    match action {
        Action::ReadJob => Who::Viewer,
        Action::CreatePipeline | Action::CancelJob | Action::CancelPipeline => Who::Developer,
        Action::AbortJob | Action::AbortPipeline | Action::CreateProject | Action::UpdateProject => Who::Maintainer,
    }
}

const API_ACTIONS: [Action; 8] = [
    Action::ReadJob,
    Action::CreateProject,
    Action::UpdateProject,
    Action::CreatePipeline,
    Action::CancelJob,
    Action::AbortJob,
    Action::CancelPipeline,
    Action::AbortPipeline,
];

struct Caller {
    token: Option<String>,
    cookie: Option<String>,
}

struct World {
    t: TestServer,
    callers: Vec<(Who, Caller)>,
    project_id: i64,
    /// Server function URLs (they carry a hash), read from a pipeline page.
    fn_urls: std::collections::HashMap<&'static str, String>,
}

async fn world() -> World {
    // No runners: jobs stay pending, so every cancel/abort has a visible effect.
    let t = TestServer::start(0).await;
    let engine = t.server.as_ref().unwrap().engine.clone();
    let mut callers = vec![(Who::Anonymous, Caller { token: None, cookie: None })];
    for (who, name, role) in [
        (Who::Viewer, "vera", Role::Viewer),
        (Who::Developer, "dev", Role::Developer),
        (Who::Maintainer, "max", Role::Maintainer),
        (Who::Admin, "ada", Role::Admin),
    ] {
        engine.add_user(name, role, Some("pw-123456")).await.unwrap();
        let token = engine.create_api_token(name).await.unwrap();
        let cookie = sign_in(&t, name, "pw-123456").await;
        callers.push((
            who,
            Caller {
                token: Some(token),
                cookie: Some(cookie),
            },
        ));
    }
    let pipeline = t.pipeline("a:\n  script: [x]\n").await;
    let project_id = pipeline["project_id"].as_i64().unwrap();
    let admin_cookie = callers.last().unwrap().1.cookie.clone().unwrap();
    let html = t
        .client
        .get(format!("{}/pipelines/{}", t.base, pipeline["id"]))
        .header("cookie", admin_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut fn_urls = std::collections::HashMap::new();
    for name in ["cancel_job", "abort_job", "cancel_pipeline", "abort_pipeline"] {
        let url = html
            .split(&format!("action=\"/ui/{name}"))
            .nth(1)
            .map(|rest| format!("/ui/{name}{}", rest.split('"').next().unwrap()))
            .unwrap_or_else(|| panic!("no {name} form on the admin's pipeline page"));
        fn_urls.insert(name, url);
    }
    World {
        t,
        callers,
        project_id,
        fn_urls,
    }
}

impl World {
    /// A fresh pipeline with one pending job: (pipeline id, job id).
    async fn target(&self) -> (i64, i64) {
        let (status, p) = self
            .t
            .call(
                "POST",
                &format!("/api/v1/projects/{}/pipelines", self.project_id),
                Some(json!({"ref": "main"})),
            )
            .await;
        assert_eq!(status, 201, "{p}");
        (p["id"].as_i64().unwrap(), p["jobs"][0]["id"].as_i64().unwrap())
    }

    async fn api(&self, caller: &Caller, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.t.base);
        let mut req = match method {
            "GET" => self.t.client.get(url),
            "POST" => self.t.client.post(url),
            "PUT" => self.t.client.put(url),
            m => panic!("{m}"),
        };
        if let Some(token) = &caller.token {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn project_config(&self) -> String {
        self.t.call("GET", &format!("/api/v1/projects/{}", self.project_id), None).await.1["ci_config"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Does `action` through the API as `caller`; returns the status and whether the
    /// world changed.
    async fn try_api(&self, caller: &Caller, action: Action) -> (u16, Value, bool) {
        let (pipeline, job) = self.target().await;
        let pipelines_before = self
            .t
            .call("GET", &format!("/api/v1/projects/{}/pipelines?per_page=100", self.project_id), None)
            .await
            .1;
        let (status, body, changed) = match action {
            Action::ReadJob => {
                let (s, b) = self.api(caller, "GET", &format!("/api/v1/jobs/{job}"), None).await;
                (s, b.clone(), b["id"] == job)
            }
            Action::CreateProject => {
                let name = format!("new-{}", rand_suffix());
                let (s, b) = self
                    .api(
                        caller,
                        "POST",
                        "/api/v1/projects",
                        Some(json!({"name": name, "ci_config": "a:\n  script: [x]\n"})),
                    )
                    .await;
                let (_, all) = self.t.call("GET", "/api/v1/projects", None).await;
                (s, b, all.as_array().unwrap().iter().any(|p| p["name"] == name))
            }
            Action::UpdateProject => {
                let config = format!("a:\n  script: [\"echo {}\"]\n", rand_suffix());
                let (s, b) = self
                    .api(
                        caller,
                        "PUT",
                        &format!("/api/v1/projects/{}", self.project_id),
                        Some(json!({"ci_config": config})),
                    )
                    .await;
                (s, b, self.project_config().await == config)
            }
            Action::CreatePipeline => {
                let (s, b) = self
                    .api(
                        caller,
                        "POST",
                        &format!("/api/v1/projects/{}/pipelines", self.project_id),
                        Some(json!({"ref": "main"})),
                    )
                    .await;
                let after = self
                    .t
                    .call("GET", &format!("/api/v1/projects/{}/pipelines?per_page=100", self.project_id), None)
                    .await
                    .1;
                (s, b, after.as_array().unwrap().len() > pipelines_before.as_array().unwrap().len())
            }
            Action::CancelJob | Action::AbortJob => {
                let verb = if matches!(action, Action::CancelJob) { "cancel" } else { "abort" };
                let (s, b) = self.api(caller, "POST", &format!("/api/v1/jobs/{job}/{verb}"), None).await;
                (s, b, self.t.job(job).await["status"] != "pending")
            }
            Action::CancelPipeline | Action::AbortPipeline => {
                let verb = if matches!(action, Action::CancelPipeline) {
                    "cancel"
                } else {
                    "abort"
                };
                let (s, b) = self
                    .api(caller, "POST", &format!("/api/v1/pipelines/{pipeline}/{verb}"), None)
                    .await;
                (s, b, self.t.job(job).await["status"] != "pending")
            }
        };
        (status, body, changed)
    }

    /// Calls a server function from our own page (same-origin) as `caller`.
    async fn try_server_fn(&self, caller: &Caller, name: &'static str) -> (u16, String, bool) {
        let (pipeline, job) = self.target().await;
        let field = if name.ends_with("_job") {
            ("job_id", job)
        } else {
            ("pipeline_id", pipeline)
        };
        let mut req = self
            .t
            .client
            .post(format!("{}{}", self.t.base, self.fn_urls[name]))
            .header("sec-fetch-site", "same-origin")
            .header("accept", "application/json")
            .form(&[(field.0, field.1.to_string())]);
        if let Some(cookie) = &caller.cookie {
            req = req.header("cookie", cookie);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, text, self.t.job(job).await["status"] != "pending")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_can_do_exactly_what_api_md_allows() {
    let w = world().await;
    let mut checked = 0;
    for (who, caller) in &w.callers {
        for action in API_ACTIONS {
            let allowed = *who >= minimum(action);
            let (status, body, changed) = w.try_api(caller, action).await;
            if allowed {
                assert!((200..300).contains(&status), "{who:?} {action:?}: {status} {body}");
                assert!(changed, "{who:?} {action:?} answered {status} but changed nothing");
            } else {
                let (code, expected) = if *who == Who::Anonymous {
                    (401, "unauthorized")
                } else {
                    (403, "forbidden")
                };
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (code, Some(expected)),
                    "{who:?} {action:?}: {body}"
                );
                assert!(!changed, "{who:?} {action:?} was refused but changed something");
            }
            checked += 1;
        }
        for (name, action) in [
            ("cancel_job", Action::CancelJob),
            ("abort_job", Action::AbortJob),
            ("cancel_pipeline", Action::CancelPipeline),
            ("abort_pipeline", Action::AbortPipeline),
        ] {
            let allowed = *who >= minimum(action);
            let (status, text, changed) = w.try_server_fn(caller, name).await;
            if allowed {
                assert!((200..300).contains(&status), "{who:?} server fn {name}: {status} {text}");
                assert!(changed, "{who:?} server fn {name} changed nothing");
            } else {
                let code = if *who == Who::Anonymous { 401 } else { 403 };
                assert_eq!(status, code, "{who:?} server fn {name}: {text}");
                assert!(!changed, "{who:?} server fn {name} was refused but changed something");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, EVERYONE.len() * (API_ACTIONS.len() + 4));
    w.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_stop_working_at_once() {
    let t = TestServer::start(0).await;
    let engine = t.server.as_ref().unwrap().engine.clone();
    engine.add_user("dev", Role::Developer, None).await.unwrap();
    let token = engine.create_api_token("dev").await.unwrap();
    assert_eq!(t.call_as(&token, "GET", "/api/v1/projects", None).await.0, 200);
    engine.revoke_api_token(&token).await.unwrap();
    let (status, body) = t.call_as(&token, "GET", "/api/v1/projects", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(engine.revoke_api_token(&token).await.is_err(), "revoking twice says so");

    // A runner token: new connections are refused, and a connected runner is dropped
    // at its next heartbeat.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let runner_token = engine.create_runner_token().await.unwrap();
    let connect = |token: String| {
        let mut request = format!("ws://{}/api/runner/v1/connect", t.base.trim_start_matches("http://"))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let (mut ws, _) = connect(runner_token.clone()).await.expect("a live token connects");
    let hello = json!({"type": "hello", "version": usher_core::protocol::PROTOCOL_VERSION, "name": "r", "concurrency": 1, "held_jobs": [], "runner_id": null});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("welcome"));
    engine.revoke_runner_token(&runner_token).await.unwrap();
    ws.send(Message::Text(json!({"type": "heartbeat"}).to_string().into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the server closes the connection");
    assert_eq!(closed.as_deref(), Some("the runner token was revoked"));
    let refused = connect(runner_token).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("a revoked runner token connected: {:?}", other.map(|_| ())),
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_and_revokes_tokens_of_a_running_server() {
    let t = TestServer::start(0).await;
    t.server
        .as_ref()
        .unwrap()
        .engine
        .add_user("cli-dev", Role::Developer, None)
        .await
        .unwrap();
    let usher = |args: &[&str], stdin: Option<&str>| run_usher_cli(USHER, t.data_dir.path(), args, stdin.unwrap_or(""));
    let out = usher(&["token", "create", "cli-dev"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(t.call_as(&token, "GET", "/api/v1/projects", None).await.0, 200);

    // From standard input, so the token stays out of shell history and `ps`.
    let out = usher(&["token", "revoke"], Some(&format!("{token}\n")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(t.call_as(&token, "GET", "/api/v1/projects", None).await.0, 401);
    let out = usher(&["token", "revoke", &token], None);
    assert!(!out.status.success(), "revoking a revoked token is an error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.stop().await;
}
