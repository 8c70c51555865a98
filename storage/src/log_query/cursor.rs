//! Listing `aft_log`, `shares` or `removals` rows newest first without holding them: a
//! read-only, repeatable-read transaction binds the query to a portal and
//! [`Cursor::next_batch`] fetches it [`BATCH`] rows at a time. The snapshot
//! also makes [`Cursor::more`] — how many matching rows a limit left out —
//! agree with the rows delivered, however busy the log is meanwhile.

use std::time::SystemTime;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, Portal, Row, Transaction};

use super::{log_row, stamp, LogFilter, LogRow, RemovalRow, ShareRow, LOG_ROW_COLUMNS};
use crate::db::DbError;

/// Rows fetched per round trip.
const BATCH: i32 = 500;

/// `aft_log` rows matching `$1`…`$11` (see [`Bound::log_params`]).
const LOG_WHERE: &str = "($1::text IS NULL OR jid = $1 OR split_part(jid, '/', 1) = $1) \
     AND ($2::text IS NULL OR filename IN (SELECT p.filename FROM aft_log p \
          WHERE p.method = 'POST' AND (p.jid = $2 OR split_part(p.jid, '/', 1) = $2))) \
     AND ($3::text IS NULL OR split_part(to_jid, '/', 1) = $3 \
          OR filename IN (SELECT s.resource FROM shares s WHERE s.recipient = $3)) \
     AND ($4::text IS NULL OR (chat_type <> 'im' AND split_part(to_jid, '/', 1) = $4) \
          OR filename IN (SELECT s.resource FROM shares s WHERE s.recipient = $4 AND s.chat_type <> 'im')) \
     AND ($5::text IS NULL OR method = $5) \
     AND ($6::text IS NULL OR chat_type = $6) \
     AND ($7::timestamptz IS NULL OR date_time >= $7) \
     AND ($8::timestamptz IS NULL OR date_time < $8) \
     AND ($9::text IS NULL OR real_filename LIKE $9) \
     AND ($10::text IS NULL OR filename = $10) \
     AND ($11::text IS NULL OR sha256 = $11)";

/// `shares` rows (joined with their file) matching `$1`…`$9` (see
/// [`Bound::share_params`]).
const SHARES_FROM_WHERE: &str = "FROM shares s LEFT JOIN files f USING (resource) \
     WHERE ($1::text IS NULL OR s.sender = $1 OR split_part(s.sender, '/', 1) = $1) \
     AND ($2::text IS NULL OR s.recipient = $2) \
     AND ($3::text IS NULL OR (s.recipient = $3 AND s.chat_type <> 'im')) \
     AND ($4::text IS NULL OR s.chat_type = $4) \
     AND ($5::timestamptz IS NULL OR s.date_time >= $5) \
     AND ($6::timestamptz IS NULL OR s.date_time < $6) \
     AND ($7::text IS NULL OR f.real_filename LIKE $7) \
     AND ($8::text IS NULL OR s.resource = $8) \
     AND ($9::text IS NULL OR f.sha256 = $9)";

/// `removals` rows (joined with their file) matching `$1`…`$8` (see
/// [`Bound::removal_params`]): `$1` is who removed the file or whose it was.
const REMOVALS_FROM_WHERE: &str = "FROM removals r LEFT JOIN files f USING (resource) \
     WHERE ($1::text IS NULL OR r.removed_by = $1 OR split_part(r.removed_by, '/', 1) = $1 \
            OR split_part(f.uploader, '/', 1) = $1) \
     AND ($2::text IS NULL OR split_part(f.uploader, '/', 1) = $2) \
     AND ($3::text IS NULL OR r.chat_type = $3) \
     AND ($4::timestamptz IS NULL OR r.removed_at >= $4) \
     AND ($5::timestamptz IS NULL OR r.removed_at < $5) \
     AND ($6::text IS NULL OR f.real_filename LIKE $6) \
     AND ($7::text IS NULL OR r.resource = $7) \
     AND ($8::text IS NULL OR r.sha256 = $8)";

/// A filter's values as the statements bind them.
#[derive(Debug)]
struct Bound {
    jid: Option<String>,
    sender: Option<String>,
    to: Option<String>,
    room: Option<String>,
    method: Option<String>,
    chat_type: Option<String>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    file_name: Option<String>,
    resource: Option<String>,
    sha256: Option<String>,
    /// `LIMIT`: one more than asked, to learn whether more rows match.
    fetch: Option<i64>,
}

impl Bound {
    fn new(f: &LogFilter) -> Bound {
        Bound {
            jid: f.jid.clone(),
            sender: f.sender.clone(),
            to: f.to.clone(),
            room: f.room.clone(),
            method: f.method.as_deref().map(str::to_ascii_uppercase),
            chat_type: f.chat_type.clone(),
            since: f.since,
            until: f.until,
            file_name: f.file_name.as_deref().map(like_pattern),
            resource: f.resource.clone(),
            sha256: f.sha256.as_deref().map(str::to_ascii_lowercase),
            fetch: (f.limit > 0).then(|| f.limit.saturating_add(1)),
        }
    }

    fn log_params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.jid,
            &self.sender,
            &self.to,
            &self.room,
            &self.method,
            &self.chat_type,
            &self.since,
            &self.until,
            &self.file_name,
            &self.resource,
            &self.sha256,
        ]
    }

    /// For shares the sender is `sender`, or else `jid`; `method` does not apply.
    fn share_params(&self) -> [&(dyn ToSql + Sync); 9] {
        let sender = if self.sender.is_some() {
            &self.sender
        } else {
            &self.jid
        };
        [
            sender,
            &self.to,
            &self.room,
            &self.chat_type,
            &self.since,
            &self.until,
            &self.file_name,
            &self.resource,
            &self.sha256,
        ]
    }
}

impl Bound {
    /// For removals `jid` is who removed the file or whose it was, `sender`
    /// whose it was; `to`, `room` and `method` do not apply.
    fn removal_params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.jid,
            &self.sender,
            &self.chat_type,
            &self.since,
            &self.until,
            &self.file_name,
            &self.resource,
            &self.sha256,
        ]
    }
}

/// `*` as any run of characters; everything else literal (LIKE's `%`, `_`
/// and its escape character `\` escaped).
fn like_pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '*' => out.push('%'),
            c => out.push(c),
        }
    }
    out
}

/// Which table a cursor reads.
#[derive(Debug, Clone, Copy)]
enum Table {
    Log,
    Shares,
    Removals,
}

/// Rows of one listing, newest first, fetched a batch at a time.
pub struct Cursor<'a, T> {
    tx: Transaction<'a>,
    portal: Portal,
    read: fn(&Row) -> T,
    table: Table,
    bound: Bound,
    limit: Option<i64>,
    delivered: i64,
    truncated: bool,
    done: bool,
}

/// Lists `aft_log` rows matching `filter`, newest first.
pub async fn open_log<'a>(
    client: &'a mut Client,
    filter: &LogFilter,
) -> Result<Cursor<'a, LogRow>, DbError> {
    let sql = format!(
        "SELECT {LOG_ROW_COLUMNS} FROM aft_log WHERE {LOG_WHERE} \
         ORDER BY aft_index DESC LIMIT $12::bigint"
    );
    open(client, filter, Table::Log, &sql, log_row).await
}

/// Lists shares (messages that carried a file's URL) matching `filter`,
/// newest first: `sender` (or `jid`) is who sent the message; `method`
/// does not apply.
pub async fn open_shares<'a>(
    client: &'a mut Client,
    filter: &LogFilter,
) -> Result<Cursor<'a, ShareRow>, DbError> {
    let sql = format!(
        "SELECT s.share_id, s.date_time, s.sender, s.recipient, s.chat_type, s.resource, \
         coalesce(f.real_filename, '') {SHARES_FROM_WHERE} \
         ORDER BY s.share_id DESC LIMIT $10::bigint"
    );
    open(client, filter, Table::Shares, &sql, share_row).await
}

/// Lists removals (stored files that left the store, with who and why)
/// matching `filter`, newest first.
pub async fn open_removals<'a>(
    client: &'a mut Client,
    filter: &LogFilter,
) -> Result<Cursor<'a, RemovalRow>, DbError> {
    let sql = format!(
        "SELECT r.removal_id, r.removed_at, r.reason, r.removed_by, r.note, \
         coalesce(f.uploader, ''), r.chat_type, coalesce(f.real_filename, ''), r.resource, \
         r.size, r.sha256 {REMOVALS_FROM_WHERE} \
         ORDER BY r.removal_id DESC LIMIT $9::bigint"
    );
    open(client, filter, Table::Removals, &sql, removal_row).await
}

fn removal_row(r: &Row) -> RemovalRow {
    RemovalRow {
        removal_id: r.get(0),
        removed_at: stamp(r.get(1)),
        reason: r.get(2),
        removed_by: r.get(3),
        note: r.get(4),
        uploader: r.get(5),
        chat_type: r.get(6),
        real_filename: r.get(7),
        filename: r.get(8),
        size: r.get(9),
        sha256: r.get(10),
    }
}

fn share_row(r: &Row) -> ShareRow {
    ShareRow {
        share_id: r.get(0),
        date_time: stamp(r.get(1)),
        sender: r.get(2),
        recipient: r.get(3),
        chat_type: r.get(4),
        filename: r.get(5),
        real_filename: r.get(6),
    }
}

async fn open<'a, T>(
    client: &'a mut Client,
    filter: &LogFilter,
    table: Table,
    sql: &str,
    read: fn(&Row) -> T,
) -> Result<Cursor<'a, T>, DbError> {
    let what = match table {
        Table::Log => "querying aft_log",
        Table::Shares => "querying shares",
        Table::Removals => "querying removals",
    };
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| DbError::query(what, e))?;
    let bound = Bound::new(filter);
    let portal = match table {
        Table::Log => {
            let p = bound.log_params();
            let mut params: Vec<&(dyn ToSql + Sync)> = p.to_vec();
            params.push(&bound.fetch);
            tx.bind(sql, &params).await
        }
        Table::Shares => {
            let p = bound.share_params();
            let mut params: Vec<&(dyn ToSql + Sync)> = p.to_vec();
            params.push(&bound.fetch);
            tx.bind(sql, &params).await
        }
        Table::Removals => {
            let p = bound.removal_params();
            let mut params: Vec<&(dyn ToSql + Sync)> = p.to_vec();
            params.push(&bound.fetch);
            tx.bind(sql, &params).await
        }
    }
    .map_err(|e| DbError::query(what, e))?;
    Ok(Cursor {
        tx,
        portal,
        read,
        table,
        limit: (filter.limit > 0).then_some(filter.limit),
        bound,
        delivered: 0,
        truncated: false,
        done: false,
    })
}

impl<T> Cursor<'_, T> {
    /// The next rows; empty once the listing is complete.
    pub async fn next_batch(&mut self) -> Result<Vec<T>, DbError> {
        if self.done {
            return Ok(Vec::new());
        }
        let rows = self
            .tx
            .query_portal(&self.portal, BATCH)
            .await
            .map_err(|e| DbError::query("reading the listing", e))?;
        if rows.len() < BATCH as usize {
            self.done = true;
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            if self.limit.is_some_and(|l| self.delivered >= l) {
                // The one row fetched beyond the limit: more match.
                self.truncated = true;
                self.done = true;
                break;
            }
            out.push((self.read)(row));
            self.delivered += 1;
        }
        Ok(out)
    }

    /// Rows delivered so far.
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// How many more rows match than the limit let through (0 when the
    /// listing was complete), counted in the listing's own snapshot. Call
    /// once [`next_batch`](Self::next_batch) came back empty.
    pub async fn more(&self) -> Result<i64, DbError> {
        if !self.truncated {
            return Ok(0);
        }
        let total: i64 = match self.table {
            Table::Log => {
                let sql = format!("SELECT count(*) FROM aft_log WHERE {LOG_WHERE}");
                self.tx.query_one(&sql, &self.bound.log_params()).await
            }
            Table::Shares => {
                let sql = format!("SELECT count(*) {SHARES_FROM_WHERE}");
                self.tx.query_one(&sql, &self.bound.share_params()).await
            }
            Table::Removals => {
                let sql = format!("SELECT count(*) {REMOVALS_FROM_WHERE}");
                self.tx.query_one(&sql, &self.bound.removal_params()).await
            }
        }
        .map_err(|e| DbError::query("counting the rows left out", e))?
        .get(0);
        Ok((total - self.delivered).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_stars_are_wildcards_and_like_characters_are_literal() {
        assert_eq!(like_pattern("minutes.docx"), "minutes.docx");
        assert_eq!(like_pattern("*.pdf"), "%.pdf");
        assert_eq!(like_pattern("100%_a\\b*"), "100\\%\\_a\\\\b%");
    }

    #[test]
    fn one_more_row_is_fetched_than_the_limit() {
        let f = LogFilter {
            limit: 10,
            sha256: Some("ABC".into()),
            method: Some("get".into()),
            ..LogFilter::default()
        };
        let b = Bound::new(&f);
        assert_eq!(b.fetch, Some(11));
        assert_eq!(b.sha256.as_deref(), Some("abc"));
        assert_eq!(b.method.as_deref(), Some("GET"));
        assert_eq!(Bound::new(&LogFilter::default()).fetch, None);
    }
}
