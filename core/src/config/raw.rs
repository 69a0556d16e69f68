//! The CI configuration as written: serde shapes for the YAML (a string or a list for
//! scripts, a map or a list for variables, jobs kept in file order) before the parser
//! checks and fills them in with defaults.

use super::{ArtifactsWhen, AutoCancel};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
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
            other => format!("{other:?}"),
        }))
    }
}

#[derive(Deserialize)]
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
}

/// `artifacts: reports:`. Of GitLab's report kinds Usher reads `dotenv`.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
    pub(super) dotenv: Option<Lines>,
}

/// A job's keys; `default:` takes the same ones except stage and needs.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) stage: Option<String>,
    pub(super) needs: Option<Vec<String>>,
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
    pub(super) image: Option<String>,
    pub(super) services: Option<Vec<RawService>>,
    pub(super) when: Option<crate::api::When>,
}

/// A service as written: an image name, or a map with `name` and `alias`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawService {
    Image(String),
    Full(RawServiceMap),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServiceMap {
    pub(super) name: String,
    pub(super) alias: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    pub(super) auto_cancel: Option<RawAutoCancel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoCancel {
    pub(super) on_new_commit: Option<AutoCancel>,
}

#[derive(Default)]
pub(super) struct RawConfig {
    pub(super) workflow: Option<RawWorkflow>,
    pub(super) stages: Option<Vec<String>>,
    pub(super) variables: Option<Variables>,
    pub(super) default: Option<RawJob>,
    pub(super) jobs: Vec<(String, RawJob)>,
}

impl<'de> Deserialize<'de> for RawConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of top-level keys and jobs")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawConfig, A::Error> {
                let mut raw = RawConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "workflow" => raw.workflow = Some(map.next_value()?),
                        "stages" => raw.stages = Some(map.next_value()?),
                        "variables" => raw.variables = Some(map.next_value()?),
                        "default" => {
                            let job: RawJob = map.next_value()?;
                            if job.stage.is_some() || job.needs.is_some() {
                                return Err(de::Error::custom("`default` cannot set `stage` or `needs`"));
                            }
                            raw.default = Some(job);
                        }
                        name => {
                            // Not wrapped: the inner error carries the right position.
                            let job: RawJob = map.next_value()?;
                            raw.jobs.push((name.to_string(), job));
                        }
                    }
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V)
    }
}
