//! The description stored with each file (JSON): what the HTTP side needs
//! to serve it and what an administrator needs to know who sent it, even
//! without the database. Where the file server can, it is an extended
//! attribute of the file itself ([`DESCRIPTION_XATTR`], made durable by the
//! file's own fsync); elsewhere a file beside it (`<resource>.meta`).

use serde::{Deserialize, Serialize};

/// The extended attribute holding a file's description on the local store
/// (`getfattr -n user.mftd.description FILE` shows it).
pub const DESCRIPTION_XATTR: &str = "user.mftd.description";

/// Facts about one stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The name the user uploaded (sanitised).
    pub real_name: String,
    /// The Content-Type declared at slot time or sent with the PUT.
    pub content_type: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content, filled in by the store.
    #[serde(default)]
    pub sha256: String,
    /// Bare or full JID of the uploader.
    pub uploader: String,
    /// Intended recipient (user, room), empty when not given.
    #[serde(default)]
    pub to: String,
    /// Unix seconds when the upload completed, filled in by the store.
    #[serde(default)]
    pub created: u64,
}

impl FileMeta {
    /// JSON bytes as stored on the file server.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored description.
    pub fn from_bytes(bytes: &[u8]) -> Option<FileMeta> {
        serde_json::from_slice(bytes).ok()
    }
}
