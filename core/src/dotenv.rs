//! Handed-over variables: a job's `artifacts: reports: dotenv` file, GitLab's format —
//! `KEY=value` lines — read by the runner when the job ends (a cancelled job's too) and
//! given to the later jobs of its pipeline as variables. The runner parses it to tell the
//! job's log what was handed over and what was not; the server takes only what
//! [`accept`] lets through, whatever a runner sends.
//!
//! As in GitLab: one variable a line, the name ASCII letters, digits and `_` (not
//! starting with a digit), the value the rest of the line as written (quotes are kept;
//! no multi-line values, no `$VARIABLE` expansion), blanks around either trimmed, the
//! last of two equal names wins. Unlike GitLab, empty lines and `#` comments are skipped
//! rather than failing the file, and a bad line is reported and skipped, not fatal.

use crate::config::limits::is_reserved_variable;

/// The largest file read; a larger one hands over nothing.
pub const MAX_BYTES: usize = 20 * 1024;
/// The most variables one file hands over.
pub const MAX_VARIABLES: usize = 100;

/// What a file hands over, and a line for the log about each line it does not.
#[derive(Debug, Default, PartialEq)]
pub struct Dotenv {
    pub variables: Vec<(String, String)>,
    pub problems: Vec<String>,
}

/// Reads a dotenv file's text.
pub fn parse(text: &str) -> Dotenv {
    let mut out = Dotenv::default();
    if text.len() > MAX_BYTES {
        out.problems
            .push(format!("it is larger than {} KiB: nothing is handed over", MAX_BYTES / 1024));
        return out;
    }
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            out.problems.push(format!("line {}: not `NAME=value`", n + 1));
            continue;
        };
        let name = name.trim();
        if let Some(why) = refusal(name) {
            out.problems.push(format!("line {}: {why}", n + 1));
            continue;
        }
        add(&mut out, name, value.trim(), n + 1);
    }
    out
}

fn add(out: &mut Dotenv, name: &str, value: &str, line: usize) {
    if let Some(existing) = out.variables.iter_mut().find(|(n, _)| n == name) {
        existing.1 = value.to_string();
    } else if out.variables.len() == MAX_VARIABLES {
        out.problems.push(format!(
            "line {line}: more than {MAX_VARIABLES} variables; `{name}` and the rest are not handed over"
        ));
    } else {
        out.variables.push((name.to_string(), value.to_string()));
    }
}

/// Why `name` cannot be handed over, if it cannot.
fn refusal(name: &str) -> Option<String> {
    if !crate::variables::is_name(name) {
        return Some(format!("`{}` is not a variable name", name.chars().take(40).collect::<String>()));
    }
    is_reserved_variable(name).then(|| format!("`{name}` is set by Usher and cannot be handed over"))
}

/// What a server keeps of the variables a runner reports: the ones [`parse`] would have
/// handed over (well-formed names, not Usher's own, values without line breaks), at most
/// [`MAX_VARIABLES`] of them and [`MAX_BYTES`] in all.
pub fn accept(reported: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out = Dotenv::default();
    let mut bytes = 0;
    for (name, value) in reported {
        bytes += name.len() + value.len() + 2;
        if bytes > MAX_BYTES {
            break;
        }
        if refusal(&name).is_none() && !value.contains(['\n', '\r']) {
            add(&mut out, &name, &value, 0);
        }
    }
    out.variables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_lines_with_what_is_refused_reported() {
        let text = "# made by provision\nREVIEW_URL=https://review.example.com/123\n\n  BUILD = v1.0 \nQUOTED=\"kept as written\"\nEMPTY=\nnot a line\n9LIVES=x\nCI_JOB_ID=7\nBUILD=v2\nTOKEN=a=b=c\n";
        let d = parse(text);
        assert_eq!(
            d.variables,
            [
                ("REVIEW_URL".into(), "https://review.example.com/123".into()),
                ("BUILD".into(), "v2".into()),
                ("QUOTED".into(), "\"kept as written\"".into()),
                ("EMPTY".into(), String::new()),
                ("TOKEN".into(), "a=b=c".into()),
            ]
        );
        assert_eq!(d.problems.len(), 3, "{:?}", d.problems);
        assert!(d.problems[0].starts_with("line 7: not `NAME=value`"));
        assert!(d.problems[1].contains("`9LIVES` is not a variable name"));
        assert!(d.problems[2].contains("`CI_JOB_ID` is set by Usher"));
    }

    #[test]
    fn limits_on_size_and_count() {
        let big = format!("A={}\n", "x".repeat(MAX_BYTES));
        assert!(parse(&big).variables.is_empty());
        let many: String = (0..MAX_VARIABLES + 5).map(|i| format!("V{i}=x\n")).collect();
        let d = parse(&many);
        assert_eq!(d.variables.len(), MAX_VARIABLES);
        assert_eq!(d.problems.len(), 5);
    }

    #[test]
    fn the_server_keeps_only_what_parse_would_hand_over() {
        let reported = vec![
            ("GOOD".to_string(), "1".to_string()),
            ("CI_COMMIT_SHA".to_string(), "forged".to_string()),
            ("BAD NAME".to_string(), "x".to_string()),
            ("MULTI".to_string(), "a\nb".to_string()),
            ("GOOD".to_string(), "2".to_string()),
        ];
        assert_eq!(accept(reported), [("GOOD".to_string(), "2".to_string())]);
        let flood: Vec<(String, String)> = (0..1000).map(|i| (format!("V{i}"), "y".repeat(100))).collect();
        let kept = accept(flood);
        assert!(kept.len() <= MAX_VARIABLES && kept.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() <= MAX_BYTES);
    }
}
