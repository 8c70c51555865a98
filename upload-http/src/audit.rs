//! What the transfer log records for each HTTP transfer: the POST row of an
//! upload, the GET row of a download, and how a download ended.

use std::net::IpAddr;
use std::time::Instant;

use http::StatusCode;
use mft_storage::transfer_log::{FileRow, TransferLog, TransferRecord};
use mft_storage::{FileInfo, Location, StoredFile};

use mft_common::jid::bare_or_raw;

use crate::token::SlotClaims;
use crate::urls::file_type;

fn millis(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Where a transfer happened: this node and its file server.
pub struct Place {
    /// The node's name.
    pub node: String,
    /// The file server's host.
    pub file_server: String,
}

/// The POST row (and `files` row) of a stored upload.
pub fn upload_record(
    place: &Place,
    claims: &SlotClaims,
    stored: &StoredFile,
    client: IpAddr,
    user_agent: &str,
    started: Instant,
) -> TransferRecord {
    let size = i64::try_from(stored.meta.size).unwrap_or(i64::MAX);
    TransferRecord {
        jid: bare_or_raw(&claims.uploader),
        to_jid: claims.to.clone(),
        resource: claims.resource.clone(),
        real_filename: claims.filename.clone(),
        file_type: file_type(&claims.filename),
        chat_type: Location::parse(&claims.resource)
            .map(|l| l.chat().as_str().to_owned())
            .unwrap_or_default(),
        file_server: place.file_server.clone(),
        file_path: stored.path.clone(),
        file_size: size,
        sha256: stored.meta.sha256.clone(),
        content_type: stored.meta.content_type.clone().unwrap_or_default(),
        node: place.node.clone(),
        client_address: client.to_string(),
        user_agent: user_agent.to_owned(),
        http_status: 201,
        bytes_sent: size,
        duration_ms: millis(started),
        purpose: claims
            .purpose
            .clone()
            .unwrap_or_else(|| "message".to_owned()),
        expires: claims
            .expire_before
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)),
        scan_verdict: String::new(),
        scan_detail: String::new(),
    }
}

/// The status a GET row holds until its body has been handed over whole
/// (nginx's "client closed request"): a row is never a delivery before the
/// delivery happened.
pub const NOT_DELIVERED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
};

/// The GET row of a download about to start: no bytes sent yet.
pub fn download_record(
    place: &Place,
    loc: &Location,
    info: &FileInfo,
    row: Option<&FileRow>,
    client: IpAddr,
    user_agent: &str,
    status: StatusCode,
) -> TransferRecord {
    let meta = info.meta.as_ref();
    let real_filename = row
        .map(|r| r.real_filename.clone())
        .or_else(|| meta.map(|m| m.real_name.clone()))
        .unwrap_or_default();
    TransferRecord {
        // Downloads are anonymous over HTTP: the URL is the capability.
        jid: String::new(),
        to_jid: row
            .map(|r| r.to_jid.clone())
            .or_else(|| meta.map(|m| m.to.clone()))
            .unwrap_or_default(),
        resource: loc.resource().to_owned(),
        file_type: file_type(&real_filename),
        real_filename,
        chat_type: chat_type_of(loc, row),
        file_server: place.file_server.clone(),
        file_path: loc.path(),
        file_size: i64::try_from(info.size).unwrap_or(i64::MAX),
        sha256: row
            .map(|r| r.sha256.clone())
            .or_else(|| meta.map(|m| m.sha256.clone()))
            .unwrap_or_default(),
        content_type: meta
            .and_then(|m| m.content_type.clone())
            .unwrap_or_default(),
        node: place.node.clone(),
        client_address: client.to_string(),
        user_agent: user_agent.to_owned(),
        http_status: i32::from(status.as_u16()),
        bytes_sent: 0,
        duration_ms: 0,
        purpose: row.map(|r| r.purpose.clone()).unwrap_or_default(),
        expires: None,
        scan_verdict: String::new(),
        scan_detail: String::new(),
    }
}

/// The file's chat type as the log knows it when the row is written (the
/// uploader's first share may have named a room), else the one its URL
/// was allocated with.
fn chat_type_of(loc: &Location, row: Option<&FileRow>) -> String {
    row.map(|r| r.chat_type.as_str())
        .filter(|c| !c.is_empty())
        .map_or_else(|| loc.chat().as_str().to_owned(), str::to_owned)
}

/// The GET row of a download refused before any byte (a forged, altered or
/// missing claim; a removed or expired file): its status, no bytes.
pub fn refusal_record(
    place: &Place,
    loc: &Location,
    row: &FileRow,
    client: IpAddr,
    user_agent: &str,
    status: StatusCode,
) -> TransferRecord {
    TransferRecord {
        jid: String::new(),
        to_jid: row.to_jid.clone(),
        resource: loc.resource().to_owned(),
        file_type: file_type(&row.real_filename),
        real_filename: row.real_filename.clone(),
        chat_type: chat_type_of(loc, Some(row)),
        file_server: place.file_server.clone(),
        file_path: loc.path(),
        file_size: row.size,
        sha256: row.sha256.clone(),
        content_type: row.content_type.clone(),
        node: place.node.clone(),
        client_address: client.to_string(),
        user_agent: user_agent.to_owned(),
        http_status: i32::from(status.as_u16()),
        bytes_sent: 0,
        duration_ms: 0,
        purpose: row.purpose.clone(),
        expires: None,
        scan_verdict: String::new(),
        scan_detail: String::new(),
    }
}

/// Updates a GET row with what was really sent once the body is done: the
/// planned status when every byte was handed over, [`NOT_DELIVERED`] otherwise.
pub struct DownloadReport {
    log: TransferLog,
    id: i64,
    started: Instant,
    planned: u64,
    status: i32,
}

impl DownloadReport {
    /// A report for row `id` of a download of `planned` bytes answered with `status`.
    pub fn new(log: TransferLog, id: i64, started: Instant, status: i32, planned: u64) -> Self {
        DownloadReport {
            log,
            id,
            started,
            planned,
            status,
        }
    }

    /// Called when the body is dropped, having handed `sent` bytes to the connection.
    pub fn finish(&mut self, sent: u64) {
        let status = if sent >= self.planned {
            self.status
        } else {
            i32::from(NOT_DELIVERED.as_u16())
        };
        let sent = i64::try_from(sent).unwrap_or(i64::MAX);
        self.log
            .finish_download(self.id, sent, millis(self.started), status);
    }
}
