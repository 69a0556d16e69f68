//! The YAML parser and validation of the CI configuration (the `parser` feature: the
//! server needs it, the browser does not). Errors name the line and key.

use super::conditions::{read_ref_filter, read_rules};
use super::expand::{Expanded, Refusal, expand};
use super::keywords_read::{
    allow_failure, artifacts, caches, container_image, coverage, defaults_taken, expand_image, expand_variables, refuse_unsupported,
    resource_group, retry, seconds, services,
};
use super::raw::{Inherit, Lines, RawEnvironment, RawImage, RawJob, RawNeed, RawWorkflow, Variables};
use super::refusals::{job_error, line_of_field, line_of_key, read_keys, refusal_error, syntax_error};
use super::validate::{validate_dependencies, validate_environments, validate_needs};
use super::{
    AllowFailure, AutoCancel, CiConfig, ConfigError, DEFAULT_AFTER_SCRIPT_TIMEOUT_SECS, DEFAULT_CANCEL_GRACE_SECS, DEFAULT_STAGES,
    DEFAULT_TIMEOUT_SECS, JobConditions, JobConfig, limits,
};
use crate::api::When;
use serde_yaml_ng::Value;
use std::collections::HashSet;

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

/// [`parse_with`] for a pipeline being made: its `facts` decide which `include:`
/// entries count and what `$NAME` in them is (see [`super::include::IncludeFacts`]).
pub fn parse_for_pipeline(
    source: &str,
    file: &dyn Fn(&str) -> Option<String>,
    facts: &super::include::IncludeFacts,
) -> Result<CiConfig, ConfigError> {
    parse_including(source, file, Some(facts))
}

/// The addresses of the files a CI file's `include:` names (of it alone, not of what it
/// includes; none if it does not read), so that the caller can fetch them for
/// [`parse_with`]: repository paths, `https://` URLs, and
/// [`super::include::ProjectFile`] addresses. `from`: the address of the file `source`
/// is (`""` for the pipeline's own CI file), whose project its `local` includes are of.
/// `facts`: the pipeline's, as [`parse_for_pipeline`] takes them (None: as
/// [`parse_with`] reads the file).
/// A file with a `spec: inputs` header is read with its defaults (what its includer
/// gives it is not known here: the caller fetches what else the parse asks for).
pub fn included_paths(source: &str, from: &str, facts: Option<&super::include::IncludeFacts>) -> Vec<String> {
    let within = super::include::ProjectFile::from_address(from);
    // The parse refuses what fails the shape check; nothing is worth reading in it here.
    if limits::check_shape(source).is_err() {
        return Vec::new();
    }
    let Ok((header, body)) = super::yaml::parse_documents(source)
        .map_err(|e| e.to_string())
        .and_then(super::inputs::split)
    else {
        return Vec::new();
    };
    let variables = variables_of(facts);
    let doc = super::inputs::apply(header.as_ref(), None, body.clone(), &variables, &mut super::inputs::Budget::new()).unwrap_or(body);
    super::include::local_paths(&doc, within.as_ref(), facts).unwrap_or_default()
}

/// The pipeline's variables as `include` sees them (none without facts).
fn variables_of(facts: Option<&super::include::IncludeFacts>) -> Vec<(String, String)> {
    facts
        .map(|f| f.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Parses and validates a CI configuration whose `include: local` files `file` gives
/// (by repository path, without a leading `/`; None: not in the repository), every
/// `include:` entry counting whatever its `rules:` (a file checked on its own).
pub fn parse_with(source: &str, file: &dyn Fn(&str) -> Option<String>) -> Result<CiConfig, ConfigError> {
    parse_including(source, file, None)
}

fn parse_including(
    source: &str,
    file: &dyn Fn(&str) -> Option<String>,
    facts: Option<&super::include::IncludeFacts>,
) -> Result<CiConfig, ConfigError> {
    limits::check_shape(source)?;
    let documents = super::yaml::parse_documents(source).map_err(|e| syntax_error(source, e))?;
    // The pipeline's own file may declare inputs too: it gets their defaults (Usher
    // takes no inputs when a pipeline is made).
    let mut budget = super::inputs::Budget::new();
    let mut doc = super::inputs::split(documents)
        .and_then(|(header, body)| super::inputs::apply(header.as_ref(), None, body, &variables_of(facts), &mut budget))
        .map_err(|message| ConfigError {
            line: None,
            key: Some("spec".into()),
            message,
        })?;
    // Before anything that the included files might define.
    if doc.get("include").is_some() {
        let read = |path: &str| {
            file(path).map(|text| {
                limits::check_shape(&text).map_err(|e| e.to_string())?;
                super::yaml::parse_documents(&text).map_err(|e| format!("this is not valid YAML: {e}"))
            })
        };
        doc = super::include::merged(doc, &read, facts, &mut budget).map_err(|e| {
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
    let (auto_cancel, cancel_on_job_failure) = match workflow.auto_cancel {
        None => (AutoCancel::default(), false),
        Some(a) => {
            let on_job_failure = match a.on_job_failure.as_deref() {
                None | Some("none") => false,
                Some("all") => true,
                Some(other) => {
                    return Err(job_error(
                        source,
                        "workflow",
                        "auto_cancel",
                        format!("`on_job_failure: {other}` is not one of all, none"),
                    ));
                }
            };
            (a.on_new_commit.unwrap_or_default(), on_job_failure)
        }
    };
    let timeout_secs = Some(seconds(source, "workflow", "timeout", workflow.timeout, &None, 0)?).filter(|s| *s > 0);
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
                    "never" => "`when: never` belongs in `rules:`".to_string(),
                    _ => format!("`when: {text}` is not one of on_success, on_failure, always, on_cancel, manual, delayed"),
                };
                job_error(source, at, "when", message)
            })?,
        };
        let start_in = match (when, job.start_in.as_deref()) {
            (When::Delayed, None) => {
                return Err(job_error(
                    source,
                    at,
                    "when",
                    "`when: delayed` needs `start_in` (e.g. `start_in: 30 minutes`)".into(),
                ));
            }
            (When::Delayed, Some(text)) => Some(super::keywords_read::start_in(text).map_err(|m| job_error(source, at, "start_in", m))?),
            (_, Some(_)) => {
                return Err(job_error(source, at, "start_in", "`start_in` goes with `when: delayed`".into()));
            }
            (_, None) => None,
        };
        let mut needs = Vec::new();
        let mut optional_needs = Vec::new();
        let mut needs_without_artifacts = Vec::new();
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
                    if m.artifacts == Some(false) {
                        needs_without_artifacts.push(n.clone());
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
        let image = image.map(|i| expand_image(&i, &yaml_vars));
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
            start_in,
            node,
            optional_needs,
            needs_without_artifacts,
            without_variables,
            // GitLab: a manual job may fail unless it says otherwise.
            allow_failure: match (job.allow_failure.as_ref(), when) {
                (None, When::Manual) => AllowFailure {
                    any: true,
                    exit_codes: Vec::new(),
                },
                (raw, _) => allow_failure(source, at, raw)?,
            },
            retry: retry(source, at, job.retry.as_ref().or(default.retry.as_ref()))?,
            cache: caches(source, at, job.cache.clone().or_else(|| default.cache.clone()))?,
            resource_group: resource_group(source, at, job.resource_group.as_ref(), &yaml_vars)?,
            coverage: coverage(source, at, job.coverage.clone())?,
            dependencies: job.dependencies.clone(),
            environment: job.environment.as_ref().map(|e| match e {
                RawEnvironment::Name(n) => n.clone(),
                RawEnvironment::Full(m) => m.name.clone(),
            }),
            on_stop: match &job.environment {
                Some(RawEnvironment::Full(m)) => m.on_stop.clone(),
                _ => None,
            },
            stops_environment: matches!(&job.environment, Some(RawEnvironment::Full(m)) if m.action.as_deref() == Some("stop")),
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
    validate_environments(source, &jobs)?;
    Ok(CiConfig {
        auto_cancel,
        cancel_on_job_failure,
        timeout_secs,
        stages,
        variables,
        jobs,
        conditions,
        workflow_rules,
    })
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
