//! `mftd verify --rescan`: every live file of this node streamed again
//! through the configured clamd (`[scan]`), so files stored before a
//! signature existed are caught. Reads share `--max-rate` with the re-hash
//! ([`Pace`]). A newly detected file is quarantined with the upload's own
//! policy (`mft_storage::rescan`: not served, moved to `quarantine/` or
//! removed per `scan.quarantine`, left in place under a legal hold) and
//! its verdict recorded on its `files` row. The scanner is asked first:
//! when it does not answer, nothing is read or changed and verify exits 4;
//! when it fails half-way, the run stops there and says what was done.

use std::fmt::Write as _;

use anyhow::Context;
use mft_storage::rescan::{quarantine, Quarantined};
use mft_storage::transfer_log::{FileRow, TransferLog};
use mft_storage::{Location, Store};
use mft_upload_http::clamd::{Clamd, Reply};
use mft_upload_http::scan::{Quarantine, ScanSettings};

use crate::pace::Pace;

/// Bytes sent to clamd in one `INSTREAM` chunk (as at upload).
const CHUNK: usize = 256 * 1024;

/// What a rescan did.
#[derive(Debug, Default)]
pub struct RescanReport {
    /// Files scanned to a verdict.
    pub scanned: usize,
    /// Newly found infected: `(path, signature, where the bytes are now)`.
    pub infected: Vec<(String, String, String)>,
    /// Of those, under a legal hold (left in place, not served).
    pub held: usize,
    /// Files above `scan.max_size`, not scanned.
    pub too_large: Vec<String>,
    /// Why the run stopped early (the scanner failed half-way).
    pub stopped: Option<String>,
}

impl RescanReport {
    /// The report's lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (path, signature, now) in &self.infected {
            let _ = writeln!(
                out,
                "infected (rescan): {path}: {signature} — quarantined, {now}"
            );
        }
        for path in &self.too_large {
            let _ = writeln!(out, "not rescanned (above scan.max_size): {path}");
        }
        let _ = writeln!(
            out,
            "rescan: {} scanned, {} newly infected ({} under a legal hold), {} above scan.max_size",
            self.scanned,
            self.infected.len(),
            self.held,
            self.too_large.len()
        );
        if let Some(why) = &self.stopped {
            let _ = writeln!(out, "rescan stopped early: {why}");
        }
        out
    }

    /// The rescan's series for the textfile collector.
    pub fn metrics(&self, node: &str) -> String {
        let mut out = mft_metrics::textfile::Textfile::new();
        for (name, help, value) in [
            (
                "mftd_verify_files_rescanned",
                "Files rescanned with the scanner's current signatures in the last run.",
                self.scanned,
            ),
            (
                "mftd_verify_rescan_infected",
                "Files the last rescan found infected and quarantined.",
                self.infected.len(),
            ),
            (
                "mftd_verify_rescan_too_large",
                "Files above scan.max_size the last rescan skipped.",
                self.too_large.len(),
            ),
            (
                "mftd_verify_rescan_errors",
                "1 when the last rescan stopped on a scanner error.",
                usize::from(self.stopped.is_some()),
            ),
        ] {
            out.gauge(name, help, &[("node", node)], value as i64);
        }
        out.render()
    }
}

/// Checks the scanner answers before anything is read: a rescan with no
/// scanner must change nothing.
pub async fn scanner_ready(scan: &ScanSettings) -> anyhow::Result<()> {
    scan.clamd
        .ping()
        .await
        .with_context(|| "while asking the scanner ([scan] clamd); nothing was rescanned")?;
    Ok(())
}

/// Rescans every live file of `node`.
pub async fn rescan(
    store: &Store,
    log: &TransferLog,
    node: &str,
    scan: &ScanSettings,
    pace: &mut Pace,
) -> anyhow::Result<RescanReport> {
    let rows = log
        .live_files(node)
        .await
        .context("while reading the files table ([database] url)")?;
    let mut client = log
        .dedicated_client()
        .await
        .context("while connecting to the database ([database] url)")?;
    let keep = scan.quarantine == Quarantine::Keep;
    let mut report = RescanReport::default();
    for row in &rows {
        let Some(loc) = Location::parse(&row.resource) else {
            continue;
        };
        let size = u64::try_from(row.size).unwrap_or(0);
        if size > scan.max_size {
            report.too_large.push(row.storage_path.clone());
            continue;
        }
        let reply = match scan_file(store, &loc, size, &scan.clamd, pace).await {
            Ok(Some(reply)) => reply,
            // Gone since the listing (retired meanwhile): nothing to scan.
            Ok(None) => continue,
            Err(e) => {
                report.stopped = Some(format!("{e:#} (at {})", row.storage_path));
                break;
            }
        };
        report.scanned += 1;
        if let Reply::Found(signature) = reply {
            record(&mut client, store, row, &signature, keep, &mut report).await?;
        }
    }
    Ok(report)
}

async fn record(
    client: &mut tokio_postgres::Client,
    store: &Store,
    row: &FileRow,
    signature: &str,
    keep: bool,
    report: &mut RescanReport,
) -> anyhow::Result<()> {
    let outcome = quarantine(client, store, row, signature, keep)
        .await
        .with_context(|| format!("while quarantining {}", row.storage_path))?;
    let now = match outcome {
        Quarantined::Moved(path) => format!("moved to {path}"),
        Quarantined::Removed => "removed (scan.quarantine = \"remove\")".to_owned(),
        Quarantined::Held => {
            report.held += 1;
            "kept in place: under a legal hold".to_owned()
        }
        Quarantined::Gone => return Ok(()),
    };
    tracing::warn!(
        path = row.storage_path.as_str(),
        signature,
        uploader = row.uploader.as_str(),
        "rescan found malware: file quarantined"
    );
    report
        .infected
        .push((row.storage_path.clone(), signature.to_owned(), now));
    Ok(())
}

/// Streams one stored file to clamd; `None` when the store no longer has it.
async fn scan_file(
    store: &Store,
    loc: &Location,
    size: u64,
    clamd: &Clamd,
    pace: &mut Pace,
) -> anyhow::Result<Option<Reply>> {
    let mut download = match store.read(loc, 0, size).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e).context("while reading a stored file"),
    };
    let mut stream = clamd.instream().await?;
    while let Some(piece) = std::future::poll_fn(|cx| download.poll_next(cx)).await {
        let piece = piece.context("while reading a stored file")?;
        for chunk in piece.chunks(CHUNK) {
            stream.send(chunk).await?;
        }
        pace.read(piece.len()).await;
    }
    Ok(Some(stream.finish().await?))
}
