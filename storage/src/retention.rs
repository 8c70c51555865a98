//! Retiring files: which live files of a node are due (older than their
//! chat type's retention, past an ephemeral upload's own expiry, or older
//! than an operator's purge), and removing each: from the store first, then
//! one transaction records the removal in `removals` and marks the `files`
//! row deleted (GET answers `410`). A file the store could not remove is
//! never marked. One sweep runs at a time across the cluster, under a
//! PostgreSQL advisory lock; `mftd purge` and the in-service sweeper share
//! this code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::db::DbError;
use crate::layout::Location;
use crate::transfer_log::{file_row, FileRow, TransferLog, FILE_ROW_COLUMNS};
use crate::utc::{unix_secs, UtcTime};
use crate::{Store, StoreError};

/// The advisory lock every sweeper takes (one sweep at a time, cluster-wide).
const SWEEP_LOCK: i64 = 0x6d66_7464_5357_4550; // "mftdSWEP"

/// Most files one sweep retires; the next sweep takes the rest.
const SWEEP_BATCH: i64 = 10_000;

/// How long files of each chat type are kept (`None`: forever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionRules {
    /// 1:1 chats.
    pub im: Option<Duration>,
    /// Ad-hoc group chats.
    pub groupchat: Option<Duration>,
    /// Persistent chat rooms.
    pub persistent: Option<Duration>,
    /// Uploads with the `permanent` purpose are exempt from age limits.
    pub permanent_exempt: bool,
}

impl RetentionRules {
    /// The same age for every chat type (an operator's purge).
    pub fn all(age: Duration) -> RetentionRules {
        RetentionRules {
            im: Some(age),
            groupchat: Some(age),
            persistent: Some(age),
            permanent_exempt: false,
        }
    }

    /// The age limit of one chat type.
    pub fn for_chat(&self, chat_type: &str) -> Option<Duration> {
        match chat_type {
            "im" => self.im,
            "groupchat" => self.groupchat,
            "persistent" => self.persistent,
            _ => None,
        }
    }

    /// True when no chat type has an age limit.
    pub fn keeps_forever(&self) -> bool {
        self.im.is_none() && self.groupchat.is_none() && self.persistent.is_none()
    }
}

/// Why a file was retired (the `reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than its chat type's retention.
    Retention,
    /// An ephemeral upload past its expire-before.
    Expired,
    /// An operator's `mftd purge`.
    Purge,
}

impl Reason {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Retention => "retention",
            Reason::Expired => "expired",
            Reason::Purge => "purge",
        }
    }
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Files retired.
    pub removed: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of those, files the store no longer had (retired all the same).
    pub missing: u64,
}

/// The start of the UTC hour holding `now`: age limits never reach it.
pub fn hour_start(now: SystemTime) -> SystemTime {
    let secs = unix_secs(now);
    UNIX_EPOCH + Duration::from_secs(secs - secs % 3600)
}

/// The live files of `node` due at `now`, oldest first, each with its reason.
/// Expired ephemeral uploads are due at once; age limits spare the current
/// UTC hour (its directory may still be written to).
pub async fn due(
    client: &Client,
    node: &str,
    rules: &RetentionRules,
    reason: Reason,
    now: SystemTime,
) -> Result<Vec<(FileRow, Reason)>, DbError> {
    let spare_from = hour_start(now);
    let cutoff = |age: Option<Duration>| {
        age.map(|a| now.checked_sub(a).unwrap_or(UNIX_EPOCH).min(spare_from))
    };
    let sql = format!(
        "SELECT {FILE_ROW_COLUMNS} FROM files WHERE deleted IS NULL AND node = $1 AND ( \
           (expires IS NOT NULL AND expires <= $2) \
           OR ((purpose <> 'permanent' OR NOT $6) AND ( \
             (chat_type = 'im' AND created < $3) \
             OR (chat_type = 'groupchat' AND created < $4) \
             OR (chat_type = 'persistent' AND created < $5)))) \
         ORDER BY created LIMIT $7"
    );
    let rows = client
        .query(
            &sql,
            &[
                &node,
                &now,
                &cutoff(rules.im),
                &cutoff(rules.groupchat),
                &cutoff(rules.persistent),
                &rules.permanent_exempt,
                &SWEEP_BATCH,
            ],
        )
        .await
        .map_err(|e| DbError::query("listing files due for removal", e))?;
    let current_dir = {
        let t = UtcTime::from_system(now);
        format!("/{}/{:02}", t.compact_date(), t.hour)
    };
    Ok(rows
        .iter()
        .map(file_row)
        .filter_map(|f| {
            let expired = f.expires.is_some_and(|e| e <= now);
            if expired {
                return Some((f, Reason::Expired));
            }
            // Belt and braces: nothing in the current hour's directory by age.
            let in_current_hour =
                Location::parse(&f.resource).is_some_and(|l| l.dir().contains(&current_dir));
            (!in_current_hour).then_some((f, reason))
        })
        .collect())
}

/// Records one removal and marks the file deleted, in one transaction;
/// false when another sweeper had already retired it.
async fn record_removal(
    client: &mut Client,
    file: &FileRow,
    reason: Reason,
    by: &str,
) -> Result<bool, DbError> {
    let q = |what: &'static str| move |e| DbError::query(what, e);
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a removal"))?;
    let marked = tx
        .execute(
            "UPDATE files SET deleted = now() WHERE resource = $1 AND deleted IS NULL",
            &[&file.resource],
        )
        .await
        .map_err(q("marking a file deleted"))?;
    if marked == 1 {
        tx.execute(
            "INSERT INTO removals (resource, storage_path, file_server, node, chat_type, purpose, \
             size, sha256, created, reason, removed_by) \
             SELECT resource, storage_path, file_server, node, chat_type, purpose, size, sha256, \
             created, $2, $3 FROM files WHERE resource = $1",
            &[
                &file.resource,
                &reason.as_str(),
                &crate::log_schema::fit(by, crate::log_schema::LABEL),
            ],
        )
        .await
        .map_err(q("recording a removal"))?;
    }
    tx.commit().await.map_err(q("committing a removal"))?;
    Ok(marked == 1)
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The database could not be read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The store failed to remove a file; it and the rest stay as they are.
    #[error("the file server could not remove {path} (nothing was marked deleted): {source}")]
    Store {
        /// The file's path below the node directory.
        path: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// One sweep: whose files, by which rules, as of when, by whom.
#[derive(Debug, Clone)]
pub struct SweepPlan<'a> {
    /// The node whose files are swept (the store holds its directory).
    pub node: &'a str,
    /// Age limits.
    pub rules: RetentionRules,
    /// Recorded for files retired by age.
    pub reason: Reason,
    /// The moment the rules are evaluated at.
    pub now: SystemTime,
    /// Who retires them (`removed_by`).
    pub by: &'a str,
    /// Only count.
    pub dry_run: bool,
}

/// Carries out `plan` under the cluster-wide sweep lock. `Ok(None)` when
/// another sweeper holds the lock (this round is skipped).
pub async fn sweep(
    log: &TransferLog,
    store: &Store,
    plan: &SweepPlan<'_>,
) -> Result<Option<SweepReport>, SweepError> {
    // A connection of its own: the session-level lock lives as long as it.
    let mut client = log.dedicated_client().await?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
        .await
        .map_err(|e| DbError::query("taking the sweep lock", e))?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let result = sweep_locked(&mut client, store, plan).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK])
        .await;
    result.map(Some)
}

async fn sweep_locked(
    client: &mut Client,
    store: &Store,
    plan: &SweepPlan<'_>,
) -> Result<SweepReport, SweepError> {
    let mut report = SweepReport::default();
    for (file, why) in due(client, plan.node, &plan.rules, plan.reason, plan.now).await? {
        let size = u64::try_from(file.size).unwrap_or(0);
        if plan.dry_run {
            report.removed += 1;
            report.bytes += size;
            continue;
        }
        let Some(loc) = Location::parse(&file.resource) else {
            continue;
        };
        let missing = match store.remove(&loc).await {
            Ok(()) => false,
            Err(e) if e.is_not_found() => true,
            Err(source) => {
                return Err(SweepError::Store {
                    path: file.storage_path.clone(),
                    source,
                })
            }
        };
        if record_removal(client, &file, why, plan.by).await? {
            report.removed += 1;
            report.bytes += size;
            report.missing += u64::from(missing);
            mft_metrics::metrics().file_removed(why.as_str());
            tracing::info!(
                resource = %file.resource,
                chat_type = %file.chat_type,
                purpose = %file.purpose,
                reason = why.as_str(),
                missing,
                "file retired"
            );
        }
    }
    Ok(report)
}

/// `every` stretched or shrunk by up to 10 %, so nodes started together
/// do not keep sweeping together.
fn jittered(every: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::getrandom(&mut b);
    let unit = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    every.mul_f64(0.9 + 0.2 * unit)
}

/// How soon after start the first round runs (at most): a sweep that a
/// crash interrupted between removing a file and recording it left a live
/// row without its file, and the next round records that removal.
const FIRST_ROUND_WITHIN: Duration = Duration::from_secs(30);

/// The in-service sweeper: applies `rules` (and ephemeral expiries) to
/// this node's files every `every`, jittered, until `stop` turns true — the
/// first round soon after start ([`FIRST_ROUND_WITHIN`]). A file server or
/// database that is down postpones the work to the next round; nothing is
/// marked deleted that was not removed.
pub async fn sweep_periodically(
    log: TransferLog,
    store: Store,
    node: String,
    rules: RetentionRules,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = jittered(every.min(FIRST_ROUND_WITHIN));
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        wait = jittered(every);
        let plan = SweepPlan {
            node: &node,
            rules,
            reason: Reason::Retention,
            now: SystemTime::now(),
            by: &node,
            dry_run: false,
        };
        match sweep(&log, &store, &plan).await {
            Ok(Some(r)) if r.removed > 0 => {
                tracing::info!(
                    removed = r.removed,
                    bytes = r.bytes,
                    missing = r.missing,
                    "retention sweep done"
                )
            }
            Ok(Some(_)) => tracing::debug!("retention sweep: nothing due"),
            Ok(None) => tracing::debug!("retention sweep skipped: another node is sweeping"),
            Err(e) => tracing::warn!(
                error = %crate::error::chain(&e),
                "retention sweep postponed to the next round"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hour_starts_on_the_hour_and_rules_pick_by_chat_type() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_669_628);
        assert_eq!(
            hour_start(t),
            UNIX_EPOCH + Duration::from_secs(1_795_669_628 - 7 * 60 - 8)
        );
        let rules = RetentionRules {
            im: Some(Duration::from_secs(86_400)),
            ..RetentionRules::default()
        };
        assert_eq!(rules.for_chat("im"), Some(Duration::from_secs(86_400)));
        assert_eq!(rules.for_chat("persistent"), None);
        assert!(!rules.keeps_forever());
        assert!(RetentionRules::default().keeps_forever());
    }
}
