//! What a CI configuration may not be, checked before the YAML parser runs: the
//! parser's time grows quadratically with nesting depth (a 200 KB file of `[[[[…` takes
//! seconds), so size and nesting are refused first, in linear time. Also the variable
//! names Usher keeps for itself.

use super::ConfigError;

/// The largest configuration accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// The deepest `[`/`{` nesting accepted (a real configuration uses two or three).
pub const MAX_FLOW_DEPTH: usize = 32;
/// The deepest block indentation accepted, in columns (list dashes count two each).
pub const MAX_INDENT: usize = 160;

/// Refuses a configuration that is too large or nested too deeply, naming the line.
pub fn check_shape(source: &str) -> Result<(), ConfigError> {
    if source.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError {
            line: None,
            key: None,
            message: format!(
                "the configuration is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                source.len()
            ),
        });
    }
    let too_deep = |line: usize| ConfigError {
        line: Some(line),
        key: None,
        message: format!("nested too deeply (at most {MAX_FLOW_DEPTH} levels of [ ] or {{ }}, {MAX_INDENT} columns of indentation)"),
    };
    let mut depth: usize = 0;
    for (i, line) in source.lines().enumerate() {
        if block_indent(line) > MAX_INDENT {
            return Err(too_deep(i + 1));
        }
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut previous = ' ';
        for c in line.chars() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if previous.is_whitespace() => break,
                    '"' | '\'' if previous.is_whitespace() || "[{,:".contains(previous) => quote = Some(c),
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return Err(too_deep(i + 1));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
    }
    Ok(())
}

/// Indentation of a block line, with each leading `- ` counted as two columns.
fn block_indent(line: &str) -> usize {
    let mut columns = 0;
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        columns += rest.len() - trimmed.len();
        match trimmed.strip_prefix('-') {
            Some(after) if after.starts_with([' ', '\t']) => {
                columns += 1;
                rest = after;
            }
            _ => return columns,
        }
    }
}

/// Whether a variable name is of Usher's kind (`CI`, `CI_*`): project variables and
/// handed-over variables may not be named so.
pub fn is_reserved_variable(name: &str) -> bool {
    name == "CI" || name.starts_with("CI_")
}

/// The variables Usher sets for every job (some only where they apply).
const SET_BY_USHER: &[&str] = &[
    "CI",
    "CI_COMMIT_BRANCH",
    "CI_COMMIT_REF_NAME",
    "CI_COMMIT_REF_SLUG",
    "CI_COMMIT_SHA",
    "CI_COMMIT_SHORT_SHA",
    "CI_COMMIT_TAG",
    "CI_COMMIT_TITLE",
    "CI_DEFAULT_BRANCH",
    "CI_JOB_ID",
    "CI_JOB_NAME",
    "CI_JOB_STAGE",
    "CI_JOB_STATUS",
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_SOURCE",
    "CI_PIPELINE_STATUS",
    "CI_PROJECT_DIR",
    "CI_PROJECT_NAME",
    "CI_REPOSITORY_URL",
];

/// Whether Usher sets this variable itself: a CI file may not (other `CI_*` names, like
/// GitLab's `CI_REGISTRY` that Usher does not set, are the file's to set).
pub fn is_set_by_usher(name: &str) -> bool {
    SET_BY_USHER.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configurations_pass() {
        let source = "stages: [build, test]\nvariables: {A: \"[x\"}\njob:\n  script:\n    - echo '[[[['\n    - if [ -f x ]; then echo {}; fi # [[[\n";
        assert_eq!(check_shape(source), Ok(()));
    }

    #[test]
    fn deep_flow_nesting_is_refused_with_its_line() {
        let source = format!("a: 1\nx: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let err = check_shape(&source).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("nested too deeply"), "{err}");
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let source = format!("x:\n{}", (0..200).map(|i| format!("{}- \n", " ".repeat(i * 2))).collect::<String>());
        assert!(check_shape(&source).is_err());
        assert!(check_shape(&format!("x:\n{}1\n", "- ".repeat(100))).is_err());
    }

    #[test]
    fn size_is_capped() {
        let source = format!("job:\n  script: [\"{}\"]\n", "x".repeat(MAX_CONFIG_BYTES));
        assert!(check_shape(&source).unwrap_err().message.contains("bytes"));
    }

    #[test]
    fn ci_names_are_reserved() {
        assert!(is_reserved_variable("CI_JOB_ID"));
        assert!(is_reserved_variable("CI"));
        assert!(!is_reserved_variable("CIRCLE"));
        assert!(!is_reserved_variable("MY_CI_X"));
    }
}
