//! What names and refs may look like: project and user names, and git refs (git's own
//! `check-ref-format` rules). Checked by the engine on every way in, and by the UI
//! before it sends a form.

/// The longest project or user name.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest ref, in bytes (git's own limit for a ref name is about this).
pub const MAX_REF_BYTES: usize = 255;

/// A project or user name: 1 to 100 characters after trimming, no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(format!("a {what} needs a name"));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(format!("a {what} name has at most {MAX_NAME_CHARS} characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!("a {what} name cannot contain control characters"));
    }
    Ok(())
}

/// A branch, tag or other ref as git accepts it (`git check-ref-format --allow-onelevel`).
pub fn check_ref(git_ref: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{}` is not a valid git ref: {why}", git_ref.escape_debug()));
    if git_ref.is_empty() {
        return Err("`ref` must not be empty".into());
    }
    if git_ref.len() > MAX_REF_BYTES {
        return Err(format!("a ref has at most {MAX_REF_BYTES} bytes"));
    }
    if let Some(c) = git_ref.chars().find(|c| c.is_ascii_control() || " ~^:?*[\\".contains(*c)) {
        return bad(&format!("it contains {:?}", c));
    }
    if git_ref.contains("..") || git_ref.contains("@{") || git_ref.contains("//") {
        return bad("it contains `..`, `@{` or `//`");
    }
    if git_ref == "@" || git_ref.starts_with('/') || git_ref.ends_with('/') || git_ref.ends_with('.') {
        return bad("it is `@`, or starts or ends with `/`, or ends with `.`");
    }
    if git_ref.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
        return bad("a part starts with `.` or ends with `.lock`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_follow_git() {
        for ok in ["main", "feature/x-1", "v1.2.3", "release/2026.11", "refs/heads/main", "a@b"] {
            assert_eq!(check_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "a b", "a..b", "a\0b", "x~1", "x^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/", "a.", "a//b", ".a", "a/.b", "a.lock", "@",
            "a@{1}",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_ref(&"x".repeat(256)).is_err());
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("project", "web").is_ok());
        assert!(check_name("project", "  ").is_err());
        assert!(check_name("project", &"x".repeat(101)).is_err());
        assert!(check_name("project", "a\u{0}b").is_err());
        assert!(check_name("project", &"é".repeat(100)).is_ok());
    }
}
