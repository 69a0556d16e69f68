//! `include:` — other files of the repository (`local`), files of another Usher
//! project's repository (`project`) and files at `https://` URLs (`remote`), merged into
//! the CI file before anything else is read, as GitLab does: the included files in order
//! (a later one overriding an earlier one), then the file itself over them, maps merged
//! deeply and anything else replaced; an included file may include others (a `local`
//! include of a project's file is a file of that project). The files come from the
//! caller, by the address [`local_paths`] gives each (the repository at the pipeline's
//! commit, other projects' repositories, what it fetched); what GitLab takes from itself
//! — a template, a component — is refused by name.

use super::expand::deep_merge;
use super::rules::PipelineFacts;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

/// A file of another Usher project's repository (`include: project`), at a branch, tag
/// or commit (`ref`; none: the project's default branch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectFile {
    pub project: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub file: String,
}

/// How a [`ProjectFile`]'s address begins (no repository path does: [`local_paths`]
/// refuses one that would).
const PROJECT_ADDRESS: &str = "project:";

impl ProjectFile {
    /// The address [`local_paths`] gives it, which [`ProjectFile::from_address`] reads.
    pub fn address(&self) -> String {
        format!("{PROJECT_ADDRESS}{}", serde_json::to_string(self).expect("strings serialize"))
    }

    pub fn from_address(address: &str) -> Option<ProjectFile> {
        serde_json::from_str(address.strip_prefix(PROJECT_ADDRESS)?).ok()
    }

    /// Another file of the same project at the same ref (its `include: local`).
    fn sibling(&self, path: &str) -> ProjectFile {
        ProjectFile {
            file: normal(path),
            ..self.clone()
        }
    }

    /// For messages: `ci/a.yml` of project `templates` (at `v2`).
    pub fn describe(&self) -> String {
        match &self.git_ref {
            Some(r) => format!("`{}` of project `{}` at `{r}`", self.file, self.project),
            None => format!("`{}` of project `{}`", self.file, self.project),
        }
    }
}

/// GitLab's limit on included files, nested ones counted.
pub const MAX_INCLUDES: usize = 150;

/// An `include` that cannot be followed: its key as written and why.
pub(super) struct IncludeError {
    pub(super) key: String,
    pub(super) message: String,
}

/// The files `doc`'s `include:` names (not those of the files it includes), each by its
/// address: a repository path, an `https://` URL as written, or a [`ProjectFile`]'s
/// address. `within`: the project whose file `doc` is, if it is one (its `local`
/// includes are that project's files). `facts`: the pipeline being made, whose
/// variables are put in for `$NAME` in an entry and whose `rules:` decide whether it
/// counts (see [`IncludeFacts`]); None: every entry counts, its names as written.
pub(super) fn local_paths(doc: &Value, within: Option<&ProjectFile>, facts: Option<&PipelineFacts>) -> Result<Vec<String>, IncludeError> {
    let Some(include) = doc.get("include") else { return Ok(Vec::new()) };
    let entries = match include {
        Value::Sequence(list) => list.clone(),
        one => vec![one.clone()],
    };
    let variables: Vec<(String, String)> = facts
        .map(|f| f.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut paths = Vec::new();
    for entry in entries {
        let entry = match entry {
            Value::Mapping(mut m) => {
                if let Some(rules) = m.remove("rules") {
                    let rules = super::conditions::read_rules("", "include", &rules).map_err(|e| refused("rules", &e.message))?;
                    if facts.is_some_and(|f| super::rules::workflow_decision(&rules, f).is_none()) {
                        continue;
                    }
                }
                Value::Mapping(m)
            }
            other => other,
        };
        let entry = expanded(entry, &variables);
        if let Value::Mapping(m) = &entry
            && m.contains_key("project")
        {
            paths.extend(project_files(m)?.iter().map(ProjectFile::address));
            continue;
        }
        let path = match &entry {
            Value::String(s) if is_url(s) => remote_url(s)?,
            Value::String(s) => s.clone(),
            Value::Mapping(m) => {
                if let Some(remote) = m.get("remote").and_then(Value::as_str) {
                    if m.keys().any(|k| k.as_str() != Some("remote")) {
                        return Err(refused(
                            "remote",
                            "`include: remote` with `inputs`, `cache` or `integrity` is not supported yet",
                        ));
                    }
                    remote_url(remote)?
                } else if let Some(local) = m.get("local").and_then(Value::as_str) {
                    if m.keys().any(|k| k.as_str() != Some("local")) {
                        return Err(refused("local", "`include: local` with `inputs` is not supported yet"));
                    }
                    local.to_string()
                } else {
                    let kind = ["template", "component", "remote"]
                        .into_iter()
                        .find(|k| m.contains_key(*k))
                        .unwrap_or("");
                    return Err(refused(
                        kind,
                        match kind {
                            "template" => {
                                "`include: template` names one of GitLab's own templates, which Usher does not have: copy what you need into the repository"
                            }
                            "component" => "`include: component` names a GitLab CI/CD component, which Usher does not have",
                            "remote" => "`include: remote` is an https:// URL",
                            _ => "each `include` entry is a path, a URL, or a map with `local:`, `project:` or `remote:`",
                        },
                    ));
                }
            }
            _ => {
                return Err(refused(
                    "",
                    "each `include` entry is a path, a URL, or a map with `local:`, `project:` or `remote:`",
                ));
            }
        };
        if !is_url(&path) && path.contains(['?', '[']) {
            return Err(refused(
                "local",
                &format!("`{path}`: `include: local` takes the wildcards `*` (within a directory) and `**` (any depth), no others"),
            ));
        }
        // GitLab's wildcards: every file of the commit the pattern names, in order.
        if !is_url(&path) && path.contains('*') {
            if within.is_some() {
                return Err(refused(
                    "local",
                    &format!("`{path}`: a wildcard in another project's file is not supported: name each file"),
                ));
            }
            let found = facts.map(|f| f.files_matching(&normal(&path))).unwrap_or_default();
            if found.is_empty() {
                return Err(refused(
                    "local",
                    &format!("`{path}` names no file of the repository at this commit"),
                ));
            }
            paths.extend(found.into_iter().map(normal));
            continue;
        }
        if normal(&path).starts_with(PROJECT_ADDRESS) {
            return Err(refused("local", &format!("`{path}` is not a path Usher includes")));
        }
        paths.push(match within {
            Some(project) if !is_url(&path) => project.sibling(&path).address(),
            _ => normal(&path),
        });
    }
    Ok(paths)
}

/// What an `include:` is read with when a pipeline is made: GitLab's — the pipeline's
/// variables (the project's and the predefined `CI_*` ones; not the file's own, which
/// are not known yet) for `$NAME` in an entry's paths, URLs, project and ref, and for
/// its `rules: if`, and the commit's files for `rules: exists`.
pub type IncludeFacts<'a> = PipelineFacts<'a>;

/// An include entry with `$NAME` in its strings replaced by the pipeline's variables
/// (a name they do not set stays as written, and the message about the file shows it).
fn expanded(entry: Value, variables: &[(String, String)]) -> Value {
    let put = |s: &str| crate::variables::expand(s, variables, crate::variables::Unset::Kept);
    match entry {
        Value::String(s) => Value::String(put(&s)),
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => Value::String(put(&s)),
                        Value::Sequence(list) => Value::Sequence(
                            list.into_iter()
                                .map(|item| match item {
                                    Value::String(s) => Value::String(put(&s)),
                                    other => other,
                                })
                                .collect(),
                        ),
                        other => other,
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

/// The files an `include: project` entry names: `project`, `file` (one or a list), `ref`.
fn project_files(entry: &Mapping) -> Result<Vec<ProjectFile>, IncludeError> {
    let bad = |why: &str| Err(refused("project", why));
    let Some(project) = entry.get("project").and_then(Value::as_str).filter(|p| !p.trim().is_empty()) else {
        return bad("`project:` names an Usher project by its name");
    };
    let git_ref = match entry.get("ref") {
        None => None,
        Some(Value::String(r)) => Some(r.clone()),
        Some(_) => return bad("`ref:` is a branch or tag name"),
    };
    let files: Vec<String> = match entry.get("file") {
        Some(Value::String(f)) => vec![f.clone()],
        Some(Value::Sequence(list)) if !list.is_empty() => {
            let mut files = Vec::new();
            for f in list {
                let Some(f) = f.as_str() else {
                    return bad("`file:` is a path, or a list of paths");
                };
                files.push(f.to_string());
            }
            files
        }
        _ => return bad("`include: project` needs `file:` (a path, or a list of paths, in that project's repository)"),
    };
    if let Some(other) = entry
        .keys()
        .filter_map(Value::as_str)
        .find(|k| !["project", "ref", "file"].contains(k))
    {
        return Err(refused(
            "project",
            &format!("`include: project` with `{other}` is not supported yet"),
        ));
    }
    Ok(files
        .iter()
        .map(|f| ProjectFile {
            project: project.trim().to_string(),
            git_ref: git_ref.clone(),
            file: normal(f),
        })
        .collect())
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
/// already parsed (None: no such file in the repository); `facts` as [`local_paths`]
/// takes them.
pub(super) fn merged(
    doc: Value,
    read: &dyn Fn(&str) -> Option<Result<Value, String>>,
    facts: Option<&IncludeFacts>,
) -> Result<Value, IncludeError> {
    let mut seen = 0;
    merged_at(doc, None, read, facts, &mut seen, 0)
}

fn merged_at(
    doc: Value,
    within: Option<&ProjectFile>,
    read: &dyn Fn(&str) -> Option<Result<Value, String>>,
    facts: Option<&IncludeFacts>,
    seen: &mut usize,
    depth: usize,
) -> Result<Value, IncludeError> {
    let paths = local_paths(&doc, within, facts)?;
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
        let project = ProjectFile::from_address(&path);
        let (kind, named) = match &project {
            Some(p) => ("project", p.describe()),
            None if is_url(&path) => ("remote", format!("`{path}`")),
            None => ("local", format!("`{path}`")),
        };
        // A name the pipeline does not set, still in the address, is the likely cause.
        let unset = crate::variables::names(&path)
            .first()
            .map(|n| format!(": `${n}` is not set (`include` takes the project's variables and Usher's `CI_*` ones)"))
            .unwrap_or_default();
        let fail = |why: &str| Err(refused(kind, &format!("{named} {why}{unset}")));
        let included = match read(&path) {
            None if kind == "remote" => return fail("could not be fetched"),
            None if kind == "project" => return fail("is not a file of that repository"),
            None => return fail("is not a file of the repository at this commit"),
            Some(Err(why)) => return Err(refused(kind, &format!("{named}: {why}"))),
            Some(Ok(v @ Value::Mapping(_))) => v,
            Some(Ok(_)) => return Err(refused(kind, &format!("{named} is not a map of keywords and jobs"))),
        };
        let Value::Mapping(included) = merged_at(included, project.as_ref(), read, facts, seen, depth + 1)? else {
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
        let merged = merged(doc, &files, None).unwrap_or_else(|e| panic!("{}", e.message));
        let v = &merged["variables"];
        assert_eq!(
            (v["A"].as_str(), v["B"].as_str(), v["D"].as_str()),
            (Some("own"), Some("more"), Some("deep"))
        );
        assert!(merged.get("lint").is_some() && merged.get(".tmpl").is_some() && merged.get("include").is_none());
    }

    #[test]
    fn with_a_pipelines_facts_rules_choose_entries_and_names_are_put_in() {
        let doc = yaml(
            "include:\n  - local: ci/$KIND.yml\n    rules: [{if: $CI_COMMIT_BRANCH == \"main\"}]\n  - project: $GROUP/templates\n    ref: $CI_COMMIT_REF_NAME\n    file: [a.yml, $KIND/b.yml]\n  - local: never.yml\n    rules: [{exists: [nothing/*]}]\n  - https://example.com/$UNSET.yml\n",
        );
        let variables: std::collections::HashMap<String, String> = [
            ("KIND", "lint"),
            ("GROUP", "infra"),
            ("CI_COMMIT_BRANCH", "dev"),
            ("CI_COMMIT_REF_NAME", "dev"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let facts = PipelineFacts {
            variables: &variables,
            git_ref: "dev",
            is_tag: false,
            source: "push",
            files: &[],
        };
        let paths = local_paths(&doc, None, Some(&facts)).unwrap_or_else(|e| panic!("{}", e.message));
        let project = |file: &str| ProjectFile {
            project: "infra/templates".into(),
            git_ref: Some("dev".into()),
            file: file.into(),
        };
        assert_eq!(
            paths,
            [
                project("a.yml").address(),
                project("lint/b.yml").address(),
                "https://example.com/$UNSET.yml".into()
            ]
        );
        let files = ["ci/a.yml", "ci/b.yml", "ci/deep/c.yml", "ci/d.txt", "other.yml"].map(String::from);
        let facts = PipelineFacts { files: &files, ..facts };
        let wild = |pattern: &str| local_paths(&yaml(&format!("include: '{pattern}'\n")), None, Some(&facts)).map_err(|e| e.message);
        assert_eq!(wild("ci/*.yml").unwrap(), ["ci/a.yml", "ci/b.yml"]);
        assert_eq!(wild("/ci/**.yml").unwrap(), ["ci/a.yml", "ci/b.yml", "ci/deep/c.yml"]);
        assert!(wild("nothing/*.yml").unwrap_err().contains("names no file"));
        // Without facts (a file checked on its own) every entry counts, as written.
        assert_eq!(local_paths(&doc, None, None).unwrap_or_else(|e| panic!("{}", e.message)).len(), 5);
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
                "`a.yml` of project `group/x` is not a file of that repository",
            ),
            ("include:\n  - project: group/x\n", "include.project", "needs `file:`"),
            (
                "include:\n  - project: x\n    file: a.yml\n    inputs: {a: 1}\n",
                "include.project",
                "with `inputs`",
            ),
            (
                "include:\n  - local: a.yml\n    rules: [{if: \"$A ==\"}]\n",
                "include.rules",
                "`if`",
            ),
            (
                "include:\n  - template: Auto-DevOps.gitlab-ci.yml\n",
                "include.template",
                "templates",
            ),
            ("include: 'ci/*.yml'\n", "include.local", "names no file"),
            ("include: 'ci/?.yml'\n", "include.local", "no others"),
        ] {
            let e = merged(yaml(doc), &none, None).expect_err("refused");
            assert!(e.key == key && e.message.contains(says), "{doc}: {} {}", e.key, e.message);
        }
        let circle = |_: &str| Some(Ok(yaml("include: a.yml\n")));
        assert!(merged(yaml("include: a.yml\n"), &circle, None).is_err());
    }

    #[test]
    fn a_project_file_includes_that_projects_files() {
        let files = |address: &str| -> Option<Result<Value, String>> {
            let file = ProjectFile::from_address(address)?;
            Some(Ok(yaml(
                match (file.project.as_str(), file.git_ref.as_deref(), file.file.as_str()) {
                    ("ci templates", Some("v2"), "base.yml") => "include: /more.yml\n.base: {script: [from-base]}\n",
                    ("ci templates", Some("v2"), "more.yml") => "variables: {FROM: templates-v2}\n",
                    _ => return None,
                },
            )))
        };
        let doc = yaml("include:\n  - project: ci templates\n    ref: v2\n    file: [/base.yml]\njob: {extends: .base}\n");
        let both = merged(doc, &files, None).unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(both["variables"]["FROM"].as_str(), Some("templates-v2"));
        assert!(both.get(".base").is_some());
        // Its `local` include is not a file of the including repository.
        let mine = |address: &str| match ProjectFile::from_address(address) {
            Some(file) if file.file == "base.yml" => Some(Ok(yaml("include: /more.yml\n"))),
            Some(_) => None,
            None => (address == "more.yml").then(|| Ok(yaml("variables: {FROM: mine}\n"))),
        };
        let doc = yaml("include:\n  - project: ci templates\n    ref: v2\n    file: base.yml\n");
        let e = merged(doc, &mine, None).expect_err("more.yml of the project is missing");
        assert!(e.message.contains("`more.yml` of project `ci templates` at `v2`"), "{}", e.message);
        // An address is not a path one may write.
        let address = ProjectFile {
            project: "x".into(),
            git_ref: None,
            file: "a.yml".into(),
        }
        .address();
        assert!(merged(yaml(&format!("include: '{address}'\n")), &files, None).is_err());
        assert!(merged(yaml(&format!("include: '/{address}'\n")), &files, None).is_err());
    }
}
