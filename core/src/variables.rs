//! `$NAME` and `${NAME}` in the keys GitLab expands with a job's variables (`image`,
//! `services`, `tags`, `cache: key`, `resource_group`): one reading of the syntax for
//! the parser (the file's own variables) and the engine (all of a job's, when it is
//! assigned). A `$` not followed by a name is kept as it is.

/// Whether `name` is a variable name a shell and `docker run --env` take:
/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What an expansion does with a name `variables` do not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unset {
    /// Nothing in its place, as GitLab does when a job runs.
    Empty,
    /// Left as written (`$NAME` or `${NAME}`), for a later expansion to set or for a
    /// message to show.
    Kept,
}

/// `text` with each `$NAME` and `${NAME}` replaced by the last value `variables` give
/// it; a name they do not set as `unset` says.
pub fn expand(text: &str, variables: &[(String, String)], unset: Unset) -> String {
    let mut out = String::new();
    for piece in pieces(text) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Name { name, written } => match variables.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None if unset == Unset::Kept => out.push_str(written),
                None => {}
            },
        }
    }
    out
}

/// The names `text` refers to, in order (a name twice, twice).
pub fn names(text: &str) -> Vec<&str> {
    pieces(text)
        .filter_map(|p| match p {
            Piece::Name { name, .. } => Some(name),
            Piece::Text(_) => None,
        })
        .collect()
}

enum Piece<'a> {
    Text(&'a str),
    /// A reference: the name, and the reference as written.
    Name {
        name: &'a str,
        written: &'a str,
    },
}

/// `text` cut into plain text and references.
fn pieces(text: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(at) = rest.find('$') else {
            return Some(Piece::Text(std::mem::take(&mut rest)));
        };
        if at > 0 {
            let (before, after) = rest.split_at(at);
            rest = after;
            return Some(Piece::Text(before));
        }
        let after = &rest[1..];
        let (name, length) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 3),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end + 1)
            }
        };
        if name.is_empty() {
            // A lone `$`: kept, and the text after it read again.
            let (dollar, after) = rest.split_at(1);
            rest = after;
            return Some(Piece::Text(dollar));
        }
        let (written, after) = rest.split_at(length);
        rest = after;
        Some(Piece::Name { name, written })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn both_spellings_are_replaced_by_the_last_value() {
        let v = vars(&[("A", "1"), ("B_2", "two"), ("A", "3")]);
        assert_eq!(expand("x$A-${B_2}y$A", &v, Unset::Empty), "x3-twoy3");
        assert_eq!(names("x$A-${B_2}y$A"), ["A", "B_2", "A"]);
    }

    #[test]
    fn unset_names_are_emptied_or_kept_as_written() {
        let v = vars(&[("HOST", "registry.example")]);
        assert_eq!(expand("$REGISTRY/${IMAGE}:$HOST", &v, Unset::Empty), "/:registry.example");
        assert_eq!(
            expand("$REGISTRY/${IMAGE}:$HOST", &v, Unset::Kept),
            "$REGISTRY/${IMAGE}:registry.example"
        );
    }

    #[test]
    fn names_a_shell_takes() {
        for good in ["A", "_x1", "POSTGRES_DB"] {
            assert!(is_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "É"] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_dollar_without_a_name_stays() {
        let v = vars(&[("A", "1")]);
        assert_eq!(expand("$ $$A ${ $-", &v, Unset::Empty), "$ $1 ${ $-");
        assert_eq!(expand("${}", &v, Unset::Kept), "${}");
        assert!(names("$ ${ $-").is_empty());
        assert_eq!(expand("é$A€", &v, Unset::Empty), "é1€");
    }
}
