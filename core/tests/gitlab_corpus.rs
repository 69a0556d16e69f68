//! Usher's parser against real `.gitlab-ci.yml` files (tests/gitlab_corpus/, sources in
//! its SOURCES.md), submitted unchanged: how many are accepted, and why the rest are
//! refused. Every refusal must be one a user can act on: it names a line and the key as
//! written, and speaks of GitLab's keywords, never of Rust's types. The figure is kept
//! in docs/ci-yaml.md; this test fails if fewer files are accepted than there.
//!
//! A file that includes others is read as Usher reads it for a pipeline: with the files
//! it names, real copies of which are kept in tests/gitlab_corpus/included/ (sources in
//! its SOURCES.md): `<fixture>/<path>` for its repository's files (`include: local`),
//! `projects/<project>[@<ref>]/<path>` for another project's (`include: project`, which
//! an Usher project of that name would serve), `remote/<host>/<path>` for URLs (which
//! Usher fetches when it makes the pipeline). Both figures are printed: with the
//! included files, and of each file standing alone.
#![cfg(feature = "parser")]

use std::collections::BTreeMap;

/// Accepted files, as docs/ci-yaml.md reports them: a floor that only goes up.
const ACCEPTED_AT_LEAST: usize = 54;
/// Of them, accepted standing alone (without the files they include).
const ACCEPTED_ALONE_AT_LEAST: usize = 48;

#[test]
fn real_gitlab_files_are_accepted_or_refused_with_a_reason_a_user_can_act_on() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gitlab_corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 50, "the corpus has {} files", files.len());
    let (mut accepted, mut accepted_alone) = (0, 0);
    let used = std::cell::RefCell::new(std::collections::HashSet::new());
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let stem = name.trim_end_matches(".yml");
        if usher_core::config::parse(&text).is_ok() {
            accepted_alone += 1;
        }
        let read = |address: &str| {
            let file = included_file(&dir.join("included"), stem, address)?;
            let text = std::fs::read_to_string(&file).ok()?;
            used.borrow_mut().insert(file);
            Some(text)
        };
        match usher_core::config::parse_with(&text, &read) {
            Ok(_) => accepted += 1,
            Err(e) => {
                // What the user wrote is quoted in backticks (a URL may say `raw`): the
                // words around it are Usher's.
                let message: String = e.message.to_lowercase().split('`').step_by(2).collect::<Vec<_>>().join(" ");
                for rust in ["raw", "struct ", "enum ", "variant", "invalid type", "expected a"] {
                    assert!(!message.contains(rust), "{name}: a refusal that speaks Rust: {e}");
                }
                assert!(e.line.is_some() || e.key.is_some(), "{name}: a refusal without a place: {e}");
                reasons.entry(reason_of(&e.message)).or_default().push(format!("{name}: {e}"));
            }
        }
    }
    let mut by_count: Vec<_> = reasons.iter().collect();
    by_count.sort_by_key(|(_, files)| std::cmp::Reverse(files.len()));
    let percent = |n: usize| 100.0 * n as f64 / files.len() as f64;
    println!(
        "accepted {accepted} of {} ({:.0}%) with the files they include; {accepted_alone} ({:.0}%) standing alone",
        files.len(),
        percent(accepted),
        percent(accepted_alone),
    );
    println!("refused, by reason:");
    for (reason, files) in by_count {
        println!("  {:>3}  {reason}", files.len());
        for f in files {
            println!("         {f}");
        }
    }
    // Every kept copy is one a fixture includes: none is there to be looked at only.
    let mut kept = Vec::new();
    let mut dirs = vec![dir.join("included")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n != "SOURCES.md") {
                kept.push(path);
            }
        }
    }
    let unused: Vec<_> = kept.iter().filter(|p| !used.borrow().contains(*p)).collect();
    assert!(unused.is_empty(), "included/ keeps files no fixture includes: {unused:?}");
    assert!(
        accepted_alone >= ACCEPTED_ALONE_AT_LEAST,
        "accepted {accepted_alone} standing alone, fewer than the {ACCEPTED_ALONE_AT_LEAST} docs/ci-yaml.md reports"
    );
    assert!(
        accepted >= ACCEPTED_AT_LEAST,
        "accepted {accepted}, fewer than the {ACCEPTED_AT_LEAST} docs/ci-yaml.md reports"
    );
}

/// Where the copy of the file at `address` (as `parse_with` asks for it) is kept: see
/// the module's comment.
fn included_file(included: &std::path::Path, fixture: &str, address: &str) -> Option<std::path::PathBuf> {
    if let Some(url) = address.strip_prefix("https://") {
        return Some(included.join("remote").join(url));
    }
    if let Some(file) = usher_core::config::include::ProjectFile::from_address(address) {
        let project = match &file.git_ref {
            Some(r) => format!("{}@{r}", file.project),
            None => file.project.clone(),
        };
        return Some(included.join("projects").join(project).join(file.file.trim_start_matches('/')));
    }
    Some(included.join(fixture).join(address.trim_start_matches('/')))
}

/// A refusal's reason without its particulars: the keyword it is about.
fn reason_of(message: &str) -> String {
    match message.split('`').nth(1) {
        Some(key) if message.starts_with('`') => format!(
            "`{key}`: {}",
            message.split(": ").nth(1).unwrap_or(message).split(':').next().unwrap_or("")
        ),
        _ => message.chars().take(70).collect(),
    }
}
