//! Project CI variables through the API and into jobs: who may do what, values that no
//! answer shows, and masked values that no job log shows — printed whole, printed in two
//! pieces a moment apart, from the script, after_script and a cleanup job.

use serde_json::{Value, json};
use usher_core::roles::Role;
use usher_testkit::*;

const SECRET: &str = "hunter2-is-not-a-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_write_only_values() {
    let t = TestServer::start(0).await;
    let engine = t.server.as_ref().unwrap().engine.clone();
    let mut tokens = Vec::new();
    for (name, role) in [("vera", Role::Viewer), ("dev", Role::Developer), ("max", Role::Maintainer)] {
        engine.add_user(name, role, Some("pw-123456")).await.unwrap();
        tokens.push(engine.create_api_token(name).await.unwrap());
    }
    let [viewer, developer, maintainer] = [&tokens[0], &tokens[1], &tokens[2]];
    let pipeline = t.pipeline("a:\n  script: [x]\n").await;
    let project = pipeline["project_id"].as_i64().unwrap();
    let path = format!("/api/v1/projects/{project}/variables");
    let body = json!({"key": "DEPLOY_TOKEN", "value": SECRET, "masked": true});

    assert_eq!(t.call_as(developer, "POST", &path, Some(body.clone())).await.0, 403);
    let (status, created) = t.call_as(maintainer, "POST", &path, Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["key"].as_str(), created["masked"].as_bool()),
        (Some("DEPLOY_TOKEN"), Some(true))
    );
    let (status, again) = t.call_as(maintainer, "POST", &path, Some(body)).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("conflict")), "{again}");
    for (bad, why) in [
        (json!({"key": "CI_JOB_ID", "value": "x"}), "a variable Usher sets"),
        (json!({"key": "CI", "value": "x"}), "CI"),
        (json!({"key": "1ABC", "value": "x"}), "a digit first"),
        (json!({"key": "A B", "value": "x"}), "a space"),
        (
            json!({"key": "SHORT", "value": "1234567", "masked": true}),
            "a masked value of 7 characters",
        ),
        (
            json!({"key": "LINES", "value": "12345678\nmore", "masked": true}),
            "a masked value on two lines",
        ),
        (
            json!({"key": "BLANK", "value": "two  spaces-here", "masked": true}),
            "a masked value with blanks",
        ),
        (
            json!({"key": "QUOTE", "value": "it's-a-secret", "masked": true}),
            "a masked value with a quote",
        ),
    ] {
        let (status, answer) = t.call_as(maintainer, "POST", &path, Some(bad)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{why}: {answer}"
        );
    }
    t.call_as(maintainer, "POST", &path, Some(json!({"key": "REGION", "value": "eu-west-1"})))
        .await;

    assert_eq!(t.call_as(viewer, "GET", &path, None).await.0, 403);
    let (status, list) = t.call_as(developer, "GET", &path, None).await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = list.as_array().unwrap().iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["DEPLOY_TOKEN", "REGION"]);
    // No answer holds a value.
    for answer in [
        &created,
        &list,
        &t.call("GET", &format!("/api/v1/projects/{project}"), None).await.1,
    ] {
        let text = answer.to_string();
        assert!(!text.contains(SECRET) && !text.contains("eu-west-1"), "{text}");
    }

    // The project's page shows the keys to a developer, never a value.
    let cookie = sign_in(&t, "dev", "pw-123456").await;
    let page = t
        .client
        .get(format!("{}/projects/{project}", t.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // (Leptos marks text nodes with `<!>` comments.)
    let shown = page.replace("<!>", "");
    assert!(
        shown.contains("<code>DEPLOY_TOKEN</code><span class=\"muted\"> (masked)"),
        "the keys are on the page"
    );
    assert!(!page.contains(SECRET) && !page.contains("eu-west-1"), "no value on the page");

    let one = format!("{path}/REGION");
    assert_eq!(t.call_as(developer, "DELETE", &one, None).await.0, 403);
    assert_eq!(t.call_as(maintainer, "DELETE", &one, None).await.0, 204);
    let (status, gone) = t.call_as(maintainer, "DELETE", &one, None).await;
    assert_eq!((status, gone["error"]["code"].as_str()), (404, Some("not_found")), "{gone}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_get_them_and_their_logs_never_show_a_masked_one() {
    let t = TestServer::start(1).await;
    // A project without pipelines yet: create it, add the variables, then run.
    let config = r#"
stages: [test, cleanup]
variables:
  OVERRIDDEN: from-yaml
show:
  stage: test
  script:
    - echo "whole=$DEPLOY_TOKEN"
    - printf 'split=%s' "${DEPLOY_TOKEN:0:6}"; sleep 0.5; printf '%s\n' "${DEPLOY_TOKEN:6}"
    - echo "plain=$PLAIN overridden=$OVERRIDDEN"
    - echo "$DEPLOY_TOKEN" | base64
    - exit 1
  after_script:
    - echo "after=$DEPLOY_TOKEN"
report:
  stage: cleanup
  when: on_failure
  script:
    - echo "cleanup=$DEPLOY_TOKEN"
"#;
    let (status, project) = t
        .call(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": format!("vars-{}", rand_suffix()), "ci_config": config})),
        )
        .await;
    assert_eq!(status, 201, "{project}");
    let path = format!("/api/v1/projects/{}/variables", project["id"]);
    for body in [
        json!({"key": "DEPLOY_TOKEN", "value": SECRET, "masked": true}),
        json!({"key": "PLAIN", "value": "visible-value"}),
        json!({"key": "OVERRIDDEN", "value": "from-project"}),
    ] {
        assert_eq!(t.call("POST", &path, Some(body)).await.0, 201);
    }
    let mut events = t.events(&format!("project_id={}", project["id"])).await;
    let (status, pipeline) = t
        .call(
            "POST",
            &format!("/api/v1/projects/{}/pipelines", project["id"]),
            Some(json!({"ref": "main"})),
        )
        .await;
    assert_eq!(status, 201, "{pipeline}");
    let (show, report) = (TestServer::job_id(&pipeline, "show"), TestServer::job_id(&pipeline, "report"));
    t.wait_for_status(report, "success").await;
    let (log, _) = t.log(show).await;
    for line in [
        "whole=[MASKED]",
        "split=[MASKED]",
        "after=[MASKED]",
        "plain=visible-value overridden=from-yaml",
    ] {
        assert!(log.contains(line), "{line} missing:\n{log}");
    }
    let (cleanup_log, _) = t.log(report).await;
    assert!(cleanup_log.contains("cleanup=[MASKED]"), "{cleanup_log}");
    // Not a byte of it anywhere: the stored logs, nor the frames that carried them live.
    let mut frames = String::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(std::time::Duration::from_millis(300), futures::StreamExt::next(&mut events)).await
    {
        frames.push_str(frame.to_text().unwrap_or_default());
    }
    for text in [&log, &cleanup_log, &frames] {
        assert!(!text.contains(SECRET) && !text.contains("hunter2"), "{text}");
    }
    // An encoding is not the value: it is not hidden (as in GitLab).
    assert!(log.contains(&base64_of(SECRET)), "{log}");
    let _: Value = t.job(show).await;
    t.stop().await;
}

fn base64_of(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("base64")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{text}").unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}
