//! GitLab's CI keywords as Usher's refusals name them: which words are GitLab's (so a
//! refusal can say "Usher does not support it" rather than "a typo?"), what to do
//! instead of each one Usher does not implement, and the shape each keyword takes.

/// Every keyword a GitLab job may have.
const GITLAB_JOB_KEYWORDS: &[&str] = &[
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dast_configuration",
    "dependencies",
    "environment",
    "except",
    "extends",
    "hooks",
    "id_tokens",
    "identity",
    "image",
    "inherit",
    "interruptible",
    "manual_confirmation",
    "needs",
    "only",
    "pages",
    "parallel",
    "release",
    "resource_group",
    "retry",
    "rules",
    "run",
    "script",
    "secrets",
    "services",
    "stage",
    "start_in",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
];

pub(super) fn gitlab_job_keyword(key: &str) -> bool {
    GITLAB_JOB_KEYWORDS.contains(&key)
}

/// What to do instead of a GitLab keyword Usher does not implement.
pub(super) fn instead(key: &str) -> &'static str {
    match key {
        "trigger" => {
            "Usher has no downstream pipelines; start the other project's pipeline from a job with \
             `POST /api/v1/projects/{id}/pipelines`"
        }
        "release" => "create the release from the job's script (e.g. with the forge's CLI)",
        "secrets" | "id_tokens" | "identity" => "give the job its secrets as masked project variables",
        "pages" => "publish the site from the job's script; `pages` is GitLab Pages' own",
        "hooks" => "put the commands at the start of `before_script`",
        "dast_configuration" => "it configures GitLab's DAST scanner, which Usher does not have",
        "manual_confirmation" => "a confirmation message for manual jobs is not supported yet",
        "run" => "write the steps as `script` lines",
        _ => "see docs/ci-yaml.md for what Usher reads",
    }
}

/// The shape `key` takes, for a refusal of a value of the wrong shape.
pub(super) fn shape_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "script" | "before_script" | "after_script" => "a command or a list of commands",
        "stage" | "coverage" | "start_in" | "timeout" | "cancel_grace" | "after_script_timeout" => "a string",
        "tags" | "dependencies" => "a list of names",
        "needs" => "a list of job names (or `{job: name}` maps)",
        "variables" => "a map of names to values",
        "image" => "an image name, or a map with `name`",
        "services" => "a list of image names (or maps with `name` and `alias`)",
        "artifacts" => "a map (`paths`, `when`, `expire_in`, `reports` …)",
        "cache" => "a map (`key`, `paths`, `policy` …) or a list of them",
        "environment" => "a name, or a map with `name`",
        "interruptible" => "true or false",
        "allow_failure" => "true, false, or `exit_codes: [..]`",
        "retry" => "a number from 0 to 2, or a map with `max` and `when`",
        "when" => "on_success, on_failure, always or on_cancel",
        "rules" => "a list of rules (`- if: …`)",
        "only" | "except" => "a list of refs, or a map with `refs` and `variables`",
        "inherit" => "a map with `default` and/or `variables`",
        "extends" => "a name or a list of names",
        "parallel" => "a number or `matrix:`",
        _ => return None,
    })
}
