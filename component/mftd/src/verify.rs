//! `mftd verify`: does the store agree with the transfer log? For this
//! node it lists live `files` rows whose file is missing, published files
//! with no row, leftover temporary files, and — for a sample, at a bounded
//! rate — files whose content no longer matches the SHA-256 logged at
//! upload. With `--rescan`, every live file also goes through the malware
//! scanner again at the same bounded rate ([`crate::rescan`]). A temporary file changed within the upload timeout
//! ([`upload_timeout`]) is an upload in progress on the running node, not a
//! finding. Exit status ([`EXIT_CODES`]): 0 when all agree, 1 when
//! something does not, 4 when the check could not run — so cron can tell a
//! finding from an outage — and an optional Prometheus textfile for the
//! node exporter.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use mft_storage::reconcile;
use mft_storage::transfer_log::TransferLog;
use mft_storage::{Location, Store};
use sha2::{Digest, Sha256};

use mft_common::units::{parse_duration, parse_size};
use mft_upload_http::HttpSettings;

use crate::pace::Pace;
use crate::textfile::write_textfile;

/// The exit statuses, as `--help` and docs/operations.md give them.
pub const EXIT_CODES: &str = "\
Exit status: 0 store and log agree (with --log: every chain is intact); 1
they do not (a missing, unlogged or altered file, a leftover temporary file
older than the upload timeout, or with --rescan a file newly found infected;
with --log: an edited, inserted or deleted log record, or a checkpoint
signature that does not verify); 2 bad arguments; 4 the check could not run
(configuration, database, file server or, with --rescan, the scanner
unreachable) — nothing was concluded.";

const EXAMPLES: &str = "\
Examples:
  mftd verify                                   10 files re-hashed
  mftd verify --export /srv/matters/2026-17     re-check an e-discovery export
  mftd verify --all --max-rate 100MB            re-hash everything at 100 MB/s at most
  mftd verify --quarantine                      move files without rows to quarantine/
  mftd verify --rescan --max-rate 20MB          scan every file again with today's signatures
  mftd verify --textfile /var/lib/prometheus/node-exporter/mftd.prom   (cron, hourly)
  mftd verify --log                             recompute the transfer log's hash chains
  mftd verify --log --textfile /var/lib/prometheus/node-exporter/mftd-log.prom

A temporary file (an upload being written) changed within the upload timeout
is counted as an upload in progress, not a finding. The timeout is derived
from [http]: rate_grace + one write buffer at min_rate + body_idle_timeout
(about 18 min with the defaults over SFTP); --upload-timeout overrides it.
";

/// Check that the store and the transfer log agree.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{EXAMPLES}\n{EXIT_CODES}"))]
pub struct VerifyArgs {
    /// The configuration file.
    #[arg(long, short, value_name = "PATH", default_value = crate::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Re-hash this many files against their logged SHA-256.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub sample: usize,
    /// Re-hash every file (overrides --sample).
    #[arg(long)]
    pub all: bool,
    /// Read at most this much per second while re-hashing (e.g. 50MB, 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "50MB", value_parser = parse_size)]
    pub max_rate: u64,
    /// Read at most this many MB/s (the older spelling of --max-rate).
    #[arg(long, value_name = "N", hide = true, conflicts_with = "max_rate")]
    pub max_rate_mb: Option<u64>,
    /// A temporary file changed within this is an upload in progress
    /// (default: derived from [http], see below).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub upload_timeout: Option<Duration>,
    /// Move stored files that have no log row to quarantine/.
    #[arg(long)]
    pub quarantine: bool,
    /// Scan every live file again through [scan]'s clamd (at --max-rate);
    /// quarantine what it now finds, per scan.quarantine.
    #[arg(long)]
    pub rescan: bool,
    /// Also write the findings as Prometheus metrics to this file.
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
    /// Instead: re-verify an export written by `mftd export` — the manifest
    /// against manifest.json.sha256, every file and document against the
    /// manifest, and nothing added (no configuration or database needed).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["all", "quarantine", "textfile"])]
    pub export: Option<PathBuf>,
    /// With --export: the manifest's SHA-256 as `mftd export` printed it
    /// (recorded with the hand-over). Without it a manifest rewritten
    /// together with its sidecar cannot be told from the original.
    #[arg(long, value_name = "SHA256", requires = "export")]
    pub manifest_sha256: Option<String>,
    /// Check the transfer log's hash chains instead of the store: every
    /// node's rows, amendments and checkpoints (docs/compliance.md).
    #[arg(long)]
    pub log: bool,
    /// With --log: the public key (OpenSSH line, a `.pub` file) checkpoint
    /// signatures must verify with; default: the public half of [log]
    /// checkpoint_key_file when readable.
    #[arg(long, value_name = "PATH", requires = "log")]
    pub checkpoint_public_key: Option<PathBuf>,
}

/// Runs `mftd verify` and turns its outcome into the exit status.
pub fn run(args: VerifyArgs) -> ExitCode {
    if let Some(dir) = &args.export {
        return verify_export(dir, args.manifest_sha256.as_deref());
    }
    match check(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("verify could not run: nothing was concluded (exit 4)");
            ExitCode::from(4)
        }
    }
}

/// `mftd verify --export DIR`: 0 intact, 1 something changed (each
/// difference named), 4 the export could not be read.
fn verify_export(dir: &Path, expected: Option<&str>) -> ExitCode {
    match crate::export::manifest::verify(dir, expected) {
        Ok(found) if found.is_empty() => {
            match expected {
                Some(_) => println!(
                    "{}: intact (the manifest has the SHA-256 given and every file matches the manifest)",
                    dir.display()
                ),
                None => println!(
                    "{}: intact (the manifest matches its SHA-256 and every file matches the manifest; to rule out a manifest rewritten with its sidecar, give --manifest-sha256 with the digest `mftd export` printed)",
                    dir.display()
                ),
            }
            ExitCode::SUCCESS
        }
        Ok(found) => {
            for line in &found {
                println!("{line}");
            }
            println!(
                "{}: {} differences from the export as written",
                dir.display(),
                found.len()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("verify could not run: nothing was concluded (exit 4)");
            ExitCode::from(4)
        }
    }
}

/// True when clean.
fn check(args: VerifyArgs) -> anyhow::Result<bool> {
    if args.log {
        return crate::log_chain_check::run(
            &args.config,
            args.checkpoint_public_key.as_deref(),
            args.textfile.as_deref(),
        );
    }
    let (settings, url) = crate::database_url(&args.config)?;
    let node = settings.node_name.clone();
    let scan = match (&settings.scan, args.rescan) {
        (Some(scan), true) => Some(scan.clone()),
        (None, true) => anyhow::bail!(
            "--rescan needs a scanner: configure [scan] clamd in {}",
            args.config.display()
        ),
        (_, false) => None,
    };
    let max_rate = args.max_rate_mb.map_or(args.max_rate, |mb| mb * 1_000_000);
    let (report, rescanned) = crate::block_on(async {
        // Asked first: a scanner that does not answer leaves everything as it was.
        if let Some(scan) = &scan {
            crate::rescan::scanner_ready(scan).await?;
        }
        let (log, store) = crate::log_and_store(&settings, &url).await?;
        let opts = VerifyOptions {
            sample: if args.all { usize::MAX } else { args.sample },
            max_rate,
            quarantine: args.quarantine,
            upload_timeout: args
                .upload_timeout
                .unwrap_or_else(|| upload_timeout(&settings.http.settings, store.write_size())),
        };
        let report = verify(&store, &log, &node, &opts).await?;
        let rescanned = match &scan {
            Some(scan) => Some(
                crate::rescan::rescan(&store, &log, &node, scan, &mut Pace::new(max_rate)).await?,
            ),
            None => None,
        };
        Ok((report, rescanned))
    })?;
    print!("{}", report.render());
    let mut metrics = report.metrics(&node);
    if let Some(r) = &rescanned {
        print!("{}", r.render());
        metrics.push_str(&r.metrics(&node));
    }
    if let Some(path) = &args.textfile {
        write_textfile(path, &metrics)?;
    }
    if let Some(why) = rescanned.as_ref().and_then(|r| r.stopped.as_ref()) {
        anyhow::bail!("the rescan stopped on a scanner error: {why}");
    }
    Ok(report.is_clean() && rescanned.is_none_or(|r| r.infected.is_empty()))
}

/// How long an upload in progress may leave its temporary file unchanged:
/// it gathers `write_size` bytes between writes, which at the slowest rate
/// mftd lets a body move (`http.min_rate`, once `http.rate_grace` has
/// passed) takes `write_size / min_rate`; a body where nothing moves for
/// `http.body_idle_timeout` is cut. Without a rate floor there is no such
/// bound, and an hour is taken.
pub fn upload_timeout(http: &HttpSettings, write_size: usize) -> Duration {
    let idle = http.rate_grace + http.body_idle_timeout;
    match http.min_rate {
        0 => idle.max(Duration::from_secs(3600)),
        rate => idle + Duration::from_secs_f64(write_size as f64 / rate as f64),
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Files to re-hash (0: none; `usize::MAX`: all).
    pub sample: usize,
    /// Re-hashing reads at most this many bytes per second.
    pub max_rate: u64,
    /// Move published files without rows to `quarantine/`.
    pub quarantine: bool,
    /// A temporary file changed within this is an upload in progress.
    pub upload_timeout: Duration,
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
    /// Temporary files older than the upload timeout: uploads that ended
    /// without cleaning up.
    pub temporaries: Vec<String>,
    /// Temporary files changed within the upload timeout: uploads being
    /// written now (not findings).
    pub in_progress: Vec<String>,
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
            ("upload in progress (not a finding)", &self.in_progress),
        ] {
            for item in list {
                let _ = writeln!(out, "{what}: {item}");
            }
        }
        let _ = writeln!(
            out,
            "{} rows, {} files, {} missing, {} unlogged, {} temporary, {} uploads in progress, {} re-hashed, {} mismatched: {}",
            self.rows,
            self.files,
            self.missing.len(),
            self.unlogged.len(),
            self.temporaries.len(),
            self.in_progress.len(),
            self.hashed,
            self.mismatched.len(),
            if self.is_clean() { "clean" } else { "PROBLEMS" }
        );
        out
    }

    /// The findings as Prometheus metrics (textfile collector format).
    pub fn metrics(&self, node: &str) -> String {
        let mut out = mft_metrics::textfile::Textfile::new();
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
                "mftd_verify_uploads_in_progress",
                "Temporary files changed within the upload timeout (uploads being written).",
                self.in_progress.len(),
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
            out.gauge(name, help, &[("node", node)], value as i64);
        }
        out.gauge(
            "mftd_verify_last_run_timestamp_seconds",
            "When verify last finished.",
            &[("node", node)],
            mft_common::utc::unix_now() as i64,
        );
        out.render()
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
        ..VerifyReport::default()
    };
    let now = SystemTime::now();
    for (path, modified) in reconcile::temporary_ages(store, inv.temporaries.clone()).await? {
        // A file server clock ahead of ours gives a negative age: recent.
        let age = modified.map(|m| now.duration_since(m).unwrap_or_default());
        match age {
            Some(age) if age < opts.upload_timeout => report.in_progress.push(path),
            Some(age) => report
                .temporaries
                .push(format!("{path} (unchanged for {}s)", age.as_secs())),
            None => report
                .temporaries
                .push(format!("{path} (the file server gives no age)")),
        }
    }
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
    let mut pace = Pace::new(opts.max_rate);
    for row in to_hash {
        let Some(loc) = Location::parse(&row.resource) else {
            continue;
        };
        let size = u64::try_from(row.size).unwrap_or(0);
        let sha = hash_file(store, &loc, size, &mut pace).await?;
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
    pace: &mut Pace,
) -> anyhow::Result<String> {
    let mut download = store.read(loc, 0, size).await?;
    let mut hasher = Sha256::new();
    while let Some(piece) = std::future::poll_fn(|cx| download.poll_next(cx)).await {
        let piece = piece?;
        hasher.update(&piece);
        pace.read(piece.len()).await;
    }
    Ok(format!("{:x}", hasher.finalize()))
}
