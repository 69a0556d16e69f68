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
use super::project_file::PROJECT_ADDRESS;
pub use super::project_file::ProjectFile;
pub use super::project_file::normal;
use super::rules::PipelineFacts;
use serde_yaml_ng::{Mapping, Value};

/// GitLab's limit on included files, nested ones counted.
pub const MAX_INCLUDES: usize = 150;

/// An `include` that cannot be followed: its key as written and why.
pub(super) struct IncludeError {
    pub(super) key: String,
    pub(super) message: String,
}

/// The files `doc`'s `include:` names (not those of the files it includes), each by its
/// address: a repository path, an `https://` URL as written, or a [`ProjectFile`]'s
/// address (a component: both files it may be). `within`: the project whose file `doc`
/// is, if it is one (its `local` includes are that project's files). `facts`: the
/// pipeline being made, whose variables are put in for `$NAME` in an entry and whose
/// `rules:` decide whether it counts (see [`IncludeFacts`]); None: every entry counts,
/// its names as written.
pub(super) fn local_paths(doc: &Value, within: Option<&ProjectFile>, facts: Option<&PipelineFacts>) -> Result<Vec<String>, IncludeError> {
    Ok(entries(doc, within, facts)?.into_iter().flat_map(|e| e.addresses).collect())
}

/// One file an `include:` entry names: where it is (a component: the two files it may
/// be, in the order GitLab looks), and the `inputs` the entry gives it.
pub(super) struct Included {
    pub(super) addresses: Vec<String>,
    /// Shared by the files of one entry (a wildcard's, a project's list).
    pub(super) inputs: Option<std::rc::Rc<Mapping>>,
}

/// The files `doc`'s `include:` names, as [`local_paths`] says.
fn entries(doc: &Value, within: Option<&ProjectFile>, facts: Option<&PipelineFacts>) -> Result<Vec<Included>, IncludeError> {
    let Some(include) = doc.get("include") else { return Ok(Vec::new()) };
    let entries = match include {
        Value::Sequence(list) => list.clone(),
        one => vec![one.clone()],
    };
    let variables: Vec<(String, String)> = facts
        .map(|f| f.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in entries {
        let mut inputs = None;
        let entry = match entry {
            Value::Mapping(mut m) => {
                if let Some(rules) = m.remove("rules") {
                    let rules = super::conditions::read_rules("", "include", &rules).map_err(|e| refused("rules", &e.message))?;
                    if facts.is_some_and(|f| super::rules::workflow_decision(&rules, f).is_none()) {
                        continue;
                    }
                }
                match m.remove("inputs") {
                    None | Some(Value::Null) => {}
                    Some(Value::Mapping(given)) => inputs = Some(std::rc::Rc::new(given)),
                    Some(_) => return Err(refused("inputs", "`inputs` is a map of input names to values")),
                }
                Value::Mapping(m)
            }
            other => other,
        };
        let entry = expanded(entry, &variables);
        let one = |address: String| Included {
            addresses: vec![address],
            inputs: inputs.clone(),
        };
        if let Value::Mapping(m) = &entry
            && m.contains_key("project")
        {
            found.extend(project_files(m)?.iter().map(|f| one(f.address())));
            too_many(found.len())?;
            continue;
        }
        if let Value::Mapping(m) = &entry
            && let Some(component) = m.get("component")
        {
            found.push(Included {
                addresses: component_files(m, component)?.iter().map(ProjectFile::address).collect(),
                inputs: inputs.clone(),
            });
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
                            "`include: remote` with `cache` or `integrity` is not supported yet",
                        ));
                    }
                    remote_url(remote)?
                } else if let Some(local) = m.get("local").and_then(Value::as_str) {
                    if let Some(other) = m.keys().filter_map(Value::as_str).find(|k| *k != "local") {
                        return Err(refused("local", &format!("`include: local` with `{other}` is not supported")));
                    }
                    local.to_string()
                } else {
                    let kind = ["template", "remote"].into_iter().find(|k| m.contains_key(*k)).unwrap_or("");
                    return Err(refused(
                        kind,
                        match kind {
                            "template" => {
                                "`include: template` names one of GitLab's own templates, which Usher does not have: copy what you need into the repository"
                            }
                            "remote" => "`include: remote` is an https:// URL",
                            _ => "each `include` entry is a path, a URL, or a map with `local:`, `project:`, `remote:` or `component:`",
                        },
                    ));
                }
            }
            _ => {
                return Err(refused(
                    "",
                    "each `include` entry is a path, a URL, or a map with `local:`, `project:`, `remote:` or `component:`",
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
            let matching = facts.map(|f| f.files_matching(&normal(&path))).unwrap_or_default();
            too_many(found.len() + matching.len())?;
            if matching.is_empty() {
                return Err(refused(
                    "local",
                    &format!("`{path}` names no file of the repository at this commit"),
                ));
            }
            if let Some(f) = matching.iter().find(|f| f.starts_with(PROJECT_ADDRESS)) {
                return Err(refused("local", &format!("`{f}` is not a path Usher includes")));
            }
            found.extend(matching.into_iter().map(|f| one(normal(f))));
            continue;
        }
        if normal(&path).starts_with(PROJECT_ADDRESS) {
            return Err(refused("local", &format!("`{path}` is not a path Usher includes")));
        }
        found.push(one(match within {
            Some(project) if !is_url(&path) => project.sibling(&path).address(),
            _ => normal(&path),
        }));
        too_many(found.len())?;
    }
    Ok(found)
}

/// Refused once one file's entries name more files than a pipeline may include (before
/// anything is read: a wildcard may name every file of the repository).
fn too_many(count: usize) -> Result<(), IncludeError> {
    if count > MAX_INCLUDES {
        return Err(refused("local", &format!("more than {MAX_INCLUDES} files are included")));
    }
    Ok(())
}

/// The two files a component (`HOST/PROJECT PATH/NAME@VERSION`) may be, as GitLab
/// looks for them: `templates/NAME.yml`, then `templates/NAME/template.yml`, of the
/// Usher project named by the path, at the version (a tag, branch or commit). The host
/// is not read: a team moving to Usher keeps its component addresses, and the project
/// of that name (with the repository) serves them.
fn component_files(entry: &Mapping, component: &Value) -> Result<[ProjectFile; 2], IncludeError> {
    let bad = |why: String| Err(refused("component", &why));
    if let Some(other) = entry.keys().filter_map(Value::as_str).find(|k| *k != "component") {
        return bad(format!("`include: component` with `{other}` is not supported"));
    }
    let Some(address) = component.as_str() else {
        return bad("`component:` is `host/group/project/name@version`".into());
    };
    let Some((location, version)) = address.rsplit_once('@') else {
        return bad(format!("`{address}`: a component is named `host/group/project/name@version`"));
    };
    if version.is_empty() || version.starts_with('~') {
        return bad(format!(
            "`{address}`: name the component's version (a tag, a branch or a commit); `{version}` is not one Usher resolves"
        ));
    }
    let parts: Vec<&str> = location.split('/').collect();
    if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
        return bad(format!("`{address}`: a component is named `host/group/project/name@version`"));
    }
    let (project, name) = (parts[1..parts.len() - 1].join("/"), parts[parts.len() - 1]);
    Ok(
        [format!("templates/{name}.yml"), format!("templates/{name}/template.yml")].map(|file| ProjectFile {
            project: project.clone(),
            git_ref: Some(version.to_string()),
            file,
        }),
    )
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

/// How [`merged`] reads an included file: its YAML documents, already parsed (None: no
/// such file; an error: why it does not read).
pub(super) type ReadFile<'a> = dyn Fn(&str) -> Option<Result<Vec<Value>, String>> + 'a;

/// `doc` with its includes merged under it; `read` gives an included file's YAML
/// documents, already parsed (None: no such file); `facts` as [`local_paths`] takes
/// them.
pub(super) fn merged(
    doc: Value,
    read: &ReadFile,
    facts: Option<&IncludeFacts>,
    budget: &mut super::inputs::Budget,
) -> Result<Value, IncludeError> {
    let mut seen = 0;
    merged_at(doc, None, read, facts, budget, &mut seen, 0)
}

fn merged_at(
    doc: Value,
    within: Option<&ProjectFile>,
    read: &ReadFile,
    facts: Option<&IncludeFacts>,
    budget: &mut super::inputs::Budget,
    seen: &mut usize,
    depth: usize,
) -> Result<Value, IncludeError> {
    let included_files = entries(&doc, within, facts)?;
    let Value::Mapping(mut own) = doc else { return Ok(doc) };
    own.remove("include");
    if included_files.is_empty() {
        return Ok(Value::Mapping(own));
    }
    if depth >= MAX_INCLUDES {
        return Err(refused("local", "`include` goes round in a circle (or nests too deeply)"));
    }
    let variables: Vec<(String, String)> = facts
        .map(|f| f.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut base = Mapping::new();
    for Included { addresses, inputs } in included_files {
        *seen += 1;
        if *seen > MAX_INCLUDES {
            return Err(refused("local", &format!("more than {MAX_INCLUDES} files are included")));
        }
        // The first of its addresses that is a file (a component's second is a fallback).
        let (path, documents) = addresses
            .iter()
            .find_map(|a| read(a).map(|d| (a.clone(), Some(d))))
            .unwrap_or_else(|| (addresses.first().cloned().unwrap_or_default(), None));
        let project = ProjectFile::from_address(&path);
        let (kind, named) = match &project {
            Some(p) if addresses.len() > 1 => {
                let others: Vec<String> = addresses
                    .iter()
                    .filter(|a| **a != path)
                    .filter_map(|a| ProjectFile::from_address(a).map(|f| f.file))
                    .collect();
                ("component", format!("{} (nor `{}`)", p.describe(), others.join("`, `")))
            }
            Some(p) => ("project", p.describe()),
            None if is_url(&path) => ("remote", format!("`{path}`")),
            None => ("local", format!("`{path}`")),
        };
        // A name the pipeline does not set, still in the address, is the likely cause.
        let unset = crate::variables::names(&path)
            .first()
            .map(|n| format!(": `${n}` is not set (`include` takes the project's variables, not masked ones, and Usher's `CI_*` ones)"))
            .unwrap_or_default();
        let fail = |why: &str| Err(refused(kind, &format!("{named} {why}{unset}")));
        let documents = match documents {
            None if kind == "remote" => return fail("could not be fetched"),
            None if kind == "project" || kind == "component" => return fail("is not a file of that repository"),
            None => return fail("is not a file of the repository at this commit"),
            Some(Err(why)) => return Err(refused(kind, &format!("{named}: {why}"))),
            Some(Ok(documents)) => documents,
        };
        let included = super::inputs::split(documents)
            .and_then(|(header, body)| super::inputs::apply(header.as_ref(), inputs.as_deref(), body, &variables, budget))
            .map_err(|why| refused(kind, &format!("{named}: {why}")))?;
        if !included.is_mapping() {
            return Err(refused(kind, &format!("{named} is not a map of keywords and jobs")));
        }
        let Value::Mapping(included) = merged_at(included, project.as_ref(), read, facts, budget, seen, depth + 1)? else {
            unreachable!("a map stays a map")
        };
        deep_merge(&mut base, included);
    }
    deep_merge(&mut base, own);
    Ok(Value::Mapping(base))
}

#[cfg(test)]
#[path = "include_tests.rs"]
mod tests;
