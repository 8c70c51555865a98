//! Every file an export writes or `verify --export` reads is reached from
//! the export directory one component at a time, with `openat` and
//! `O_NOFOLLOW`: a symbolic link anywhere below the directory — planted by
//! someone who can write there between the emptiness check and the writes,
//! or left in a copy a reviewer is sent — is refused, never followed, so an
//! export never writes outside its directory and a verification never
//! reads outside it (or blocks on a FIFO: only regular files are read).
//! The directory itself is the one the operator named and is opened as
//! given.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{openat, AtFlags, Mode, OFlags, CWD};

/// The export directory, held open, and the path it was opened by (for
/// messages only).
pub struct Root(OwnedFd, std::path::PathBuf);

/// Why a path below the root could not be opened as a regular file.
#[derive(Debug)]
pub enum Refused {
    /// Nothing there.
    Missing,
    /// The path or a directory on it is a symbolic link.
    Link,
    /// It is there but is a directory, FIFO, socket or device.
    NotAFile,
    /// Any other error.
    Io(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing => f.write_str("not there"),
            Refused::Link => f.write_str(
                "it, or a directory on its path, is a symbolic link; an export holds only regular files and links are never followed",
            ),
            Refused::NotAFile => f.write_str("not a regular file"),
            Refused::Io(e) => e.fmt(f),
        }
    }
}

fn refused(e: rustix::io::Errno) -> Refused {
    match e {
        rustix::io::Errno::NOENT => Refused::Missing,
        // O_NOFOLLOW on a link: ELOOP; a link where a directory is
        // expected, opened with O_DIRECTORY|O_NOFOLLOW: ENOTDIR or ELOOP.
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::MLINK => {
            Refused::Link
        }
        other => Refused::Io(other.into()),
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
    /// Opens the export directory (following a link the operator named).
    pub fn open(dir: &Path) -> io::Result<Root> {
        let fd = openat(
            CWD,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root(fd, dir.to_owned()))
    }

    /// The export directory from a descriptor already open on it.
    pub fn from_fd(fd: OwnedFd, dir: &Path) -> Root {
        Root(fd, dir.to_owned())
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.1
    }

    /// The directory holding `rel`'s last component, reached without
    /// following links; created on the way when `create` is set.
    fn parent_of<'r>(&self, rel: &'r str, create: bool) -> Result<(OwnedFd, &'r str), Refused> {
        let mut parts: Vec<&str> = rel.split('/').collect();
        let last = parts.pop().unwrap_or_default();
        if last.is_empty()
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
            || last == "."
            || last == ".."
        {
            return Err(Refused::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{rel:?} is not a plain relative path"),
            )));
        }
        let mut dir = rustix::io::dup(&self.0).map_err(|e| Refused::Io(e.into()))?;
        for part in parts {
            if create {
                match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(Refused::Io(e.into())),
                }
            }
            dir = openat(&dir, part, DIR_FLAGS, Mode::empty()).map_err(refused)?;
        }
        Ok((dir, last))
    }

    /// A new regular file at `rel` (never an existing file, never through a
    /// link), its directories created as needed.
    pub fn create(&self, rel: &str) -> Result<File, Refused> {
        let (dir, name) = self.parent_of(rel, true)?;
        let fd = openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => Refused::Io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something is already there (the export directory changed while the export was written)",
            )),
            e => refused(e),
        })?;
        Ok(File::from(fd))
    }

    /// Removes the file `rel` (not through a link) and, if then empty, its
    /// directory; errors are ignored (this cleans up after a failed copy).
    pub fn remove_with_dir(&self, rel: &str) {
        if let Ok((dir, name)) = self.parent_of(rel, false) {
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
        }
        if let Some((parent, _)) = rel.rsplit_once('/') {
            if let Ok((dir, name)) = self.parent_of(parent, false) {
                let _ = rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
            }
        }
    }

    /// Opens the regular file at `rel` for reading, refusing links on the
    /// way and anything that is not a regular file (a FIFO would block).
    pub fn open_file(&self, rel: &str) -> Result<File, Refused> {
        let (dir, name) = self.parent_of(rel, false)?;
        let fd = openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(refused)?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(Refused::Io)?;
        if !meta.is_file() {
            return Err(Refused::NotAFile);
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn links_planted_below_the_root_are_never_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root_dir = tmp.path().join("export");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root_dir).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "secret").expect("write");
        let root = Root::open(&root_dir).expect("open");

        // A directory on the way is a link: writing refuses, nothing outside.
        std::os::unix::fs::symlink(&outside, root_dir.join("records")).expect("symlink");
        assert!(matches!(
            root.create("records/files.json"),
            Err(Refused::Link)
        ));
        assert!(!outside.join("files.json").exists());
        assert!(matches!(
            root.open_file("records/secret"),
            Err(Refused::Link)
        ));
        // The file itself is a link: writing and reading refuse.
        std::os::unix::fs::symlink(outside.join("secret"), root_dir.join("manifest.json"))
            .expect("symlink");
        assert!(root.create("manifest.json").is_err());
        assert!(matches!(
            root.open_file("manifest.json"),
            Err(Refused::Link)
        ));
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).expect("read"),
            "secret"
        );
        // A FIFO is refused at once instead of blocking.
        let fifo = root_dir.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success());
        assert!(matches!(root.open_file("fifo"), Err(Refused::NotAFile)));
        // Plain files work; `..` is not a component.
        root.create("attachments/r/a.txt")
            .expect("create")
            .write_all(b"a")
            .expect("write");
        let mut s = String::new();
        root.open_file("attachments/r/a.txt")
            .expect("open")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "a");
        assert!(root.open_file("attachments/../records/secret").is_err());
        assert!(matches!(
            root.open_file("attachments/r/none"),
            Err(Refused::Missing)
        ));
        root.remove_with_dir("attachments/r/a.txt");
        assert!(!root_dir.join("attachments/r").exists());
    }
}
