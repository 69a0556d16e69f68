//! The demo project of `usher serve --demo`: a pipeline whose job starts real
//! resources (a background "service" process and a temp dir), works for a while, and
//! tears them down in after_script — the thing to cancel to see Usher's point.

use usher_core::api::{CreatePipeline, CreateProject};
use usher_engine::{Actor, Engine, EngineError};

pub const DEMO_CONFIG: &str = r#"# Usher demo: cancel `integration` while it runs and watch after_script clean up.
stages: [build, test]
variables:
  GREETING: hello
build:
  stage: build
  script:
    - echo "$GREETING from $CI_JOB_NAME"
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
    - cd "$WORKDIR"
    - for i in $(seq 1 120); do echo "testing… step $i"; sleep 1; done
  after_script:
    - echo "cleaning up in $(pwd) after a job that ended $CI_JOB_STATUS"
    - kill "$SERVICE_PID" && echo "stopped the pretend database ($SERVICE_PID)"
    - rm -rf "$WORKDIR" && echo "removed $WORKDIR"
lint:
  stage: test
  script:
    - for i in $(seq 1 30); do echo "lint $i"; sleep 1; done
"#;

/// Creates the demo project and a first pipeline, unless some project exists.
pub async fn ensure_demo_project(engine: &Engine) -> Result<(), EngineError> {
    let system = Actor {
        user_id: 0,
        name: "demo".into(),
        role: usher_core::roles::Role::Admin,
    };
    if !engine.list_projects(&system).await?.is_empty() {
        return Ok(());
    }
    let project = engine
        .create_project(
            &system,
            CreateProject {
                name: "demo".into(),
                ci_config: DEMO_CONFIG.into(),
            },
        )
        .await?;
    engine
        .create_pipeline(
            &system,
            project.id,
            CreatePipeline {
                git_ref: "main".into(),
                ci_config: None,
            },
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_is_valid() {
        usher_core::config::parse(super::DEMO_CONFIG).unwrap();
    }
}
