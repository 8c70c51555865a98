//! `mft-storage` owns where transferred files live and how bytes get there.
//!
//! - [`layout`]: the MFT directory layout `files/<chat type>/<YYYYMMDD>/<HH>[.n]/<resource>`,
//!   resource names, and the per-hour rollover counter;
//! - [`backend`]: the small blocking file-system interface a file server offers
//!   (local disk in [`local`], an SSH/SFTP file server in [`sftp`]);
//! - [`store`]: the async [`Store`] that streams uploads and downloads through a
//!   backend on blocking threads with bounded channels, so memory stays flat;
//! - [`meta`]: the small description stored beside each file;
//! - [`reconcile`]: the store and the log agree: start-up recovery and inventory;
//! - [`quota`]: rolling upload quotas counting granted slots too;
//! - [`log_schema`] and [`log_query`]: the log's column widths, and the
//!   operator's queries on it as typed rows;
//! - [`transfer_log`] and [`db`]: the PostgreSQL transfer log (AFT_LOG), the
//!   `files` table and their migrations;
//! - [`prepared`]: statements prepared once per connection;
//! - [`retention`] and [`holds`]: retiring files (retention, expiry, purge,
//!   the retention floor, audited removals) and the legal holds that stop it;
//! - [`erasure`] and [`discovery`]: erasing a person's files with the record
//!   kept, and the records an e-discovery export carries.
//! - [`log_partitions`]: the record tables' monthly partitions, made ahead
//!   by the service and dropped past `[retention] log` by the owner;
//! - [`rescan`]: quarantining a stored file a rescan found infected.
//! - [`user_files`] and [`user_deletion`]: a user's own uploads and usage, and
//!   a user deleting one of them (audited, under holds and the floor).
//!
//! - [`budget`]: the one memory budget for transfer buffers;
//! - the JID, time and retry primitives it uses are `mft-common`'s.
//!
//! It knows nothing of HTTP or XMPP.
#![deny(missing_docs)]

// The shared primitives, under the names this crate has always used.
use mft_common::{backoff, jid, utc};

pub mod backend;
pub mod budget;
pub mod db;
mod db_tls;
pub mod discovery;
pub mod erasure;
pub mod error;
pub mod holds;
pub mod hostkey;
pub mod layout;
pub mod local;
pub mod log_chain;
pub mod log_partitions;
pub mod log_query;
pub mod log_schema;
pub mod log_verify;
pub mod meta;
pub mod node_lock;
mod parking;
pub mod prepared;
pub mod quota;
pub mod reconcile;
mod removal_record;
pub mod rescan;
pub mod retention;
pub mod s3;
pub mod sftp;
pub mod store;
pub mod transfer_log;
pub mod user_deletion;
pub mod user_files;

pub use error::{ConnectError, StoreError};
pub use layout::{ChatType, Location};
pub use meta::FileMeta;
pub use parking::PARK_AFTER;
pub use store::{Download, FileInfo, SetAside, Store, StoredFile, Upload};
