//! Checks across a file's jobs once each is read: `needs` name jobs of this or earlier
//! stages without a cycle, `dependencies` name jobs of earlier stages.

use super::refusals::job_error;
use super::{ConfigError, JobConfig};
use std::collections::{HashMap, HashSet};

/// `dependencies:` name jobs of earlier stages (GitLab's rule).
pub(super) fn validate_dependencies(source: &str, stages: &[String], jobs: &[JobConfig]) -> Result<(), ConfigError> {
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
            // GitLab's rule too: a job with `needs` waits only for those, so it could not
            // be sure to find the artifacts of another.
            if job.needs.as_ref().is_some_and(|needs| !needs.contains(dependency)) {
                return Err(job_error(
                    source,
                    &job.name,
                    "dependencies",
                    format!("`dependencies` names `{dependency}`, which is not in the job's `needs` (it would not wait for it)"),
                ));
            }
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

/// `environment: on_stop` names a job of the file that stops an environment
/// (`environment: action: stop`), as GitLab requires.
pub(super) fn validate_environments(source: &str, jobs: &[JobConfig]) -> Result<(), ConfigError> {
    for job in jobs {
        let Some(stop) = &job.on_stop else { continue };
        let refuse = |why: String| Err(job_error(source, &job.name, "environment", why));
        match jobs.iter().find(|j| &j.name == stop) {
            None => return refuse(format!("`environment: on_stop` names `{stop}`, which is not a job of this file")),
            Some(other) if other.name == job.name => {
                return refuse("`environment: on_stop` names the job itself: name the job that stops the environment".into());
            }
            Some(other) if !other.stops_environment => {
                return refuse(format!(
                    "`environment: on_stop` names `{stop}`, which needs `environment: {{name: …, action: stop}}` (GitLab's rule too)"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub(super) fn validate_needs(source: &str, stages: &[String], jobs: &[JobConfig]) -> Result<(), ConfigError> {
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
