//! How the runner, which is root, touches files in places a job can change. The job is
//! hostile and may swap any name it controls for a symbolic link, a FIFO or a device at
//! any moment, so the runner never opens such a name by path as root:
//!
//! - **Its own files** (the job's scripts) are created in a directory only the runner
//!   can write, opened without following links, and created with `O_EXCL`: nothing the
//!   job planted is followed or overwritten.
//! - **The job's files** (artifacts) are opened beneath a descriptor of the build
//!   directory with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, first as `O_PATH` (opening a FIFO or a
//!   device would block or act), checked with `fstat` to be a regular file (or a
//!   directory to walk) that the job's own user may read, and only then reopened for
//!   reading through that same descriptor. A file swapped after it was listed is
//!   either the job's own file or an error; never root's data, never a hang.
//! - **Files the runner puts into the job's tree** (the artifacts of earlier jobs) are
//!   created the same way: each directory on the way is opened beneath the one above it
//!   without following links (created, and given to the job's user, if missing), a name
//!   already there is unlinked (never written through) and the file is created with
//!   `O_EXCL`, then given to the job's user.

use std::ffi::OsStr;
use std::io;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::isolation::JobUser;

/// No link of any kind is followed, and the path may not leave the directory or its
/// file system.
const CONFINED: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Opens a directory of the runner's own by path (its parents are the runner's): a
/// link in its place is refused.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates the new file `name` in the runner's directory `dir` with `text`, readable by
/// the group `group` (the job user's) when given: `O_CREAT | O_EXCL | O_NOFOLLOW`
/// beneath the directory's descriptor, so a name that exists already (of any kind) is
/// an error, never followed.
pub fn create_new(dir: &Path, name: &str, text: &[u8], group: Option<u32>) -> io::Result<()> {
    let dir = open_dir(dir)?;
    let fd = rustix::fs::openat2(
        &dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
        CONFINED,
    )?;
    if let Some(gid) = group {
        rustix::fs::fchown(&fd, None, Some(rustix::fs::Gid::from_raw(gid)))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o640))?;
    }
    std::fs::File::from(fd).write_all(text)
}

/// The build directory, ready for reading the job's files beneath it.
pub struct JobTree {
    root: OwnedFd,
    /// Whose rights files must be readable with: the job user (shell executor). None
    /// when jobs run as the runner's user, or as a container's root (docker executor,
    /// whose mounts keep the job inside the build directory's file system).
    reader: Option<JobUser>,
}

/// What a name in the job's tree is, as far as reading it goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File,
    Dir,
    /// Anything else: a link, a FIFO, a socket, a device.
    Other(&'static str),
}

impl JobTree {
    /// `build_dir` is the runner's path to the job's build directory.
    pub fn open(build_dir: &Path, reader: Option<JobUser>) -> io::Result<JobTree> {
        Ok(JobTree {
            root: open_dir(build_dir)?,
            reader,
        })
    }

    /// An `O_PATH` descriptor of `rel` (nothing is opened for reading yet) and its kind.
    fn look(&self, rel: &Path) -> io::Result<(OwnedFd, rustix::fs::Stat)> {
        let rel: &OsStr = if rel.as_os_str().is_empty() {
            ".".as_ref()
        } else {
            rel.as_os_str()
        };
        let fd = rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            CONFINED,
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => {
                io::Error::other("it is or passes through a symbolic link, or leaves the build directory")
            }
            e => e.into(),
        })?;
        let stat = rustix::fs::fstat(&fd)?;
        Ok((fd, stat))
    }

    /// What `rel` is (without following a link).
    pub fn kind(&self, rel: &Path) -> io::Result<Entry> {
        let (_, stat) = self.look(rel)?;
        Ok(kind_of(&stat))
    }

    /// Every regular file below the directory `rel`, as paths relative to the build
    /// directory, sorted; each directory is opened beneath the one above it, so a
    /// directory swapped for a link is not entered. Links and other kinds are skipped.
    pub fn files_below(&self, rel: &Path) -> io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        let mut dirs = vec![rel.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let (fd, stat) = self.look(&dir)?;
            if kind_of(&stat) != Entry::Dir {
                continue;
            }
            let readable = reopen(&fd, OFlags::RDONLY | OFlags::DIRECTORY)?;
            for entry in rustix::fs::Dir::read_from(&readable)? {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let path = dir.join(OsStr::from_bytes(name));
                match entry.file_type() {
                    FileType::Directory => dirs.push(path),
                    FileType::RegularFile => found.push(path),
                    // Some file systems do not say: ask.
                    FileType::Unknown => match self.kind(&path) {
                        Ok(Entry::Dir) => dirs.push(path),
                        Ok(Entry::File) => found.push(path),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Opens the regular file `rel` for reading, with the job's rights: an error for
    /// anything that is not a regular file the job user could read itself.
    pub fn open_file(&self, rel: &Path) -> io::Result<std::fs::File> {
        let (fd, stat) = self.look(rel)?;
        match kind_of(&stat) {
            Entry::File => {}
            Entry::Dir => return Err(io::Error::other("it is a directory")),
            Entry::Other(what) => return Err(io::Error::other(format!("it is a {what}, not a regular file"))),
        }
        if let Some(user) = &self.reader
            && !readable_by(&stat, user)
        {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the job's user may not read it"));
        }
        Ok(reopen(&fd, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?.into())
    }
}

impl JobTree {
    /// Creates the file `rel` (a plain relative path) for the job, with the directories on
    /// its way, and opens it for writing (see the module's words: nothing is followed,
    /// nothing already there is written through, and what is created belongs to the job's
    /// user when the tree has one).
    pub fn create_file(&self, rel: &Path) -> io::Result<std::fs::File> {
        let names = rel
            .components()
            .map(|c| match c {
                Component::Normal(name) => Ok(name),
                _ => Err(io::Error::other("not a plain relative path")),
            })
            .collect::<io::Result<Vec<&OsStr>>>()?;
        let Some((file, dirs)) = names.split_last() else {
            return Err(io::Error::other("an empty path"));
        };
        let mut dir = open_beneath(&self.root, ".".as_ref(), OFlags::RDONLY | OFlags::DIRECTORY)?;
        for name in dirs {
            dir = match open_beneath(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let created = match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => true,
                        Err(rustix::io::Errno::EXIST) => false,
                        Err(e) => return Err(e.into()),
                    };
                    let fd = open_beneath(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY)?;
                    if created {
                        self.give_to_job(&fd)?;
                    }
                    fd
                }
                Err(e) => return Err(e),
            };
        }
        match rustix::fs::unlinkat(&dir, *file, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::ISDIR) => return Err(io::Error::other("a directory has its name")),
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat2(
            &dir,
            *file,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
            CONFINED,
        )?;
        self.give_to_job(&fd)?;
        Ok(fd.into())
    }

    /// Makes what `fd` holds the job user's (when the tree has one).
    fn give_to_job(&self, fd: &OwnedFd) -> io::Result<()> {
        if let Some(user) = &self.reader {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(user.uid)),
                Some(rustix::fs::Gid::from_raw(user.gid)),
            )?;
        }
        Ok(())
    }
}

/// Opens `name` beneath `dir` with `flags`, following no link.
fn open_beneath(dir: impl AsFd, name: &OsStr, flags: OFlags) -> io::Result<OwnedFd> {
    let link = || io::Error::other("it is or passes through a symbolic link, or leaves the build directory");
    rustix::fs::openat2(&dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty(), CONFINED).map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => link(),
        // A directory was asked for: say what is there instead.
        rustix::io::Errno::NOTDIR => match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink => link(),
            _ => io::Error::other("a file is in the place of a directory on its way"),
        },
        e => e.into(),
    })
}

/// Opens the very file an `O_PATH` descriptor holds, for reading: through
/// `/proc/self/fd`, which names that descriptor's inode, not a path the job can change.
fn reopen(fd: impl AsFd, flags: OFlags) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    Ok(rustix::fs::open(path.as_str(), flags | OFlags::CLOEXEC, Mode::empty())?)
}

fn kind_of(stat: &rustix::fs::Stat) -> Entry {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Entry::File,
        FileType::Directory => Entry::Dir,
        FileType::Symlink => Entry::Other("symbolic link"),
        FileType::Fifo => Entry::Other("FIFO"),
        FileType::Socket => Entry::Other("socket"),
        FileType::CharacterDevice | FileType::BlockDevice => Entry::Other("device"),
        FileType::Unknown => Entry::Other("file of unknown kind"),
    }
}

/// Whether `user` (no supplementary groups, as job processes run) may read the file by
/// its permission bits.
fn readable_by(stat: &rustix::fs::Stat, user: &JobUser) -> bool {
    let mode = stat.st_mode;
    if stat.st_uid == user.uid {
        mode & 0o400 != 0
    } else if stat.st_gid == user.gid {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    }
}

impl AsFd for JobTree {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> (tempfile::TempDir, JobTree) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("out/nested")).unwrap();
        std::fs::write(dir.path().join("out/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("out/nested/b.txt"), "b").unwrap();
        let tree = JobTree::open(dir.path(), None).unwrap();
        (dir, tree)
    }

    #[test]
    fn files_are_listed_and_read_beneath_the_build_directory() {
        let (_dir, tree) = tree();
        let files = tree.files_below(Path::new("out")).unwrap();
        assert_eq!(files, [PathBuf::from("out/a.txt"), PathBuf::from("out/nested/b.txt")]);
        let text = std::io::read_to_string(tree.open_file(Path::new("out/nested/b.txt")).unwrap()).unwrap();
        assert_eq!(text, "b");
    }

    #[test]
    fn links_fifos_and_escapes_are_refused_not_followed() {
        let (dir, tree) = tree();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "secret").unwrap();
        std::os::unix::fs::symlink(secret.path(), dir.path().join("out/link")).unwrap();
        std::os::unix::fs::symlink(secret.path().parent().unwrap(), dir.path().join("dirlink")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("out/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        for bad in ["out/link", "dirlink/x", "../escape", "/etc/passwd", "out/fifo"] {
            assert!(tree.open_file(Path::new(bad)).is_err(), "{bad} was opened");
        }
        // A FIFO is refused at once: nothing blocks on it.
        let err = tree.open_file(Path::new("out/fifo")).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        // Listing skips them; a directory swapped for a link is not entered.
        assert_eq!(tree.files_below(Path::new("out")).unwrap().len(), 2);
        assert!(tree.files_below(Path::new("dirlink")).unwrap().is_empty());
        assert_eq!(tree.kind(Path::new("dirlink")).unwrap(), Entry::Other("symbolic link"));
    }

    #[test]
    fn a_file_the_job_user_cannot_read_is_not_read_for_it() {
        let (dir, _) = tree();
        let user = JobUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        let tree = JobTree::open(dir.path(), Some(user)).unwrap();
        let private = dir.path().join("out/a.txt");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Owned by whoever runs the test (not the job user) and private to them.
        let err = tree.open_file(Path::new("out/a.txt")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(tree.open_file(Path::new("out/a.txt")).is_ok());
    }

    #[test]
    fn the_runners_own_file_is_never_written_through_a_planted_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "root's").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("after_script.sh")).unwrap();
        assert!(create_new(dir.path(), "after_script.sh", b"evil", None).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root's");
        create_new(dir.path(), "script.sh", b"echo hi", None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("script.sh")).unwrap(), "echo hi");
        assert!(create_new(dir.path(), "script.sh", b"again", None).is_err(), "O_EXCL");
    }

    /// The artifacts of earlier jobs land beneath the build directory whatever the
    /// checkout planted: a link on the way (to a directory or in the file's place) is
    /// refused or replaced, never followed, and a file already there is replaced, not
    /// written through (it may be a hard link to another).
    #[test]
    fn files_put_into_the_tree_never_land_outside_it() {
        let (dir, tree) = tree();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, "root's").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("out/filelink")).unwrap();
        std::fs::hard_link(&target, dir.path().join("out/hardlink")).unwrap();

        let err = tree.create_file(Path::new("dirlink/target")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        for name in ["out/filelink", "out/hardlink"] {
            use std::io::Write;
            tree.create_file(Path::new(name)).unwrap().write_all(b"artifact").unwrap();
            assert_eq!(std::fs::read_to_string(dir.path().join(name)).unwrap(), "artifact");
        }
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "root's",
            "nothing was written through a link"
        );
        for bad in ["../escape", "/etc/x", "out/a.txt/below", ""] {
            assert!(tree.create_file(Path::new(bad)).is_err(), "{bad} was created");
        }
        assert!(tree.create_file(Path::new("out/nested")).is_err(), "a directory is not replaced");
        tree.create_file(Path::new("new/deep/c.txt")).unwrap();
        assert!(dir.path().join("new/deep/c.txt").is_file());
    }
}
