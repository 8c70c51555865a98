//! The operator's questions to the transfer log — "who sent and fetched
//! what" (`mftd log`) and "how much is there" (`mftd db status`) — as typed
//! rows. Every SQL statement on the log's tables lives in this crate; the
//! command-line program only renders what it gets. Listings stream from a
//! [`Cursor`] (newest first, in batches) so an export of millions of rows
//! holds one batch in memory.

mod cursor;

pub use cursor::{open_log, open_removals, open_shares, Cursor};

use std::time::SystemTime;

use serde::Serialize;
use tokio_postgres::Client;

use crate::db::DbError;
use crate::utc::UtcTime;

/// Which rows to list. Every filter given must hold; `None` matches all.
#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    /// Uploader or downloader: a bare JID matches every resource of it.
    pub jid: Option<String>,
    /// Who uploaded the file: their POST rows and the GET rows of their
    /// files. For shares, the sender.
    pub sender: Option<String>,
    /// Recipient (a bare JID or a room): the upload's `to_jid`, or any
    /// share of the file to it.
    pub to: Option<String>,
    /// A group chat or persistent room: as `to`, for rooms only.
    pub room: Option<String>,
    /// `POST` or `GET` (any case).
    pub method: Option<String>,
    /// `im`, `groupchat`, `persistent`.
    pub chat_type: Option<String>,
    /// The name the user uploaded; `*` stands for any run of characters.
    pub file_name: Option<String>,
    /// The resource name (the `filename` column, the URL's file part).
    pub resource: Option<String>,
    /// SHA-256 of the content (hex, any case).
    pub sha256: Option<String>,
    /// From this time on.
    pub since: Option<SystemTime>,
    /// Before this time.
    pub until: Option<SystemTime>,
    /// Most rows; 0 or less: all.
    pub limit: i64,
}

/// One row of `aft_log` as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRow {
    /// Sequence number.
    pub aft_index: i64,
    /// When the row was written (XEP-0082 UTC).
    pub date_time: String,
    /// `POST` or `GET`.
    pub method: String,
    /// Uploader or downloader.
    pub jid: String,
    /// Intended recipient.
    pub to_jid: String,
    /// `im`, `groupchat`, `persistent`.
    pub chat_type: String,
    /// The name the user uploaded.
    pub real_filename: String,
    /// The resource name.
    pub filename: String,
    /// Bytes.
    pub file_size: i64,
    /// HTTP status answered.
    pub http_status: i32,
    /// Bytes sent (downloads) or received (uploads).
    pub bytes_sent: i64,
    /// Client address.
    pub client_address: String,
    /// SHA-256 of the content.
    pub sha256: String,
}

/// One row of `shares`: a message that carried a file's URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareRow {
    /// Sequence number.
    pub share_id: i64,
    /// When the router reported it (XEP-0082 UTC).
    pub date_time: String,
    /// Who sent the message (full JID).
    pub sender: String,
    /// A user or a room.
    pub recipient: String,
    /// `im`, `groupchat`, `persistent`.
    pub chat_type: String,
    /// The file's resource name.
    pub filename: String,
    /// The name the user uploaded ('' when the upload is not in the log).
    pub real_filename: String,
}

/// One row of `removals`: a stored file that left the store, with who
/// removed it and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovalRow {
    /// Sequence number.
    pub removal_id: i64,
    /// When the file was removed (XEP-0082 UTC).
    pub removed_at: String,
    /// `retention`, `expired`, `purge`, `erasure`, `user-deletion`.
    pub reason: String,
    /// The sweeper, the operator (`--by` or login) or the user's JID.
    pub removed_by: String,
    /// The operator's `--reason`, or what removed it.
    pub note: String,
    /// Who uploaded it ('' when the upload is not in the log).
    pub uploader: String,
    /// `im`, `groupchat`, `persistent`.
    pub chat_type: String,
    /// The name the user uploaded ('' when the upload is not in the log).
    pub real_filename: String,
    /// The file's resource name.
    pub filename: String,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the content.
    pub sha256: String,
}

/// How much the log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCounts {
    /// Rows of `aft_log`.
    pub rows: i64,
    /// Files not purged.
    pub live_files: i64,
}

pub(crate) fn stamp(t: SystemTime) -> String {
    UtcTime::from_system(t).xep0082()
}

/// The columns [`log_row`] reads, in its order.
pub(crate) const LOG_ROW_COLUMNS: &str = "aft_index, date_time, method, jid, to_jid, chat_type, \
     real_filename, filename, file_size, http_status, bytes_sent, client_address, sha256";

pub(crate) fn log_row(r: &tokio_postgres::Row) -> LogRow {
    LogRow {
        aft_index: r.get(0),
        date_time: stamp(r.get(1)),
        method: r.get(2),
        jid: r.get(3),
        to_jid: r.get(4),
        chat_type: r.get(5),
        real_filename: r.get(6),
        filename: r.get(7),
        file_size: r.get(8),
        http_status: r.get(9),
        bytes_sent: r.get(10),
        client_address: r.get(11),
        sha256: r.get(12),
    }
}

/// The `limit` newest rows of `aft_log`, newest first.
pub async fn latest(client: &Client, limit: i64) -> Result<Vec<LogRow>, DbError> {
    let sql = format!("SELECT {LOG_ROW_COLUMNS} FROM aft_log ORDER BY aft_index DESC LIMIT $1");
    let rows = client
        .query(&sql, &[&limit.max(1)])
        .await
        .map_err(|e| DbError::query("reading the latest aft_log rows", e))?;
    Ok(rows.iter().map(log_row).collect())
}

/// Completed transfers of one chat type since a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatTypeTotals {
    /// `im`, `groupchat`, `persistent`.
    pub chat_type: String,
    /// Uploads stored (`201`).
    pub uploads: i64,
    /// Bytes of those uploads.
    pub upload_bytes: i64,
    /// Downloads served (`200`/`206`).
    pub downloads: i64,
    /// Bytes those downloads sent.
    pub download_bytes: i64,
}

/// Successful uploads and downloads per chat type since `since`, for every
/// node writing to this log.
pub async fn totals_since(
    client: &Client,
    since: SystemTime,
) -> Result<Vec<ChatTypeTotals>, DbError> {
    let rows = client
        .query(
            "SELECT chat_type, \
             count(*) FILTER (WHERE method = 'POST'), \
             coalesce(sum(file_size) FILTER (WHERE method = 'POST'), 0)::bigint, \
             count(*) FILTER (WHERE method = 'GET'), \
             coalesce(sum(bytes_sent) FILTER (WHERE method = 'GET'), 0)::bigint \
             FROM aft_log WHERE date_time >= $1 AND http_status IN (200, 201, 206) \
             GROUP BY chat_type ORDER BY chat_type",
            &[&since],
        )
        .await
        .map_err(|e| DbError::query("totalling aft_log by chat type", e))?;
    Ok(rows
        .iter()
        .map(|r| ChatTypeTotals {
            chat_type: r.get(0),
            uploads: r.get(1),
            upload_bytes: r.get(2),
            downloads: r.get(3),
            download_bytes: r.get(4),
        })
        .collect())
}

/// Rows and live files.
pub async fn counts(client: &Client) -> Result<LogCounts, DbError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM aft_log), (SELECT count(*) FROM files WHERE deleted IS NULL)",
            &[],
        )
        .await
        .map_err(|e| DbError::query("counting log rows", e))?;
    Ok(LogCounts {
        rows: row.get(0),
        live_files: row.get(1),
    })
}
