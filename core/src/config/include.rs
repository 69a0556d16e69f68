//! `include:` — other files of the repository (`local`) and files at `https://` URLs
//! (`remote`), merged into the CI file before anything else is read, as GitLab does: the
//! included files in order (a later one overriding an earlier one), then the file itself
//! over them, maps merged deeply and anything else replaced; an included file may include
//! others. The files come from the caller (the repository at the pipeline's commit, and
//! what it fetched); what GitLab takes from itself — another project, a template, a
//! component — is refused by name.

use super::expand::deep_merge;
use serde_yaml_ng::{Mapping, Value};

/// GitLab's limit on included files, nested ones counted.
pub const MAX_INCLUDES: usize = 150;

/// An `include` that cannot be followed: its key as written and why.
pub(super) struct IncludeError {
    pub(super) key: String,
    pub(super) message: String,
}

/// The files `doc`'s `include:` names (not those of the files it includes): repository
/// paths, and `https://` URLs as written.
pub(super) fn local_paths(doc: &Value) -> Result<Vec<String>, IncludeError> {
    let Some(include) = doc.get("include") else { return Ok(Vec::new()) };
    let entries = match include {
        Value::Sequence(list) => list.clone(),
        one => vec![one.clone()],
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = match &entry {
            Value::String(s) if is_url(s) => remote_url(s)?,
            Value::String(s) => s.clone(),
            Value::Mapping(m) => {
                if let Some(remote) = m.get("remote").and_then(Value::as_str) {
                    if m.keys().any(|k| k.as_str() != Some("remote")) {
                        return Err(refused(
                            "remote",
                            "`include: remote` with `rules`, `inputs`, `cache` or `integrity` is not supported yet",
                        ));
                    }
                    remote_url(remote)?
                } else if let Some(local) = m.get("local").and_then(Value::as_str) {
                    if m.keys().any(|k| k.as_str() != Some("local")) {
                        return Err(refused("local", "`include: local` with `rules` or `inputs` is not supported yet"));
                    }
                    local.to_string()
                } else {
                    let kind = ["project", "template", "component", "remote"]
                        .into_iter()
                        .find(|k| m.contains_key(*k))
                        .unwrap_or("");
                    return Err(refused(
                        kind,
                        match kind {
                            "project" => {
                                "`include: project` names a project of a GitLab server; Usher includes files of the project's own repository (`local:`)"
                            }
                            "template" => {
                                "`include: template` names one of GitLab's own templates, which Usher does not have: copy what you need into the repository"
                            }
                            "component" => "`include: component` names a GitLab CI/CD component, which Usher does not have",
                            "remote" => "`include: remote` is an https:// URL",
                            _ => "each `include` entry is a path, a URL, or a map with `local:` or `remote:`",
                        },
                    ));
                }
            }
            _ => {
                return Err(refused(
                    "",
                    "each `include` entry is a path, a URL, or a map with `local:` or `remote:`",
                ));
            }
        };
        if !is_url(&path) && path.contains(['*', '?', '[']) {
            return Err(refused(
                "local",
                "`include: local` with a wildcard is not supported yet: name each file",
            ));
        }
        paths.push(normal(&path));
    }
    Ok(paths)
}

/// Whether an include names a URL rather than a file of the repository.
pub fn is_url(path: &str) -> bool {
    path.starts_with("https://") || path.starts_with("http://")
}

/// An `include: remote` URL: only `https://` ones are fetched.
fn remote_url(url: &str) -> Result<String, IncludeError> {
    if !url.starts_with("https://") {
        return Err(refused("remote", &format!("`{url}`: only https:// URLs are included")));
    }
    Ok(url.to_string())
}

/// A repository path as `include: local` writes it (`/ci/build.yml` or `ci/build.yml`).
pub fn normal(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

fn refused(kind: &str, message: &str) -> IncludeError {
    IncludeError {
        key: if kind.is_empty() {
            "include".into()
        } else {
            format!("include.{kind}")
        },
        message: message.to_string(),
    }
}

/// `doc` with its includes merged under it; `read` gives an included file's YAML,
/// already parsed (None: no such file in the repository).
pub(super) fn merged(doc: Value, read: &dyn Fn(&str) -> Option<Result<Value, String>>) -> Result<Value, IncludeError> {
    let mut seen = 0;
    merged_at(doc, read, &mut seen, 0)
}

fn merged_at(
    doc: Value,
    read: &dyn Fn(&str) -> Option<Result<Value, String>>,
    seen: &mut usize,
    depth: usize,
) -> Result<Value, IncludeError> {
    let paths = local_paths(&doc)?;
    let Value::Mapping(mut own) = doc else { return Ok(doc) };
    own.remove("include");
    if paths.is_empty() {
        return Ok(Value::Mapping(own));
    }
    if depth >= MAX_INCLUDES {
        return Err(refused("local", "`include` goes round in a circle (or nests too deeply)"));
    }
    let mut base = Mapping::new();
    for path in paths {
        *seen += 1;
        if *seen > MAX_INCLUDES {
            return Err(refused("local", &format!("more than {MAX_INCLUDES} files are included")));
        }
        let kind = if is_url(&path) { "remote" } else { "local" };
        let included = match read(&path) {
            None if kind == "remote" => return Err(refused(kind, &format!("`{path}` could not be fetched"))),
            None => {
                return Err(refused(kind, &format!("`{path}` is not a file of the repository at this commit")));
            }
            Some(Err(why)) => return Err(refused(kind, &format!("`{path}`: {why}"))),
            Some(Ok(v @ Value::Mapping(_))) => v,
            Some(Ok(_)) => return Err(refused(kind, &format!("`{path}` is not a map of keywords and jobs"))),
        };
        let Value::Mapping(included) = merged_at(included, read, seen, depth + 1)? else {
            unreachable!("a map stays a map")
        };
        deep_merge(&mut base, included);
    }
    deep_merge(&mut base, own);
    Ok(Value::Mapping(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        crate::config::yaml::parse(text).unwrap()
    }

    #[test]
    fn included_files_merge_under_the_file_in_order_and_nest() {
        let files = |path: &str| -> Option<Result<Value, String>> {
            Some(Ok(yaml(match path {
                "ci/base.yml" => "include: ci/deep.yml\nvariables: {A: base, B: base}\n.tmpl: {script: [from-base]}\n",
                "ci/deep.yml" => "variables: {D: deep}\nlint: {script: [lint]}\n",
                "ci/more.yml" => "variables: {B: more}\n",
                _ => return None,
            })))
        };
        let doc = yaml("include:\n  - local: /ci/base.yml\n  - ci/more.yml\nvariables: {A: own}\njob: {extends: .tmpl}\n");
        let merged = merged(doc, &files).unwrap_or_else(|e| panic!("{}", e.message));
        let v = &merged["variables"];
        assert_eq!(
            (v["A"].as_str(), v["B"].as_str(), v["D"].as_str()),
            (Some("own"), Some("more"), Some("deep"))
        );
        assert!(merged.get("lint").is_some() && merged.get(".tmpl").is_some() && merged.get("include").is_none());
    }

    #[test]
    fn what_cannot_be_included_is_refused_by_kind() {
        let none = |_: &str| None;
        for (doc, key, says) in [
            ("include: missing.yml\n", "include.local", "not a file of the repository"),
            ("include: https://example.com/ci.yml\n", "include.remote", "could not be fetched"),
            (
                "include:\n  - remote: http://example.com/ci.yml\n",
                "include.remote",
                "only https://",
            ),
            (
                "include:\n  - project: group/x\n    file: a.yml\n",
                "include.project",
                "GitLab server",
            ),
            (
                "include:\n  - template: Auto-DevOps.gitlab-ci.yml\n",
                "include.template",
                "templates",
            ),
            ("include: 'ci/*.yml'\n", "include.local", "wildcard"),
        ] {
            let e = merged(yaml(doc), &none).expect_err("refused");
            assert!(e.key == key && e.message.contains(says), "{doc}: {} {}", e.key, e.message);
        }
        let circle = |_: &str| Some(Ok(yaml("include: a.yml\n")));
        assert!(merged(yaml("include: a.yml\n"), &circle).is_err());
    }
}
