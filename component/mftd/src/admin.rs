//! Administration on the transfer log: `mftd db migrate|status`,
//! `mftd log` (query who sent and fetched what), and `mftd purge` (remove
//! old files from the store, keep their history).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mft_storage::db::DbConfig;
use mft_storage::transfer_log::TransferLog;
use mft_storage::utc::UtcTime;
use mft_storage::{db, Location, Store};

use crate::units::parse_duration;

fn stamp(t: SystemTime) -> String {
    UtcTime::from_unix(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
    .xep0082()
}

/// `mftd db migrate`: applies pending migrations, prints what it did.
pub async fn migrate(db: &DbConfig) -> anyhow::Result<String> {
    let mut client = db::connect(db, Duration::from_secs(10)).await?;
    let applied = db::migrate(&mut client).await?;
    let version = db::schema_version(&client).await?;
    Ok(if applied.is_empty() {
        format!("schema is up to date (version {version})")
    } else {
        format!("applied migrations {applied:?}; schema version {version}")
    })
}

/// `mftd db status`: schema version and row counts.
pub async fn status(db: &DbConfig) -> anyhow::Result<String> {
    let client = db::connect(db, Duration::from_secs(10)).await?;
    let version = db::schema_version(&client).await?;
    let latest = db::MIGRATIONS.last().map_or(0, |m| m.0);
    let mut out = format!("schema version {version} (this mftd knows {latest})");
    if version > 0 {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM aft_log", &[])
            .await?
            .get(0);
        let files: i64 = client
            .query_one("SELECT count(*) FROM files WHERE deleted IS NULL", &[])
            .await?
            .get(0);
        let _ = write!(out, "\naft_log rows: {rows}\nlive files: {files}");
    }
    if version < latest {
        out.push_str("\npending migrations: run `mftd db migrate` (mftd run applies them too)");
    }
    Ok(out)
}

/// Filters of `mftd log`.
#[derive(Debug, Default, Clone)]
pub struct LogQuery {
    /// Uploader or downloader.
    pub jid: Option<String>,
    /// Recipient.
    pub to: Option<String>,
    /// `POST` or `GET`.
    pub method: Option<String>,
    /// `im`, `groupchat`, `persistent`.
    pub chat_type: Option<String>,
    /// From (RFC 3339 time, or a duration ago such as `24h`).
    pub since: Option<String>,
    /// Until (same forms).
    pub until: Option<String>,
    /// Most rows printed.
    pub limit: i64,
}

/// Output formats of `mftd log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
    /// Comma-separated with a header line.
    Csv,
}

fn time_arg(s: &str) -> String {
    match parse_duration(s) {
        Ok(ago) => stamp(SystemTime::now() - ago),
        Err(_) => s.to_owned(),
    }
}

const COLUMNS: [&str; 13] = [
    "aft_index",
    "date_time",
    "method",
    "jid",
    "to_jid",
    "chat_type",
    "real_filename",
    "filename",
    "file_size",
    "http_status",
    "bytes_sent",
    "client_address",
    "sha256",
];

/// Runs a log query and renders it.
pub async fn query(db: &DbConfig, q: &LogQuery, format: Format) -> anyhow::Result<String> {
    let client = db::connect(db, Duration::from_secs(10)).await?;
    let mut sql = String::from(
        "SELECT aft_index, date_time, method, jid, to_jid, chat_type, real_filename, filename, \
         file_size, http_status, bytes_sent, client_address, sha256 FROM aft_log WHERE true",
    );
    let mut params: Vec<String> = Vec::new();
    let mut add = |clause: &str, value: String| {
        params.push(value);
        let _ = write!(
            sql,
            " AND {}",
            clause.replace('?', &format!("${}", params.len()))
        );
    };
    if let Some(j) = &q.jid {
        add("(jid = ? OR split_part(jid, '/', 1) = ?)", j.clone());
    }
    if let Some(t) = &q.to {
        add("split_part(to_jid, '/', 1) = ?", t.clone());
    }
    if let Some(m) = &q.method {
        add("method = ?", m.to_uppercase());
    }
    if let Some(c) = &q.chat_type {
        add("chat_type = ?", c.clone());
    }
    if let Some(s) = &q.since {
        add("date_time >= ?::text::timestamptz", time_arg(s));
    }
    if let Some(u) = &q.until {
        add("date_time < ?::text::timestamptz", time_arg(u));
    }
    let _ = write!(sql, " ORDER BY aft_index LIMIT {}", q.limit.max(1));
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = client
        .query(sql.as_str(), &refs)
        .await
        .context("while querying aft_log")?;
    let records: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.get::<_, i64>(0).to_string(),
                stamp(r.get(1)),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get::<_, i64>(8).to_string(),
                r.get::<_, i32>(9).to_string(),
                r.get::<_, i64>(10).to_string(),
                r.get(11),
                r.get(12),
            ]
        })
        .collect();
    Ok(render(&records, format))
}

fn render(records: &[Vec<String>], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Json => {
            for r in records {
                let obj: serde_json::Map<String, serde_json::Value> = COLUMNS
                    .iter()
                    .zip(r)
                    .map(|(k, v)| {
                        let value = match *k {
                            "aft_index" | "file_size" | "http_status" | "bytes_sent" => v
                                .parse::<i64>()
                                .map(serde_json::Value::from)
                                .unwrap_or_default(),
                            _ => serde_json::Value::from(v.as_str()),
                        };
                        ((*k).to_owned(), value)
                    })
                    .collect();
                let _ = writeln!(out, "{}", serde_json::Value::Object(obj));
            }
        }
        Format::Csv => {
            let _ = writeln!(out, "{}", COLUMNS.join(","));
            for r in records {
                let cells: Vec<String> = r
                    .iter()
                    .map(|c| {
                        if c.contains([',', '"', '\n']) {
                            format!("\"{}\"", c.replace('"', "\"\""))
                        } else {
                            c.clone()
                        }
                    })
                    .collect();
                let _ = writeln!(out, "{}", cells.join(","));
            }
        }
        Format::Table => {
            let shown = [0usize, 1, 2, 3, 4, 5, 6, 8, 9, 10];
            let widths: Vec<usize> = shown
                .iter()
                .map(|&i| {
                    records
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([COLUMNS[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<&str>| -> String {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            let _ = writeln!(out, "{}", line(shown.iter().map(|&i| COLUMNS[i]).collect()));
            for r in records {
                let _ = writeln!(
                    out,
                    "{}",
                    line(shown.iter().map(|&i| r[i].as_str()).collect())
                );
            }
            let _ = writeln!(out, "({} rows)", records.len());
        }
    }
    out
}

/// What a purge did (or would do).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Files removed (or to remove).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files that were already gone from the store.
    pub missing: u64,
}

/// The start of the current UTC hour: nothing at or after it is purged.
pub fn current_hour_start(now: SystemTime) -> SystemTime {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs - secs % 3600)
}

/// Removes files older than `older_than` (never of the current UTC hour)
/// from the store and marks them deleted; the `aft_log` history stays.
pub async fn purge(
    log: &TransferLog,
    store: &Store,
    older_than: Duration,
    chat_type: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<PurgeReport> {
    let now = SystemTime::now();
    let before = (now - older_than).min(current_hour_start(now));
    let candidates = log.purge_candidates(before, chat_type).await?;
    let mut report = PurgeReport::default();
    for file in candidates {
        let Some(loc) = Location::parse(&file.resource) else {
            continue;
        };
        // A file in the current hour's directory is never touched, whatever its time.
        let hour_dir = loc.dir();
        let now_utc = UtcTime::now();
        if hour_dir.contains(&format!("/{}/{:02}", now_utc.compact_date(), now_utc.hour)) {
            continue;
        }
        report.files += 1;
        report.bytes += u64::try_from(file.size).unwrap_or(0);
        if dry_run {
            continue;
        }
        match store.remove(&loc).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => report.missing += 1,
            Err(e) => return Err(anyhow::anyhow!("while removing {}: {e}", file.storage_path)),
        }
        log.mark_deleted(&file.resource).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_json_types() {
        let rec = vec![vec![
            "7".to_owned(),
            "2026-11-26T00:00:00Z".into(),
            "POST".into(),
            "alice@example.test".into(),
            "".into(),
            "im".into(),
            "a, \"b\".txt".into(),
            "res".into(),
            "12".into(),
            "201".into(),
            "12".into(),
            "127.0.0.1".into(),
            "ab".into(),
        ]];
        let csv = render(&rec, Format::Csv);
        assert!(csv.contains(",\"a, \"\"b\"\".txt\","), "{csv}");
        let json = render(&rec, Format::Json);
        assert!(
            json.contains("\"aft_index\":7") && json.contains("\"method\":\"POST\""),
            "{json}"
        );
        let table = render(&rec, Format::Table);
        assert!(table.ends_with("(1 rows)\n"), "{table}");
    }

    #[test]
    fn the_current_hour_starts_on_the_hour() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_669_628);
        assert_eq!(
            current_hour_start(t),
            UNIX_EPOCH + Duration::from_secs(1_795_669_628 - 7 * 60 - 8)
        );
    }
}
