//! The read side of the API as a program uses it: the pipelines list's pagination and
//! filters (newest first, `ref`, `status`, `page`, `per_page`, bad values → 400), and
//! the job log read from an offset with `X-Log-Complete`.

use serde_json::{Value, json};
use usher_testkit::*;

fn ids(list: &Value) -> Vec<i64> {
    list.as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipelines_list_pages_and_filters() {
    let t = TestServer::start(0).await;
    let config = "workflow:\n  auto_cancel:\n    on_new_commit: none\na:\n  script: [x]\n";
    let (status, project) = t
        .call("POST", "/api/v1/projects", Some(json!({"name": "lists", "ci_config": config})))
        .await;
    assert_eq!(status, 201, "{project}");
    let pid = project["id"].as_i64().unwrap();
    let mut created = Vec::new();
    for git_ref in ["main", "dev", "main", "main", "dev", "main", "main", "dev"] {
        let (status, p) = t
            .call("POST", &format!("/api/v1/projects/{pid}/pipelines"), Some(json!({"ref": git_ref})))
            .await;
        assert_eq!(status, 201, "{p}");
        created.push((p["id"].as_i64().unwrap(), git_ref));
    }
    let newest_first: Vec<i64> = created.iter().rev().map(|(id, _)| *id).collect();
    let list = |query: String| {
        let t = &t;
        async move { t.call("GET", &format!("/api/v1/projects/{pid}/pipelines{query}"), None).await }
    };

    let (status, all) = list(String::new()).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), newest_first, "newest first");
    assert!(all[0].get("jobs").is_none(), "the list leaves jobs out");
    assert_eq!(ids(&list("?per_page=3".into()).await.1), newest_first[..3]);
    assert_eq!(ids(&list("?per_page=3&page=2".into()).await.1), newest_first[3..6]);
    assert_eq!(ids(&list("?per_page=3&page=3".into()).await.1), newest_first[6..]);
    assert_eq!(list("?per_page=3&page=4".into()).await.1, json!([]), "past the end: empty");

    let devs: Vec<i64> = created.iter().rev().filter(|(_, r)| *r == "dev").map(|(id, _)| *id).collect();
    let (_, dev) = list("?ref=dev".into()).await;
    assert_eq!(ids(&dev), devs);
    assert!(dev.as_array().unwrap().iter().all(|p| p["ref"] == "dev"));

    let victim = created[2].0;
    let (status, _) = t.call("POST", &format!("/api/v1/pipelines/{victim}/cancel"), None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list("?status=canceled".into()).await.1), [victim]);
    assert_eq!(ids(&list("?status=canceled&ref=dev".into()).await.1), Vec::<i64>::new());
    assert_eq!(list("?status=pending".into()).await.1.as_array().unwrap().len(), 7);

    for bad in ["?status=bogus", "?page=0", "?per_page=abc", "?page=-2"] {
        let (status, body) = list(bad.into()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = t.call("GET", "/api/v1/projects/999999/pipelines", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reads_from_an_offset_and_says_when_it_is_complete() {
    let t = TestServer::start(1).await;
    let pipeline = t
        .pipeline("talker:\n  script: [\"echo first-line\", \"echo second-line\", \"sleep 1000\"]\n")
        .await;
    let job = TestServer::job_id(&pipeline, "talker");
    let log = t.wait_for_log(job, "second-line\n").await;
    let read = |offset: usize| {
        let t = &t;
        async move {
            let resp = t
                .client
                .get(format!("{}/api/v1/jobs/{job}/log?offset={offset}", t.base))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
            let complete = resp.headers()["x-log-complete"].to_str().unwrap().to_string();
            (complete, resp.text().await.unwrap())
        }
    };
    let at = log.find("\nsecond-line\n").unwrap() + 1;
    let (complete, tail) = read(at).await;
    assert_eq!(complete, "false", "still running");
    assert!(tail.starts_with("second-line\n"), "{tail:?}");
    assert_eq!(read(log.len() + 1000).await.1, "", "past the end: nothing");
    let (status, body) = t.call("GET", &format!("/api/v1/jobs/{job}/log?offset=-1"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));

    t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
    t.wait_for_status(job, "canceled").await;
    let (complete, whole) = read(0).await;
    assert_eq!(complete, "true", "terminal: the log is closed");
    assert!(whole.starts_with(&log), "reading from 0 gives the whole log");
    t.stop().await;
}
