//! Administration on the transfer log: `mftd db migrate|status`,
//! `mftd log` (query who sent and fetched what), and `mftd purge` (retire
//! old files from the store, keep their history).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mft_storage::db::DbConfig;
use mft_storage::log_query::{self, LogFilter, LogRow};
use mft_storage::retention::{self, SweepPlan, SweepReport};
use mft_storage::transfer_log::TransferLog;
use mft_storage::utc::UtcTime;
use mft_storage::{db, Store};

use crate::units::parse_duration;

/// `mftd db migrate`: applies pending migrations, then grants `roles` (and
/// every role granted to before) their privileges; prints what it did.
pub async fn migrate(db: &DbConfig, roles: &[(String, db::RoleKind)]) -> anyhow::Result<String> {
    let mut client = db::connect(db, Duration::from_secs(10)).await?;
    let applied = db::migrate(&mut client).await?;
    let version = db::schema_version(&client).await?;
    let mut out = if applied.is_empty() {
        format!("schema is up to date (version {version})")
    } else {
        format!("applied migrations {applied:?}; schema version {version}")
    };
    let granted = db::grant(&mut client, roles).await.context(
        "while granting privileges (run `mftd db migrate` as the role that owns the schema)",
    )?;
    for (role, kind) in granted {
        let what = match kind {
            db::RoleKind::Runtime => {
                "runtime (mftd run: read, append, no DDL, no DELETE on aft_log)"
            }
            db::RoleKind::Auditor => "auditor (read-only)",
        };
        let _ = write!(out, "\ngranted {role}: {what}");
    }
    Ok(out)
}

/// `mftd db status`: schema version and row counts.
pub async fn status(db: &DbConfig) -> anyhow::Result<String> {
    let client = db::connect(db, Duration::from_secs(10)).await?;
    let version = db::schema_version(&client).await?;
    let latest = db::latest_version();
    let mut out = format!("schema version {version} (this mftd knows {latest})");
    if version > 0 {
        let counts = log_query::counts(&client).await?;
        let _ = write!(
            out,
            "\naft_log rows: {}\nlive files: {}",
            counts.rows, counts.live_files
        );
    }
    if version < latest {
        out.push_str("\npending migrations: run `mftd db migrate` as the role that owns the schema (mftd run applies them too when it is that role)");
    }
    Ok(out)
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

/// A time argument: an RFC 3339 / XEP-0082 time, or a duration ago (`24h`, `7d`).
pub fn time_arg(s: &str) -> anyhow::Result<SystemTime> {
    if let Ok(ago) = parse_duration(s) {
        return Ok(SystemTime::now() - ago);
    }
    UtcTime::parse_xep0082(s)
        .map(|t| UNIX_EPOCH + Duration::from_secs(t.unix))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{s:?} is neither a time (2026-11-26T08:00:00Z) nor a duration ago (24h, 7d)"
            )
        })
}

/// Runs a log query and renders it.
pub async fn query(db: &DbConfig, filter: &LogFilter, format: Format) -> anyhow::Result<String> {
    let client = db::connect(db, Duration::from_secs(10)).await?;
    let rows = log_query::query(&client, filter)
        .await
        .context("while querying the transfer log")?;
    Ok(render(&rows, format))
}

/// Lists shares (who each file was sent to) and renders them.
pub async fn query_shares(
    db: &DbConfig,
    filter: &LogFilter,
    format: Format,
) -> anyhow::Result<String> {
    let client = db::connect(db, Duration::from_secs(10)).await?;
    let rows = log_query::shares(&client, filter)
        .await
        .context("while querying the shares")?;
    let header = [
        "share_id",
        "date_time",
        "sender",
        "recipient",
        "chat_type",
        "filename",
        "real_filename",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.share_id.to_string(),
                r.date_time.clone(),
                r.sender.clone(),
                r.recipient.clone(),
                r.chat_type.clone(),
                r.filename.clone(),
                r.real_filename.clone(),
            ]
        })
        .collect();
    Ok(match format {
        Format::Json => rows
            .iter()
            .map(|r| format!("{}\n", serde_json::to_string(r).unwrap_or_default()))
            .collect(),
        Format::Csv => render_csv(&header, &cells),
        Format::Table => render_table(&header, &cells, &[0, 1, 2, 3, 4, 6]),
    })
}

/// The columns of `LogRow`, in order, as text.
fn cells(r: &LogRow) -> [String; 13] {
    [
        r.aft_index.to_string(),
        r.date_time.clone(),
        r.method.clone(),
        r.jid.clone(),
        r.to_jid.clone(),
        r.chat_type.clone(),
        r.real_filename.clone(),
        r.filename.clone(),
        r.file_size.to_string(),
        r.http_status.to_string(),
        r.bytes_sent.to_string(),
        r.client_address.clone(),
        r.sha256.clone(),
    ]
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

fn render(rows: &[LogRow], format: Format) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| cells(r).to_vec()).collect();
    match format {
        Format::Json => rows
            .iter()
            .map(|r| format!("{}\n", serde_json::to_string(r).unwrap_or_default()))
            .collect(),
        Format::Csv => render_csv(&COLUMNS, &cells),
        Format::Table => render_table(&COLUMNS, &cells, &[0, 1, 2, 3, 4, 5, 6, 8, 9, 10]),
    }
}

fn render_csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header.join(","));
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .map(|c| {
                if c.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.clone()
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    out
}

fn render_table(header: &[&str], rows: &[Vec<String>], shown: &[usize]) -> String {
    let mut out = String::new();
    let widths: Vec<usize> = shown
        .iter()
        .map(|&i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
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
    let _ = writeln!(out, "{}", line(shown.iter().map(|&i| header[i]).collect()));
    for r in rows {
        let _ = writeln!(
            out,
            "{}",
            line(shown.iter().map(|&i| r[i].as_str()).collect())
        );
    }
    let _ = writeln!(out, "({} rows)", rows.len());
    out
}

/// `mftd purge`: one sweep of this node's files under the cluster-wide
/// sweep lock, with the rules given (an age for all or one chat type, or
/// the `[retention]` rules); the same code as the in-service sweeper.
pub async fn purge(
    log: &TransferLog,
    store: &Store,
    plan: &SweepPlan<'_>,
) -> anyhow::Result<SweepReport> {
    retention::sweep(log, store, plan).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "another mftd is sweeping right now (it holds the sweep lock in PostgreSQL); try again in a minute"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_json_types() {
        let rec = vec![LogRow {
            aft_index: 7,
            date_time: "2026-11-26T00:00:00Z".into(),
            method: "POST".into(),
            jid: "alice@example.test".into(),
            to_jid: String::new(),
            chat_type: "im".into(),
            real_filename: "a, \"b\".txt".into(),
            filename: "res".into(),
            file_size: 12,
            http_status: 201,
            bytes_sent: 12,
            client_address: "127.0.0.1".into(),
            sha256: "ab".into(),
        }];
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
}
