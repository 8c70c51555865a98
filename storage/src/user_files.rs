//! What a user may know about their own uploads, and what an administrator
//! may know about a user's: the queries behind the component's ad-hoc
//! commands "List my uploads" and "Usage of a user". Rows are typed; the
//! component only renders them. Only files the user uploaded are ever
//! selected (by the normalised bare JID the log stores), so nothing here can
//! show one user another's files.

use std::time::SystemTime;

use tokio_postgres::Client;

use crate::db::DbError;
use crate::holds::HELD;
use crate::transfer_log::{file_row, FileRow, FILE_ROW_COLUMNS, FILE_ROW_WIDTH};

/// Most recipients listed per file (the first share's and the slot's
/// destination first); a file shared with more says how many more.
pub const MAX_RECIPIENTS: i64 = 10;

/// One of a user's live uploads.
#[derive(Debug, Clone)]
pub struct UserUpload {
    /// The file.
    pub file: FileRow,
    /// Whether a legal hold in force covers it.
    pub held: bool,
    /// Who it went to: the slot's destination and the share recipients
    /// (bare JIDs, at most [`MAX_RECIPIENTS`]).
    pub recipients: Vec<String>,
    /// Recipients beyond those listed.
    pub more_recipients: i64,
}

/// A user's live uploads, newest first, at most `limit`, and how many live
/// uploads they have in all.
pub async fn live_uploads(
    client: &Client,
    uploader: &str,
    limit: i64,
) -> Result<(Vec<UserUpload>, i64), DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {FILE_ROW_COLUMNS}, {HELD}, \
                   ARRAY(SELECT r FROM (SELECT DISTINCT split_part(s.recipient, '/', 1) AS r \
                         FROM shares s WHERE s.resource = f.resource) d \
                         WHERE r <> split_part(f.to_jid, '/', 1) ORDER BY r LIMIT $3), \
                   (SELECT count(DISTINCT split_part(s.recipient, '/', 1)) FROM shares s \
                    WHERE s.resource = f.resource \
                    AND split_part(s.recipient, '/', 1) <> split_part(f.to_jid, '/', 1)), \
                   count(*) OVER () \
                 FROM files f WHERE f.uploader = $1 AND f.deleted IS NULL \
                 ORDER BY f.created DESC, f.resource LIMIT $2"
            ),
            &[&uploader, &limit, &MAX_RECIPIENTS],
        )
        .await
        .map_err(|e| DbError::query("listing a user's uploads", e))?;
    let total = rows
        .first()
        .map_or(0, |r| r.get::<_, i64>(FILE_ROW_WIDTH + 3));
    let uploads = rows
        .iter()
        .map(|r| {
            let file = file_row(r);
            let shared: Vec<String> = r.get(FILE_ROW_WIDTH + 1);
            let shared_count: i64 = r.get(FILE_ROW_WIDTH + 2);
            let mut recipients = Vec::new();
            let destination = crate::jid::bare_or_raw(&file.to_jid);
            if !file.to_jid.is_empty() {
                recipients.push(destination);
            }
            let listed = i64::try_from(shared.len()).unwrap_or(0);
            recipients.extend(shared);
            UserUpload {
                held: r.get(FILE_ROW_WIDTH),
                more_recipients: (shared_count - listed).max(0),
                recipients,
                file,
            }
        })
        .collect();
    Ok((uploads, total))
}

/// One user's use of the service, as an administrator sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Files still stored.
    pub live_files: i64,
    /// Their bytes.
    pub live_bytes: i64,
    /// Of those, files a legal hold covers.
    pub held_files: i64,
    /// Files uploaded in the last 24 hours (removed since or not).
    pub day_files: i64,
    /// Their bytes.
    pub day_bytes: i64,
    /// Files removed (by anyone, for any reason).
    pub removed_files: i64,
    /// The newest upload, if any.
    pub last_upload: Option<SystemTime>,
}

/// What `uploader` (a bare JID) has stored and sent.
pub async fn usage(client: &Client, uploader: &str) -> Result<Usage, DbError> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE f.deleted IS NULL), \
                   coalesce(sum(f.size) FILTER (WHERE f.deleted IS NULL), 0)::BIGINT, \
                   count(*) FILTER (WHERE f.deleted IS NULL AND {HELD}), \
                   count(*) FILTER (WHERE f.created > now() - interval '24 hours'), \
                   coalesce(sum(f.size) FILTER (WHERE f.created > now() - interval '24 hours'), 0)::BIGINT, \
                   count(*) FILTER (WHERE f.deleted IS NOT NULL), \
                   max(f.created) \
                 FROM files f WHERE f.uploader = $1"
            ),
            &[&uploader],
        )
        .await
        .map_err(|e| DbError::query("reading a user's usage", e))?;
    Ok(Usage {
        live_files: row.get(0),
        live_bytes: row.get(1),
        held_files: row.get(2),
        day_files: row.get(3),
        day_bytes: row.get(4),
        removed_files: row.get(5),
        last_upload: row.get(6),
    })
}
