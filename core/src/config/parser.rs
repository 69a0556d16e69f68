//! The YAML parser and validation of the CI configuration (the `parser` feature: the
//! server needs it, the browser does not). Errors name the line and key.

use super::expand::{Expanded, Refusal, expand};
use super::expression::Expression;
use super::raw::{Duration, Inherit, Lines, RawArtifacts, RawEnvironment, RawImage, RawJob, RawNeed, RawService, RawWorkflow, Variables};
use super::rules::{RefFilter, Rule, RuleWhen};
use super::{
    AllowFailure, ArtifactsConfig, AutoCancel, CiConfig, ConfigError, DEFAULT_AFTER_SCRIPT_TIMEOUT_SECS, DEFAULT_CANCEL_GRACE_SECS,
    DEFAULT_STAGES, DEFAULT_TIMEOUT_SECS, JobConditions, JobConfig, Retry, Service, limits, parse_duration,
};
use crate::api::When;
use serde_yaml_ng::{Mapping, Value};
use std::collections::{HashMap, HashSet};

/// The line (1-based) where `key:` first starts a line at `indent` spaces, if any.
fn line_of_key(source: &str, key: &str, indent: usize) -> Option<usize> {
    source
        .lines()
        .position(|l| {
            let trimmed = l.trim_start_matches(' ');
            l.len() - trimmed.len() == indent
                && (trimmed.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with(':'))
                    || trimmed
                        .strip_prefix(&format!("\"{key}\""))
                        .or_else(|| trimmed.strip_prefix(&format!("'{key}'")))
                        .is_some_and(|rest| rest.trim_start().starts_with(':')))
        })
        .map(|i| i + 1)
}

/// `CI` and `CI_*` are Usher's: a configuration that sets one is refused at that line.
fn refuse_reserved(source: &str, owner: &str, indent: usize, variables: &[(String, String)]) -> Result<(), ConfigError> {
    let Some((name, _)) = variables.iter().find(|(k, _)| limits::is_set_by_usher(k)) else {
        return Ok(());
    };
    let block = line_of_key(source, owner, indent);
    let line = block.and_then(|b| line_of_field(source, b, name)).or(block);
    let key = if owner == "variables" {
        format!("variables.{name}")
    } else {
        format!("{owner}.variables.{name}")
    };
    Err(ConfigError {
        line,
        key: Some(key),
        message: format!("`{name}` is set by Usher for every job; a CI file cannot set it"),
    })
}

fn job_error(source: &str, job: &str, key: &str, message: String) -> ConfigError {
    ConfigError {
        line: line_of_key(source, job, 0).map(|l| line_of_field(source, l, key).unwrap_or(l)),
        key: Some(format!("{job}.{key}")),
        message,
    }
}

/// The line of `field:` inside the block that starts at line `block` (1-based).
fn line_of_field(source: &str, block: usize, field: &str) -> Option<usize> {
    source
        .lines()
        .enumerate()
        .skip(block)
        .take_while(|(_, l)| l.is_empty() || l.starts_with([' ', '\t', '#']))
        .find(|(_, l)| {
            l.trim_start()
                .strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|(i, _)| i + 1)
}

/// Seconds of a job's (or the default's) duration key, with a fallback.
fn seconds(source: &str, job: &str, key: &str, own: Option<Duration>, dflt: &Option<Duration>, fallback: u64) -> Result<u64, ConfigError> {
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

/// The top-level keywords and the jobs, each read as its serde shape.
struct RawConfig {
    workflow: Option<RawWorkflow>,
    stages: Option<Vec<String>>,
    variables: Option<Variables>,
    default: Option<RawJob>,
    jobs: Vec<(ExpandedName, RawJob)>,
}

/// A job's name, and the name it has in the file (which `parallel` copies share).
struct ExpandedName {
    name: String,
    written_as: String,
    node: Option<(u32, u32)>,
}

/// A YAML syntax error, at its line.
fn syntax_error(source: &str, e: serde_yaml_ng::Error) -> ConfigError {
    let line = e.location().map(|l| l.line());
    let mut message = e.to_string();
    // serde_yaml_ng appends " at line L column C"; the line is reported separately.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let top = line.and_then(|l| {
        source.lines().take(l).collect::<Vec<_>>().into_iter().rev().find_map(|text| {
            let starts_key = !text.starts_with([' ', '\t', '#', '-']) && text.contains(':');
            starts_key.then(|| text.trim_end().trim_end_matches(':').trim().to_string())
        })
    });
    ConfigError {
        line,
        key: top,
        message: format!("this is not valid YAML: {message}"),
    }
}

/// A refusal of `expand`'s, at the line of the key it names.
fn refusal_error(source: &str, r: Refusal) -> ConfigError {
    let (owner, field) = split_key(source, &r.key);
    ConfigError {
        line: line_of_key(source, owner, 0).map(|l| field.and_then(|f| line_of_field(source, l, f)).unwrap_or(l)),
        key: (!r.key.is_empty()).then_some(r.key),
        message: r.message,
    }
}

/// `owner.field` split where the owner is a top-level key of `source` (a job's name may
/// hold dots and colons: `build:linux.coverage`).
fn split_key<'k>(source: &str, key: &'k str) -> (&'k str, Option<&'k str>) {
    let mut at = key.len();
    loop {
        let owner = &key[..at];
        if line_of_key(source, owner, 0).is_some() || at == 0 {
            let field = key.get(at + 1..).filter(|f| !f.is_empty());
            return (owner, field.map(|f| f.split('.').next().unwrap_or(f)));
        }
        at = key[..at].rfind('.').unwrap_or(0);
    }
}

/// `keys` read as `T`; a key that does not read is named, with GitLab's words.
fn read_keys<T: serde::de::DeserializeOwned>(source: &str, owner: &str, keys: &Mapping) -> Result<T, ConfigError> {
    match serde_yaml_ng::from_value(Value::Mapping(keys.clone())) {
        Ok(read) => Ok(read),
        Err(whole) => {
            // Find the key at fault: the first that does not read on its own.
            for (key, value) in keys {
                let mut alone = Mapping::new();
                alone.insert(key.clone(), value.clone());
                if let Err(e) = serde_yaml_ng::from_value::<T>(Value::Mapping(alone)) {
                    let key = key.as_str().unwrap_or("?");
                    if e.to_string().starts_with("missing field") {
                        continue;
                    }
                    return Err(job_error(source, owner, key, keyword_message(owner, key, value, &e.to_string())));
                }
            }
            Err(ConfigError {
                line: line_of_key(source, owner, 0),
                key: Some(owner.to_string()),
                message: whole.to_string(),
            })
        }
    }
}

/// What to tell the user about `key` of `owner` that did not read (`serde_says`).
fn keyword_message(owner: &str, key: &str, value: &Value, serde_says: &str) -> String {
    // The name serde's message is about: `key` itself, or a key inside its value.
    let named = serde_says.split('`').nth(1).unwrap_or(key);
    if serde_says.starts_with("unknown field") {
        if named != key {
            return format!("`{key}: {named}` is not a keyword of `{key}` (see docs/ci-yaml.md)");
        }
        return match super::keywords::gitlab_job_keyword(key) {
            true => format!(
                "`{key}` is a GitLab keyword that Usher does not support: {}",
                super::keywords::instead(key)
            ),
            false => format!("`{key}` is not a keyword of a job (a typo? see docs/ci-yaml.md for the keywords Usher reads)"),
        };
    }
    if let Some(rest) = serde_says.strip_prefix("unknown variant `") {
        let (word, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", expected one of ").trim_start_matches(", expected ");
        return format!("`{word}` is not one of {} (in `{key}`)", expected.replace('`', ""));
    }
    let shape = match value {
        Value::Null => "empty",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    };
    match super::keywords::shape_of(key) {
        // The value has the right shape: what is wrong is inside it.
        Some(wanted) if !(matches!(value, Value::Mapping(_)) && wanted.contains("map")) => {
            format!("`{key}` must be {wanted}, not {shape}")
        }
        _ => format!("`{key}` of `{owner}` has a value of the wrong shape (see docs/ci-yaml.md)"),
    }
}

/// Reads the expanded file's keywords and jobs.
fn read_config(source: &str, expanded: Expanded) -> Result<RawConfig, ConfigError> {
    let top = |key: &str| expanded.top.get(key).cloned();
    let read_top = |key: &str| -> Result<Option<Value>, ConfigError> { Ok(top(key)) };
    let mut config = RawConfig {
        workflow: None,
        stages: None,
        variables: None,
        default: None,
        jobs: Vec::new(),
    };
    if let Some(v) = read_top("include")? {
        let _ = v;
        return Err(job_error(
            source,
            "include",
            "",
            "`include` is not supported yet: put the included jobs in this file (Usher reads one file per project)".into(),
        ));
    }
    if let Some(Value::Mapping(workflow)) = top("workflow") {
        config.workflow = Some(read_keys(source, "workflow", &workflow)?);
    } else if top("workflow").is_some() {
        return Err(job_error(
            source,
            "workflow",
            "",
            "`workflow` must be a map (`rules:`, `auto_cancel:`)".into(),
        ));
    }
    if let Some(stages) = top("stages") {
        config.stages = Some(
            serde_yaml_ng::from_value(stages)
                .map_err(|_| job_error(source, "stages", "", "`stages` must be a list of stage names".into()))?,
        );
    }
    if let Some(variables) = top("variables") {
        config.variables = Some(serde_yaml_ng::from_value(variables).map_err(|e| {
            job_error(
                source,
                "variables",
                "",
                format!("`variables` must be a map of names to values: {e}"),
            )
        })?);
    }
    match top("default") {
        None => {}
        Some(Value::Mapping(default)) => {
            for key in ["stage", "needs", "when", "extends", "rules", "only", "except", "parallel"] {
                if default.contains_key(key) {
                    return Err(job_error(
                        source,
                        "default",
                        key,
                        format!("`{key}` cannot be set in `default:`; set it on each job"),
                    ));
                }
            }
            config.default = Some(read_keys(source, "default", &default)?);
        }
        Some(_) => return Err(job_error(source, "default", "", "`default` must be a map of keywords".into())),
    }
    for job in expanded.jobs {
        let raw: RawJob = read_keys(source, &job.written_as, &job.keys)?;
        config.jobs.push((
            ExpandedName {
                name: job.name,
                written_as: job.written_as,
                node: job.node,
            },
            raw,
        ));
    }
    Ok(config)
}

/// Parses and validates a CI configuration that stands alone (an `include:` of it is
/// refused: there is no repository to read from).
pub fn parse(source: &str) -> Result<CiConfig, ConfigError> {
    parse_with(source, &|_| None)
}

/// The local paths a CI file's `include:` names (of it alone, not of what it includes;
/// none if it does not read), so that the caller can fetch them for [`parse_with`].
pub fn included_paths(source: &str) -> Vec<String> {
    super::yaml::parse(source)
        .ok()
        .and_then(|doc| super::include::local_paths(&doc).ok())
        .unwrap_or_default()
}

/// Parses and validates a CI configuration whose `include: local` files `file` gives
/// (by repository path, without a leading `/`; None: not in the repository).
pub fn parse_with(source: &str, file: &dyn Fn(&str) -> Option<String>) -> Result<CiConfig, ConfigError> {
    limits::check_shape(source)?;
    let mut doc: Value = super::yaml::parse(source).map_err(|e| syntax_error(source, e))?;
    // Before anything that the included files might define.
    if doc.get("include").is_some() {
        let read = |path: &str| {
            file(path).map(|text| {
                limits::check_shape(&text).map_err(|e| e.to_string())?;
                super::yaml::parse(&text).map_err(|e| format!("this is not valid YAML: {e}"))
            })
        };
        doc = super::include::merged(doc, &read).map_err(|e| {
            refusal_error(
                source,
                Refusal {
                    key: e.key,
                    message: e.message,
                },
            )
        })?;
    }
    let expanded = expand(doc).map_err(|r| refusal_error(source, r))?;
    let raw = read_config(source, expanded)?;

    let workflow = raw.workflow.unwrap_or_default();
    let workflow_rules = match &workflow.rules {
        None => Vec::new(),
        Some(v) => read_rules(source, "workflow", v)?,
    };
    let auto_cancel = match workflow.auto_cancel {
        None => AutoCancel::default(),
        Some(a) => {
            if a.on_job_failure.as_deref().is_some_and(|f| f != "none") {
                return Err(job_error(
                    source,
                    "workflow",
                    "auto_cancel",
                    "`on_job_failure: all` is not supported yet: the rest of a pipeline runs to its end when a job fails".into(),
                ));
            }
            a.on_new_commit.unwrap_or_default()
        }
    };
    let mut stages = raw.stages.unwrap_or_else(|| DEFAULT_STAGES.iter().map(|s| s.to_string()).collect());
    let variables = raw.variables.map(|v| v.0).unwrap_or_default();
    let default = raw.default.unwrap_or_default();
    refuse_reserved(source, "variables", 0, &variables)?;
    if let Some(v) = &default.variables {
        refuse_reserved(source, "default", 0, &v.0)?;
    }
    for (name, job) in &raw.jobs {
        if let Some(v) = &job.variables {
            refuse_reserved(source, &name.written_as, 0, &v.0)?;
        }
    }
    // GitLab's `.pre` and `.post` stages are always first and last.
    let uses = |stage: &str| raw.jobs.iter().any(|(_, j)| j.stage.as_deref() == Some(stage));
    if uses(".pre") && !stages.iter().any(|s| s == ".pre") {
        stages.insert(0, ".pre".into());
    }
    if uses(".post") && !stages.iter().any(|s| s == ".post") {
        stages.push(".post".into());
    }

    let mut jobs = Vec::new();
    let mut conditions = Vec::new();
    let names: HashSet<String> = raw.jobs.iter().map(|(n, _)| n.name.clone()).collect();
    for (named, job) in raw.jobs {
        let ExpandedName { name, written_as, node } = named;
        let at = written_as.as_str();
        refuse_unsupported(source, at, &job)?;
        if job.rules.is_some() && (job.only.is_some() || job.except.is_some()) {
            return Err(job_error(
                source,
                at,
                "rules",
                "`rules` cannot be used with `only` or `except` (GitLab's rule)".into(),
            ));
        }
        conditions.push(JobConditions {
            rules: job.rules.as_ref().map(|v| read_rules(source, at, v)).transpose()?,
            only: job.only.as_ref().map(|v| read_ref_filter(source, at, "only", v)).transpose()?,
            except: job.except.as_ref().map(|v| read_ref_filter(source, at, "except", v)).transpose()?,
        });
        let inherit = job.inherit.clone().unwrap_or_default();
        let taken;
        let default = match &inherit.default {
            None => &default,
            Some(_) => {
                taken = defaults_taken(&default, &inherit.default);
                &taken
            }
        };
        let stage = job.stage.clone().unwrap_or_else(|| "test".to_string());
        if !stages.contains(&stage) {
            return Err(job_error(
                source,
                at,
                "stage",
                format!("job `{name}` uses stage `{stage}`, which is not in stages {stages:?}"),
            ));
        }
        let script = match job.script {
            Some(Lines(lines)) if !lines.is_empty() => lines,
            _ => {
                return Err(job_error(source, at, "script", format!("job `{name}` has no `script`")));
            }
        };
        let pick_lines = |own: Option<Lines>, dflt: &Option<Lines>| -> Vec<String> {
            own.map(|l| l.0).or_else(|| dflt.as_ref().map(|l| l.0.clone())).unwrap_or_default()
        };
        // Top-level variables are the pipeline's; `inherit: variables` limits them.
        let mut job_vars: Vec<(String, String)> = Vec::new();
        let without_variables: Vec<String> = variables
            .iter()
            .filter(|(k, _)| !Inherit::takes(&inherit.variables, k))
            .map(|(k, _)| k.clone())
            .collect();
        for (k, v) in default.variables.as_ref().map(|v| v.0.clone()).unwrap_or_default() {
            job_vars.retain(|(existing, _)| *existing != k);
            job_vars.push((k, v));
        }
        for (k, v) in job.variables.map(|v| v.0).unwrap_or_default() {
            job_vars.retain(|(existing, _)| *existing != k);
            job_vars.push((k, v));
        }
        let artifacts = artifacts(source, at, job.artifacts.or_else(|| default.artifacts.clone()))?;
        let when = match job.when.as_deref() {
            None => When::default(),
            Some(text) => When::parse(text).ok_or_else(|| {
                let message = match text {
                    "manual" | "delayed" => format!("`when: {text}` is not supported yet: the job would run at once"),
                    "never" => "`when: never` belongs in `rules:`".to_string(),
                    _ => format!("`when: {text}` is not one of on_success, on_failure, always, on_cancel"),
                };
                job_error(source, at, "when", message)
            })?,
        };
        let mut needs = Vec::new();
        let mut optional_needs = Vec::new();
        for need in job.needs.clone().unwrap_or_default() {
            match need {
                RawNeed::Name(n) => needs.push(n),
                RawNeed::Full(m) => {
                    if m.project.is_some() || m.pipeline.is_some() {
                        return Err(job_error(
                            source,
                            at,
                            "needs",
                            "`needs` from another project or pipeline is not supported".into(),
                        ));
                    }
                    let Some(n) = m.job else {
                        return Err(job_error(source, at, "needs", "each `needs:` map names a `job`".into()));
                    };
                    // An optional need on a job this pipeline does not have is dropped.
                    if m.optional == Some(true) {
                        if !names.contains(&n) {
                            continue;
                        }
                        optional_needs.push(n.clone());
                    }
                    needs.push(n);
                }
            }
        }
        let mut yaml_vars = variables.clone();
        yaml_vars.extend(job_vars.iter().cloned());
        let image = match job.image.clone().or_else(|| default.image.clone()) {
            None => None,
            Some(RawImage::Name(n)) => Some(n),
            Some(RawImage::Full(m)) => {
                // Usher runs a job's scripts with the image's shell whatever the image's
                // entrypoint: what `entrypoint: [""]` or a shell's `-c` asks for.
                let shell_only = m.entrypoint.as_ref().is_none_or(|e| {
                    e.iter().all(String::is_empty)
                        || matches!(
                            e.iter().map(String::as_str).collect::<Vec<_>>()[..],
                            [
                                "sh" | "/bin/sh" | "bash" | "/bin/bash" | "/usr/bin/env sh" | "/usr/bin/env bash",
                                "-c"
                            ]
                        )
                });
                if !shell_only {
                    return Err(job_error(
                        source,
                        at,
                        "image",
                        "`image: entrypoint` is not supported (Usher runs the script with the image's shell, as `entrypoint: [\"\"]` does)"
                            .into(),
                    ));
                }
                Some(m.name)
            }
        };
        let image = image.map(|i| expand_variables(source, at, "image", &i, &yaml_vars)).transpose()?;
        let tags = job
            .tags
            .clone()
            .or_else(|| default.tags.clone())
            .unwrap_or_default()
            .iter()
            .map(|t| expand_variables(source, at, "tags", t, &yaml_vars))
            .collect::<Result<Vec<_>, _>>()?;
        jobs.push(JobConfig {
            before_script: pick_lines(job.before_script, &default.before_script),
            after_script: pick_lines(job.after_script, &default.after_script),
            script,
            stage,
            needs: job.needs.is_some().then_some(needs),
            variables: job_vars,
            timeout_secs: seconds(source, at, "timeout", job.timeout, &default.timeout, DEFAULT_TIMEOUT_SECS)?,
            interruptible: job.interruptible.or(default.interruptible).unwrap_or(false),
            cancel_grace_secs: seconds(
                source,
                at,
                "cancel_grace",
                job.cancel_grace,
                &default.cancel_grace,
                DEFAULT_CANCEL_GRACE_SECS,
            )?,
            after_script_timeout_secs: seconds(
                source,
                at,
                "after_script_timeout",
                job.after_script_timeout,
                &default.after_script_timeout,
                DEFAULT_AFTER_SCRIPT_TIMEOUT_SECS,
            )?,
            artifacts,
            tags,
            image: container_image(source, at, image)?,
            services: services(
                source,
                at,
                job.services.clone().or_else(|| default.services.clone()).unwrap_or_default(),
                &yaml_vars,
            )?,
            when,
            node,
            optional_needs,
            without_variables,
            allow_failure: allow_failure(source, at, job.allow_failure.as_ref())?,
            retry: retry(source, at, job.retry.as_ref().or(default.retry.as_ref()))?,
            coverage: coverage(source, at, job.coverage.clone())?,
            dependencies: job.dependencies.clone(),
            environment: job.environment.clone().map(|e| match e {
                RawEnvironment::Name(n) => n,
                RawEnvironment::Full(m) => m.name,
            }),
            name,
        });
    }
    if jobs.is_empty() {
        return Err(ConfigError {
            line: None,
            key: None,
            message: "the configuration defines no jobs".into(),
        });
    }
    validate_needs(source, &stages, &jobs)?;
    validate_dependencies(source, &stages, &jobs)?;
    Ok(CiConfig {
        auto_cancel,
        stages,
        variables,
        jobs,
        conditions,
        workflow_rules,
    })
}

/// `rules:` of a job (or of `workflow`): each entry's `if`, `changes`, `exists`,
/// `when`, `allow_failure`, `variables`.
fn read_rules(source: &str, owner: &str, value: &Value) -> Result<Vec<Rule>, ConfigError> {
    let bad = |why: String| job_error(source, owner, "rules", why);
    let Value::Sequence(entries) = value else {
        return Err(bad("`rules` must be a list of rules (`- if: …`)".into()));
    };
    let mut rules = Vec::new();
    for entry in entries {
        let Value::Mapping(entry) = entry else {
            return Err(bad("each rule must be a map (`if`, `changes`, `exists`, `when` …)".into()));
        };
        let mut rule = Rule {
            condition: None,
            exists: Vec::new(),
            when: RuleWhen::AsTheJob,
            allow_failure: None,
            variables: Vec::new(),
        };
        for (key, value) in entry {
            let key = key.as_str().unwrap_or_default();
            match key {
                "if" => {
                    let text = value.as_str().ok_or_else(|| bad("`if` must be an expression in a string".into()))?;
                    rule.condition = Some(Expression::parse(text).map_err(|e| bad(format!("`if` {e}")))?);
                }
                // Always true: a pipeline is of a commit, not of a push's difference.
                "changes" => {}
                "exists" => {
                    let paths = match value {
                        Value::Mapping(m) => m.get("paths").cloned().unwrap_or(Value::Null),
                        v => v.clone(),
                    };
                    rule.exists = strings(&paths).ok_or_else(|| bad("`exists` must be a list of paths or globs".into()))?;
                }
                "when" => {
                    let text = value.as_str().unwrap_or_default();
                    rule.when = match text {
                        "never" => RuleWhen::Never,
                        "manual" | "delayed" => return Err(bad(format!("`when: {text}` is not supported yet: the job would run at once"))),
                        _ => RuleWhen::Is(When::parse(text).ok_or_else(|| {
                            bad(format!(
                                "`when: {text}` is not one of on_success, on_failure, always, on_cancel, never"
                            ))
                        })?),
                    };
                }
                "allow_failure" => {
                    rule.allow_failure = Some(
                        value
                            .as_bool()
                            .ok_or_else(|| bad("a rule's `allow_failure` must be true or false".into()))?,
                    );
                }
                "variables" => {
                    let read: Variables =
                        serde_yaml_ng::from_value(value.clone()).map_err(|e| bad(format!("a rule's `variables`: {e}")))?;
                    rule.variables = read.0;
                }
                "needs" | "start_in" => return Err(bad(format!("a rule's `{key}` is not supported yet"))),
                other => {
                    return Err(bad(format!(
                        "`{other}` is not a keyword of a rule (if, changes, exists, when, allow_failure, variables)"
                    )));
                }
            }
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// `only:`/`except:` as a list of refs, or a map with `refs`, `variables`, `changes`.
fn read_ref_filter(source: &str, owner: &str, key: &str, value: &Value) -> Result<RefFilter, ConfigError> {
    let bad = |why: String| job_error(source, owner, key, why);
    let mut filter = RefFilter::default();
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                match k.as_str().unwrap_or_default() {
                    "refs" => filter.refs = strings(v).ok_or_else(|| bad(format!("`{key}: refs` must be a list")))?,
                    "variables" => {
                        for text in strings(v).ok_or_else(|| bad(format!("`{key}: variables` must be a list of expressions")))? {
                            filter.variables.push(Expression::parse(&text).map_err(&bad)?);
                        }
                    }
                    // Always true, as in `rules:`.
                    "changes" => {}
                    other => return Err(bad(format!("`{key}: {other}` is not supported"))),
                }
            }
        }
        v => filter.refs = strings(v).ok_or_else(|| bad(format!("`{key}` must be a list of refs or a map with `refs`/`variables`")))?,
    }
    Ok(filter)
}

/// A string or a list of strings.
fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Sequence(list) => list.iter().map(|v| v.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

/// Refuses the GitLab keywords Usher does not implement (yet), each with what to do.
fn refuse_unsupported(source: &str, job: &str, raw: &RawJob) -> Result<(), ConfigError> {
    let present = [
        ("start_in", raw.start_in.is_some()),
        ("resource_group", raw.resource_group.is_some()),
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
fn defaults_taken(all: &RawJob, inherit: &Option<Inherit>) -> RawJob {
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
/// expands `image`, `services` and `tags` this way); a name the file does not set is
/// refused, since Usher cannot know what GitLab would have put there.
fn expand_variables(source: &str, job: &str, key: &str, text: &str, variables: &[(String, String)]) -> Result<String, ConfigError> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        let value = variables
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                job_error(
                    source,
                    job,
                    key,
                    format!("`{key}` uses `${name}`, which this file does not set (Usher expands only the file's own variables here)"),
                )
            })?;
        out.push_str(&value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

fn artifacts(source: &str, job: &str, raw: Option<RawArtifacts>) -> Result<Option<ArtifactsConfig>, ConfigError> {
    let Some(a) = raw else { return Ok(None) };
    if a.untracked == Some(true) {
        return Err(job_error(
            source,
            job,
            "artifacts",
            "`artifacts: untracked` is not supported yet: list the `paths`".into(),
        ));
    }
    if a.exclude.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(job_error(
            source,
            job,
            "artifacts",
            "`artifacts: exclude` is not supported yet".into(),
        ));
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
    }))
}

fn allow_failure(source: &str, job: &str, raw: Option<&Value>) -> Result<AllowFailure, ConfigError> {
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
        Some(Value::Mapping(m)) => {
            exit_codes(m.get("exit_codes")).ok_or_else(bad)?;
            return Err(job_error(
                source,
                job,
                "allow_failure",
                "`allow_failure: exit_codes` is not supported yet: write `allow_failure: true`".into(),
            ));
        }
        Some(_) => return Err(bad()),
    })
}

/// `exit_codes: 1` or `exit_codes: [1, 137]`.
fn exit_codes(value: Option<&Value>) -> Option<Vec<i32>> {
    match value? {
        Value::Number(n) => Some(vec![n.as_i64()? as i32]),
        Value::Sequence(list) => list.iter().map(|v| v.as_i64().map(|c| c as i32)).collect(),
        _ => None,
    }
}

/// GitLab's `retry: when:` failure names.
const RETRY_WHEN: &[&str] = &[
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

fn retry(source: &str, job: &str, raw: Option<&Value>) -> Result<Option<Retry>, ConfigError> {
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
fn coverage(source: &str, job: &str, raw: Option<String>) -> Result<Option<String>, ConfigError> {
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

/// `dependencies:` name jobs of earlier stages (GitLab's rule).
fn validate_dependencies(source: &str, stages: &[String], jobs: &[JobConfig]) -> Result<(), ConfigError> {
    let stage_of = |stage: &str| stages.iter().position(|s| s == stage).unwrap_or(0);
    for job in jobs {
        for dependency in job.dependencies.iter().flatten() {
            let Some(other) = jobs.iter().find(|j| &j.name == dependency) else {
                return Err(job_error(
                    source,
                    &job.name,
                    "dependencies",
                    format!("`dependencies` names `{dependency}`, which is not a job"),
                ));
            };
            if stage_of(&other.stage) >= stage_of(&job.stage) {
                return Err(job_error(
                    source,
                    &job.name,
                    "dependencies",
                    format!("`dependencies` names `{dependency}`, which is not in an earlier stage"),
                ));
            }
        }
    }
    Ok(())
}

/// The job's image, checked to be an image name ([`super::is_image_name`]).
fn container_image(source: &str, job: &str, image: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(image) = image else { return Ok(None) };
    if !super::is_image_name(&image) {
        return Err(job_error(
            source,
            job,
            "image",
            format!("`image: {image}` is not an image name (e.g. alpine:3.20)"),
        ));
    }
    Ok(Some(image))
}

fn services(source: &str, job: &str, raw: Vec<RawService>, variables: &[(String, String)]) -> Result<Vec<Service>, ConfigError> {
    let mut out: Vec<Service> = Vec::new();
    for service in raw {
        let (name, alias) = match service {
            RawService::Image(name) => (name, None),
            RawService::Full(m) => {
                if m.entrypoint.is_some() || m.command.is_some() || m.variables.is_some() {
                    return Err(job_error(
                        source,
                        job,
                        "services",
                        "a service's `entrypoint`, `command` and `variables` are not supported yet".into(),
                    ));
                }
                (m.name, m.alias)
            }
        };
        let name = expand_variables(source, job, "services", &name, variables)?;
        let name = container_image(source, job, Some(name))?.unwrap_or_default();
        let alias = alias.unwrap_or_else(|| default_alias(&name));
        let valid_alias = !alias.is_empty()
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
        if out.iter().any(|s| s.alias == alias) {
            return Err(job_error(source, job, "services", format!("two services have the alias `{alias}`")));
        }
        out.push(Service { name, alias });
    }
    Ok(out)
}

/// The host name GitLab gives a service without an alias: the image's last path part
/// without tag or digest, with characters a host name cannot hold made `-`.
fn default_alias(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let bare = last.split(['@', ':']).next().unwrap_or(last);
    bare.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

fn validate_needs(source: &str, stages: &[String], jobs: &[JobConfig]) -> Result<(), ConfigError> {
    let index: HashMap<&str, &JobConfig> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    let stage_of = |j: &JobConfig| stages.iter().position(|s| *s == j.stage).unwrap_or(0);
    for job in jobs {
        for need in job.needs.iter().flatten() {
            let Some(other) = index.get(need.as_str()) else {
                return Err(job_error(
                    source,
                    &job.name,
                    "needs",
                    format!("job `{}` needs `{need}`, which is not a job", job.name),
                ));
            };
            if stage_of(other) > stage_of(job) {
                return Err(job_error(
                    source,
                    &job.name,
                    "needs",
                    format!("job `{}` needs `{need}`, which runs in a later stage", job.name),
                ));
            }
        }
    }
    // A cycle can only form among jobs of one stage; look for one with a DFS.
    fn visit<'a>(
        name: &'a str,
        index: &HashMap<&'a str, &'a JobConfig>,
        done: &mut HashSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if done.contains(name) {
            return None;
        }
        if let Some(pos) = path.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        path.push(name);
        for need in index[name].needs.iter().flatten() {
            if let Some(c) = visit(need.as_str(), index, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(name);
        None
    }
    let mut done = HashSet::new();
    for job in jobs {
        if let Some(cycle) = visit(job.name.as_str(), &index, &mut done, &mut Vec::new()) {
            return Err(job_error(
                source,
                &cycle[0],
                "needs",
                format!("`needs` forms a cycle: {}", cycle.join(" → ")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
