//! One job keyword at a time, from its serde shape to Usher's model, with GitLab's
//! meaning and defaults: durations, `inherit`, `$VARIABLE` expansion, artifacts and
//! reports, caches, `allow_failure`, `retry`, `coverage`, images and services; and the GitLab
//! keywords Usher refuses, each with what to do instead.

use super::raw::{Duration, Inherit, RawArtifacts, RawCaches, RawJob, RawService, Variables};
use super::refusals::job_error;
use super::{AllowFailure, ArtifactsConfig, ArtifactsWhen, CacheConfig, CachePolicy, ConfigError, Retry, Service, parse_duration};
use serde_yaml_ng::Value;

/// Seconds of a job's (or the default's) duration key, with a fallback.
pub(super) fn seconds(
    source: &str,
    job: &str,
    key: &str,
    own: Option<Duration>,
    dflt: &Option<Duration>,
    fallback: u64,
) -> Result<u64, ConfigError> {
    let (owner, value) = match (own, dflt) {
        (Some(d), _) => (job, d),
        (None, Some(d)) => ("default", d.clone()),
        (None, None) => return Ok(fallback),
    };
    parse_duration(&value.0).ok_or_else(|| {
        job_error(
            source,
            owner,
            key,
            format!("\"{}\" is not a duration (write 90s, 10m, 1h 30m, or seconds)", value.0),
        )
    })
}

/// Seconds of a `start_in:` (`when: delayed`): a duration of at most a week, as GitLab
/// allows.
pub(super) fn start_in(text: &str) -> Result<u64, String> {
    const WEEK: u64 = 7 * 86_400;
    match parse_duration(text) {
        Some(secs) if secs <= WEEK => Ok(secs),
        Some(_) => Err(format!(
            "`start_in: {text}` is longer than a week, the longest a job may be delayed"
        )),
        None => Err(format!(
            "`start_in: {text}` is not a duration (write 30 seconds, 10 minutes, 1 hour, 1 day)"
        )),
    }
}

/// Refuses the GitLab keywords Usher does not implement (yet), each with what to do.
pub(super) fn refuse_unsupported(source: &str, job: &str, raw: &RawJob) -> Result<(), ConfigError> {
    let present = [
        ("trigger", raw.trigger.is_some()),
        ("release", raw.release.is_some()),
        ("secrets", raw.secrets.is_some()),
        ("id_tokens", raw.id_tokens.is_some()),
        ("hooks", raw.hooks.is_some()),
        ("identity", raw.identity.is_some()),
        ("pages", raw.pages.is_some()),
        ("manual_confirmation", raw.manual_confirmation.is_some()),
        ("dast_configuration", raw.dast_configuration.is_some()),
        ("run", raw.run.is_some()),
    ];
    for (key, is) in present {
        if is {
            let why = super::keywords::instead(key);
            return Err(job_error(
                source,
                job,
                key,
                format!("`{key}` is a GitLab keyword that Usher does not support: {why}"),
            ));
        }
    }
    Ok(())
}

/// The defaults a job takes under `inherit: default: false` or `[..]`.
pub(super) fn defaults_taken(all: &RawJob, inherit: &Option<Inherit>) -> RawJob {
    let t = |key: &str| Inherit::takes(inherit, key);
    RawJob {
        before_script: all.before_script.clone().filter(|_| t("before_script")),
        after_script: all.after_script.clone().filter(|_| t("after_script")),
        timeout: all.timeout.clone().filter(|_| t("timeout")),
        interruptible: all.interruptible.filter(|_| t("interruptible")),
        cancel_grace: all.cancel_grace.clone().filter(|_| t("cancel_grace")),
        after_script_timeout: all.after_script_timeout.clone().filter(|_| t("after_script_timeout")),
        artifacts: all.artifacts.clone().filter(|_| t("artifacts")),
        tags: all.tags.clone().filter(|_| t("tags")),
        image: all.image.clone().filter(|_| t("image")),
        services: all.services.clone().filter(|_| t("services")),
        retry: all.retry.clone().filter(|_| t("retry")),
        variables: all.variables.as_ref().map(|v| Variables(v.0.clone())).filter(|_| t("variables")),
        ..RawJob::default()
    }
}

/// `$NAME` and `${NAME}` in `text` replaced by the YAML variables' values (GitLab
/// expands `tags` and `resource_group` this way); a name the file does not set is
/// refused, since Usher cannot know what GitLab would have put there.
pub(super) fn expand_variables(
    source: &str,
    job: &str,
    key: &str,
    text: &str,
    variables: &[(String, String)],
) -> Result<String, ConfigError> {
    if let Some(name) = crate::variables::names(text)
        .into_iter()
        .find(|n| !variables.iter().any(|(k, _)| k == n))
    {
        return Err(job_error(
            source,
            job,
            key,
            format!("`{key}` uses `${name}`, which this file does not set (Usher expands only the file's own variables here)"),
        ));
    }
    Ok(crate::variables::expand(text, variables, crate::variables::Unset::Empty))
}

pub(super) fn artifacts(source: &str, job: &str, raw: Option<RawArtifacts>) -> Result<Option<ArtifactsConfig>, ConfigError> {
    let Some(a) = raw else { return Ok(None) };
    let exclude = a.exclude.unwrap_or_default();
    for pattern in &exclude {
        crate::path_pattern::PathPattern::parse(pattern)
            .map_err(|why| job_error(source, job, "artifacts", format!("`exclude: {pattern}`: it {why}")))?;
    }
    let expire_in_secs = match &a.expire_in {
        None => None,
        Some(d) if d.0 == "never" => None,
        Some(d) => Some(parse_duration(&d.0).ok_or_else(|| {
            job_error(
                source,
                job,
                "artifacts",
                format!("`expire_in: {}` is not a duration (write 30m, 7d, 1h 30m, or seconds)", d.0),
            )
        })?),
    };
    let mut paths = a.paths;
    let reports = a.reports.unwrap_or_default();
    // Every report kind but dotenv is kept as files of the job.
    for (kind, files) in reports.others {
        let files: Vec<String> = match files {
            Value::String(s) => vec![s],
            Value::Sequence(list) => list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Value::Mapping(_) => Vec::new(),
            _ => {
                return Err(job_error(
                    source,
                    job,
                    "artifacts",
                    format!("`reports: {kind}` must be a path or a list of paths"),
                ));
            }
        };
        for file in files {
            if !paths.contains(&file) {
                paths.push(file);
            }
        }
    }
    Ok(Some(ArtifactsConfig {
        expire_in_secs,
        paths,
        when: a.when,
        dotenv: reports.dotenv.map(|l| l.0).unwrap_or_default(),
        exclude,
        untracked: a.untracked == Some(true),
    }))
}

/// `resource_group: NAME` (the file's variables expanded): 1 to 255 characters, no
/// control characters.
pub(super) fn resource_group(
    source: &str,
    job: &str,
    raw: Option<&Value>,
    variables: &[(String, String)],
) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = |why: &str| job_error(source, job, "resource_group", format!("`resource_group` {why}"));
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad("is a name")),
    };
    let name = expand_variables(source, job, "resource_group", &text, variables)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(bad("is a name of 1 to 255 characters without control characters"));
    }
    Ok(Some(name.to_string()))
}

/// `cache:` entries: `key` (a string, or `files:` with an optional `prefix`, whose key
/// is the prefix and the files' names: Usher does not hash their contents), `paths`,
/// `policy`, `when` and `untracked`; `fallback_keys` and `unprotect` are read.
pub(super) fn caches(source: &str, job: &str, raw: Option<RawCaches>) -> Result<Vec<CacheConfig>, ConfigError> {
    let bad = |why: String| job_error(source, job, "cache", why);
    let list = match raw {
        None => return Ok(Vec::new()),
        Some(RawCaches::One(one)) => vec![one],
        Some(RawCaches::Many(many)) => many,
    };
    let mut out = Vec::new();
    for c in list {
        let key = match &c.key {
            None | Some(Value::Null) => "default".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Mapping(m)) => {
                let files = m
                    .get("files")
                    .and_then(|f| f.as_sequence())
                    .map(|f| f.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","))
                    .ok_or_else(|| bad("`cache: key:` is a string, or a map with `files:` (and `prefix:`)".into()))?;
                match m.get("prefix").and_then(|p| p.as_str()) {
                    Some(prefix) => format!("{prefix}-{files}"),
                    None => files,
                }
            }
            Some(_) => return Err(bad("`cache: key:` is a string, or a map with `files:`".into())),
        };
        let policy = match c.policy.as_deref() {
            None => CachePolicy::default(),
            Some(text) => {
                CachePolicy::parse(text).ok_or_else(|| bad(format!("`cache: policy: {text}` is not one of pull, push, pull-push")))?
            }
        };
        let when = match c.when.as_deref() {
            None | Some("on_success") => ArtifactsWhen::OnSuccess,
            Some("on_failure") => ArtifactsWhen::OnFailure,
            Some("always") => ArtifactsWhen::Always,
            Some(text) => return Err(bad(format!("`cache: when: {text}` is not one of on_success, on_failure, always"))),
        };
        out.push(CacheConfig {
            key,
            paths: c.paths.unwrap_or_default(),
            policy,
            when,
            untracked: c.untracked == Some(true),
        });
    }
    Ok(out)
}

pub(super) fn allow_failure(source: &str, job: &str, raw: Option<&Value>) -> Result<AllowFailure, ConfigError> {
    let bad = || {
        job_error(
            source,
            job,
            "allow_failure",
            "`allow_failure` must be true, false, or `exit_codes: [..]`".into(),
        )
    };
    Ok(match raw {
        None => AllowFailure::default(),
        Some(Value::Bool(any)) => AllowFailure {
            any: *any,
            exit_codes: Vec::new(),
        },
        Some(Value::Mapping(m)) if m.len() == 1 => AllowFailure {
            any: false,
            exit_codes: exit_codes(m.get("exit_codes")).ok_or_else(bad)?,
        },
        Some(_) => return Err(bad()),
    })
}

/// `exit_codes: 1` or `exit_codes: [1, 137]`.
pub(super) fn exit_codes(value: Option<&Value>) -> Option<Vec<i32>> {
    match value? {
        Value::Number(n) => Some(vec![n.as_i64()? as i32]),
        Value::Sequence(list) => list.iter().map(|v| v.as_i64().map(|c| c as i32)).collect(),
        _ => None,
    }
}

/// GitLab's `retry: when:` failure names.
pub(super) const RETRY_WHEN: &[&str] = &[
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
];

pub(super) fn retry(source: &str, job: &str, raw: Option<&Value>) -> Result<Option<Retry>, ConfigError> {
    let bad = |why: &str| job_error(source, job, "retry", format!("`retry` {why}"));
    let max_of = |v: &Value| v.as_u64().filter(|m| *m <= 2).map(|m| m as u32);
    Ok(match raw {
        None => None,
        Some(Value::Number(_)) => Some(Retry {
            max: max_of(raw.unwrap()).ok_or_else(|| bad("must be 0, 1 or 2"))?,
            ..Retry::default()
        }),
        Some(Value::Mapping(m)) => {
            let max = m
                .get("max")
                .map(|v| max_of(v).ok_or_else(|| bad("`max` must be 0, 1 or 2")))
                .transpose()?
                .unwrap_or(0);
            let when: Vec<String> = match m.get("when") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Sequence(l)) => l.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                Some(_) => return Err(bad("`when` must be a failure name or a list of them")),
            };
            if let Some(w) = when.iter().find(|w| !RETRY_WHEN.contains(&w.as_str())) {
                return Err(bad(&format!("`when: {w}` is not a failure GitLab names")));
            }
            let exit_codes = match m.get("exit_codes") {
                None => Vec::new(),
                v => exit_codes(v).ok_or_else(|| bad("`exit_codes` must be a number or a list of numbers"))?,
            };
            Some(Retry { max, when, exit_codes })
        }
        Some(_) => return Err(bad("must be 0, 1, 2, or a map with `max` and `when`")),
    })
}

/// `coverage: '/Total: (\d+\.\d+)%/'`: a regular expression between slashes.
pub(super) fn coverage(source: &str, job: &str, raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(text) = raw else { return Ok(None) };
    let pattern = text.strip_prefix('/').and_then(|t| t.strip_suffix('/')).ok_or_else(|| {
        job_error(
            source,
            job,
            "coverage",
            "`coverage` is a regular expression between slashes, e.g. /Total: (\\d+)%/".into(),
        )
    })?;
    regex::Regex::new(pattern).map_err(|e| job_error(source, job, "coverage", format!("`coverage` is not a regular expression: {e}")))?;
    Ok(Some(pattern.to_string()))
}

/// An `image` or a service's name with the file's variables put in; a name the file does
/// not set is kept as written, for the job's own variables (its project's, Usher's) to
/// set when it is assigned, as GitLab expands them when a job runs.
pub(super) fn expand_image(image: &str, variables: &[(String, String)]) -> String {
    crate::variables::expand(image, variables, crate::variables::Unset::Kept)
}

/// The job's image, checked to be an image name ([`super::is_image_name`]) whatever the
/// names still in it are set to (an image name's characters stand for them here: the
/// engine checks the name again once they are set).
pub(super) fn container_image(source: &str, job: &str, image: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(image) = image else { return Ok(None) };
    let placeholders: Vec<(String, String)> = crate::variables::names(&image)
        .into_iter()
        .map(|n| (n.to_string(), "x".to_string()))
        .collect();
    if !super::is_image_name(&crate::variables::expand(&image, &placeholders, crate::variables::Unset::Empty)) {
        return Err(job_error(
            source,
            job,
            "image",
            format!("`image: {image}` is not an image name (e.g. alpine:3.20)"),
        ));
    }
    Ok(Some(image))
}

/// The most services a job may have: each is a container the runner starts.
pub(super) const MAX_SERVICES: usize = 32;

pub(super) fn services(source: &str, job: &str, raw: Vec<RawService>, variables: &[(String, String)]) -> Result<Vec<Service>, ConfigError> {
    if raw.len() > MAX_SERVICES {
        return Err(job_error(
            source,
            job,
            "services",
            format!("a job may have at most {MAX_SERVICES} services, not {}", raw.len()),
        ));
    }
    let mut out: Vec<Service> = Vec::new();
    for service in raw {
        let (name, alias, entrypoint, command, own_variables) = match service {
            RawService::Image(name) => (name, None, None, None, Vec::new()),
            RawService::Full(m) => {
                let own = m.variables.map(|v| v.0).unwrap_or_default();
                if let Some((bad, _)) = own.iter().find(|(k, _)| !crate::variables::is_name(k)) {
                    return Err(job_error(
                        source,
                        job,
                        "services",
                        format!("service variable `{bad}` is not a variable name (letters, digits and `_`)"),
                    ));
                }
                (m.name, m.alias, m.entrypoint, m.command, own)
            }
        };
        let name = expand_image(&name, variables);
        let name = container_image(source, job, Some(name))?.unwrap_or_default();
        // A name the job's variables complete gets its alias when it is assigned (its
        // default alias depends on them).
        let deferred = alias.is_none() && name.rsplit('/').next().is_some_and(|last| last.contains('$'));
        let alias = alias.unwrap_or_else(|| {
            if deferred {
                String::new()
            } else {
                super::default_service_alias(&name)
            }
        });
        let valid_alias = deferred
            || !alias.is_empty()
                && alias.len() <= 63
                && !alias.starts_with('-')
                && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_alias {
            return Err(job_error(
                source,
                job,
                "services",
                format!("service alias `{alias}` is not a host name (letters, digits and `-`)"),
            ));
        }
        if !deferred && out.iter().any(|s| s.alias == alias) {
            return Err(job_error(source, job, "services", format!("two services have the alias `{alias}`")));
        }
        out.push(Service {
            name,
            alias,
            // `entrypoint: []` is no change, as in GitLab.
            entrypoint: entrypoint.filter(|e| !e.is_empty()),
            command,
            variables: own_variables,
        });
    }
    Ok(out)
}
