//! Administration on the transfer log: `mftd db migrate|status` and
//! `mftd purge` (retire old files from the store, keep their history), and
//! the time arguments the commands share. `mftd log` is in `log_command`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mft_common::utc::UtcTime;
use mft_storage::db::DbConfig;
use mft_storage::log_query;
use mft_storage::retention::{self, SweepPlan, SweepReport};
use mft_storage::transfer_log::TransferLog;
use mft_storage::{db, Store};

use mft_common::units::parse_duration;

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
