//! The CI configuration as written: serde shapes for each keyword's YAML (a string or a
//! list for scripts, a value or a map for a variable, a name or a map for an image …)
//! after `expand` has resolved templates, and before the parser checks them and fills
//! in defaults. Every GitLab keyword of a job has a field here, so that a keyword Usher
//! does not implement is refused by name with what to do instead (`parser`), and
//! anything else is not a GitLab keyword at all.

use super::{ArtifactsWhen, AutoCancel};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_yaml_ng::Value;
use std::fmt;

/// A string, or a list of strings (GitLab allows both for script sections).
#[derive(Default, Clone)]
pub(super) struct Lines(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for Lines {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(
            match OneOrMany::deserialize(d).map_err(|_| de::Error::custom("expected a string or a list of strings"))? {
                OneOrMany::One(s) => Lines(vec![s]),
                OneOrMany::Many(v) => Lines(v),
            },
        )
    }
}

/// A variables map; values may be written as numbers or booleans.
#[derive(Clone)]
pub(super) struct Variables(pub(super) Vec<(String, String)>);

impl<'de> Deserialize<'de> for Variables {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Variables;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of variable names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Variables, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: serde_yaml_ng::Value = map.next_value()?;
                    // `NAME: value`, or GitLab's `NAME: {value: …, description: …}`.
                    let v = match v {
                        serde_yaml_ng::Value::Mapping(m) => m.get("value").cloned().unwrap_or(serde_yaml_ng::Value::Null),
                        v => v,
                    };
                    let text = match v {
                        serde_yaml_ng::Value::String(s) => s,
                        serde_yaml_ng::Value::Number(n) => n.to_string(),
                        serde_yaml_ng::Value::Bool(b) => b.to_string(),
                        serde_yaml_ng::Value::Null => String::new(),
                        _ => return Err(de::Error::custom(format!("variable `{k}` must be a string"))),
                    };
                    out.push((k, text));
                }
                Ok(Variables(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A duration as written (`10m`, `1h 30m`, or seconds); checked after parsing so
/// the error can name the exact line.
#[derive(Clone)]
pub(super) struct Duration(pub(super) String);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Duration(match serde_yaml_ng::Value::deserialize(d)? {
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::String(s) => s,
            // Not a duration; the parser says so with the value as written.
            other => serde_yaml_ng::to_string(&other).unwrap_or_default().trim().to_string(),
        }))
    }
}

/// `artifacts:`. `name`, `expose_as`, `untracked`, `exclude`, `public`, `access` are
/// GitLab's too; Usher reads the ones that decide which files are kept.
// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArtifacts {
    #[serde(default)]
    pub(super) paths: Vec<String>,
    #[serde(default)]
    pub(super) when: ArtifactsWhen,
    #[serde(default)]
    pub(super) expire_in: Option<Duration>,
    #[serde(default)]
    pub(super) reports: Option<RawReports>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) expose_as: Option<String>,
    #[serde(default)]
    pub(super) untracked: Option<bool>,
    #[serde(default)]
    pub(super) exclude: Option<Vec<String>>,
    #[serde(default)]
    pub(super) public: Option<bool>,
    #[serde(default)]
    pub(super) access: Option<String>,
}

/// `artifacts: reports:`. `dotenv` hands variables to later jobs; every other kind's
/// files are kept as artifacts of the job.
#[derive(Deserialize, Clone, Default)]
pub(super) struct RawReports {
    pub(super) dotenv: Option<Lines>,
    #[serde(flatten)]
    pub(super) others: std::collections::BTreeMap<String, Value>,
}

/// `needs:` entries: a job's name, or `{job, artifacts, optional}`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawNeed {
    Name(String),
    Full(RawNeedMap),
}

// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNeedMap {
    pub(super) job: Option<String>,
    #[serde(default)]
    pub(super) artifacts: Option<bool>,
    #[serde(default)]
    pub(super) optional: Option<bool>,
    /// Cross-project and parent-pipeline needs: refused by the parser.
    pub(super) project: Option<String>,
    pub(super) pipeline: Option<String>,
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
    pub(super) parallel: Option<Value>,
}

/// `image:` as a name or `{name, entrypoint, pull_policy, docker}`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawImage {
    Name(String),
    Full(RawImageMap),
}

// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImageMap {
    pub(super) name: String,
    pub(super) entrypoint: Option<Vec<String>>,
    pub(super) pull_policy: Option<Value>,
    pub(super) docker: Option<Value>,
}

/// `cache:` (one or a list), with GitLab's keys (see `crate::cache`).
// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawCaches {
    One(RawCache),
    Many(Vec<RawCache>),
}

// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) key: Option<Value>,
    pub(super) paths: Option<Vec<String>>,
    pub(super) policy: Option<String>,
    pub(super) when: Option<String>,
    pub(super) untracked: Option<bool>,
    pub(super) unprotect: Option<bool>,
    pub(super) fallback_keys: Option<Vec<String>>,
}

/// `environment:` as a name or a map: recorded, not acted on.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawEnvironment {
    Name(String),
    Full(RawEnvironmentMap),
}

// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironmentMap {
    pub(super) name: String,
    pub(super) url: Option<String>,
    pub(super) on_stop: Option<String>,
    pub(super) action: Option<String>,
    pub(super) auto_stop_in: Option<String>,
    pub(super) deployment_tier: Option<String>,
    pub(super) kubernetes: Option<Value>,
}

/// `inherit:` which defaults and top-level variables a job takes: all (`true`), none
/// (`false`), or the names listed.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInherit {
    pub(super) default: Option<Inherit>,
    pub(super) variables: Option<Inherit>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum Inherit {
    All(bool),
    Only(Vec<String>),
}

impl Inherit {
    pub(super) fn takes(inherit: &Option<Inherit>, key: &str) -> bool {
        match inherit {
            None | Some(Inherit::All(true)) => true,
            Some(Inherit::All(false)) => false,
            Some(Inherit::Only(keys)) => keys.iter().any(|k| k == key),
        }
    }
}

/// A job's keys as GitLab defines them (and Usher's own `cancel_grace` and
/// `after_script_timeout`); `default:` takes the same ones but a job's own. A keyword
/// held as a plain [`Value`] is refused or handled by the parser.
// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) stage: Option<String>,
    pub(super) needs: Option<Vec<RawNeed>>,
    pub(super) variables: Option<Variables>,
    pub(super) before_script: Option<Lines>,
    pub(super) script: Option<Lines>,
    pub(super) after_script: Option<Lines>,
    pub(super) timeout: Option<Duration>,
    pub(super) interruptible: Option<bool>,
    pub(super) cancel_grace: Option<Duration>,
    pub(super) after_script_timeout: Option<Duration>,
    pub(super) artifacts: Option<RawArtifacts>,
    pub(super) tags: Option<Vec<String>>,
    pub(super) image: Option<RawImage>,
    pub(super) services: Option<Vec<RawService>>,
    pub(super) when: Option<String>,
    pub(super) cache: Option<RawCaches>,
    pub(super) coverage: Option<String>,
    pub(super) dependencies: Option<Vec<String>>,
    pub(super) environment: Option<RawEnvironment>,
    pub(super) inherit: Option<RawInherit>,
    pub(super) allow_failure: Option<Value>,
    pub(super) retry: Option<Value>,
    pub(super) rules: Option<Value>,
    pub(super) only: Option<Value>,
    pub(super) except: Option<Value>,
    pub(super) start_in: Option<String>,
    pub(super) resource_group: Option<Value>,
    pub(super) trigger: Option<Value>,
    pub(super) release: Option<Value>,
    pub(super) secrets: Option<Value>,
    pub(super) id_tokens: Option<Value>,
    pub(super) hooks: Option<Value>,
    pub(super) identity: Option<Value>,
    pub(super) pages: Option<Value>,
    pub(super) manual_confirmation: Option<Value>,
    pub(super) dast_configuration: Option<Value>,
    pub(super) run: Option<Value>,
}

/// A service as written: an image name, or a map with `name` and `alias`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawService {
    Image(String),
    Full(Box<RawServiceMap>),
}

// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServiceMap {
    pub(super) name: String,
    pub(super) alias: Option<String>,
    pub(super) entrypoint: Option<Vec<String>>,
    pub(super) command: Option<Vec<String>>,
    pub(super) variables: Option<Variables>,
    pub(super) pull_policy: Option<Value>,
    pub(super) docker: Option<Value>,
}

// Some keys are read only to check their shape (GitLab's keys Usher does not act on).
#[allow(dead_code)]
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    pub(super) auto_cancel: Option<RawAutoCancel>,
    pub(super) name: Option<String>,
    pub(super) rules: Option<Value>,
    pub(super) timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoCancel {
    pub(super) on_new_commit: Option<AutoCancel>,
    pub(super) on_job_failure: Option<String>,
}
