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
    #[error("file server unavailable: {what}")]
    Unavailable {
        /// What mftd was doing, or which file server.
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Connecting to the SFTP file server failed at a known step.
    #[error("file server {host} unreachable")]
    Connect {
        /// The file server.
        host: String,
        /// Which step failed, and why.
        #[source]
        source: ConnectError,
    },
    /// The file system holding the node directory has no room for the
    /// rest of an upload.
    #[error("no space left on the file server for {context} ({available} bytes free)")]
    NoSpace {
        /// What was being written.
        context: String,
        /// Bytes free when the failure was looked at.
        available: u64,
        /// The write's own failure (`No space left on device`, a broken
        /// connection …), when one was seen.
        #[source]
        source: Option<Box<StoreError>>,
    },
    /// The upload was abandoned by its sender.
    #[error("upload aborted")]
    Aborted,
    /// Any other I/O failure, with what we were doing.
    #[error("{context}")]
    Io {
        /// What mftd was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why a connection to the SFTP file server failed, step by step, with the
/// underlying error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name does not resolve.
    #[error("cannot resolve the host name (store.sftp.host)")]
    Resolve(#[source] io::Error),
    /// No TCP connection.
    #[error("cannot connect to {addr}")]
    Tcp {
        /// The address tried.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Setting up the SSH session or the handshake failed.
    #[error("SSH handshake failed")]
    Handshake(#[source] ssh2::Error),
    /// A cipher in `store.sftp.ciphers` is not known.
    #[error("store.sftp.ciphers is not usable")]
    Ciphers(#[source] ssh2::Error),
    /// The server presented no host key.
    #[error("the server presented no host key")]
    NoHostKey,
    /// The server's host key is not the pinned one.
    #[error("host key mismatch: pinned {expected}, server presented {presented}; refusing to connect (check store.sftp.host_key; a changed key can mean a man-in-the-middle)")]
    HostKeyMismatch {
        /// SHA256 fingerprint of the pinned key.
        expected: String,
        /// SHA256 fingerprint of the presented key.
        presented: String,
    },
    /// The node's key was refused.
    #[error("public key authentication as {user} with {key} was refused; is the node's public key (`mftd keys show`) in the user's authorized_keys?")]
    AuthRefused {
        /// The file server user.
        user: String,
        /// The node's private key file.
        key: String,
        /// libssh2's reason, when it gave one.
        #[source]
        source: Option<ssh2::Error>,
    },
    /// The SFTP subsystem is not offered.
    #[error("SFTP subsystem unavailable (is `Subsystem sftp` enabled in sshd_config?)")]
    Subsystem(#[source] ssh2::Error),
}

impl ConnectError {
    /// The server is the wrong one, or speaks no SSH we accept: not a
    /// matter of credentials.
    pub fn is_host_key_problem(&self) -> bool {
        matches!(
            self,
            ConnectError::HostKeyMismatch { .. }
                | ConnectError::NoHostKey
                | ConnectError::Handshake(_)
        )
    }
}

pub use mft_common::error::{chain, Cause, Chain};

impl StoreError {
    /// The file server cannot be used now, for a reason mftd states itself.
    pub fn unavailable(what: impl Into<String>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// The file server cannot be used now, because of `source`.
    pub fn unavailable_because(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            source: Some(source.into()),
        }
    }

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
            | io::ErrorKind::TimedOut => StoreError::unavailable_because(context, source),
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
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Connect { .. }
        )
    }

    /// The file server (or local disk) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }

    /// The step at which connecting to the file server failed, if that is what happened.
    pub fn connect_error(&self) -> Option<&ConnectError> {
        match self {
            StoreError::Connect { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The client sent the wrong number of bytes.
    pub fn is_bad_length(&self) -> bool {
        matches!(
            self,
            StoreError::ShortBody { .. } | StoreError::LongBody { .. }
        )
    }
}

/// What the database layer can report.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Cannot connect, or the connection broke: retry later.
    #[error("database unavailable: {what}")]
    Unavailable {
        /// What mftd was doing, or which server.
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// A query failed for another reason.
    #[error("database error while {context}")]
    Query {
        /// What mftd was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The URL is not usable.
    #[error("database.url: {what}")]
    Config {
        /// What is wrong, naming the key to fix.
        what: String,
        /// The parser's or TLS library's error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The schema is older than this mftd and the role it connects as may
    /// not change it: the owner role must run `mftd db migrate` first.
    #[error("transfer log schema: {0}")]
    Schema(String),
    /// The slot's resource was already used (on any node, possibly retired
    /// since): this row was not written, and no other row suffered for it.
    #[error("slot {resource} was already used")]
    SlotUsed {
        /// The resource name.
        resource: String,
    },
}

/// SQLSTATE classes that say the server cannot take the work now, whatever
/// the row: 08 connection exception, 53 insufficient resources (a full
/// disk, out of memory, too many connections), 57 operator intervention
/// (a statement cancelled by `statement_timeout`, a shutdown), 58 system
/// error (I/O); and 25006 read_only_sql_transaction: the server is a
/// standby (connected to before a failover, or without
/// `target_session_attrs=read-write`), so the connection is dropped and a
/// new one looks for the host that takes writes. A batch refused for one of
/// these fails as a whole at once instead of being retried row by row.
fn server_cannot_write(code: &tokio_postgres::error::SqlState) -> bool {
    matches!(code.code().get(..2), Some("08" | "53" | "57" | "58"))
        || *code == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
}

impl DbError {
    /// The database cannot be used now, for a reason mftd states itself.
    pub fn unavailable(what: impl Into<String>) -> Self {
        DbError::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// The database cannot be used now, because of `source`.
    pub fn unavailable_because(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        DbError::Unavailable {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// The connection settings are not usable, for a reason mftd states.
    pub fn config(what: impl Into<String>) -> Self {
        DbError::Config {
            what: what.into(),
            source: None,
        }
    }

    /// The connection settings are not usable, because of `source`.
    pub fn config_because(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        DbError::Config {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// The server cannot be reached or cannot take the work now.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable { .. })
    }

    /// Whether the row was refused because its slot was already used.
    pub fn is_slot_used(&self) -> bool {
        matches!(self, DbError::SlotUsed { .. })
    }

    /// Wraps a driver error; connection-level failures and the server's
    /// lack of resources become `Unavailable` (see [`server_cannot_write`]).
    pub fn query(context: impl Into<String>, source: tokio_postgres::Error) -> DbError {
        if source.is_closed() || source.code().is_none_or(server_cannot_write) {
            DbError::unavailable_because(context, source)
        } else {
            DbError::Query {
                context: context.into(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable_and_keeps_its_cause_once() {
        let e = StoreError::io(
            "writing files/im/x",
            io::Error::new(io::ErrorKind::TimedOut, "Timed out waiting on socket"),
        );
        assert!(e.is_unavailable());
        assert_eq!(e.to_string(), "file server unavailable: writing files/im/x");
        assert_eq!(
            chain(&e),
            "file server unavailable: writing files/im/x: Timed out waiting on socket"
        );
    }

    #[test]
    fn no_space_names_the_write_that_failed() {
        let e = StoreError::NoSpace {
            context: "files/im/x".into(),
            available: 0,
            source: Some(Box::new(StoreError::io(
                "writing files/im/x",
                io::Error::other("No space left on device (os error 28)"),
            ))),
        };
        assert!(e.is_no_space());
        let text = chain(&e);
        assert!(text.contains("(0 bytes free)"), "{text}");
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
    }
}
