//! `mftd log`: who sent and fetched what, from the transfer log. Rows come
//! newest first and stream from a database cursor straight to the output,
//! so `--all` exports any number of rows in constant memory. A limit never
//! hides rows silently: the table's last line, or for CSV and JSON a line on
//! standard error, says how many more match.

mod render;
mod source;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use mft_storage::db::{self, DbConfig};
use mft_storage::log_query::{self, Cursor, LogFilter};

pub use render::Format;
use render::{Output, Record};

use crate::admin::time_arg;

const EXAMPLES: &str = "\
Examples:
  mftd log --sender alice@example.test --since 7d        what alice sent, and who fetched it
  mftd log --to bob@example.test --method GET             downloads of files sent to bob
  mftd log --room board@conference.example.test --all --format csv > board.csv
  mftd log --sha256 9f86d0…0a08 --format json             where one content went
  mftd log --file-name '*.pdf' --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z
  mftd log --shares --sender alice@example.test           every message alice shared a file in
  mftd log --removals --jid alice@example.test            files alice removed or that were hers, with who and why
  mftd log --database-url-file /etc/mftd/auditor.url      as an auditor: only the database URL
  MFTD_DATABASE__URL=postgresql://auditor@db/mftd mftd log --limit 50

The database is taken from --database-url-file, else --config (only its [database]
section is read), else MFTD_DATABASE__URL / MFTD_DATABASE__URL_FILE, else
/etc/mftd/mftd.toml. Rows are newest first; when --limit leaves rows out, the
table's last line (stderr for csv and json) says how many.";

/// Query the transfer log: who sent and fetched what, newest first.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct LogArgs {
    /// The configuration file; only its [database] section is read.
    #[arg(long, short, value_name = "PATH", conflicts_with = "database_url_file")]
    config: Option<PathBuf>,
    /// A file holding the database URL (e.g. postgresql://auditor@db/mftd):
    /// no configuration file needed.
    #[arg(long, value_name = "PATH")]
    database_url_file: Option<PathBuf>,
    /// CA certificate(s) for a URL with sslmode=require (with --database-url-file).
    #[arg(long, value_name = "PATH", requires = "database_url_file")]
    database_ca_file: Option<PathBuf>,
    /// Uploader or downloader (bare JID: every resource of it).
    #[arg(long, value_name = "JID")]
    jid: Option<String>,
    /// Who uploaded the file: their uploads and every download of them
    /// (with --shares: who sent the message).
    #[arg(long, value_name = "JID")]
    sender: Option<String>,
    /// Recipient (user, group chat or room): the upload named it, or the
    /// file was shared with it.
    #[arg(long, value_name = "JID")]
    to: Option<String>,
    /// A group chat or persistent room the file was sent to.
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// POST (uploads) or GET (downloads).
    #[arg(long, ignore_case = true, value_parser = ["POST", "GET"], conflicts_with_all = ["shares", "removals"])]
    method: Option<String>,
    /// Chat type.
    #[arg(long, value_parser = ["im", "groupchat", "persistent"])]
    chat_type: Option<String>,
    /// The name the user uploaded; `*` matches any run of characters.
    #[arg(long, value_name = "NAME")]
    file_name: Option<String>,
    /// The resource name (the file part of the URL, the filename column).
    #[arg(long, value_name = "RESOURCE")]
    resource: Option<String>,
    /// SHA-256 of the content (64 hex digits).
    #[arg(long, value_name = "HEX", value_parser = sha256_arg)]
    sha256: Option<String>,
    /// From: an RFC 3339 time or a duration ago (24h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Until (exclusive): same forms.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Most rows (newest first); the rest are counted, not shown.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..), conflicts_with = "all")]
    limit: i64,
    /// Every matching row (streamed; any number).
    #[arg(long)]
    all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// List shares instead (every message that carried a file's URL, as
    /// the router module reported it).
    #[arg(long)]
    shares: bool,
    /// List removals instead: stored files that left the store (retention,
    /// expiry, purge, erasure, a user's own deletion), with who removed
    /// each and why. --jid is who removed the file or whose it was,
    /// --sender whose it was; --since/--until are when it was removed.
    #[arg(long, conflicts_with_all = ["shares", "method", "to", "room"])]
    removals: bool,
}

fn sha256_arg(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("a SHA-256 is 64 hexadecimal digits (as `sha256sum` prints)".into())
    }
}

/// Runs `mftd log`.
pub fn run(args: LogArgs, default_config: &std::path::Path) -> anyhow::Result<()> {
    let db = source::resolve(
        args.config.as_deref(),
        args.database_url_file.clone(),
        args.database_ca_file.clone(),
        default_config,
        std::env::vars().collect(),
    )?;
    let filter = LogFilter {
        jid: args.jid,
        sender: args.sender,
        to: args.to,
        room: args.room,
        method: args.method,
        chat_type: args.chat_type,
        file_name: args.file_name,
        resource: args.resource,
        sha256: args.sha256,
        since: args.since.as_deref().map(time_arg).transpose()?,
        until: args.until.as_deref().map(time_arg).transpose()?,
        limit: if args.all { 0 } else { args.limit },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let table = if args.removals {
        Listing::Removals
    } else if args.shares {
        Listing::Shares
    } else {
        Listing::Transfers
    };
    let listed = runtime.block_on(list(&db, &filter, table, args.format));
    match listed {
        Ok(Some((shown, more))) if more > 0 && args.format != Format::Table => {
            eprintln!(
                "mftd log: {shown} rows shown, newest first; {more} more match: raise --limit or use --all"
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lists the rows; `None` when the reader went away (a closed pipe, as
/// with `| head`), else the rows shown and how many more matched.
/// What `mftd log` lists.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Transfers,
    Shares,
    Removals,
}

async fn list(
    db: &DbConfig,
    filter: &LogFilter,
    table: Listing,
    format: Format,
) -> anyhow::Result<Option<(i64, i64)>> {
    let mut client = db::connect(db, Duration::from_secs(10)).await?;
    let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    match table {
        Listing::Shares => {
            let cursor = log_query::open_shares(&mut client, filter)
                .await
                .context("while listing shares")?;
            drain(cursor, Output::new(stdout, format)).await
        }
        Listing::Removals => {
            let cursor = log_query::open_removals(&mut client, filter)
                .await
                .context("while listing removals")?;
            drain(cursor, Output::new(stdout, format)).await
        }
        Listing::Transfers => {
            let cursor = log_query::open_log(&mut client, filter)
                .await
                .context("while listing the transfer log")?;
            drain(cursor, Output::new(stdout, format)).await
        }
    }
}

async fn drain<W: Write, R: Record>(
    mut cursor: Cursor<'_, R>,
    out: std::io::Result<Output<W, R>>,
) -> anyhow::Result<Option<(i64, i64)>> {
    let written = async {
        let mut out = out?;
        loop {
            let batch = cursor
                .next_batch()
                .await
                .context("while reading the transfer log")?;
            if batch.is_empty() {
                break;
            }
            for row in &batch {
                out.row(row)?;
            }
        }
        let more = cursor
            .more()
            .await
            .context("while counting the rows left out")?;
        out.finish(more)?;
        Ok::<_, anyhow::Error>((cursor.delivered(), more))
    };
    match written.await {
        Ok(counts) => Ok(Some(counts)),
        Err(e) if is_broken_pipe(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
