//! The blocking file-system interface a file server offers to the [`Store`](crate::Store).
//!
//! Both backends are synchronous (libssh2 is blocking), so the store drives
//! them on blocking threads. Paths are relative to the node directory and are
//! always built by [`Location`](crate::Location); backends still refuse any
//! path with `..` or a leading `/` as a second line of defence.

use std::io::{Read, Seek, Write};

use crate::StoreError;

/// A place files can be stored: a local directory or an SFTP file server.
pub trait Backend: Send + Sync + 'static {
    /// Where the files go, for logs and the transfer log's FILE_SERVER column.
    fn describe(&self) -> String;
    /// A session for one transfer or one short series of operations.
    fn session(&self) -> Result<Box<dyn Session>, StoreError>;
    /// Bytes to gather before each write: large for SFTP (libssh2 pipelines
    /// only within one write call), small where that buys nothing.
    fn write_size(&self) -> usize {
        1024 * 1024
    }
    /// Bytes to read per piece of a download. 1 MiB: on the local disk it
    /// took a third less CPU than 256 KiB pieces (fewer reads, writes and
    /// wake-ups per byte), and libssh2 pipelines read requests within one
    /// call.
    fn read_size(&self) -> usize {
        1024 * 1024
    }
    /// Pieces a download reads ahead of its client at most: one where a read
    /// is a page-cache copy, more where each read waits on a network.
    fn read_ahead(&self) -> usize {
        1
    }
    /// False while the backend knows its server is down (after a failed
    /// connection, until the next attempt is due).
    fn is_available(&self) -> bool {
        true
    }
    /// The same file server, in the directory of another node beside this
    /// one (`<parent>/<node>`, the reference's per-node layout), for reading
    /// files that node stored. `node` is checked by the caller.
    fn sibling(&self, node: &str) -> Option<std::sync::Arc<dyn Backend>>;
    /// Whether a transfer's open file holds a connection to the file server
    /// (an SSH session), so that a transfer whose client went quiet should
    /// put its file away and reopen it when the client moves again
    /// ([`Session::resume_upload`] then reopens an upload's).
    fn connection_per_file(&self) -> bool {
        false
    }
    /// Gives up uploads a crash left unfinished where the server keeps
    /// them apart from files (S3's multipart uploads); only at start-up,
    /// before uploads are accepted. Returns how many.
    fn abort_unfinished_uploads(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// How many uploads in progress the server keeps apart from files
    /// (S3's multipart uploads; elsewhere they are temporary files).
    fn unfinished_uploads(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// One connection's worth of file operations.
pub trait Session: Send {
    /// Creates the directory and its parents; existing ones are fine,
    /// including ones a concurrent upload just made.
    fn create_dir_all(&mut self, dir: &str) -> Result<(), StoreError>;
    /// Creates a new file for writing; fails if the name exists.
    fn create_new(&mut self, path: &str) -> Result<Box<dyn WriteFile>, StoreError>;
    /// Creates the temporary file of an upload that will be published as
    /// `final_path`; where a server can write the final name invisibly
    /// until publication (S3), it does so instead.
    fn create_upload(
        &mut self,
        temp: &str,
        final_path: &str,
    ) -> Result<Box<dyn WriteFile>, StoreError> {
        let _ = final_path;
        self.create_new(temp)
    }
    /// Reopens an upload's temporary file (made by
    /// [`create_upload`](Session::create_upload) on another session) to
    /// write on from byte `offset`; only where
    /// [`Backend::connection_per_file`] is true.
    fn resume_upload(&mut self, temp: &str, offset: u64) -> Result<Box<dyn WriteFile>, StoreError> {
        let _ = (temp, offset);
        Err(StoreError::unavailable(
            "this file server cannot reopen an upload",
        ))
    }
    /// Moves a complete temporary file to its final name, refusing to
    /// overwrite (`StoreError::AlreadyExists`).
    fn publish(&mut self, temp: &str, final_path: &str) -> Result<(), StoreError>;
    /// Removes a file.
    fn remove(&mut self, path: &str) -> Result<(), StoreError>;
    /// Opens a file for reading and returns it with its size.
    fn open(&mut self, path: &str) -> Result<(Box<dyn ReadFile>, u64), StoreError>;
    /// The names in a directory (no `.` or `..`).
    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, StoreError>;
    /// The description attached to the file at `path` itself (see
    /// [`WriteFile::describe`]), if it has one.
    fn description(&mut self, path: &str) -> Option<Vec<u8>> {
        let _ = path;
        None
    }
    /// When a file's content last changed, by the file server's clock
    /// (`None` when the server does not say).
    fn modified(&mut self, path: &str) -> Result<Option<std::time::SystemTime>, StoreError>;
    /// Free and total space where the node directory lives, when the
    /// server can tell.
    fn free_space(&mut self) -> Result<Option<FreeSpace>, StoreError> {
        Ok(None)
    }
}

/// Space on the file system holding the node directory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes available to the node's user.
    pub available: u64,
    /// Size of the file system.
    pub total: u64,
}

impl FreeSpace {
    /// Available space as a percentage of the total.
    pub fn percent_free(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        self.available as f64 * 100.0 / self.total as f64
    }
}

/// A file being written; `sync` makes its content durable.
pub trait WriteFile: Write + Send {
    /// Flushes the content to stable storage (fsync).
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Attaches `description` to the file itself, to be made durable by
    /// [`sync`](WriteFile::sync); `false` when this file server cannot (the
    /// description then goes in a file beside it).
    fn describe(&mut self, description: &[u8]) -> bool {
        let _ = description;
        false
    }

    /// The memory this file would hold for writes kept in flight after a
    /// write of `piece` bytes (written but not yet acknowledged by the file
    /// server, so the next piece follows without waiting); 0 where writes
    /// complete in the call. The upload grants it from the memory budget.
    fn wants_in_flight(&self, piece: usize) -> usize {
        let _ = piece;
        0
    }

    /// The memory writes in flight may hold after each write from now on
    /// (at most what [`wants_in_flight`](WriteFile::wants_in_flight) asked);
    /// with 0 — the default — every write returns only once all its bytes
    /// are acknowledged, and nothing stays held.
    fn keep_in_flight(&mut self, memory: usize) {
        let _ = memory;
    }
}

/// A file being read.
pub trait ReadFile: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadFile for T {}

/// Refuses paths that could leave the node directory.
pub fn check_relative(path: &str) -> Result<(), StoreError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|c| c == ".." || c.is_empty());
    if bad {
        return Err(StoreError::Io {
            context: format!("refusing unsafe path {path:?}"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    Ok(())
}
