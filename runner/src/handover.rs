//! A job's `artifacts: reports: dotenv` files, read when the job ends — after
//! after_script, also when it was cancelled (a provision job stopped half-way hands over
//! what it wrote), not when it was aborted — and turned into the variables its report
//! carries to the server for the pipeline's later jobs. Each file is read the way
//! artifacts are (`beneath::JobTree`: beneath the build directory, no link followed,
//! only a regular file the job's user could read, at most `dotenv::MAX_BYTES`). The log
//! names what was handed over, never the values.

use std::io::Read;
use std::path::Path;

use usher_core::dotenv;

use crate::beneath::JobTree;
use crate::isolation::JobUser;
use crate::logsink::LogHandle;

/// The variables `files` (relative to `build_dir`) hand over, read with `reader`'s
/// rights; None when the job has no dotenv files.
pub fn read(files: &[String], build_dir: &Path, reader: Option<JobUser>, log: &LogHandle) -> Option<Vec<(String, String)>> {
    if files.is_empty() {
        return None;
    }
    let mut variables: Vec<(String, String)> = Vec::new();
    let tree = match JobTree::open(build_dir, reader) {
        Ok(tree) => tree,
        Err(e) => {
            log.note(&format!("dotenv: cannot open the build directory: {e}"));
            return Some(variables);
        }
    };
    for file in files {
        let text = match read_one(&tree, file) {
            Ok(Some(text)) => text,
            Ok(None) => {
                log.note(&format!("dotenv: {file} does not exist; it hands over nothing."));
                continue;
            }
            Err(e) => {
                log.note(&format!("dotenv: {file} is not read: {e}"));
                continue;
            }
        };
        let parsed = dotenv::parse(&text);
        for problem in &parsed.problems {
            log.note(&format!("dotenv: {file}: {problem}"));
        }
        let names: Vec<&str> = parsed.variables.iter().map(|(n, _)| n.as_str()).collect();
        log.note(&format!(
            "dotenv: {file} hands over {} variable(s) to later jobs: {}",
            names.len(),
            names.join(", ")
        ));
        for (name, value) in parsed.variables {
            variables.retain(|(n, _)| *n != name);
            variables.push((name, value));
        }
    }
    Some(dotenv::accept(variables))
}

/// The file's text (None: it does not exist), at most one byte over the limit, so that
/// a larger file is seen to be larger without being read whole.
fn read_one(tree: &JobTree, file: &str) -> std::io::Result<Option<String>> {
    let rel = Path::new(file.trim_start_matches("./"));
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(std::io::Error::other("the path must stay inside the build directory"));
    }
    let file = match tree.open_file(rel) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(dotenv::MAX_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| std::io::Error::other("it is not UTF-8 text"))
}
