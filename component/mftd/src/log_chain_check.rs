//! `mftd verify --log`: recomputes every node's hash chains of the transfer
//! log ([`mft_storage::log_verify`]), checks each checkpoint's and each
//! recorded drop run's signature with the configured key (with a key, an
//! unsigned drop run is a finding: it is what a superuser who deleted the
//! first kept records would write to explain the gap), prints the findings (the first one is the
//! first edited, inserted or deleted record) and optionally writes them as
//! Prometheus metrics. The status page runs the same check
//! ([`summary`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mft_storage::log_verify::{verify_chains, ChainReport};
use ssh_key::PublicKey;

use crate::checkpoint_key;

/// The outcome, signatures included.
#[derive(Debug, Default)]
pub struct LogCheck {
    /// The chains as recomputed.
    pub chains: ChainReport,
    /// Checkpoints whose signature verified with the trusted key.
    pub signed_ok: usize,
    /// Checkpoints without a signature.
    pub unsigned: usize,
    /// Checkpoints and drop runs whose signature does not verify, each as
    /// its report line.
    pub bad_signatures: Vec<String>,
    /// Drop runs whose signature verified.
    pub drops_signed_ok: usize,
    /// Drop runs without a signature (a finding when a key is known).
    pub unsigned_drops: Vec<String>,
    /// Whether signatures were checked at all (a key was at hand).
    pub key_known: bool,
}

impl LogCheck {
    /// True when no record was edited, inserted or deleted and no signature
    /// failed.
    pub fn is_clean(&self) -> bool {
        self.chains.findings.is_empty()
            && self.bad_signatures.is_empty()
            && (!self.key_known || self.unsigned_drops.is_empty())
    }

    /// One line for the status page.
    pub fn summary(&self) -> Result<String, String> {
        let records: u64 = self.chains.records.values().sum();
        let nodes = self.chains.nodes().len();
        if let Some(first) = self.chains.findings.first() {
            return Err(format!(
                "{} finding(s); first: {first} — run `mftd verify --log`",
                self.chains.findings.len()
            ));
        }
        if let Some(bad) = self.bad_signatures.first() {
            return Err(bad.clone());
        }
        if let Some(unsigned) = self.unsigned_drops.first().filter(|_| self.key_known) {
            return Err(format!("{UNSIGNED_DROP}: {unsigned}"));
        }
        Ok(format!(
            "{records} records in the chains of {nodes} node(s) intact; {} checkpoints{}",
            self.chains.checkpoints.len(),
            if self.key_known {
                format!(" ({} signed and verified)", self.signed_ok)
            } else {
                String::new()
            }
        ))
    }

    /// The human report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for finding in &self.chains.findings {
            let _ = writeln!(out, "{finding}");
        }
        for bad in &self.bad_signatures {
            let _ = writeln!(out, "{bad}");
        }
        if self.key_known {
            for unsigned in &self.unsigned_drops {
                let _ = writeln!(out, "{UNSIGNED_DROP}: {unsigned}");
            }
        }
        for node in self.chains.nodes() {
            let count = |t| {
                self.chains
                    .records
                    .get(&(t, node.clone()))
                    .copied()
                    .unwrap_or(0)
            };
            use mft_storage::log_chain::ChainTable as T;
            let dropped = |t| {
                self.chains
                    .dropped
                    .get(&(t, node.clone()))
                    .copied()
                    .unwrap_or(0)
            };
            let pruned = if dropped(T::Rows) + dropped(T::Amends) > 0 {
                format!(
                    "; {} rows and {} amendments dropped by prune-log with their months (log_drops)",
                    dropped(T::Rows),
                    dropped(T::Amends)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "node {node:?}: {} rows, {} amendments, {} checkpoints{pruned}",
                count(T::Rows),
                count(T::Amends),
                count(T::Checkpoints)
            );
        }
        let sig = if self.key_known {
            let drops = if self.chains.drop_runs.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} drop runs signed and verified, {} unsigned",
                    self.drops_signed_ok,
                    self.unsigned_drops.len()
                )
            };
            format!(
                "{} checkpoints signed and verified, {} unsigned{drops}, {} bad signatures",
                self.signed_ok,
                self.unsigned,
                self.bad_signatures.len()
            )
        } else {
            "checkpoint signatures not checked (no [log] checkpoint_key_file readable and no --checkpoint-public-key)".to_owned()
        };
        let _ = writeln!(
            out,
            "{} findings; {sig}: {}",
            self.chains.findings.len(),
            if self.is_clean() { "clean" } else { "PROBLEMS" }
        );
        out
    }

    /// Prometheus metrics (textfile collector format).
    pub fn metrics(&self) -> String {
        let mut out = mft_metrics::textfile::Textfile::new();
        for node in self.chains.nodes() {
            let ok = !self.chains.findings.iter().any(|f| f.node == node);
            out.gauge(
                "mftd_log_chain_ok",
                "1 when the node's log chains recompute without a finding, 0 when a record was edited, inserted or deleted.",
                &[("node", &node)],
                i64::from(ok),
            );
            let n: u64 = self
                .chains
                .records
                .iter()
                .filter(|((_, n), _)| *n == node)
                .map(|(_, c)| c)
                .sum();
            out.gauge(
                "mftd_log_chain_records",
                "Records checked in the node's log chains.",
                &[("node", &node)],
                n as i64,
            );
        }
        out.gauge(
            "mftd_log_chain_findings",
            "Edited, inserted or deleted log records found (all nodes).",
            &[],
            self.chains.findings.len() as i64,
        );
        out.gauge(
            "mftd_log_checkpoint_bad_signatures",
            "Checkpoints and recorded drop runs whose signature does not verify with the configured key.",
            &[],
            self.bad_signatures.len() as i64,
        );
        out.gauge(
            "mftd_log_drop_unsigned_runs",
            "Recorded partition drops' chain runs without a signature, counted when a checkpoint key is known (0 without one).",
            &[],
            if self.key_known {
                self.unsigned_drops.len() as i64
            } else {
                0
            },
        );
        out.gauge(
            "mftd_log_chain_last_check_timestamp_seconds",
            "When verify --log last finished.",
            &[],
            mft_common::utc::unix_now() as i64,
        );
        out.render()
    }
}

/// Recomputes the chains on `client` and checks signatures with `key`.
pub async fn check(
    client: &mut tokio_postgres::Client,
    key: Option<&PublicKey>,
) -> Result<LogCheck, mft_storage::db::DbError> {
    let chains = verify_chains(client).await?;
    let mut out = LogCheck {
        key_known: key.is_some(),
        ..LogCheck::default()
    };
    for cp in &chains.checkpoints {
        if cp.signature.is_empty() {
            out.unsigned += 1;
            continue;
        }
        let Some(key) = key else { continue };
        if checkpoint_key::verify(key, cp.message().as_bytes(), &cp.signature) {
            out.signed_ok += 1;
        } else {
            out.bad_signatures.push(format!(
                "checkpoint signature does not verify: node {:?} checkpoint seq {} of {}",
                cp.record.node, cp.seq, cp.record.day
            ));
        }
    }
    for run in &chains.drop_runs {
        let r = &run.record;
        let what = format!(
            "log_drops {} ({} {}) node {:?} seq {}..={}",
            run.drop_id, r.table, r.month, r.node, r.from_seq, r.to_seq
        );
        if run.signature.is_empty() {
            out.unsigned_drops.push(what);
            continue;
        }
        let Some(key) = key else { continue };
        if checkpoint_key::verify(key, r.canon().as_bytes(), &run.signature) {
            out.drops_signed_ok += 1;
        } else {
            out.bad_signatures
                .push(format!("drop run signature does not verify: {what}"));
        }
    }
    out.chains = chains;
    Ok(out)
}

/// How an unsigned drop run is reported when a key is known.
const UNSIGNED_DROP: &str =
    "drop run NOT SIGNED (a forged drop record, or a prune-log run without the checkpoint key)";

/// The key signatures must verify with: `--checkpoint-public-key`, else
/// the public half of `[log] checkpoint_key_file` when readable.
pub fn trusted_key(
    public_file: Option<&Path>,
    key_file: Option<&Path>,
) -> anyhow::Result<Option<PublicKey>> {
    if let Some(path) = public_file {
        let key = PublicKey::read_openssh_file(path)
            .with_context(|| format!("while reading the public key {}", path.display()))?;
        return Ok(Some(key));
    }
    Ok(key_file
        .and_then(|p| checkpoint_key::SshSigner::load(p).ok())
        .map(|s| s.public().clone()))
}

/// `mftd verify --log`: true when clean.
pub fn run(
    config: &Path,
    public_key: Option<&Path>,
    textfile: Option<&Path>,
) -> anyhow::Result<bool> {
    let (settings, url) = crate::database_url(config)?;
    let key = trusted_key(public_key, settings.log.checkpoint_key_file.as_deref())?;
    let report = crate::block_on(async {
        let mut client = mft_storage::db::connect(&url, Duration::from_secs(10))
            .await
            .context("while connecting to the transfer log ([database] url)")?;
        check(&mut client, key.as_ref())
            .await
            .context("while recomputing the log chains")
    })?;
    print!("{}", report.render());
    if let Some(path) = textfile {
        crate::textfile::write_textfile(path, &report.metrics())?;
    }
    Ok(report.is_clean())
}
