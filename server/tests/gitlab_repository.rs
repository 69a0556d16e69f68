//! A GitLab file in a real repository: `include: local` files read at the pipeline's
//! commit (nested, merged under the file), `rules: exists` against that commit's files,
//! an include's own `rules` and `$NAMES`, and the refusals when an included file is
//! missing or comes from elsewhere.

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

/// The names of a pipeline's jobs, sorted.
fn job_names(pipeline: &Value) -> Vec<String> {
    let mut names: Vec<String> = pipeline["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
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
    let names = job_names(&pipeline);
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

/// `include: project`: files of another Usher project's repository, at its `main` or at
/// the `ref` given; that file's own `include: local` is a file of that project; a project,
/// ref or file that is not there is refused, saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_project_reads_another_projects_repository() {
    let t = TestServer::start(1).await;
    let templates = GitRepo::new();
    templates.commit(
        "main",
        &[
            (
                "ci/base.yml",
                b"include: /ci/vars.yml\n.greet:\n  script:\n    - echo \"hello from $WHERE\"\n",
            ),
            ("ci/vars.yml", b"variables:\n  WHERE: templates-main\n"),
        ],
        "Templates",
    );
    let v2 = templates.commit("v2", &[("ci/vars.yml", b"variables:\n  WHERE: templates-v2\n")], "V2");
    let name = format!("ci templates {}", rand_suffix());
    let body = json!({"name": name, "repository_url": templates.path().display().to_string()});
    let (status, created) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{created}");

    let app = GitRepo::new();
    // A file of the including repository with the same path: not the one that counts.
    let ci = |git_ref: &str| format!("include:\n  - project: '{name}'\n{git_ref}    file: ci/base.yml\ngreet:\n  extends: .greet\n");
    app.commit(
        "main",
        &[
            (".gitlab-ci.yml", ci("").as_bytes()),
            ("ci/vars.yml", b"variables:\n  WHERE: the-app\n"),
        ],
        "App",
    );
    app.commit("pinned", &[(".gitlab-ci.yml", ci("    ref: v2\n").as_bytes())], "Pinned");
    app.commit(
        "by-commit",
        &[(".gitlab-ci.yml", ci(&format!("    ref: {v2}\n")).as_bytes())],
        "By commit",
    );
    let project = git_project(&t, &app.path().display().to_string()).await;
    for (git_ref, greeting) in [
        ("main", "hello from templates-main"),
        ("pinned", "hello from templates-v2"),
        ("by-commit", "hello from templates-v2"),
    ] {
        let (status, pipeline) = run(&t, project, git_ref).await;
        assert_eq!(status, 201, "{pipeline}");
        let greet = TestServer::job_id(&pipeline, "greet");
        t.wait_for_status(greet, "success").await;
        let log = t.wait_for_log(greet, greeting).await;
        assert!(log.contains(&format!("\n{greeting}\n")), "{git_ref}:\n{log}");
    }

    // A repository Usher reads with credentials is not given to other projects' pipelines
    // (whoever pushes to this one would read it).
    let private = format!("private templates {}", rand_suffix());
    let body = json!({"name": private, "repository_url": "https://bot:s3cret@git.invalid/templates.git"});
    let (status, created) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    for (git_ref, ci, says) in [
        (
            "private",
            format!("include:\n  - project: '{private}'\n    file: a.yml\nj:\n  script: [x]\n"),
            "reads its repository with credentials".to_string(),
        ),
        (
            "nobody",
            "include:\n  - project: nobody-here\n    file: a.yml\nj:\n  script: [x]\n".to_string(),
            "there is no project named `nobody-here`".to_string(),
        ),
        ("no-ref", ci("    ref: v9\n"), "has no branch, tag or commit `v9`".to_string()),
        (
            "no-file",
            format!("include:\n  - project: '{name}'\n    file: ci/gone.yml\nj:\n  script: [x]\n"),
            format!("`ci/gone.yml` of project `{name}` is not a file of that repository"),
        ),
    ] {
        app.commit(git_ref, &[(".gitlab-ci.yml", ci.as_bytes())], "Broken");
        let (status, body) = run(&t, project, git_ref).await;
        assert_eq!(status, 422, "{git_ref}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&says), "{git_ref}: {message}");
    }
    t.stop().await;
}

/// `include:` with GitLab's `rules` (`if` over the pipeline's variables, `exists` over
/// the commit's files, `when: never`), `$NAMES` in an entry (the project's variables and
/// Usher's `CI_*` ones, not the file's own: they are not known yet, as in GitLab), and
/// wildcards (`**` any depth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn includes_follow_their_rules_and_the_pipelines_variables() {
    let t = TestServer::start(1).await;
    let repo = GitRepo::new();
    let main = r#"
variables:
  FILE_ONLY: jobs
include:
  - local: ci/on-$CI_COMMIT_REF_NAME.yml
  - local: ci/$KIND.yml
  - local: ci/release.yml
    rules:
      - if: $CI_COMMIT_BRANCH == "release"
  - local: ci/docs.yml
    rules:
      - exists: ["docs/*.md"]
  - local: ci/never.yml
    rules:
      - if: $CI_COMMIT_REF_NAME
        when: never
      - when: always
  - local: /ci/extra/**.yml
build:
  script: [echo build]
"#;
    let job = |name: &str| format!("{name}:\n  script: [echo {name}]\n");
    let files = [
        (".gitlab-ci.yml", main.to_string()),
        ("ci/on-main.yml", job("on-main")),
        ("ci/on-release.yml", job("on-release")),
        ("ci/lint.yml", job("lint")),
        ("ci/release.yml", job("publish")),
        ("ci/docs.yml", job("docs")),
        ("ci/never.yml", job("never")),
        ("ci/extra/x.yml", job("extra-x")),
        ("ci/extra/more/y.yml", job("extra-y")),
        ("ci/extra/notes.txt", "not: [yaml\n".to_string()),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, text)| (*p, text.as_bytes())).collect();
    repo.commit("main", &files, "One");
    repo.commit("release", &[("VERSION", b"1.0\n")], "Release");
    let project = git_project(&t, &repo.path().display().to_string()).await;
    let (status, answer) = run(&t, project, "main").await;
    assert_eq!(status, 422, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`ci/$KIND.yml`") && message.contains("`$KIND` is not set"),
        "an unset name is named: {message}"
    );
    let (status, variable) = t
        .call(
            "POST",
            &format!("/api/v1/projects/{project}/variables"),
            Some(json!({"key": "KIND", "value": "lint"})),
        )
        .await;
    assert_eq!(status, 201, "{variable}");
    let (status, pipeline) = run(&t, project, "main").await;
    assert_eq!(status, 201, "{pipeline}");
    assert_eq!(job_names(&pipeline), ["build", "extra-x", "extra-y", "lint", "on-main"]);
    let (status, pipeline) = run(&t, project, "release").await;
    assert_eq!(status, 201, "{pipeline}");
    assert_eq!(
        job_names(&pipeline),
        ["build", "extra-x", "extra-y", "lint", "on-release", "publish"]
    );
    repo.commit("main", &[("docs/index.md", b"# Docs\n")], "Docs");
    let (_, pipeline) = run(&t, project, "main").await;
    assert_eq!(job_names(&pipeline), ["build", "docs", "extra-x", "extra-y", "lint", "on-main"]);
    // The file's own variables are not the include's: `$FILE_ONLY` stays unset there.
    repo.commit(
        "main",
        &[(
            ".gitlab-ci.yml",
            b"variables:\n  FILE_ONLY: jobs\ninclude: ci/$FILE_ONLY.yml\nbuild:\n  script: [x]\n",
        )],
        "Own",
    );
    let (status, answer) = run(&t, project, "main").await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("`$FILE_ONLY` is not set"),
        "{answer}"
    );
    t.stop().await;
}

/// GitLab's CI/CD components and inputs: `include: component: HOST/PROJECT/NAME@VERSION`
/// is the Usher project's `templates/NAME.yml` (or `templates/NAME/template.yml`) at that
/// version, given the entry's `inputs`; a local file declares inputs too, and a path an
/// input makes is read as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_and_inputs_make_jobs_from_their_templates() {
    let t = TestServer::start(1).await;
    let kit = GitRepo::new();
    kit.commit(
        "main",
        &[(
            "templates/lint/template.yml",
            b"spec:\n  inputs:\n    stage:\n      default: test\n    level:\n      type: number\n---\nlint-$[[ inputs.level ]]:\n  stage: $[[ inputs.stage ]]\n  script:\n    - echo \"lint level $[[ inputs.level ]] in $[[ inputs.stage ]]\"\n",
        )],
        "Kit",
    );
    kit.tag("1.0");
    kit.commit("main", &[("templates/lint/template.yml", b"broken: [\n")], "Later");
    let name = format!("group/kit-{}", rand_suffix());
    let body = json!({"name": name, "repository_url": kit.path().display().to_string()});
    let (status, created) = t.call("POST", "/api/v1/projects", Some(body)).await;
    assert_eq!(status, 201, "{created}");

    let app = GitRepo::new();
    let ci = format!(
        "stages: [test, check]\ninclude:\n  - component: gitlab.example.com/{name}/lint@1.0\n    inputs:\n      level: 3\n      stage: check\n  - local: ci/wrapper.yml\n    inputs:\n      target: ci/chosen.yml\n"
    );
    app.commit(
        "main",
        &[
            (".gitlab-ci.yml", ci.as_bytes()),
            (
                "ci/wrapper.yml",
                b"spec:\n  inputs:\n    target:\n      default: ci/default.yml\n---\ninclude:\n  - local: $[[ inputs.target ]]\n",
            ),
            ("ci/chosen.yml", b"chosen:\n  script: [echo chosen]\n"),
            ("ci/default.yml", b"default-file:\n  script: [echo default]\n"),
        ],
        "App",
    );
    let project = git_project(&t, &app.path().display().to_string()).await;
    let (status, pipeline) = run(&t, project, "main").await;
    assert_eq!(status, 201, "{pipeline}");
    let names = job_names(&pipeline);
    assert_eq!(names, ["chosen", "lint-3"], "the component at 1.0 and the file the input names");
    let lint = TestServer::job_id(&pipeline, "lint-3");
    t.wait_for_status(lint, "success").await;
    let log = t.wait_for_log(lint, "lint level").await;
    assert!(log.contains("\nlint level 3 in check\n"), "{log}");

    // A required input missing: refused, naming it.
    app.commit(
        "missing",
        &[(".gitlab-ci.yml", format!("include:\n  - component: h/{name}/lint@1.0\n").as_bytes())],
        "Missing",
    );
    let (status, body) = run(&t, project, "missing").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("input `level` is required"),
        "{body}"
    );
    t.stop().await;
}
