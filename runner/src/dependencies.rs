//! The artifacts of earlier jobs (the job's `dependencies`, as the server lists them in
//! the assignment), put into the build directory after the checkout and before the
//! scripts run, as GitLab does. Each file is fetched from
//! `GET /api/runner/v1/jobs/{job}/dependencies/{earlier}/artifacts/{path}` and written
//! through `beneath::JobTree::create_file`: whatever the checkout planted, nothing lands
//! outside the build directory and nothing is written through a link. A cancel or an
//! abort stops the download at once.

use std::path::Path;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use usher_core::artifacts::normalize_path;
use usher_core::protocol::{DependencyFile, JobAssignment, MAX_DEPENDENCY_BYTES, MAX_DEPENDENCY_FILES};

use crate::artifacts::{Uploader, refusal};
use crate::beneath::JobTree;
use crate::control::Control;
use crate::isolation::JobUser;
use crate::logsink::LogHandle;

/// How long a download may send nothing before it is given up.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Disk space left free besides the files (for the job's own work).
const SPARE_BYTES: u64 = 64 * 1024 * 1024;

/// How fetching the dependencies' artifacts ended.
pub enum DownloadEnd {
    Done,
    /// What went wrong: a file missing on the server, a refusal, a full disk, a link in
    /// the way. The job cannot run as its author meant.
    Failed(String),
    /// A cancel, shutdown or abort arrived.
    Stopped(Control),
}

/// Puts every file of `dependencies` into `build_dir`, owned by `owner` (the job's user;
/// None: as the runner), noting each job's files in the log.
pub async fn download(
    server: &Uploader,
    job: &JobAssignment,
    build_dir: &Path,
    owner: Option<JobUser>,
    log: &LogHandle,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> DownloadEnd {
    let (job_id, dependencies) = (job.job_id, &job.dependencies);
    if job.dependencies_left_out > 0 {
        return DownloadEnd::Failed(format!(
            "the jobs it depends on hold {} more file(s) than one job may get ({MAX_DEPENDENCY_FILES} files, \
             {MAX_DEPENDENCY_BYTES} bytes in all): name fewer jobs in `dependencies:`",
            job.dependencies_left_out
        ));
    }
    if dependencies.is_empty() {
        return DownloadEnd::Done;
    }
    // Root's writes are not held back by the blocks a file system keeps for root: look
    // first, and leave room for the job itself.
    let wanted: u64 = dependencies.iter().flat_map(|d| &d.files).map(|f| f.size).sum();
    if let Ok(space) = rustix::fs::statvfs(build_dir) {
        let free = space.f_bavail.saturating_mul(space.f_frsize);
        if wanted.saturating_add(SPARE_BYTES) > free {
            return DownloadEnd::Failed(format!("they take {wanted} bytes, and the runner's disk has {free} bytes free"));
        }
    }
    let tree = match JobTree::open(build_dir, owner) {
        Ok(tree) => tree,
        Err(e) => return DownloadEnd::Failed(format!("the build directory cannot be opened: {e}")),
    };
    for dependency in dependencies {
        let bytes: u64 = dependency.files.iter().map(|f| f.size).sum();
        log.note(&format!(
            "Downloading the artifacts of {} (job #{}): {} file(s), {bytes} bytes",
            dependency.job_name,
            dependency.job_id,
            dependency.files.len()
        ));
        for file in &dependency.files {
            let fetch = fetch_one(server, job_id, dependency.job_id, file, &tree);
            tokio::pin!(fetch);
            let result = tokio::select! {
                r = &mut fetch => r,
                c = control.recv() => match c {
                    Some(stop) => return DownloadEnd::Stopped(stop),
                    // The runner's side of the channel is gone: finish this file.
                    None => fetch.await,
                },
            };
            if let Err(why) = result {
                return DownloadEnd::Failed(format!(
                    "artifact {} of {} (job #{}): {why}",
                    file.path, dependency.job_name, dependency.job_id
                ));
            }
        }
    }
    DownloadEnd::Done
}

/// Fetches one file into the tree; it must have the size the assignment said.
async fn fetch_one(server: &Uploader, job_id: i64, dependency: i64, file: &DependencyFile, tree: &JobTree) -> Result<(), String> {
    let rel = normalize_path(&file.path).ok_or_else(|| "not a plain relative path".to_string())?;
    let stalled = || format!("the server sent nothing for {} s", STALL.as_secs());
    let request = server.get(job_id, &format!("dependencies/{dependency}/artifacts"), &rel).send();
    let mut response = tokio::time::timeout(STALL, request)
        .await
        .map_err(|_| stalled())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let created = tree.create_file(Path::new(&rel)).map_err(|e| e.to_string())?;
    let mut out = tokio::fs::File::from_std(created);
    let mut written: u64 = 0;
    loop {
        let chunk = tokio::time::timeout(STALL, response.chunk())
            .await
            .map_err(|_| stalled())?
            .map_err(|e| format!("the download broke off: {e}"))?;
        let Some(chunk) = chunk else { break };
        written += chunk.len() as u64;
        if written > file.size {
            return Err(format!("the server sent more than its {} bytes", file.size));
        }
        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    out.flush().await.map_err(|e| e.to_string())?;
    if written != file.size {
        return Err(format!("{written} of its {} bytes arrived", file.size));
    }
    Ok(())
}
