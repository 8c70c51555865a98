//! `mftd verify`: does the store agree with the transfer log? For this
//! node it lists live `files` rows whose file is missing, published files
//! with no row, leftover temporary files, and — for a sample, at a bounded
//! rate — files whose content no longer matches the SHA-256 logged at
//! upload. Exit status 0 when all agree, 1 when something does not (for
//! cron), and an optional Prometheus textfile for the node exporter.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use mft_storage::reconcile;
use mft_storage::transfer_log::TransferLog;
use mft_storage::{Location, Store};
use sha2::{Digest, Sha256};

/// What to check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Files to re-hash (0: none; `usize::MAX`: all).
    pub sample: usize,
    /// Re-hashing reads at most this many bytes per second.
    pub max_rate: u64,
    /// Move published files without rows to `quarantine/`.
    pub quarantine: bool,
}

/// The findings.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Live rows checked.
    pub rows: usize,
    /// Published files found.
    pub files: usize,
    /// Rows whose file is not in the store.
    pub missing: Vec<String>,
    /// Files with no `files` row.
    pub unlogged: Vec<String>,
    /// Leftover temporary files.
    pub temporaries: Vec<String>,
    /// Files re-hashed.
    pub hashed: usize,
    /// Files whose content differs from the logged SHA-256.
    pub mismatched: Vec<String>,
}

impl VerifyReport {
    /// True when store and log agree.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.unlogged.is_empty()
            && self.mismatched.is_empty()
            && self.temporaries.is_empty()
    }

    /// The human report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (what, list) in [
            ("missing from the store (row without file)", &self.missing),
            ("not in the transfer log (file without row)", &self.unlogged),
            ("leftover temporary file", &self.temporaries),
            ("content differs from the logged SHA-256", &self.mismatched),
        ] {
            for item in list {
                let _ = writeln!(out, "{what}: {item}");
            }
        }
        let _ = writeln!(
            out,
            "{} rows, {} files, {} missing, {} unlogged, {} temporary, {} re-hashed, {} mismatched: {}",
            self.rows,
            self.files,
            self.missing.len(),
            self.unlogged.len(),
            self.temporaries.len(),
            self.hashed,
            self.mismatched.len(),
            if self.is_clean() { "clean" } else { "PROBLEMS" }
        );
        out
    }

    /// The findings as Prometheus metrics (textfile collector format).
    pub fn metrics(&self, node: &str) -> String {
        let now = mft_storage::utc::unix_now();
        let mut out = String::new();
        for (name, help, value) in [
            (
                "mftd_verify_missing_files",
                "Live transfer-log files missing from the store.",
                self.missing.len(),
            ),
            (
                "mftd_verify_unlogged_files",
                "Stored files without a transfer-log row.",
                self.unlogged.len(),
            ),
            (
                "mftd_verify_temporary_files",
                "Leftover temporary upload files.",
                self.temporaries.len(),
            ),
            (
                "mftd_verify_hash_mismatches",
                "Re-hashed files whose SHA-256 differs from the log.",
                self.mismatched.len(),
            ),
            (
                "mftd_verify_files_hashed",
                "Files re-hashed in the last run.",
                self.hashed,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {value}"
            );
        }
        let _ = writeln!(out, "# HELP mftd_verify_last_run_timestamp_seconds When verify last finished.\n# TYPE mftd_verify_last_run_timestamp_seconds gauge\nmftd_verify_last_run_timestamp_seconds{{node=\"{node}\"}} {now}");
        out
    }
}

/// Compares the store with this node's rows.
pub async fn verify(
    store: &Store,
    log: &TransferLog,
    node: &str,
    opts: &VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let rows = log
        .live_files(node)
        .await
        .context("while reading the files table ([database] url)")?;
    let inv = reconcile::inventory(store, None)
        .await
        .context("while listing the store")?;
    let mut report = VerifyReport {
        rows: rows.len(),
        files: inv.files.len(),
        temporaries: inv.temporaries.clone(),
        ..VerifyReport::default()
    };
    let stored: HashSet<&str> = inv.files.iter().map(Location::resource).collect();
    report.missing = rows
        .iter()
        .filter(|r| !stored.contains(r.resource.as_str()))
        .map(|r| r.storage_path.clone())
        .collect();
    // A file published a moment ago may be committing its rows right now.
    for loc in &reconcile::unlogged_settled(log, &inv.files).await? {
        if opts.quarantine {
            reconcile::quarantine(store, loc).await?;
        }
        report.unlogged.push(loc.path());
    }
    let to_hash: Vec<_> = rows
        .iter()
        .filter(|r| stored.contains(r.resource.as_str()) && !r.sha256.is_empty())
        .take(opts.sample)
        .collect();
    let started = Instant::now();
    let mut read_total: u64 = 0;
    for row in to_hash {
        let Some(loc) = Location::parse(&row.resource) else {
            continue;
        };
        let size = u64::try_from(row.size).unwrap_or(0);
        let sha = hash_file(store, &loc, size, opts.max_rate, started, &mut read_total).await?;
        report.hashed += 1;
        if sha != row.sha256 {
            report.mismatched.push(row.storage_path.clone());
        }
    }
    Ok(report)
}

async fn hash_file(
    store: &Store,
    loc: &Location,
    size: u64,
    max_rate: u64,
    started: Instant,
    read_total: &mut u64,
) -> anyhow::Result<String> {
    let mut download = store.read(loc, 0, size).await?;
    let mut hasher = Sha256::new();
    while let Some(piece) = std::future::poll_fn(|cx| download.poll_next(cx)).await {
        let piece = piece?;
        hasher.update(&piece);
        *read_total += piece.len() as u64;
        if max_rate > 0 {
            let due = Duration::from_secs_f64(*read_total as f64 / max_rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Writes `text` to `path` atomically (temporary name, then rename), as the
/// node exporter's textfile collector expects.
pub fn write_textfile(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("while writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("while renaming to {}", path.display()))?;
    Ok(())
}
