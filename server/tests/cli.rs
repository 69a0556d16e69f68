//! The command lines: every flag of every command has a help line and an environment
//! variable, both programs answer `--version`, and both print shell completions.

use std::process::Command;

use usher_testkit::runner_binary;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

fn help(program: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The flags of a `--help` text that lack an `[env: …]` or a help sentence (each flag's
/// block runs until the next flag).
fn flags_without_env(text: &str) -> Vec<String> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") || (trimmed.starts_with('-') && trimmed.contains(", --")) {
            let flag = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap()
                .trim_end_matches(',')
                .to_string();
            blocks.push((flag, trimmed.to_string()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push(' ');
            block.push_str(trimmed);
        }
    }
    blocks
        .into_iter()
        .filter(|(flag, _)| !["--help", "--version", "--completions"].contains(&flag.as_str()))
        .filter(|(_, block)| {
            // Help: some word besides the flag, its <VALUE> and the bracketed facts.
            let described = block
                .split('[')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .any(|w| !w.starts_with('-') && !w.starts_with('<'));
            !block.contains("[env:") || !described
        })
        .map(|(flag, _)| flag)
        .collect()
}

#[test]
fn every_flag_has_an_environment_variable_and_help() {
    let usher = std::path::PathBuf::from(USHER);
    for command in [
        vec!["serve"],
        vec!["user", "add"],
        vec!["user", "password"],
        vec!["token", "create"],
        vec!["token", "revoke"],
        vec!["runner-token", "create"],
        vec!["runner-token", "revoke"],
    ] {
        let text = help(&usher, &command);
        assert_eq!(flags_without_env(&text), Vec::<String>::new(), "usher {command:?}:\n{text}");
    }
    let text = help(&runner_binary(), &[]);
    assert_eq!(flags_without_env(&text), Vec::<String>::new(), "usher-runner:\n{text}");
    let roles = help(&usher, &["user", "add"]);
    assert!(
        ["viewer", "developer", "maintainer", "admin"].iter().all(|r| roles.contains(r)),
        "{roles}"
    );
}

#[test]
fn version_and_completions() {
    let usher = USHER;
    for (program, args, expect) in [
        (usher.into(), vec!["--version"], "usher 0.1.0"),
        (runner_binary(), vec!["--version"], "usher-runner 0.1.0"),
        (usher.into(), vec!["completions", "bash"], "_usher()"),
        (runner_binary(), vec!["--completions", "zsh"], "#compdef usher-runner"),
    ] {
        let out = Command::new(&program).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(expect), "{args:?}: {text}");
    }
}

/// A lost admin password: `usher user password admin` sets a new one from stdin, which
/// then signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_password_is_reset_from_the_command_line() {
    let t = usher_testkit::TestServer::start(0).await;
    let out = usher_testkit::run_usher_cli(USHER, t.data_dir.path(), &["user", "password", "admin"], "brand-new-password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    usher_testkit::sign_in(&t, "admin", "brand-new-password").await;
    let out = usher_testkit::run_usher_cli(USHER, t.data_dir.path(), &["user", "password", "nobody"], "x\n");
    assert!(!out.status.success());
    t.stop().await;
}

/// Boolean variables read as people write them: `1`, `yes`, `true` (and `0`, `no`,
/// `false`); anything else is refused by name, not taken for false.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boolean_variables_take_1_yes_and_true() {
    let t = usher_testkit::TestServer::start(0).await;
    let add = |name: &str, value: &str| {
        use std::io::Write;
        let mut child = Command::new(USHER)
            .args(["user", "add", name, "--role", "viewer"])
            .env("USHER_DATA_DIR", t.data_dir.path())
            .env_remove("DATABASE_URL")
            .env("USHER_PASSWORD_STDIN", value)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"a-long-enough-password\n").unwrap();
        child.wait_with_output().unwrap()
    };
    for (name, value) in [("one", "1"), ("yes", "yes"), ("true", "TRUE")] {
        let out = add(name, value);
        assert!(out.status.success(), "{value}: {}", String::from_utf8_lossy(&out.stderr));
        usher_testkit::sign_in(&t, name, "a-long-enough-password").await;
    }
    let out = add("maybe", "maybe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("maybe") && stderr.contains("password-stdin"),
        "{stderr}"
    );
    t.stop().await;
}
