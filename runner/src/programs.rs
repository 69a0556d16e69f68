//! The programs a job finds on its PATH: `usher-defer`, which registers a command to run
//! when the job ends (see `after_script`). They live in `bin/` of the directory beside
//! the build directory, root's: anyone may run them, nobody but root change them (their
//! text is no secret, and being the runner's from the start, a ready set's programs need
//! no change of owner when a job takes it).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The programs' directory, beside the build directory.
pub const BIN: &str = "bin";

/// `usher-defer CMD…`: appends CMD, base64-encoded, a line each, to `$USHER_DEFER_FILE`.
pub const USHER_DEFER: &str = r#"#!/bin/sh
# usher-defer CMD...: CMD runs when the job ends (success, failure, timeout or a
# graceful cancel; not an abort), after after_script, last registered first.
if [ $# -eq 0 ]; then
  echo "usher-defer: give the command to run when the job ends, e.g.: usher-defer ./destroy-environment" >&2
  exit 2
fi
line=$(printf '%s' "$*" | base64 | tr -d '
') || exit 1
printf '%s
' "$line" >> "$USHER_DEFER_FILE" || exit 1
printf '[33;1musher-defer: `%s` runs when the job ends[0m
' "$*"
"#;

/// Puts `bin/` with the programs into `beside` (a new job directory, still the runner's).
pub fn install(beside: &Path) -> std::io::Result<()> {
    let bin = beside.join(BIN);
    std::fs::DirBuilder::new().mode(0o755).create(&bin)?;
    let program = bin.join("usher-defer");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&program)?
        .write_all(USHER_DEFER.as_bytes())?;
    // Whatever the runner's umask took away.
    for path in [&bin, &program] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
