//! The paths of `artifacts: paths`, `artifacts: exclude` and `cache: paths`, read as
//! GitLab reads them: a plain path inside the build directory, or a glob pattern where
//! `*` and `?` match within one directory level, `**` across levels, and `[…]`, `{a,b}`
//! as usual. A pattern that matches a directory takes everything below it (for `paths`);
//! `exclude` matches files only, as in GitLab. The runner walks only the directory
//! before the first wildcard, so `build/*.log` never reads outside `build/`.

use globset::{GlobBuilder, GlobMatcher};

use crate::artifacts::normalize_path;

/// One written path or pattern, checked.
#[derive(Clone, Debug)]
pub struct PathPattern {
    /// The path as normalized (`./out//a` → `out/a`).
    text: String,
    /// None for a plain path.
    glob: Option<GlobMatcher>,
}

impl PathPattern {
    /// The pattern, or why it cannot be one, as words that follow "it": it must stay
    /// inside the build directory (relative, no `..`) and be valid glob syntax.
    pub fn parse(written: &str) -> Result<PathPattern, String> {
        let text = normalize_path(written)
            .ok_or_else(|| "must be a relative path inside the build directory (no leading `/`, no `..`)".to_string())?;
        if !text.contains(['*', '?', '[', '{']) {
            return Ok(PathPattern { text, glob: None });
        }
        let glob = GlobBuilder::new(&text)
            .literal_separator(true)
            .backslash_escape(false)
            .build()
            .map_err(|e| format!("is not a valid pattern ({})", e.kind()))?;
        Ok(PathPattern {
            text,
            glob: Some(glob.compile_matcher()),
        })
    }

    /// The plain path when this is not a pattern.
    pub fn literal(&self) -> Option<&str> {
        self.glob.is_none().then_some(self.text.as_str())
    }

    /// The directory to search: the segments before the first one with a wildcard
    /// (`""`, the build directory itself, for `*.log`).
    pub fn base(&self) -> &str {
        let mut end = 0;
        for (i, segment) in self.text.split('/').enumerate() {
            if segment.contains(['*', '?', '[', '{']) {
                break;
            }
            end = if i == 0 { segment.len() } else { end + 1 + segment.len() };
        }
        &self.text[..end]
    }

    /// Whether `file` (relative to the build directory) is taken: the pattern matches it
    /// or a directory above it.
    pub fn takes(&self, file: &str) -> bool {
        let mut at = file.len();
        loop {
            if self.matches(&file[..at]) {
                return true;
            }
            match file[..at].rfind('/') {
                Some(slash) => at = slash,
                None => return false,
            }
        }
    }

    /// Whether the pattern matches `path` itself (what `exclude` asks).
    pub fn matches(&self, path: &str) -> bool {
        match &self.glob {
            Some(glob) => glob.is_match(path),
            None => self.text == path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> PathPattern {
        PathPattern::parse(text).unwrap()
    }

    #[test]
    fn plain_paths_stay_plain() {
        assert_eq!(p("./out//report.txt").literal(), Some("out/report.txt"));
        assert!(p("out").takes("out/a/b.txt") && !p("out").takes("outer/b.txt"));
    }

    #[test]
    fn a_star_stays_within_one_directory_and_two_cross_them() {
        let logs = p("build/*.log");
        assert_eq!(logs.base(), "build");
        assert!(logs.takes("build/a.log") && logs.takes("build/.hidden.log"));
        assert!(!logs.takes("build/sub/a.log") && !logs.takes("a.log"));
        let deep = p("build/**/*.xml");
        assert!(deep.takes("build/a/b/TEST-1.xml") && deep.takes("build/TEST-1.xml"));
        assert_eq!(p("*.tgz").base(), "");
        assert!(p("*.tgz").takes("dist.tgz") && !p("*.tgz").takes("sub/dist.tgz"));
    }

    #[test]
    fn a_pattern_naming_directories_takes_what_is_below_them() {
        let logs = p("build-*/meson-logs");
        assert_eq!(logs.base(), "");
        assert!(logs.takes("build-x86/meson-logs/testlog.txt"));
        assert!(!logs.takes("build-x86/other/testlog.txt"));
        assert!(p("target/surefire-reports/TEST-*.xml").takes("target/surefire-reports/TEST-a.xml"));
        assert!(p("{a,b}/out?.txt").takes("b/out1.txt"));
    }

    #[test]
    fn patterns_outside_the_build_directory_or_broken_are_refused() {
        for bad in ["/etc/*", "../*.log", "a/../../*", "[unclosed"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(PathPattern::parse("[unclosed").unwrap_err().starts_with("is not a valid pattern"));
    }
}
