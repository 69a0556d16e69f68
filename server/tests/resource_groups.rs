//! `resource_group` with real runners: two pipelines of a project deploy one after the
//! other, never at once (with two runners free); the waiting one says which job holds
//! the group, and starts by itself once the group is free.

use usher_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_of_a_group_take_turns_with_runners_to_spare() {
    let t = TestServer::start(2).await;
    let shared = job_writable_dir();
    let (marks, gate) = (shared.path().join("marks"), shared.path().join("go"));
    let yaml = format!(
        r#"
workflow:
  auto_cancel:
    on_new_commit: none
deploy:
  resource_group: production
  script:
    - echo "start $CI_PIPELINE_ID" >> {marks}
    - while [ ! -e {gate} ]; do sleep 0.05; done
    - echo "end $CI_PIPELINE_ID" >> {marks}
"#,
        marks = marks.display(),
        gate = gate.display()
    );
    let first = t.pipeline(&yaml).await;
    let first_deploy = TestServer::job_id(&first, "deploy");
    t.wait_for_log(first_deploy, "start").await;
    let second = t.next_pipeline(&first).await;
    let second_deploy = TestServer::job_id(&second, "deploy");
    // A runner is free, and still the second deploy waits.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let waiting = t.job(second_deploy).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(
        waiting["waiting_for"],
        format!("the resource group production (held by job #{first_deploy})"),
        "{waiting}"
    );
    assert_eq!(waiting["resource_group"], "production");
    std::fs::write(&gate, "").unwrap();
    t.wait_for_status(first_deploy, "success").await;
    t.wait_for_status(second_deploy, "success").await;
    let order = std::fs::read_to_string(&marks).unwrap();
    let (a, b) = (first["id"].as_i64().unwrap(), second["id"].as_i64().unwrap());
    assert_eq!(order, format!("start {a}\nend {a}\nstart {b}\nend {b}\n"), "never at once");
    t.stop().await;
}
