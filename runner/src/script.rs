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

/// Which shell runs the generated files: the shell executor's bash, or whatever the
/// job's image has (bash or a POSIX sh such as busybox's or dash) with the docker
/// executor. `Posix` files also work in bash; `Bash` ones are a little cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Posix,
}

impl Shell {
    /// `set -e` and, where the shell has it, pipefail.
    fn strict(self) -> &'static str {
        match self {
            Shell::Bash => "set -eo pipefail\n",
            Shell::Posix => "(set -o pipefail) 2>/dev/null && set -o pipefail\nset -e\n",
        }
    }

    /// The function that saves exported variables and the working directory.
    fn save_state(self) -> &'static str {
        match self {
            Shell::Bash => {
                "__usher_save_state() { { export -p; printf 'cd -- %q\\n' \"$PWD\"; } > \"$__usher_state.tmp\" 2>/dev/null \
                 && command mv -f \"$__usher_state.tmp\" \"$__usher_state\" 2>/dev/null; }\n"
            }
            // No printf %q in POSIX sh: quote the directory by hand (no subshell).
            Shell::Posix => {
                "__usher_q() { __usher_r=; __usher_s=$1; while :; do case $__usher_s in *\\'*) \
                 __usher_r=\"$__usher_r${__usher_s%%\\'*}'\\\\''\"; __usher_s=${__usher_s#*\\'};; *) break;; esac; done; \
                 printf \"'%s%s'\" \"$__usher_r\" \"$__usher_s\"; }\n\
                 __usher_save_state() { { export -p; printf 'cd -- '; __usher_q \"$PWD\"; printf '\\n'; } > \"$__usher_state.tmp\" 2>/dev/null \
                 && command mv -f \"$__usher_state.tmp\" \"$__usher_state\" 2>/dev/null; }\n"
            }
        }
    }
}

/// `export NAME='value'` lines: how a container's shell gets the job's variables (the
/// shell executor passes them in the environment instead). Names a shell cannot hold
/// are left out.
pub fn exports_text(variables: &[(String, String)]) -> String {
    let valid = |k: &str| {
        k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut s = String::new();
    for (k, v) in variables.iter().filter(|(k, _)| valid(k)) {
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    s
}

pub fn script_text(job: &JobAssignment, state_file: &Path, shell: Shell) -> String {
    let state = sh_quote(&state_file.to_string_lossy());
    let mut s = String::new();
    s.push_str(shell.strict());
    // usher-defer (see `after_script`) is on the job's PATH, writing beside the state.
    let meta = state_file.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
    s.push_str(&format!(
        "export PATH={}:\"$PATH\"\nexport USHER_DEFER_FILE={}\n",
        sh_quote(&meta.join(crate::programs::BIN).to_string_lossy()),
        sh_quote(&state_file.with_file_name("defer").to_string_lossy())
    ));
    s.push_str(&format!("__usher_state={state}\n"));
    s.push_str(shell.save_state());
    s.push_str("trap '__usher_save_state' EXIT\n");
    s.push_str("trap '__usher_save_state; exit 143' TERM\n");
    for line in job.before_script.iter().chain(job.script.iter()) {
        s.push_str(&format!("printf '\\033[32;1m$ %s\\033[0m\\n' {}\n", sh_quote(line)));
        s.push_str(line);
        s.push_str("\n__usher_save_state\n");
    }
    s
}

pub fn after_script_text(job: &JobAssignment, state_file: &Path, cwd: Option<&Path>, status: &str, shell: Shell) -> String {
    cleanup_text(state_file, cwd, status, &job.after_script, shell)
}

/// A shell that starts where the script stopped and runs `lines` (after_script's, or a
/// deferred command).
pub fn cleanup_text(state_file: &Path, cwd: Option<&Path>, status: &str, lines: &[String], shell: Shell) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "[ -f {0} ] && . {0} >/dev/null 2>&1\n",
        sh_quote(&state_file.to_string_lossy())
    ));
    if let Some(cwd) = cwd {
        s.push_str(&format!("cd -- {} 2>/dev/null\n", sh_quote(&cwd.to_string_lossy())));
    }
    s.push_str(&format!("export CI_JOB_STATUS={status}\n"));
    s.push_str(shell.strict());
    for line in lines {
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
