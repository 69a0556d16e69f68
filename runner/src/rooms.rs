//! A job's directories, made before the job arrives. Every job gets a build directory
//! (`job-<id>`) and one beside it for its scripts, saved state and home
//! (`job-<id>.usher`). The one beside stays the runner's (the job may read it, not
//! write it), so the scripts the runner writes there cannot be swapped for links to
//! root's files; only its `home` and `state` become the job user's. Making them costs 0.2–0.8 ms on a VM whose disk has been idle,
//! which used to fall between the job reaching the runner and its first line. So the
//! runner keeps one empty set ready for each job it may run at once, made while it
//! waits (`job-ready-<n>` and `job-ready-<n>.usher`), and a job renames a ready set
//! into place; it makes its own only when none is ready. A ready set stays the
//! runner's until a job takes it and only then becomes the job user's, so a job
//! cannot put anything into the directories of a job that comes after it.
//!
//! A ready set is named like any job directory, so the start-up clean-up of a crashed
//! runner's leftovers (`host::prepare_host`) removes it too; a clean stop removes it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::isolation::{self, JobUser};

/// The job user's home, inside the directory beside the build directory.
pub const HOME: &str = "home";
/// Where the job's shell saves its state (variables, directory) for after_script.
pub const STATE: &str = "state";

/// This runner's ready sets of job directories.
#[derive(Debug)]
pub struct ReadyRooms {
    builds_dir: PathBuf,
    /// How many sets to keep ready: one per job the runner may run at once.
    wanted: usize,
    state: Mutex<Ready>,
    /// Held while sets are being made, so two refills do not make more than wanted.
    refilling: Mutex<()>,
}

#[derive(Debug, Default)]
struct Ready {
    /// (build directory, the directory beside it) of each ready set.
    sets: Vec<(PathBuf, PathBuf)>,
    /// The next set's number.
    next: u64,
    /// The runner is stopping: no more sets (a refill after the last job may come late).
    closed: bool,
}

impl ReadyRooms {
    pub fn new(builds_dir: &Path, wanted: usize) -> ReadyRooms {
        ReadyRooms {
            builds_dir: builds_dir.to_path_buf(),
            wanted,
            state: Mutex::new(Ready::default()),
            refilling: Mutex::new(()),
        }
    }

    /// Gives a job its empty build directory `build` and the directory `beside` it
    /// (holding an empty `home` and `state`): a ready set renamed, or new ones. The build
    /// directory, `home` and `state` become `user`'s; `beside` stays the runner's, which
    /// the job's group may only read.
    pub fn take(&self, build: &Path, beside: &Path, user: Option<&JobUser>) -> std::io::Result<()> {
        self.place(build, beside)?;
        isolation::give_to(build, user)?;
        isolation::give_to(&beside.join(HOME), user)?;
        isolation::give_to(&beside.join(STATE), user)?;
        isolation::let_read(beside, user)
    }

    /// A ready set renamed to `build` and `beside`, or new directories there.
    fn place(&self, build: &Path, beside: &Path) -> std::io::Result<()> {
        let ready = self.state.lock().unwrap().sets.pop();
        if let Some((ready_build, ready_beside)) = ready {
            // A job id is never reused, so the targets do not exist; if they do (left by
            // a runner that crashed mid-job), renaming fails and the job gets new ones.
            if std::fs::rename(&ready_build, build).is_ok() && std::fs::rename(&ready_beside, beside).is_ok() {
                return Ok(());
            }
            let _ = std::fs::remove_dir_all(&ready_build);
            let _ = std::fs::remove_dir_all(&ready_beside);
        }
        make_set(build, beside)
    }

    /// Makes sets until as many as wanted are ready. Blocking file-system work: called
    /// at start and, on a blocking thread, after each job.
    pub fn refill(&self) {
        let _one_at_a_time = self.refilling.lock().unwrap();
        loop {
            let number = {
                let mut state = self.state.lock().unwrap();
                if state.closed || state.sets.len() >= self.wanted {
                    return;
                }
                state.next += 1;
                state.next - 1
            };
            let build = self.builds_dir.join(format!("job-ready-{number}"));
            let beside = self.builds_dir.join(format!("job-ready-{number}.usher"));
            if let Err(e) = make_set(&build, &beside) {
                // Jobs make their own directories then, and report what fails.
                tracing::warn!("could not make directories for the next job in {}: {e}", self.builds_dir.display());
                let _ = std::fs::remove_dir_all(&build);
                let _ = std::fs::remove_dir_all(&beside);
                return;
            }
            self.state.lock().unwrap().sets.push((build, beside));
        }
    }

    /// Removes the ready sets and makes no more (the runner is stopping).
    pub fn clear(&self) {
        let _one_at_a_time = self.refilling.lock().unwrap();
        let sets = {
            let mut state = self.state.lock().unwrap();
            state.closed = true;
            std::mem::take(&mut state.sets)
        };
        for (build, beside) in sets {
            let _ = std::fs::remove_dir_all(build);
            let _ = std::fs::remove_dir_all(beside);
        }
    }
}

/// New, empty directories for a job, still the runner's, with the job's programs.
fn make_set(build: &Path, beside: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(build);
    let _ = std::fs::remove_dir_all(beside);
    std::fs::create_dir_all(build)?;
    std::fs::create_dir_all(beside.join(HOME))?;
    std::fs::create_dir(beside.join(STATE))?;
    crate::programs::install(beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_job_takes_a_ready_set_and_the_next_is_made_for_the_job_after() {
        let builds = tempfile::tempdir().unwrap();
        let rooms = ReadyRooms::new(builds.path(), 1);
        rooms.refill();
        assert_eq!(names(builds.path()), ["job-ready-0", "job-ready-0.usher"]);

        let (build, beside) = (builds.path().join("job-7"), builds.path().join("job-7.usher"));
        rooms.take(&build, &beside, None).unwrap();
        assert_eq!(names(builds.path()), ["job-7", "job-7.usher"]);
        assert!(names(&build).is_empty());
        assert_eq!(names(&beside), ["bin", "home", "state"]);
        assert!(names(&beside.join("home")).is_empty());

        rooms.refill();
        rooms.refill();
        assert_eq!(names(builds.path()), ["job-7", "job-7.usher", "job-ready-1", "job-ready-1.usher"]);
        rooms.clear();
        assert_eq!(names(builds.path()), ["job-7", "job-7.usher"]);
        // The refill a job started as it ended may run after the runner cleared.
        rooms.refill();
        assert_eq!(names(builds.path()), ["job-7", "job-7.usher"]);
    }

    #[test]
    fn a_ready_set_is_the_runners_until_a_job_takes_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can hand directories to a job user");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let owner = |path: &Path| std::fs::metadata(path).unwrap().uid();
        let builds = tempfile::tempdir().unwrap();
        let user = JobUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        let rooms = ReadyRooms::new(builds.path(), 1);
        rooms.refill();
        // A job running as the job user cannot write into the next job's directories.
        for ready in ["job-ready-0", "job-ready-0.usher", "job-ready-0.usher/home"] {
            assert_eq!(owner(&builds.path().join(ready)), 0, "{ready}");
        }
        let (build, beside) = (builds.path().join("job-3"), builds.path().join("job-3.usher"));
        rooms.take(&build, &beside, Some(&user)).unwrap();
        for taken in [&build, &beside.join("home"), &beside.join("state")] {
            assert_eq!(owner(taken), 65534, "{}", taken.display());
        }
        // The scripts' directory stays root's: the job cannot plant a link there.
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&beside).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o777), (0, 65534, 0o750));
        // So do its programs, which the job may run but not change.
        for program in [beside.join("bin"), beside.join("bin/usher-defer")] {
            let meta = std::fs::metadata(&program).unwrap();
            assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o755), "{}", program.display());
        }
    }

    #[test]
    fn without_a_ready_set_or_over_a_crashed_runners_leftovers_a_job_gets_empty_directories() {
        let builds = tempfile::tempdir().unwrap();
        let rooms = ReadyRooms::new(builds.path(), 1);
        let (build, beside) = (builds.path().join("job-8"), builds.path().join("job-8.usher"));
        rooms.take(&build, &beside, None).unwrap();
        assert!(names(&build).is_empty());
        assert_eq!(names(&beside), ["bin", "home", "state"]);

        // A crashed run of job 9 left files; the ready set cannot be renamed over them.
        let (build, beside) = (builds.path().join("job-9"), builds.path().join("job-9.usher"));
        std::fs::create_dir_all(build.join("src")).unwrap();
        std::fs::write(build.join("src/left-over"), "x").unwrap();
        std::fs::create_dir_all(beside.join("home")).unwrap();
        std::fs::write(beside.join("state.sh"), "export OLD=1").unwrap();
        rooms.refill();
        rooms.take(&build, &beside, None).unwrap();
        assert!(names(&build).is_empty());
        assert_eq!(names(&beside), ["bin", "home", "state"]);
        assert_eq!(names(builds.path()), ["job-8", "job-8.usher", "job-9", "job-9.usher"]);
    }
}
