//! `rules:`, `workflow: rules:`, `only:` and `except:` as written, read into
//! [`super::rules`]' model (their expressions parsed, so a bad one is refused at its
//! line).

use super::ConfigError;
use super::expression::Expression;
use super::raw::Variables;
use super::refusals::job_error;
use super::rules::{RefFilter, Rule, RuleWhen};
use crate::api::When;
use serde_yaml_ng::Value;

/// `rules:` of a job (or of `workflow`): each entry's `if`, `changes`, `exists`,
/// `when`, `allow_failure`, `variables`.
pub(super) fn read_rules(source: &str, owner: &str, value: &Value) -> Result<Vec<Rule>, ConfigError> {
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
            start_in: None,
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
                        _ => RuleWhen::Is(When::parse(text).ok_or_else(|| {
                            bad(format!(
                                "`when: {text}` is not one of on_success, on_failure, always, on_cancel, manual, delayed, never"
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
                "start_in" => {
                    let text = value.as_str().map(str::to_string).or_else(|| value.as_u64().map(|n| n.to_string()));
                    rule.start_in = Some(super::keywords_read::start_in(text.as_deref().unwrap_or_default()).map_err(bad)?);
                }
                "needs" => return Err(bad(format!("a rule's `{key}` is not supported yet"))),
                other => {
                    return Err(bad(format!(
                        "`{other}` is not a keyword of a rule (if, changes, exists, when, allow_failure, variables)"
                    )));
                }
            }
        }
        match (rule.when, rule.start_in) {
            (RuleWhen::Is(When::Delayed), None) => {
                return Err(bad(
                    "a rule with `when: delayed` needs `start_in` (e.g. `start_in: 30 minutes`)".into()
                ));
            }
            (RuleWhen::Is(When::Delayed), Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(bad("a rule's `start_in` goes with `when: delayed`".into())),
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// `only:`/`except:` as a list of refs, or a map with `refs`, `variables`, `changes`.
pub(super) fn read_ref_filter(source: &str, owner: &str, key: &str, value: &Value) -> Result<RefFilter, ConfigError> {
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
pub(super) fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Sequence(list) => list.iter().map(|v| v.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}
