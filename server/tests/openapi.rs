//! `GET /api/v1/openapi.json` describes every public route: each route of docs/api.md (and
//! the runner's routes) is in it with its documented errors, every operation in it is
//! really served (not the API's "no such route" fallback), and the resource schemas have
//! exactly docs/api.md's fields. The router itself is built from the same annotations
//! (utoipa-axum), so a handler cannot be routed without being described; this test
//! catches a route of the contract that went missing from either.

use serde_json::Value;
use usher_testkit::*;

/// docs/api.md "Resources" and "Event websocket", plus the runner protocol's HTTP routes.
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/api/v1/projects"),
    ("post", "/api/v1/projects"),
    ("get", "/api/v1/projects/{id}"),
    ("put", "/api/v1/projects/{id}"),
    ("get", "/api/v1/projects/{id}/variables"),
    ("post", "/api/v1/projects/{id}/variables"),
    ("delete", "/api/v1/projects/{id}/variables/{key}"),
    ("get", "/api/v1/projects/{id}/pipelines"),
    ("post", "/api/v1/projects/{id}/pipelines"),
    ("post", "/api/v1/projects/{id}/hooks/push"),
    ("get", "/api/v1/pipelines/{id}"),
    ("post", "/api/v1/pipelines/{id}/cancel"),
    ("post", "/api/v1/pipelines/{id}/abort"),
    ("post", "/api/v1/pipelines/{id}/retry"),
    ("get", "/api/v1/jobs/{id}"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("post", "/api/v1/jobs/{id}/abort"),
    ("post", "/api/v1/jobs/{id}/retry"),
    ("post", "/api/v1/jobs/{id}/play"),
    ("get", "/api/v1/runners"),
    ("post", "/api/v1/runners/{id}/pause"),
    ("post", "/api/v1/runners/{id}/resume"),
    ("get", "/api/v1/jobs/{id}/log"),
    ("get", "/api/v1/jobs/{id}/events"),
    ("get", "/api/v1/jobs/{id}/artifacts"),
    ("get", "/api/v1/jobs/{id}/artifacts/{path}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/runner/v1/connect"),
    ("put", "/api/runner/v1/jobs/{id}/artifacts/{path}"),
    ("get", "/api/runner/v1/jobs/{id}/dependencies/{dependency}/artifacts/{path}"),
    ("put", "/api/runner/v1/jobs/{id}/caches/{key}"),
    ("get", "/api/runner/v1/jobs/{id}/caches/{key}"),
];

fn properties(spec: &Value, schema: &str) -> Vec<String> {
    let mut names: Vec<String> = spec["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {schema}"))
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

fn sorted(fields: &str) -> Vec<String> {
    let mut v: Vec<String> = fields.split(", ").map(String::from).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_covers_every_public_route() {
    let t = TestServer::start(0).await;
    let resp = t.client.get(format!("{}/api/v1/openapi.json", t.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "served without credentials");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let spec: Value = resp.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."), "{}", spec["openapi"]);
    assert_eq!(spec["info"]["title"], "Usher", "{}", spec["info"]);
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());

    for (method, path) in CONTRACT {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{} {path} is missing from openapi.json", method.to_uppercase());
        if *path != "/api/v1/openapi.json" {
            assert!(op["responses"]["401"].is_object(), "{method} {path} does not document 401");
        }
    }

    // Every documented operation is served: none reaches the API's fallback.
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                t.base,
                path.replace("{id}", "999999")
                    .replace("{dependency}", "999998")
                    .replace("{path}", "x.txt")
                    .replace("{key}", "KEY")
            );
            let req = match method.as_str() {
                "get" => t.client.get(&url),
                "post" => t.client.post(&url),
                "put" => t.client.put(&url),
                "delete" => t.client.delete(&url),
                other => panic!("unexpected method {other} for {path}"),
            };
            let resp = req.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert!(
                status != 405 && !body.contains("no such API route"),
                "{method} {path} is documented but not served: {status} {body}"
            );
            assert!(status < 500, "{method} {path}: {status} {body}");
            operations += 1;
        }
    }
    assert_eq!(
        operations,
        CONTRACT.len(),
        "openapi.json documents routes the contract list does not name"
    );

    // The resources have exactly docs/api.md's fields.
    assert_eq!(
        properties(&spec, "Project"),
        sorted("id, name, repository_url, default_branch, ci_config, created_at")
    );
    assert_eq!(
        properties(&spec, "Pipeline"),
        sorted("id, project_id, ref, sha, commit_title, status, created_at, started_at, finished_at, triggered_by, cancel, jobs")
    );
    assert_eq!(
        properties(&spec, "Job"),
        sorted(
            "id, pipeline_id, project_id, name, stage, status, interruptible, created_at, started_at, finished_at, \
             runner_id, exit_code, failure_reason, cancel, after_script, tags, waiting_for, retry_of, retried, when, teardown, \
             deferred, allow_failure, coverage, resource_group, start_in, play_at"
        )
    );
    assert_eq!(properties(&spec, "Variable"), sorted("key, masked, created_at"));
    assert_eq!(
        properties(&spec, "CancelInfo"),
        sorted("mode, requested_by, requested_at, reason, message")
    );
    assert_eq!(properties(&spec, "AfterScriptResult"), sorted("exit_code, duration_ms, timed_out"));
    assert_eq!(
        properties(&spec, "TimelineEvent"),
        sorted("at, from, to, actor, mode, reason, detail")
    );
    assert_eq!(properties(&spec, "Artifact"), sorted("path, size, expires_at, expired"));
    let statuses: Vec<&str> = spec["components"]["schemas"]["Status"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "created",
            "pending",
            "running",
            "canceling",
            "success",
            "failed",
            "canceled",
            "skipped",
            "manual"
        ]
    );
    t.stop().await;
}
