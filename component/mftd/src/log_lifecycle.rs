//! The transfer log's lifecycle, on both sides of the privilege line: the
//! running service keeps the record tables' next months' partitions made
//! ahead ([`ahead`], as its own DDL-less role through the owner's
//! `mftd_log_partitions_ahead()`), and the schema's owner drops the months
//! older than `[retention] log` ([`prune`], `mftd db prune-log`), each drop
//! recorded in `log_drops`. The service never drops: the role that writes
//! the record must not be able to destroy it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use mft_common::error::Chain;
use mft_storage::db::{self, DbConfig};
use mft_storage::log_chain::CheckpointSigner;
use mft_storage::log_partitions::{self, PruneReport, PruneRequest};
use mft_storage::transfer_log::TransferLog;

use crate::checkpoint_key::SshSigner;

/// How often the service makes sure next months' partitions exist.
const AHEAD_EVERY: Duration = Duration::from_secs(3600);

/// At start and then hourly: this month's and the next three months'
/// partitions. A failure is logged and retried; inserts never wait for it
/// (a row without its month's partition goes to the DEFAULT partition and
/// is moved to its month on the next run).
pub async fn ahead(log: TransferLog, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let made = async {
            let client = log.read_client().await?;
            log_partitions::ensure_ahead(&client).await
        };
        match made.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(partitions = n, "created the log's partitions ahead"),
            Err(e) => tracing::warn!(
                error = %Chain(&e),
                "could not create the log's next partitions (rows go to the DEFAULT partition meanwhile); trying again in an hour"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(AHEAD_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `mftd db prune-log`: drops the month partitions older than the limit,
/// as the owner role, and says what it dropped and what holds kept.
pub async fn prune(
    db: &DbConfig,
    req: &PruneRequest,
    signer: Option<&SshSigner>,
) -> anyhow::Result<String> {
    let mut client = db::connect(db, Duration::from_secs(10)).await?;
    if db::schema_version(&client).await? < db::latest_version() {
        anyhow::bail!("the schema is older than this mftd: run `mftd db migrate` first");
    }
    let key = signer.map(|s| s as &dyn CheckpointSigner);
    let report = log_partitions::prune(&mut client, req, key).await?;
    Ok(render(&report, req, signer.is_some()))
}

/// The key that signs the recorded chain runs: `--checkpoint-key`, else
/// `[log] checkpoint_key_file` of `config` when that file exists. A key
/// that is named but cannot be used stops the prune (drops recorded
/// unsigned would then be reported by `mftd verify --log`).
pub fn drop_signer(explicit: Option<&Path>, config: &Path) -> anyhow::Result<Option<SshSigner>> {
    let path = match explicit {
        Some(path) => Some(path.to_path_buf()),
        None if config.exists() => {
            crate::config::Settings::load(config)?
                .log
                .checkpoint_key_file
        }
        None => None,
    };
    path.map(|p| SshSigner::load(&p)).transpose()
}

fn render(report: &PruneReport, req: &PruneRequest, signed: bool) -> String {
    let mut out = String::new();
    if !signed && !req.dry_run && report.dropped.iter().any(|d| chained(&d.partition.table)) {
        let _ = writeln!(
            out,
            "note: the dropped chain runs are recorded unsigned (no --checkpoint-key and no [log] checkpoint_key_file); `mftd verify --log` with the checkpoint key lists them"
        );
    }
    if report.settled > 0 {
        let _ = writeln!(
            out,
            "moved {} rows from DEFAULT partitions into their months",
            report.settled
        );
    }
    let verb = if req.dry_run { "would drop" } else { "dropped" };
    for d in &report.dropped {
        let _ = writeln!(
            out,
            "{verb} {} {} ({} rows){}",
            d.partition.table,
            d.partition.month,
            d.rows,
            if d.drop_id > 0 {
                format!(", recorded as log_drops {}", d.drop_id)
            } else {
                String::new()
            }
        );
    }
    for h in &report.held {
        let ids: Vec<String> = h.holds.iter().map(i64::to_string).collect();
        let _ = writeln!(
            out,
            "kept {} {}: rows of files or people under legal hold {}",
            h.partition.table,
            h.partition.month,
            ids.join(", ")
        );
    }
    let rows: i64 = report.dropped.iter().map(|d| d.rows).sum();
    let _ = write!(
        out,
        "{} {} partitions older than {} ({rows} rows); kept {} held and {} younger",
        if req.dry_run { "would drop" } else { "dropped" },
        report.dropped.len(),
        req.older_than_text,
        report.held.len(),
        report.kept
    );
    out
}

/// Whether `table` is one of the hash-chained ones (its drops record runs).
fn chained(table: &str) -> bool {
    matches!(table, "aft_log_rows" | "aft_log_amends")
}
