//! A GitLab file in a real repository: `include: local` files read at the pipeline's
//! commit (nested, merged under the file), `rules: exists` against that commit's files,
//! and the refusals when an included file is missing or comes from elsewhere.

use serde_json::{Value, json};
use usher_testkit::git::GitRepo;
use usher_testkit::*;

async fn git_project(t: &TestServer, url: &str) -> i64 {
    let body = json!({"name": format!("git-{}", rand_suffix()), "repository_url": url});
    let (status, project) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{project}");
    project["id"].as_i64().unwrap()
}

async fn run(t: &TestServer, project: i64, git_ref: &str) -> (u16, Value) {
    t.call(
        "POST",
        &format!("/api/v1/projects/{project}/pipelines"),
        Some(json!({"ref": git_ref})),
    )
    .await
}

const MAIN: &str = r#"
include:
  - local: /ci/templates.yml
  - ci/jobs.yml
variables:
  GREETING: from-the-file
build:
  extends: .build
docs:
  script: [echo docs]
  rules:
    - exists: ["docs/**/*.md"]
"#;
const TEMPLATES: &str = "include: ci/base.yml\n.build:\n  script:\n    - echo \"$GREETING $FROM_BASE\"\n";
const BASE: &str = "variables:\n  GREETING: from-base\n  FROM_BASE: base-too\n";
const JOBS: &str = "test:\n  script: [echo test]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn included_files_and_exists_rules_read_the_commit() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    repo.commit(
        "main",
        &[
            (".gitlab-ci.yml", MAIN.as_bytes()),
            ("ci/templates.yml", TEMPLATES.as_bytes()),
            ("ci/base.yml", BASE.as_bytes()),
            ("ci/jobs.yml", JOBS.as_bytes()),
        ],
        "One",
    );
    let project = git_project(&t, &repo.path().display().to_string()).await;
    let (status, pipeline) = run(&t, project, "main").await;
    assert_eq!(status, 201, "{pipeline}");
    let mut names: Vec<&str> = pipeline["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["build", "test"], "no docs/ yet: `docs` is left out");
    let build = TestServer::job_id(&pipeline, "build");
    t.wait_for_status(build, "success").await;
    let log = t.wait_for_log(build, "base-too").await;
    assert!(
        log.contains("\nfrom-the-file base-too\n"),
        "the file's own variables win over the included ones:\n{log}"
    );

    // A commit with docs: the `exists` rule now holds.
    repo.commit("main", &[("docs/guide/index.md", b"# Guide\n")], "Docs");
    let (_, pipeline) = run(&t, project, "main").await;
    assert!(
        pipeline["jobs"].as_array().unwrap().iter().any(|j| j["name"] == "docs"),
        "{pipeline}"
    );

    // An included file missing at the commit, or from elsewhere: refused, saying which.
    repo.commit(
        "broken",
        &[(".gitlab-ci.yml", b"include: ci/gone.yml\njob:\n  script: [x]\n")],
        "Gone",
    );
    let (status, body) = run(&t, project, "broken").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`ci/gone.yml` is not a file of the repository"),
        "{body}"
    );
    repo.commit(
        "elsewhere",
        &[(
            ".gitlab-ci.yml",
            b"include:\n  - project: group/templates\n    file: ci.yml\njob:\n  script: [x]\n",
        )],
        "Else",
    );
    let (status, body) = run(&t, project, "elsewhere").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("include: project"), "{body}");
    t.stop().await;
}
