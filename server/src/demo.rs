//! The demo project of `usher serve --demo`: a local bare repository (`<data-dir>/demo.git`)
//! with one commit whose `.usher-ci.yml` is a pipeline whose job checks the code out,
//! starts real resources (a background "service" process and a temp dir), works for ten
//! minutes with visible progress, and tears them down in after_script — the thing to
//! cancel to see Usher's point. The first pipeline starts at once.

use std::path::Path;

use usher_core::api::{CreatePipeline, CreateProject};
use usher_engine::{Actor, Engine, EngineError};

pub const DEMO_CONFIG: &str = r#"# Usher demo: cancel `integration` while it runs and watch after_script clean up.
stages: [build, test]
variables:
  GREETING: hello
build:
  stage: build
  script:
    - echo "$GREETING from $CI_JOB_NAME at commit $CI_COMMIT_SHORT_SHA ($CI_COMMIT_TITLE)"
    - ls -la
    - mkdir -p out && date > out/build.txt
integration:
  stage: test
  interruptible: true
  cancel_grace: 5s
  before_script:
    - export WORKDIR=$(mktemp -d /tmp/usher-demo.XXXXXX)
    - echo "created $WORKDIR"
  script:
    - setsid sleep 3600 < /dev/null > /dev/null 2>&1 &
    - export SERVICE_PID=$!
    - echo "started a pretend database, pid $SERVICE_PID"
    - ./run-tests.sh "$WORKDIR"
  after_script:
    - echo "cleaning up in $(pwd) after a job that ended $CI_JOB_STATUS"
    - kill "$SERVICE_PID" && echo "stopped the pretend database ($SERVICE_PID)"
    - rm -rf "$WORKDIR" && echo "removed $WORKDIR"
lint:
  stage: test
  script:
    - for i in $(seq 1 30); do echo "lint $i"; sleep 1; done
"#;

/// The demo's test script: ten minutes of visible progress.
const RUN_TESTS: &str = "#!/usr/bin/env bash\n# Ten minutes of pretend integration tests, one step a second.\ncd \"$1\"\nfor i in $(seq 1 600); do\n  echo \"testing… step $i of 600\"\n  sleep 1\ndone\n";

const README: &str = "# Usher demo\n\nA repository made by `usher serve --demo`. Its `.usher-ci.yml` starts a pretend\ndatabase, works for ten minutes and cleans up in `after_script`. Cancel the\n`integration` job while it runs and watch the cleanup in its log.\n";

/// Creates the demo repository, project and a first pipeline, unless some project exists.
pub async fn ensure_demo_project(engine: &Engine, data_dir: &Path) -> Result<(), EngineError> {
    let system = Actor {
        user_id: 0,
        name: "demo".into(),
        role: usher_core::roles::Role::Admin,
    };
    if !engine.list_projects(&system).await?.is_empty() {
        return Ok(());
    }
    let repo = std::path::absolute(data_dir.join("demo.git")).map_err(|e| EngineError::Internal(e.to_string()))?;
    create_demo_repository(&repo).map_err(|e| EngineError::Internal(format!("creating the demo repository: {e}")))?;
    let project = engine
        .create_project(
            &system,
            CreateProject {
                name: "demo".into(),
                repository_url: Some(repo.display().to_string()),
                ..Default::default()
            },
        )
        .await?;
    engine
        .create_pipeline_from(
            &system,
            project.id,
            CreatePipeline {
                git_ref: "main".into(),
                ..Default::default()
            },
            usher_engine::Origin::Web,
        )
        .await?;
    Ok(())
}

/// A bare repository at `repo` with one commit on `main` holding the demo's files.
fn create_demo_repository(repo: &Path) -> Result<(), String> {
    if repo.join("HEAD").exists() {
        return Ok(());
    }
    let work = repo.with_extension("work");
    let _ = std::fs::remove_dir_all(&work);
    let git = |cwd: &Path, args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=Usher demo",
                "-c",
                "user.email=demo@usher.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(cwd)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    };
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| std::fs::write(work.join(name), text).map_err(|e| e.to_string());
    write(".usher-ci.yml", DEMO_CONFIG)?;
    write("run-tests.sh", RUN_TESTS)?;
    write("README.md", README)?;
    let parent = repo.parent().ok_or("the demo repository has no parent directory")?;
    git(parent, &["init", "--quiet", "--bare", &repo.display().to_string()])?;
    git(&work, &["init", "--quiet"])?;
    git(&work, &["add", "."])?;
    git(&work, &["update-index", "--chmod=+x", "run-tests.sh"])?;
    git(&work, &["commit", "--quiet", "-m", "Usher demo: a pipeline to cancel"])?;
    git(&work, &["push", "--quiet", &repo.display().to_string(), "HEAD:refs/heads/main"])?;
    std::fs::remove_dir_all(&work).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_is_valid() {
        usher_core::config::parse(super::DEMO_CONFIG).unwrap();
    }
}
