//! The bash a job runs: the script file for `before_script` + `script`, which saves the
//! shell's exported variables and working directory after every line and in its TERM and
//! EXIT traps, and the after_script file, which starts from that saved state.

use std::path::Path;

use usher_core::protocol::JobAssignment;

pub const PASSED_THROUGH: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SHELL"];

/// Quotes a string for bash.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn script_text(job: &JobAssignment, state_file: &Path) -> String {
    let state = sh_quote(&state_file.to_string_lossy());
    let mut s = String::new();
    s.push_str("set -eo pipefail\n");
    s.push_str(&format!("__usher_state={state}\n"));
    s.push_str(
        "__usher_save_state() { { export -p; printf 'cd -- %q\\n' \"$PWD\"; } > \"$__usher_state.tmp\" 2>/dev/null \
         && command mv -f \"$__usher_state.tmp\" \"$__usher_state\" 2>/dev/null; }\n",
    );
    s.push_str("trap '__usher_save_state' EXIT\n");
    s.push_str("trap '__usher_save_state; exit 143' TERM\n");
    for line in job.before_script.iter().chain(job.script.iter()) {
        s.push_str(&format!("printf '\\033[32;1m$ %s\\033[0m\\n' {}\n", sh_quote(line)));
        s.push_str(line);
        s.push_str("\n__usher_save_state\n");
    }
    s
}

pub fn after_script_text(job: &JobAssignment, state_file: &Path, cwd: Option<&Path>, status: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "[ -f {0} ] && source {0} >/dev/null 2>&1\n",
        sh_quote(&state_file.to_string_lossy())
    ));
    if let Some(cwd) = cwd {
        s.push_str(&format!("cd -- {} 2>/dev/null\n", sh_quote(&cwd.to_string_lossy())));
    }
    s.push_str(&format!("export CI_JOB_STATUS={status}\n"));
    s.push_str("set -eo pipefail\n");
    for line in &job.after_script {
        s.push_str(&format!("printf '\\033[32;1m$ %s\\033[0m\\n' {}\n", sh_quote(line)));
        s.push_str(line);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::sh_quote;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
