//! The local-disk backend: a node directory on a mounted file system.
//!
//! Publishing uses `link(2)` then `unlink(2)`, which fails when the final name
//! exists, so a file is never overwritten; directories are fsynced after each
//! change so a `201 Created` survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::backend::{check_relative, Backend, FreeSpace, ReadFile, Session, WriteFile};
use crate::meta::DESCRIPTION_XATTR;
use crate::StoreError;

/// Files in a local directory (the node directory).
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root`, which is created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| {
            StoreError::io(format!("creating node directory {}", root.display()), e)
        })?;
        Ok(LocalBackend { root })
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        "localhost".to_owned()
    }

    fn write_size(&self) -> usize {
        // The page cache gathers writes already; keep per-upload memory small.
        256 * 1024
    }

    fn session(&self) -> Result<Box<dyn Session>, StoreError> {
        Ok(Box::new(LocalSession {
            root: self.root.clone(),
        }))
    }

    fn sibling(&self, node: &str) -> Option<std::sync::Arc<dyn Backend>> {
        Some(std::sync::Arc::new(LocalBackend {
            root: self.root.parent()?.join(node),
        }))
    }
}

struct LocalSession {
    root: PathBuf,
}

impl LocalSession {
    fn full(&self, path: &str) -> Result<PathBuf, StoreError> {
        check_relative(path)?;
        Ok(self.root.join(path))
    }
}

/// Gives `from` the name `to`, never replacing a file already there
/// (`EEXIST` then): one `renameat2(RENAME_NOREPLACE)` where the file system
/// has it, else `link(2)` and `unlink(2)` of the old name.
fn publish_without_replacing(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes an upload may leave dirty in the page cache before mftd asks the
/// kernel to start writing them out (write-behind).
const WRITE_BEHIND: u64 = 8 << 20;

/// An upload's temporary file, written behind: every [`WRITE_BEHIND`]
/// bytes, writeback of the range just written is started, so the disk
/// works while the body is still arriving and the fsync before `201` finds
/// little left to do. `POSIX_FADV_DONTNEED` is Linux's non-blocking way to
/// say it from safe code: it starts writeback of the range's dirty pages
/// and drops only pages already clean, so the file stays cached for the
/// downloads that often follow an upload.
struct LocalFile {
    file: File,
    written: u64,
    started_to: u64,
}

impl LocalFile {
    fn new(file: File) -> LocalFile {
        LocalFile {
            file,
            written: 0,
            started_to: 0,
        }
    }
}

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started_to >= WRITE_BEHIND {
            // Advice only: a refusal leaves the work to the final fsync.
            let _ = rustix::fs::fadvise(
                &self.file,
                self.started_to,
                std::num::NonZeroU64::new(self.written - self.started_to),
                rustix::fs::Advice::DontNeed,
            );
            self.started_to = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl WriteFile for LocalFile {
    fn sync(&mut self) -> Result<(), StoreError> {
        // `sync_all`, not `sync_data`: the description is inode metadata.
        self.file
            .sync_all()
            .map_err(|e| StoreError::io("fsync of uploaded file", e))
    }

    /// An extended attribute: no second inode, no second fsync. A file
    /// system without user attributes, or a description too large for
    /// one (ext4 allows about 4 KiB), says no, and it goes beside.
    fn describe(&mut self, description: &[u8]) -> bool {
        rustix::fs::fsetxattr(
            &self.file,
            DESCRIPTION_XATTR,
            description,
            rustix::fs::XattrFlags::CREATE,
        )
        .is_ok()
    }
}

impl Session for LocalSession {
    fn create_dir_all(&mut self, dir: &str) -> Result<(), StoreError> {
        let full = self.full(dir)?;
        if full.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(&full)
            .map_err(|e| StoreError::io(format!("creating {}", full.display()), e))?;
        // Make the new directory entries durable up to the node directory.
        let mut d = full.as_path();
        while let Some(parent) = d.parent() {
            sync_dir(parent).map_err(|e| StoreError::io("fsync of directory", e))?;
            if parent == self.root {
                break;
            }
            d = parent;
        }
        Ok(())
    }

    fn create_new(&mut self, path: &str) -> Result<Box<dyn WriteFile>, StoreError> {
        let full = self.full(path)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| StoreError::io(format!("creating {}", full.display()), e))?;
        Ok(Box::new(LocalFile::new(file)))
    }

    fn publish(&mut self, temp: &str, final_path: &str) -> Result<(), StoreError> {
        let (from, to) = (self.full(temp)?, self.full(final_path)?);
        publish_without_replacing(&from, &to)
            .map_err(|e| StoreError::io(format!("publishing {final_path}"), e))?;
        if let Some(dir) = to.parent() {
            sync_dir(dir).map_err(|e| StoreError::io("fsync of directory", e))?;
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), StoreError> {
        let full = self.full(path)?;
        fs::remove_file(&full).map_err(|e| StoreError::io(format!("removing {path}"), e))
    }

    fn open(&mut self, path: &str) -> Result<(Box<dyn ReadFile>, u64), StoreError> {
        let full = self.full(path)?;
        let file = File::open(&full).map_err(|e| StoreError::io(format!("opening {path}"), e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io(format!("stat of {path}"), e))?
            .len();
        Ok((Box::new(file), len))
    }

    fn description(&mut self, path: &str) -> Option<Vec<u8>> {
        let full = self.full(path).ok()?;
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::getxattr(&full, DESCRIPTION_XATTR, &mut value[..]).ok()?;
        value.truncate(len);
        Some(value)
    }

    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, StoreError> {
        let full = self.full(dir)?;
        let entries =
            fs::read_dir(&full).map_err(|e| StoreError::io(format!("listing {dir}"), e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(format!("listing {dir}"), e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn modified(&mut self, path: &str) -> Result<Option<std::time::SystemTime>, StoreError> {
        let full = self.full(path)?;
        let meta = fs::metadata(&full).map_err(|e| StoreError::io(format!("stat of {path}"), e))?;
        Ok(meta.modified().ok())
    }

    fn free_space(&mut self) -> Result<Option<FreeSpace>, StoreError> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| {
            StoreError::io(
                format!("free space of {}", self.root.display()),
                std::io::Error::from(e),
            )
        })?;
        Ok(Some(FreeSpace {
            available: st.f_bavail.saturating_mul(st.f_frsize),
            total: st.f_blocks.saturating_mul(st.f_frsize),
        }))
    }
}
