//! The YAML parser and validation of the CI configuration (the `parser` feature: the
//! server needs it, the browser does not). Errors name the line and key.

use super::raw::{Duration, Lines, RawArtifacts, RawConfig, RawService};
use super::{
    ArtifactsConfig, CiConfig, ConfigError, DEFAULT_AFTER_SCRIPT_TIMEOUT_SECS, DEFAULT_CANCEL_GRACE_SECS, DEFAULT_STAGES,
    DEFAULT_TIMEOUT_SECS, JobConfig, Service, limits, parse_duration,
};
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
    let Some((name, _)) = variables.iter().find(|(k, _)| limits::is_reserved_variable(k)) else {
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
        message: format!("`{name}` is set by Usher; variables named CI or CI_* cannot be overridden"),
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

/// Parses and validates a CI configuration.
pub fn parse(source: &str) -> Result<CiConfig, ConfigError> {
    limits::check_shape(source)?;
    let raw: RawConfig = serde_yaml_ng::from_str(source).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let mut message = e.to_string();
        // serde_yaml_ng appends " at line L column C"; the line is reported separately.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // The key: the top-level key the line belongs to, and the field serde names.
        let top = line.and_then(|l| {
            source.lines().take(l).collect::<Vec<_>>().into_iter().rev().find_map(|text| {
                let starts_key = !text.starts_with([' ', '\t', '#', '-']) && text.contains(':');
                starts_key.then(|| text.split(':').next().unwrap_or("").trim().to_string())
            })
        });
        if let Some(t) = &top {
            if let Some(rest) = message.strip_prefix(&format!("{t}: ")) {
                message = rest.to_string();
            }
        }
        let field = message.split('`').nth(1).map(str::to_string);
        let key = match (top, field) {
            (Some(t), Some(f)) if t != f => Some(format!("{t}.{f}")),
            (Some(t), _) => Some(t),
            (None, f) => f,
        };
        ConfigError { line, key, message }
    })?;

    let auto_cancel = raw
        .workflow
        .and_then(|w| w.auto_cancel)
        .and_then(|a| a.on_new_commit)
        .unwrap_or_default();
    let stages = raw.stages.unwrap_or_else(|| DEFAULT_STAGES.iter().map(|s| s.to_string()).collect());
    let variables = raw.variables.map(|v| v.0).unwrap_or_default();
    let default = raw.default.unwrap_or_default();
    refuse_reserved(source, "variables", 0, &variables)?;
    if let Some(v) = &default.variables {
        refuse_reserved(source, "default", 0, &v.0)?;
    }
    for (name, job) in &raw.jobs {
        if let Some(v) = &job.variables {
            refuse_reserved(source, name, 0, &v.0)?;
        }
    }

    if default.when.is_some() {
        return Err(job_error(
            source,
            "default",
            "when",
            "`when` cannot be set in `default:`; set it on each job".into(),
        ));
    }

    let mut jobs = Vec::new();
    for (name, job) in raw.jobs {
        if name.starts_with('.') {
            continue;
        }
        let stage = job.stage.unwrap_or_else(|| "test".to_string());
        if !stages.contains(&stage) {
            return Err(job_error(
                source,
                &name,
                "stage",
                format!("job `{name}` uses stage `{stage}`, which is not in stages {stages:?}"),
            ));
        }
        let script = match job.script.or_else(|| None) {
            Some(Lines(lines)) if !lines.is_empty() => lines,
            _ => {
                return Err(job_error(source, &name, "script", format!("job `{name}` has no `script`")));
            }
        };
        let pick_lines = |own: Option<Lines>, dflt: &Option<Lines>| -> Vec<String> {
            own.map(|l| l.0).or_else(|| dflt.as_ref().map(|l| l.0.clone())).unwrap_or_default()
        };
        let mut job_vars = default.variables.as_ref().map(|v| v.0.clone()).unwrap_or_default();
        for (k, v) in job.variables.map(|v| v.0).unwrap_or_default() {
            job_vars.retain(|(existing, _)| *existing != k);
            job_vars.push((k, v));
        }
        let artifacts = job.artifacts.or_else(|| {
            default.artifacts.as_ref().map(|a| RawArtifacts {
                paths: a.paths.clone(),
                when: a.when,
                expire_in: a.expire_in.clone(),
                reports: a.reports.clone(),
            })
        });
        let artifacts = match artifacts {
            None => None,
            Some(a) => Some(ArtifactsConfig {
                expire_in_secs: match &a.expire_in {
                    None => None,
                    Some(d) => Some(parse_duration(&d.0).ok_or_else(|| {
                        job_error(
                            source,
                            &name,
                            "artifacts",
                            format!("`expire_in: {}` is not a duration (write 30m, 7d, 1h 30m, or seconds)", d.0),
                        )
                    })?),
                },
                paths: a.paths,
                when: a.when,
                dotenv: a.reports.and_then(|r| r.dotenv).map(|l| l.0).unwrap_or_default(),
            }),
        };
        jobs.push(JobConfig {
            before_script: pick_lines(job.before_script, &default.before_script),
            after_script: pick_lines(job.after_script, &default.after_script),
            script,
            stage,
            needs: job.needs,
            variables: job_vars,
            timeout_secs: seconds(source, &name, "timeout", job.timeout, &default.timeout, DEFAULT_TIMEOUT_SECS)?,
            interruptible: job.interruptible.or(default.interruptible).unwrap_or(false),
            cancel_grace_secs: seconds(
                source,
                &name,
                "cancel_grace",
                job.cancel_grace,
                &default.cancel_grace,
                DEFAULT_CANCEL_GRACE_SECS,
            )?,
            after_script_timeout_secs: seconds(
                source,
                &name,
                "after_script_timeout",
                job.after_script_timeout,
                &default.after_script_timeout,
                DEFAULT_AFTER_SCRIPT_TIMEOUT_SECS,
            )?,
            artifacts,
            tags: job.tags.or_else(|| default.tags.clone()).unwrap_or_default(),
            image: container_image(source, &name, job.image.or_else(|| default.image.clone()))?,
            services: services(source, &name, job.services.or_else(|| default.services.clone()).unwrap_or_default())?,
            when: job.when.unwrap_or_default(),
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
    Ok(CiConfig {
        auto_cancel,
        stages,
        variables,
        jobs,
    })
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

fn services(source: &str, job: &str, raw: Vec<RawService>) -> Result<Vec<Service>, ConfigError> {
    let mut out: Vec<Service> = Vec::new();
    for service in raw {
        let (name, alias) = match service {
            RawService::Image(name) => (name, None),
            RawService::Full(m) => (m.name, m.alias),
        };
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
