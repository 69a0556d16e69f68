//! What GitLab does to a CI file before it reads its jobs, done the same way here (YAML
//! anchors and `<<` merges are the YAML reading's, `yaml`): `!reference [...]` tags,
//! hidden keys (`.name`: templates, never jobs), `extends` (several levels, maps merged
//! deeply, the job's own keys winning, lists replaced), nested script lists (flattened),
//! `inherit`, the top-level keys GitLab still takes as defaults (`image`, `services`,
//! `cache`, `before_script`, `after_script`), and `parallel` (one job per index, or per
//! combination of a matrix). What comes out is the file's top-level keywords and its
//! jobs in file order, each a plain map holding everything it inherits, for the parser
//! to read as Usher's model.

use serde_yaml_ng::{Mapping, Value};

/// The top-level keywords that are not jobs.
pub(super) const TOP_LEVEL: &[&str] = &["default", "include", "stages", "variables", "workflow"];

/// Top-level keywords GitLab still reads as `default:` keys.
const GLOBAL_DEFAULTS: &[&str] = &["image", "services", "cache", "before_script", "after_script"];

/// The script keys whose nested lists are flattened.
const SCRIPTS: &[&str] = &["before_script", "script", "after_script"];

/// GitLab's limits: `extends` 11 levels deep, `!reference` 10, a job's `parallel` 200.
const MAX_EXTENDS_DEPTH: usize = 11;
const MAX_REFERENCE_DEPTH: usize = 10;
const MAX_PARALLEL: usize = 200;
/// The most jobs a file may make (`parallel` copies included).
const MAX_JOBS: usize = 10_000;

/// A refusal: the key it concerns as the user wrote it (`build:linux.extends`), and why.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) key: String,
    pub(super) message: String,
}

fn refuse(key: impl Into<String>, message: impl Into<String>) -> Refusal {
    Refusal {
        key: key.into(),
        message: message.into(),
    }
}

/// A job as expanded: its name, the name it has in the file (which `parallel` copies
/// share), and its keys.
pub(super) struct ExpandedJob {
    pub(super) name: String,
    pub(super) written_as: String,
    pub(super) keys: Mapping,
    /// `parallel: N`: this copy's index (1-based) and N.
    pub(super) node: Option<(u32, u32)>,
}

pub(super) struct Expanded {
    /// `default`, `include`, `stages`, `variables`, `workflow`, as written (`default`
    /// with the global defaults in it).
    pub(super) top: Mapping,
    pub(super) jobs: Vec<ExpandedJob>,
}

/// Expands a parsed CI file (see the module's paragraph).
pub(super) fn expand(mut doc: Value) -> Result<Expanded, Refusal> {
    if !matches!(doc, Value::Mapping(_)) {
        return Err(refuse("", "the file must be a map of keywords and jobs"));
    }
    let original = doc.clone();
    let mut budget = super::yaml::MAX_NODES;
    resolve_references(&mut doc, &original, 0, "", &mut budget)?;
    let Value::Mapping(file) = doc else { unreachable!("checked above") };

    let mut top = Mapping::new();
    let mut globals = Mapping::new();
    let mut templates = Mapping::new();
    let mut written = Vec::new();
    for (key, value) in file {
        let Some(name) = key.as_str().map(str::to_string) else {
            let shown = serde_yaml_ng::to_string(&key).unwrap_or_default();
            return Err(refuse(shown.trim(), "a top-level key must be a name (a job's or a keyword's)"));
        };
        if TOP_LEVEL.contains(&name.as_str()) {
            top.insert(Value::String(name), value);
        } else if GLOBAL_DEFAULTS.contains(&name.as_str()) {
            globals.insert(Value::String(name), value);
        } else if name.starts_with('.') {
            templates.insert(Value::String(name), value);
        } else {
            written.push((name, value));
        }
    }
    // The global defaults, unless `default:` sets the same key.
    if !globals.is_empty() {
        let default = top
            .entry(Value::String("default".into()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        let Value::Mapping(default) = default else {
            return Err(refuse("default", "`default` must be a map of keywords"));
        };
        for (key, value) in globals {
            default.entry(key).or_insert(value);
        }
    }
    if let Some(Value::Mapping(default)) = top.get_mut("default") {
        flatten_scripts(default, "default")?;
    }

    // Jobs and templates may both be extended.
    let mut all = templates.clone();
    for (name, value) in &written {
        all.insert(Value::String(name.clone()), value.clone());
    }
    let mut jobs = Vec::new();
    let mut done = std::collections::HashMap::new();
    for (name, value) in written {
        let Value::Mapping(_) = value else {
            return Err(refuse(
                name.clone(),
                format!(
                    "job `{name}` must be a map of keywords (`script:` at least); to keep a value for reuse, name it with a leading dot"
                ),
            ));
        };
        let mut keys = extended(&name, &all, &mut Vec::new(), &mut done)?;
        // `type` is GitLab's old name of `stage`.
        if let Some(stage) = keys.remove("type") {
            keys.entry(Value::String("stage".into())).or_insert(stage);
        }
        flatten_scripts(&mut keys, &name)?;
        jobs.extend(parallel_copies(&name, keys)?);
        if jobs.len() > MAX_JOBS {
            return Err(refuse(name, format!("the file makes more than {MAX_JOBS} jobs")));
        }
    }
    point_needs_at_copies(&mut jobs);
    Ok(Expanded { top, jobs })
}

/// The keys of `name` with what it `extends` merged in under them. `done`: the names
/// already extended, each extended once however often it is named (GitLab's way too).
fn extended(
    name: &str,
    all: &Mapping,
    chain: &mut Vec<String>,
    done: &mut std::collections::HashMap<String, Mapping>,
) -> Result<Mapping, Refusal> {
    if let Some(keys) = done.get(name) {
        return Ok(keys.clone());
    }
    if chain.iter().any(|n| n == name) {
        chain.push(name.to_string());
        return Err(refuse(
            format!("{}.extends", chain[0]),
            format!("`extends` goes round in a circle: {}", chain.join(" → ")),
        ));
    }
    if chain.len() >= MAX_EXTENDS_DEPTH {
        return Err(refuse(
            format!("{}.extends", chain[0]),
            format!("`extends` is nested more than {MAX_EXTENDS_DEPTH} levels deep"),
        ));
    }
    let Some(Value::Mapping(own)) = all.get(name) else {
        let from = chain.last().cloned().unwrap_or_default();
        return Err(refuse(
            format!("{from}.extends"),
            format!("`{from}` extends `{name}`, which is not a job or a hidden key (`.name`) that is a map"),
        ));
    };
    let mut own = own.clone();
    let parents = match own.remove("extends") {
        None => Vec::new(),
        Some(Value::String(one)) => vec![one],
        Some(Value::Sequence(list)) => list
            .into_iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| refuse(format!("{name}.extends"), "`extends` takes a name or a list of names"))?,
        Some(_) => return Err(refuse(format!("{name}.extends"), "`extends` takes a name or a list of names")),
    };
    let mut merged = Mapping::new();
    chain.push(name.to_string());
    for parent in parents {
        let parent = extended(&parent, all, chain, done)?;
        deep_merge(&mut merged, parent);
    }
    chain.pop();
    deep_merge(&mut merged, own);
    done.insert(name.to_string(), merged.clone());
    Ok(merged)
}

/// `over`'s keys into `base`: maps merged key by key, anything else replaced (GitLab's
/// `extends` merge).
pub(super) fn deep_merge(base: &mut Mapping, over: Mapping) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Mapping(into)), Value::Mapping(from)) => deep_merge(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Replaces every `!reference [key, key, …]` below `value` by what it names in the file;
/// `budget`: how many more values the references may add (a file of references to
/// references could otherwise grow without bound).
fn resolve_references(value: &mut Value, file: &Value, depth: usize, at: &str, budget: &mut usize) -> Result<(), Refusal> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "reference" => {
            if depth >= MAX_REFERENCE_DEPTH {
                return Err(refuse(
                    at,
                    format!("`!reference` is nested more than {MAX_REFERENCE_DEPTH} levels deep"),
                ));
            }
            let path: Option<Vec<String>> = match &tagged.value {
                Value::Sequence(parts) => parts.iter().map(|p| p.as_str().map(str::to_string)).collect(),
                _ => None,
            };
            let path = path
                .filter(|p| !p.is_empty())
                .ok_or_else(|| refuse(at, "`!reference` takes a list of keys, e.g. !reference [.setup, script]"))?;
            let mut found = file;
            for part in &path {
                found = found
                    .get(part.as_str())
                    .ok_or_else(|| refuse(at, format!("`!reference [{}]` names nothing in this file", path.join(", "))))?;
            }
            let size = node_count(found);
            if size > *budget {
                return Err(refuse(
                    at,
                    format!("`!reference` makes the file hold more than {} values", super::yaml::MAX_NODES),
                ));
            }
            *budget -= size;
            let mut found = found.clone();
            resolve_references(&mut found, file, depth + 1, at, budget)?;
            *value = found;
        }
        Value::Tagged(tagged) => {
            return Err(refuse(
                at,
                format!("the YAML tag `{}` means nothing here (GitLab knows `!reference`)", tagged.tag),
            ));
        }
        Value::Mapping(map) => {
            for (key, inner) in map.iter_mut() {
                let key = key.as_str().unwrap_or("?");
                let at = if at.is_empty() { key.to_string() } else { format!("{at}.{key}") };
                resolve_references(inner, file, depth, &at, budget)?;
            }
        }
        Value::Sequence(items) => {
            for inner in items {
                resolve_references(inner, file, depth, at, budget)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// How many values `value` holds.
fn node_count(value: &Value) -> usize {
    1 + match value {
        Value::Mapping(m) => m.values().map(node_count).sum::<usize>() + m.len(),
        Value::Sequence(s) => s.iter().map(node_count).sum(),
        Value::Tagged(t) => node_count(&t.value),
        _ => 0,
    }
}

/// Script lists may hold lists (from `!reference` or anchors): GitLab runs them as one
/// list, up to 10 levels deep.
fn flatten_scripts(keys: &mut Mapping, owner: &str) -> Result<(), Refusal> {
    fn flatten(items: Vec<Value>, depth: usize, out: &mut Vec<Value>) -> bool {
        for item in items {
            match item {
                Value::Sequence(inner) if depth < MAX_REFERENCE_DEPTH => {
                    if !flatten(inner, depth + 1, out) {
                        return false;
                    }
                }
                Value::Sequence(_) => return false,
                other => out.push(other),
            }
        }
        true
    }
    for key in SCRIPTS {
        if let Some(Value::Sequence(items)) = keys.get_mut(*key) {
            let mut flat = Vec::new();
            if !flatten(std::mem::take(items), 0, &mut flat) {
                return Err(refuse(
                    format!("{owner}.{key}"),
                    format!("`{key}` nests lists more than 10 levels deep"),
                ));
            }
            *items = flat;
        }
    }
    Ok(())
}

/// The copies `parallel` makes of a job: `name 1/3` … with `parallel: 3`, `name: [a, x]`
/// … with a matrix (each with that combination's variables), or the job itself.
fn parallel_copies(name: &str, mut keys: Mapping) -> Result<Vec<ExpandedJob>, Refusal> {
    let one = |name: &str, keys: Mapping, node| ExpandedJob {
        name: name.to_string(),
        written_as: name.to_string(),
        keys,
        node,
    };
    let Some(parallel) = keys.remove("parallel") else {
        return Ok(vec![one(name, keys, None)]);
    };
    let key = format!("{name}.parallel");
    if let Some(n) = parallel.as_u64() {
        if !(1..=MAX_PARALLEL as u64).contains(&n) {
            return Err(refuse(key, format!("`parallel` must be between 1 and {MAX_PARALLEL}")));
        }
        let n = n as u32;
        return Ok((1..=n)
            .map(|i| ExpandedJob {
                name: format!("{name} {i}/{n}"),
                node: Some((i, n)),
                ..one(name, keys.clone(), None)
            })
            .collect());
    }
    let Some(Value::Sequence(rows)) = parallel.get("matrix") else {
        return Err(refuse(
            key,
            "`parallel` takes a number (2 to 200) or `matrix:` with a list of variable maps",
        ));
    };
    let mut combinations: Vec<Vec<(String, String)>> = Vec::new();
    for row in rows {
        let Value::Mapping(row) = row else {
            return Err(refuse(
                key,
                "each entry of `parallel: matrix:` is a map of variables to a value or a list of values",
            ));
        };
        let mut row_combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (variable, values) in row {
            let variable = variable.as_str().unwrap_or_default().to_string();
            let values: Vec<String> = match values {
                Value::Sequence(list) => list.iter().map(scalar_text).collect::<Option<_>>(),
                other => scalar_text(other).map(|v| vec![v]),
            }
            .ok_or_else(|| {
                refuse(
                    key.clone(),
                    format!("the values of `{variable}` in `parallel: matrix:` must be strings"),
                )
            })?;
            let mut next = Vec::new();
            for done in row_combinations {
                for v in &values {
                    let mut one = done.clone();
                    one.push((variable.clone(), v.clone()));
                    next.push(one);
                }
            }
            row_combinations = next;
        }
        combinations.extend(row_combinations);
    }
    if combinations.is_empty() || combinations.len() > MAX_PARALLEL {
        return Err(refuse(
            key,
            format!("`parallel: matrix:` must make between 1 and {MAX_PARALLEL} jobs"),
        ));
    }
    let total = combinations.len() as u32;
    Ok(combinations
        .into_iter()
        .enumerate()
        .map(|(i, variables)| {
            let mut keys = keys.clone();
            let values: Vec<&str> = variables.iter().map(|(_, v)| v.as_str()).collect();
            let job_variables = keys
                .entry(Value::String("variables".into()))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if let Value::Mapping(map) = job_variables {
                for (k, v) in &variables {
                    map.insert(Value::String(k.clone()), Value::String(v.clone()));
                }
            }
            ExpandedJob {
                name: format!("{name}: [{}]", values.join(", ")),
                ..one(name, keys, Some((i as u32 + 1, total)))
            }
        })
        .collect())
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `needs: [build]` and `dependencies: [build]` where `build` has parallel copies mean
/// every copy (GitLab's rule); a need written as a map keeps its other keys.
fn point_needs_at_copies(jobs: &mut [ExpandedJob]) {
    let copies: Vec<(String, String)> = jobs
        .iter()
        .filter(|j| j.name != j.written_as)
        .map(|j| (j.written_as.clone(), j.name.clone()))
        .collect();
    if copies.is_empty() {
        return;
    }
    let copies_of = |written: &str| -> Vec<String> { copies.iter().filter(|(w, _)| w == written).map(|(_, c)| c.clone()).collect() };
    for job in jobs.iter_mut() {
        for key in ["needs", "dependencies"] {
            let Some(Value::Sequence(list)) = job.keys.get_mut(key) else {
                continue;
            };
            let mut pointed = Vec::new();
            for entry in std::mem::take(list) {
                match &entry {
                    Value::String(s) if !copies_of(s).is_empty() => pointed.extend(copies_of(s).into_iter().map(Value::String)),
                    Value::Mapping(m) => match m.get("job").and_then(Value::as_str).map(copies_of) {
                        Some(copies) if !copies.is_empty() => {
                            for copy in copies {
                                let mut one = m.clone();
                                one.insert(Value::String("job".into()), Value::String(copy));
                                pointed.push(Value::Mapping(one));
                            }
                        }
                        _ => pointed.push(entry),
                    },
                    _ => pointed.push(entry),
                }
            }
            *list = pointed;
        }
    }
}

#[cfg(test)]
#[path = "expand_tests.rs"]
mod tests;
