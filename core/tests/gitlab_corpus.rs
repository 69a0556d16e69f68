//! Usher's parser against real `.gitlab-ci.yml` files (tests/gitlab_corpus/, sources in
//! its SOURCES.md), submitted unchanged: how many are accepted, and why the rest are
//! refused. Every refusal must be one a user can act on: it names a line and the key as
//! written, and speaks of GitLab's keywords, never of Rust's types. The figure is kept
//! in docs/ci-yaml.md; this test fails if fewer files are accepted than there.
#![cfg(feature = "parser")]

use std::collections::BTreeMap;

/// Accepted files, as docs/ci-yaml.md reports them: a floor that only goes up.
const ACCEPTED_AT_LEAST: usize = 44;

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
    let mut accepted = 0;
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        match usher_core::config::parse(&text) {
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
    println!(
        "accepted {accepted} of {} ({:.0}%); refused, by reason:",
        files.len(),
        100.0 * accepted as f64 / files.len() as f64
    );
    for (reason, files) in by_count {
        println!("  {:>3}  {reason}", files.len());
        for f in files {
            println!("         {f}");
        }
    }
    assert!(
        accepted >= ACCEPTED_AT_LEAST,
        "accepted {accepted}, fewer than the {ACCEPTED_AT_LEAST} docs/ci-yaml.md reports"
    );
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
