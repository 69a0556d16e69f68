//! The data dir (`--data-dir`): the SQLite database, artifacts and local runners' build
//! directories. Only the server's user may read it; the job user may only pass through
//! it to the build directories (mode 0711, no listing), whose own directories are the
//! job's. The first admin's credentials go into a file only the server's user can read,
//! and onto the terminal only when there is one: never into a log.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use usher_engine::BootstrapCredentials;

/// The file holding the first admin's password (and token), created on first start.
pub const FIRST_CREDENTIALS_FILE: &str = "initial-admin-credentials";

fn set_mode(path: &Path, mode: u32) {
    if path.exists() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
}

/// Creates the data dir and its `builds/`, passable but not readable by others.
pub fn prepare(data_dir: &Path) -> Result<(), String> {
    let builds = data_dir.join("builds");
    std::fs::create_dir_all(&builds).map_err(|e| format!("cannot create {}: {e}", builds.display()))?;
    set_mode(data_dir, 0o711);
    set_mode(&builds, 0o711);
    Ok(())
}

/// The database files and artifacts: the server's user only. (SQLite creates its `-wal`
/// and `-shm` files with the database file's mode.)
pub fn make_private(data_dir: &Path) {
    for name in ["usher.db", "usher.db-wal", "usher.db-shm", FIRST_CREDENTIALS_FILE] {
        set_mode(&data_dir.join(name), 0o600);
    }
    let artifacts = data_dir.join("artifacts");
    let _ = std::fs::create_dir_all(&artifacts);
    set_mode(&artifacts, 0o700);
}

/// Writes the first admin's credentials to a file of mode 0600 and says where; shows them
/// too when standard output is a terminal (not a log).
pub fn hand_over_first_credentials(data_dir: &Path, creds: &BootstrapCredentials) -> Result<(), String> {
    let path = data_dir.join(FIRST_CREDENTIALS_FILE);
    let mut text = format!("user: admin\npassword: {}\n", creds.password);
    if let Some(token) = &creds.token {
        text.push_str(&format!("api token: {token}\n"));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    println!("First start: created the user `admin`.");
    if std::io::stdout().is_terminal() {
        for line in text.lines().skip(1) {
            println!("  admin {line}");
        }
    }
    println!(
        "The password{} {} in {} (readable only by this user); delete the file once you have it.",
        if creds.token.is_some() { " and API token" } else { "" },
        if creds.token.is_some() { "are" } else { "is" },
        path.display()
    );
    Ok(())
}
