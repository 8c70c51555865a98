//! The one error type of the storage crate, with classifiers so callers ask
//! `is_not_found()` instead of matching I/O error kinds.

use std::io;

/// What can go wrong while storing or reading a file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No file (or directory) under that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// The final name is taken; files are never overwritten.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The body ended before the announced size.
    #[error("upload ended after {got} of {expected} bytes")]
    ShortBody {
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The body ran past the announced size.
    #[error("upload ran past its announced {expected} bytes")]
    LongBody {
        /// Bytes announced.
        expected: u64,
    },
    /// The file server cannot be reached or refused us; retry later.
    #[error("file server unavailable: {0}")]
    Unavailable(String),
    /// The upload was abandoned by its sender.
    #[error("upload aborted")]
    Aborted,
    /// Any other I/O failure, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What mftd was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error, turning `NotFound`/`AlreadyExists` into their variants.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        match source.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(context),
            io::ErrorKind::AlreadyExists => StoreError::AlreadyExists(context),
            io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::TimedOut => StoreError::Unavailable(format!("{context}: {source}")),
            _ => StoreError::Io { context, source },
        }
    }

    /// The file or directory does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// The final name is already taken.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists(_))
    }

    /// The file server is down or unreachable: a temporary condition.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The client sent the wrong number of bytes.
    pub fn is_bad_length(&self) -> bool {
        matches!(
            self,
            StoreError::ShortBody { .. } | StoreError::LongBody { .. }
        )
    }
}
