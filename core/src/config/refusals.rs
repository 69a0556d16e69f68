//! Where a refusal of a CI file points, and in whose words: the line of a key (a job's
//! name may hold dots and colons), YAML syntax errors at their line, and serde's errors
//! turned into GitLab's terms — never a Rust type's name.

use super::ConfigError;
use super::expand::Refusal;
use serde_yaml_ng::{Mapping, Value};

/// The line (1-based) where `key:` first starts a line at `indent` spaces, if any.
pub(super) fn line_of_key(source: &str, key: &str, indent: usize) -> Option<usize> {
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

pub(super) fn job_error(source: &str, job: &str, key: &str, message: String) -> ConfigError {
    ConfigError {
        line: line_of_key(source, job, 0).map(|l| line_of_field(source, l, key).unwrap_or(l)),
        key: Some(format!("{job}.{key}")),
        message,
    }
}

/// The line of `field:` inside the block that starts at line `block` (1-based).
pub(super) fn line_of_field(source: &str, block: usize, field: &str) -> Option<usize> {
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

/// A YAML syntax error, at its line.
pub(super) fn syntax_error(source: &str, e: serde_yaml_ng::Error) -> ConfigError {
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
pub(super) fn refusal_error(source: &str, r: Refusal) -> ConfigError {
    let (owner, field) = split_key(source, &r.key);
    ConfigError {
        line: line_of_key(source, owner, 0).map(|l| field.and_then(|f| line_of_field(source, l, f)).unwrap_or(l)),
        key: (!r.key.is_empty()).then_some(r.key),
        message: r.message,
    }
}

/// `owner.field` split where the owner is a top-level key of `source` (a job's name may
/// hold dots and colons: `build:linux.coverage`).
pub(super) fn split_key<'k>(source: &str, key: &'k str) -> (&'k str, Option<&'k str>) {
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
pub(super) fn read_keys<T: serde::de::DeserializeOwned>(source: &str, owner: &str, keys: &Mapping) -> Result<T, ConfigError> {
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
pub(super) fn keyword_message(owner: &str, key: &str, value: &Value, serde_says: &str) -> String {
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
