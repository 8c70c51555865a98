//! E-discovery: which files a matter concerns (a person, a room, one file or
//! one content, optionally within a time range) and every record about
//! them — log rows, shares, removals, erasure steps and the holds that cover
//! them — as JSON objects, exactly as the database holds them
//! (`row_to_json`), so an export carries every column, including ones added
//! after this module was written. `mftd export` writes them out.

use std::time::SystemTime;

use serde_json::Value;
use tokio_postgres::Client;

use crate::db::DbError;
use crate::transfer_log::{file_row, FileRow, FILE_ROW_COLUMNS};

/// What an export is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A person (bare JID): files they uploaded, were sent, shared, or fetched.
    User(String),
    /// A room (bare JID): files meant for it or shared in it.
    Room(String),
    /// One file, by resource name.
    Resource(String),
    /// One file, by the AFT_INDEX of its upload's POST row.
    LogId(i64),
    /// Every file with this content (hex SHA-256).
    Sha256(String),
}

fn q(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::query(what, e)
}

/// The files (live and removed) `scope` covers, uploaded in `[from, to)`,
/// oldest first.
pub async fn files(
    client: &Client,
    scope: &Scope,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
) -> Result<Vec<FileRow>, DbError> {
    let (text, id): (Option<&str>, Option<i64>) = match scope {
        Scope::User(s) | Scope::Room(s) | Scope::Resource(s) | Scope::Sha256(s) => (Some(s), None),
        Scope::LogId(i) => (None, Some(*i)),
    };
    let condition = match scope {
        Scope::User(_) => {
            "split_part(f.uploader, '/', 1) = $1 OR split_part(f.to_jid, '/', 1) = $1 \
             OR EXISTS (SELECT 1 FROM shares s WHERE s.resource = f.resource \
               AND (split_part(s.sender, '/', 1) = $1 OR split_part(s.recipient, '/', 1) = $1)) \
             OR EXISTS (SELECT 1 FROM aft_log a WHERE a.filename = f.resource \
               AND a.method = 'GET' AND split_part(a.jid, '/', 1) = $1)"
        }
        Scope::Room(_) => {
            "split_part(f.to_jid, '/', 1) = $1 OR EXISTS (SELECT 1 FROM shares s \
             WHERE s.resource = f.resource AND split_part(s.recipient, '/', 1) = $1)"
        }
        Scope::Resource(_) => "f.resource = $1",
        Scope::Sha256(_) => "f.sha256 = $1",
        Scope::LogId(_) => {
            "f.resource = (SELECT a.filename FROM aft_log a WHERE a.aft_index = $2 \
             AND a.method = 'POST')"
        }
    };
    let sql = format!(
        "SELECT {FILE_ROW_COLUMNS} FROM files f WHERE ({condition}) \
         AND ($1::text IS NULL OR true) AND ($2::bigint IS NULL OR true) \
         AND ($3::timestamptz IS NULL OR f.created >= $3) \
         AND ($4::timestamptz IS NULL OR f.created < $4) \
         ORDER BY f.created, f.resource"
    );
    let rows = client
        .query(&sql, &[&text, &id, &from, &to])
        .await
        .map_err(q("listing the files of an export"))?;
    Ok(rows.iter().map(file_row).collect())
}

/// Every record about `resources`, each table's rows in the order they were
/// written.
#[derive(Debug, Default)]
pub struct Records {
    /// `aft_log` rows (uploads, downloads, refused attempts).
    pub log: Vec<Value>,
    /// `shares` rows (messages that carried a file's URL).
    pub shares: Vec<Value>,
    /// `removals` rows (retention, expiry, purge, erasure).
    pub removals: Vec<Value>,
    /// `erasure_steps` rows joined with their erasure (who, why).
    pub erasures: Vec<Value>,
    /// Holds (in force or released) that cover any of the files, with their
    /// history.
    pub holds: Vec<Value>,
}

async fn json_rows(
    client: &Client,
    sql: &str,
    resources: &[String],
    what: &'static str,
) -> Result<Vec<Value>, DbError> {
    let rows = client.query(sql, &[&resources]).await.map_err(q(what))?;
    rows.iter()
        .map(|r| {
            let text: String = r.get(0);
            serde_json::from_str(&text)
                .map_err(|e| DbError::Schema(format!("{what}: the database sent bad JSON: {e}")))
        })
        .collect()
}

/// The records of `resources`.
pub async fn records(client: &Client, resources: &[String]) -> Result<Records, DbError> {
    Ok(Records {
        log: json_rows(
            client,
            "SELECT row_to_json(a)::text FROM aft_log a WHERE a.filename = ANY($1) \
             ORDER BY a.aft_index",
            resources,
            "reading the log rows of an export",
        )
        .await?,
        shares: json_rows(
            client,
            "SELECT row_to_json(s)::text FROM shares s WHERE s.resource = ANY($1) \
             ORDER BY s.share_id",
            resources,
            "reading the shares of an export",
        )
        .await?,
        removals: json_rows(
            client,
            "SELECT row_to_json(r)::text FROM removals r WHERE r.resource = ANY($1) \
             ORDER BY r.removal_id",
            resources,
            "reading the removals of an export",
        )
        .await?,
        erasures: json_rows(
            client,
            "SELECT row_to_json(x)::text FROM (SELECT s.step_id, s.erasure_id, s.resource, \
             s.step, s.at, e.subject, e.received, e.reason, e.requested_by, e.started_at \
             FROM erasure_steps s JOIN erasures e USING (erasure_id) \
             WHERE s.resource = ANY($1) ORDER BY s.step_id) x",
            resources,
            "reading the erasure steps of an export",
        )
        .await?,
        holds: json_rows(
            client,
            "SELECT row_to_json(x)::text FROM (SELECT h.*, \
               (SELECT array_agg(f.resource ORDER BY f.resource) FROM files f \
                WHERE f.resource = ANY($1) AND mftd_hold_covers(h, f)) AS covers, \
               (SELECT json_agg(e ORDER BY e.event_id) FROM hold_events e \
                WHERE e.hold_id = h.hold_id) AS history \
             FROM holds h WHERE EXISTS (SELECT 1 FROM files f \
               WHERE f.resource = ANY($1) AND mftd_hold_covers(h, f)) \
             ORDER BY h.hold_id) x",
            resources,
            "reading the holds of an export",
        )
        .await?,
    })
}
