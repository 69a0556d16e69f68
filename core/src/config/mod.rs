//! The CI configuration (GitLab CI YAML, docs/ci-yaml.md): the model, and with the
//! `parser` feature its YAML parser and validation. Errors name the line and the key as
//! the user wrote it.

use serde::{Deserialize, Serialize};

pub const DEFAULT_STAGES: [&str; 3] = ["build", "test", "deploy"];
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
pub const DEFAULT_CANCEL_GRACE_SECS: u64 = 10;
pub const DEFAULT_AFTER_SCRIPT_TIMEOUT_SECS: u64 = 300;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoCancel {
    #[default]
    Conservative,
    Interruptible,
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactsWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CiConfig {
    pub auto_cancel: AutoCancel,
    /// `workflow: auto_cancel: on_job_failure: all`: the first job that fails (and may
    /// not) gracefully cancels the rest of the pipeline.
    pub cancel_on_job_failure: bool,
    /// `workflow: timeout`: how long the pipeline may run before it is cancelled
    /// gracefully.
    pub timeout_secs: Option<u64>,
    pub stages: Vec<String>,
    pub variables: Vec<(String, String)>,
    /// Jobs in file order (hidden `.name` jobs left out).
    pub jobs: Vec<JobConfig>,
    /// Which jobs a pipeline gets (`rules`, `only`, `except`), by job, in `jobs`' order.
    #[cfg(feature = "parser")]
    pub conditions: Vec<JobConditions>,
    /// `workflow: rules:`: whether a pipeline is made at all.
    #[cfg(feature = "parser")]
    pub workflow_rules: Vec<rules::Rule>,
}

/// A job's `rules`, `only` and `except` (see [`rules`]).
#[cfg(feature = "parser")]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobConditions {
    pub rules: Option<Vec<rules::Rule>>,
    pub only: Option<rules::RefFilter>,
    pub except: Option<rules::RefFilter>,
}

/// One job of a configuration (also how the server keeps a job's spec, as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    pub name: String,
    pub stage: String,
    pub needs: Option<Vec<String>>,
    pub variables: Vec<(String, String)>,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    pub timeout_secs: u64,
    pub interruptible: bool,
    pub cancel_grace_secs: u64,
    pub after_script_timeout_secs: u64,
    pub artifacts: Option<ArtifactsConfig>,
    /// Only a runner with every one of these tags may take the job.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The docker executor runs the job in a container of this image (the shell
    /// executor ignores it).
    #[serde(default)]
    pub image: Option<String>,
    /// Containers the docker executor starts before the job, on the job's network.
    #[serde(default)]
    pub services: Vec<Service>,
    /// When it runs once the jobs it waits for have finished.
    #[serde(default)]
    pub when: crate::api::When,
    /// `start_in` of a `when: delayed` job, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_in: Option<u64>,
    /// `parallel`: this copy's index (1-based) and how many copies there are
    /// (`CI_NODE_INDEX`, `CI_NODE_TOTAL`).
    #[serde(default)]
    pub node: Option<(u32, u32)>,
    /// The `needs` that are `optional: true`: dropped when the job they name is not in
    /// the pipeline.
    #[serde(default)]
    pub optional_needs: Vec<String>,
    /// The `needs` that say `artifacts: false`: the job waits for them but gets neither
    /// their artifacts nor their dotenv variables.
    #[serde(default)]
    pub needs_without_artifacts: Vec<String>,
    /// Top-level variables the job does not take (`inherit: variables`).
    #[serde(default)]
    pub without_variables: Vec<String>,
    /// `allow_failure`: a failure that does not fail the pipeline.
    #[serde(default)]
    pub allow_failure: AllowFailure,
    /// `resource_group`: at most one job of the project with this group is running or
    /// canceling at a time (the file's variables expanded).
    #[serde(default)]
    pub resource_group: Option<String>,
    /// `cache:` entries, their keys not expanded yet.
    #[serde(default)]
    pub cache: Vec<CacheConfig>,
    /// `retry`: how often a failed job is tried again by itself, and on which failures.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// `coverage`: the regular expression whose first match in the log is the job's
    /// coverage.
    #[serde(default)]
    pub coverage: Option<String>,
    /// `dependencies`: the earlier jobs whose artifacts it wants (None: all earlier
    /// stages', GitLab's default).
    #[serde(default)]
    pub dependencies: Option<Vec<String>>,
    /// `environment: name`, as written.
    #[serde(default)]
    pub environment: Option<String>,
    /// `environment: on_stop`: the job that stops the environment this job makes (a
    /// graceful cancel runs it once this job has started; see `pipeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    /// `environment: action: stop`: this job stops its environment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stops_environment: bool,
}

impl JobConfig {
    /// Whether the earlier job `name` (of stage `its_stage`) hands this job (of stage
    /// `stage`) its artifacts and dotenv variables, as GitLab decides: the jobs
    /// `dependencies:` names when it is given; else the jobs of `needs:` (but those with
    /// `artifacts: false`); else every job of an earlier stage.
    pub fn takes_from(&self, stage: usize, name: &str, its_stage: usize) -> bool {
        if let Some(dependencies) = &self.dependencies {
            return dependencies.iter().any(|d| d == name);
        }
        match &self.needs {
            Some(needs) => needs.iter().any(|n| n == name) && !self.needs_without_artifacts.iter().any(|n| n == name),
            None => its_stage < stage,
        }
    }
}

/// `allow_failure:` `true` (any failure), `false`, or `exit_codes: [..]` (only those).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowFailure {
    pub any: bool,
    #[serde(default)]
    pub exit_codes: Vec<i32>,
}

impl AllowFailure {
    /// Whether a failure with `exit_code` (None: not an exit of the script) is allowed.
    pub fn allows(&self, exit_code: Option<i32>) -> bool {
        self.any || exit_code.is_some_and(|c| self.exit_codes.contains(&c))
    }
}

/// `retry:` at most `max` (0-2) more attempts, on the failures `when` names (GitLab's
/// names; empty: any failure), or only on these exit codes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    pub max: u32,
    #[serde(default)]
    pub when: Vec<String>,
    #[serde(default)]
    pub exit_codes: Vec<i32>,
}

impl Retry {
    /// Whether a job that failed with `reason` (and `exit_code`) after `attempts`
    /// attempts is tried again by itself.
    pub fn applies(&self, reason: Option<crate::api::FailureReason>, exit_code: Option<i32>, attempts: u32) -> bool {
        use crate::api::FailureReason as F;
        if attempts > self.max {
            return false;
        }
        if !self.exit_codes.is_empty() && !exit_code.is_some_and(|c| self.exit_codes.contains(&c)) {
            return false;
        }
        // GitLab's names for Usher's failure reasons.
        let names: &[&str] = match reason {
            None | Some(F::ScriptFailure) => &["script_failure"],
            Some(F::Timeout) => &["job_execution_timeout", "stuck_or_timeout_failure"],
            Some(F::RunnerLost) => &["runner_system_failure", "stuck_or_timeout_failure"],
            Some(F::RunnerShutdown | F::RunnerSystemFailure) => &["runner_system_failure"],
            Some(F::CheckoutFailed | F::ImagePullFailed) => &["runner_system_failure", "unmet_prerequisites"],
            Some(F::MissingDependency) => &["missing_dependency_failure"],
        };
        self.when.is_empty() || self.when.iter().any(|w| w == "always" || names.contains(&w.as_str()))
    }
}

/// A service container of a job: its image, the host name the job reaches it by, and
/// how it is started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The image, e.g. `postgres:16`.
    pub name: String,
    /// The host name on the job's network (default: from the image, as GitLab does:
    /// `registry.example.com/tools/postgres:16` → `postgres`).
    pub alias: String,
    /// The image's entrypoint replaced (`[""]`: none), as `docker run --entrypoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The image's command replaced: the arguments after the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Its own `variables:` (in a runner's assignment, with the job's variables put in;
    /// the container gets the assignment's `service_variables` first, then these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactsConfig {
    pub paths: Vec<String>,
    pub when: ArtifactsWhen,
    /// `expire_in`: the files are deleted this long after the upload (None: kept).
    #[serde(default)]
    pub expire_in_secs: Option<u64>,
    /// `reports: dotenv:`: files of `KEY=value` lines whose variables later jobs of the
    /// pipeline get (see [`crate::dotenv`]).
    #[serde(default)]
    pub dotenv: Vec<String>,
    /// `exclude:` patterns: files the `paths` take that are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `untracked: true`: every file of the build directory that the commit does not
    /// have (its `.gitignore` notwithstanding, as in GitLab) is kept too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
}

/// Whether a job takes the cache at its start, keeps it at its end, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CachePolicy {
    #[default]
    #[serde(rename = "pull-push")]
    PullPush,
    #[serde(rename = "pull")]
    Pull,
    #[serde(rename = "push")]
    Push,
}

impl CachePolicy {
    pub fn parse(text: &str) -> Option<CachePolicy> {
        match text {
            "pull-push" => Some(CachePolicy::PullPush),
            "pull" => Some(CachePolicy::Pull),
            "push" => Some(CachePolicy::Push),
            _ => None,
        }
    }

    pub fn pulls(self) -> bool {
        self != CachePolicy::Push
    }

    pub fn pushes(self) -> bool {
        self != CachePolicy::Pull
    }
}

/// One `cache:` entry of a job, as written (the key not expanded yet; see
/// `crate::cache`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub key: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub policy: CachePolicy,
    #[serde(default)]
    pub when: ArtifactsWhen,
    /// `untracked: true`: also every file of the build directory the checked-out commit
    /// does not have (as `artifacts: untracked`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
}

/// A configuration that does not parse or validate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Whether `image` is an image reference as docker takes it:
/// `[registry/]path[:tag][@digest]`, no spaces, not starting with `-` (it must never read
/// as a flag). For a job's `image:` and a runner's `--docker-image`.
pub fn is_image_name(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 255
        && !image.starts_with(['-', '.', '/', ':', '@'])
        && image.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

/// The host name GitLab gives a service without an alias: the image's last path part
/// without tag or digest, with characters a host name cannot hold made `-`.
pub fn default_service_alias(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let bare = last.split(['@', ':']).next().unwrap_or(last);
    bare.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// Parses durations like `90s`, `10m`, `1h 30m`, `2h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut saw_unit = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
        } else if c.is_whitespace() || c == ',' {
            continue;
        } else {
            let mut unit = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphabetic() {
                    unit.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            // GitLab's words (ChronicDuration's): `2 hrs`, `1 day and 3 hours`, `1 wk, 2 days`.
            if unit == "and" && number.is_empty() && saw_unit {
                continue;
            }
            let factor = match unit.as_str() {
                "s" | "sec" | "secs" | "second" | "seconds" => 1,
                "m" | "min" | "mins" | "minute" | "minutes" => 60,
                "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
                "d" | "day" | "days" => 86_400,
                "w" | "wk" | "wks" | "week" | "weeks" => 604_800,
                "mo" | "mon" | "mos" | "month" | "months" => 30 * 86_400,
                "y" | "yr" | "yrs" | "year" | "years" => 365 * 86_400,
                _ => return None,
            };
            let n: u64 = number.parse().ok()?;
            number.clear();
            total = total.checked_add(n.checked_mul(factor)?)?;
            saw_unit = true;
        }
    }
    if !number.is_empty() || !saw_unit {
        return None;
    }
    Some(total)
}

#[cfg(feature = "parser")]
pub use parser::{included_paths, parse, parse_for_pipeline, parse_with};

#[cfg(feature = "parser")]
mod conditions;
#[cfg(feature = "parser")]
mod expand;
#[cfg(feature = "parser")]
pub mod expression;
#[cfg(feature = "parser")]
pub mod include;
#[cfg(feature = "parser")]
mod inputs;
#[cfg(feature = "parser")]
mod keywords;
#[cfg(feature = "parser")]
mod keywords_read;
pub mod limits;
#[cfg(feature = "parser")]
mod parser;
#[cfg(feature = "parser")]
mod project_file;
#[cfg(feature = "parser")]
mod raw;
#[cfg(feature = "parser")]
mod refusals;
#[cfg(feature = "parser")]
pub mod rules;
#[cfg(feature = "parser")]
mod validate;
#[cfg(feature = "parser")]
mod yaml;

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("1h 30m"), Some(5400));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("2 hrs"), Some(7200));
        assert_eq!(parse_duration("1 day and 3 hours"), Some(97_200));
        assert_eq!(parse_duration("1 wk, 2 days"), Some(777_600));
        assert_eq!(parse_duration("and 3 hours"), None);
        assert_eq!(parse_duration("3 and hours"), None);
        assert_eq!(parse_duration("10"), Some(10));
        assert_eq!(parse_duration("5 m"), Some(300));
        assert_eq!(parse_duration("m"), None);
    }
}
