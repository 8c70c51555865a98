//! Retiring files: which live files of a node are due (older than their
//! chat type's retention, past an ephemeral upload's own expiry, or older
//! than an operator's purge), and removing each. Two things keep a due file:
//! a legal hold in force ([`crate::holds`]; nothing overrides it), and the
//! retention floor — no file goes before it is `[retention] minimum` old,
//! unless an operator's purge says `before_floor` and why.
//!
//! Each removal is one transaction that first re-checks the holds (under
//! the hold lock, so a hold placed meanwhile wins), then removes the file
//! from the store, then records the removal in `removals` — reason, who,
//! the operator's note — and marks the `files` row deleted (GET answers
//! `410`). A file the store could not remove is never marked. One sweep
//! runs at a time across the cluster, under a PostgreSQL advisory lock;
//! `mftd purge` and the in-service sweeper share this code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::db::DbError;
use crate::holds::{HELD, HOLD_LOCK};
use crate::layout::Location;
use crate::removal_record::{record_removal, Removal, RemovedBy};
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

/// How young a file may not be removed, per chat type (zero: no floor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionFloor {
    /// 1:1 chats.
    pub im: Duration,
    /// Ad-hoc group chats.
    pub groupchat: Duration,
    /// Persistent chat rooms.
    pub persistent: Duration,
}

impl RetentionFloor {
    /// The floor of one chat type (zero for an unknown one: the sweep's
    /// queries never select those).
    pub fn for_chat(&self, chat_type: &str) -> Duration {
        match chat_type {
            "im" => self.im,
            "groupchat" => self.groupchat,
            "persistent" => self.persistent,
            _ => Duration::ZERO,
        }
    }

    /// True when no chat type has a floor.
    pub fn is_none(&self) -> bool {
        *self == RetentionFloor::default()
    }

    /// When a file created at `created` of `chat_type` reaches the floor.
    pub fn reached_at(&self, chat_type: &str, created: SystemTime) -> SystemTime {
        created + self.for_chat(chat_type)
    }
}

/// Who retires files in the service's own sweeps (`removals.removed_by`).
pub const SWEEPER: &str = "sweeper";

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
    /// Of those, files younger than the retention floor (an operator's
    /// `before_floor` purge).
    pub before_floor: u64,
    /// Files due but kept: under a legal hold.
    pub held: u64,
    /// Files due by age or expiry but kept: younger than the retention floor.
    pub under_floor: u64,
}

/// The start of the UTC hour holding `now`: age limits never reach it.
pub fn hour_start(now: SystemTime) -> SystemTime {
    let secs = unix_secs(now);
    UNIX_EPOCH + Duration::from_secs(secs - secs % 3600)
}

/// The moments a sweep compares `created` with, per chat type (im,
/// groupchat, persistent): files older than `age` are due by age; expired
/// ephemeral files older than `expiry` are due (the floor's moment, or
/// `now` without one).
struct Cutoffs {
    age: [Option<SystemTime>; 3],
    expiry: [SystemTime; 3],
}

const CHAT_TYPES: [&str; 3] = ["im", "groupchat", "persistent"];

impl Cutoffs {
    fn new(rules: &RetentionRules, floor: Option<&RetentionFloor>, now: SystemTime) -> Cutoffs {
        let spare_from = hour_start(now);
        let ago = |d: Duration| now.checked_sub(d).unwrap_or(UNIX_EPOCH);
        let floor_at = |chat: &str| floor.map_or(now, |f| ago(f.for_chat(chat)));
        Cutoffs {
            age: CHAT_TYPES.map(|c| {
                rules
                    .for_chat(c)
                    .map(|a| ago(a).min(spare_from).min(floor_at(c)))
            }),
            expiry: CHAT_TYPES.map(floor_at),
        }
    }
}

/// The SQL condition "file `f` is due", its cutoffs in parameters
/// `$first`..`$first+5` (see [`Cutoffs`]); `$1` is the node, `$2` now, `$3`
/// whether `permanent` uploads are exempt from age limits.
fn due_sql(first: usize) -> String {
    let p = |i: usize| format!("${}::timestamptz", first + i);
    format!(
        "f.deleted IS NULL AND f.node = $1 AND ( \
           (f.expires IS NOT NULL AND f.expires <= $2 AND f.created <= CASE f.chat_type \
              WHEN 'im' THEN {e0} WHEN 'groupchat' THEN {e1} WHEN 'persistent' THEN {e2} END) \
           OR ((f.purpose <> 'permanent' OR NOT $3) AND ( \
             (f.chat_type = 'im' AND f.created < {a0}) \
             OR (f.chat_type = 'groupchat' AND f.created < {a1}) \
             OR (f.chat_type = 'persistent' AND f.created < {a2}))))",
        a0 = p(0),
        a1 = p(1),
        a2 = p(2),
        e0 = p(3),
        e1 = p(4),
        e2 = p(5),
    )
}

/// The floor a sweep applies: none for an operator's `before_floor` purge.
fn applied_floor(plan_floor: &RetentionFloor, before_floor: bool) -> Option<&RetentionFloor> {
    (!before_floor).then_some(plan_floor)
}

/// The live files of `node` due at `now` and not under a hold, oldest
/// first, each with its reason. Expired ephemeral uploads are due at once
/// (once past the floor); age limits spare the current UTC hour (its
/// directory may still be written to) and files younger than the floor.
pub async fn due(
    client: &Client,
    node: &str,
    rules: &RetentionRules,
    floor: Option<&RetentionFloor>,
    reason: Reason,
    now: SystemTime,
) -> Result<Vec<(FileRow, Reason)>, DbError> {
    let c = Cutoffs::new(rules, floor, now);
    let sql = format!(
        "SELECT {FILE_ROW_COLUMNS} FROM files f WHERE {} AND NOT {HELD} \
         ORDER BY f.created LIMIT $10",
        due_sql(4)
    );
    let rows = client
        .query(
            &sql,
            &[
                &node,
                &now,
                &rules.permanent_exempt,
                &c.age[0],
                &c.age[1],
                &c.age[2],
                &c.expiry[0],
                &c.expiry[1],
                &c.expiry[2],
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

/// The files of `node` a sweep keeps although its rules make them due:
/// (under a legal hold, younger than the floor).
pub async fn kept(
    client: &Client,
    node: &str,
    rules: &RetentionRules,
    floor: Option<&RetentionFloor>,
    now: SystemTime,
) -> Result<(u64, u64), DbError> {
    let with = Cutoffs::new(rules, floor, now);
    let without = Cutoffs::new(rules, None, now);
    let sql = format!(
        "SELECT count(*) FILTER (WHERE due AND held), count(*) FILTER (WHERE NOT due) \
         FROM (SELECT ({}) AS due, {HELD} AS held FROM files f WHERE {}) k",
        due_sql(4),
        due_sql(10)
    );
    let row = client
        .query_one(
            &sql,
            &[
                &node,
                &now,
                &rules.permanent_exempt,
                &with.age[0],
                &with.age[1],
                &with.age[2],
                &with.expiry[0],
                &with.expiry[1],
                &with.expiry[2],
                &without.age[0],
                &without.age[1],
                &without.age[2],
                &without.expiry[0],
                &without.expiry[1],
                &without.expiry[2],
            ],
        )
        .await
        .map_err(|e| DbError::query("counting files kept by holds and the floor", e))?;
    let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok((count(0), count(1)))
}

/// What became of one file a sweep meant to retire.
enum Retired {
    /// Removed and recorded.
    Removed {
        /// The store no longer had it.
        missing: bool,
    },
    /// A hold placed since the sweep listed it keeps it.
    Held,
    /// Another sweeper retired it first, or its name is not ours.
    Gone,
}

/// Retires one file in one transaction: re-checks the holds under the hold
/// lock, removes the file from the store, marks it deleted and records the
/// removal. A store error rolls everything back.
async fn retire(
    client: &mut Client,
    store: &Store,
    file: &FileRow,
    reason: Reason,
    plan: &SweepPlan<'_>,
    before_floor: bool,
) -> Result<Retired, SweepError> {
    let q = |what: &'static str| move |e| DbError::query(what, e);
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a removal"))?;
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&HOLD_LOCK])
        .await
        .map_err(q("taking the hold lock"))?;
    let held = tx
        .query_opt(
            &format!(
                "SELECT {HELD} FROM files f WHERE f.resource = $1 AND f.deleted IS NULL FOR UPDATE"
            ),
            &[&file.resource],
        )
        .await
        .map_err(q("checking a file's holds"))?
        .map(|r| r.get::<_, bool>(0));
    let Some(held) = held else {
        return Ok(Retired::Gone);
    };
    if held {
        return Ok(Retired::Held);
    }
    let Some(loc) = Location::parse(&file.resource) else {
        return Ok(Retired::Gone);
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
    let removal = Removal {
        reason: reason.as_str(),
        by: RemovedBy::Named(plan.by),
        note: plan.note,
        before_floor,
    };
    if !record_removal(&tx, &file.resource, &removal).await? {
        return Ok(Retired::Gone);
    }
    tx.commit().await.map_err(q("committing a removal"))?;
    Ok(Retired::Removed { missing })
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The database could not be read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The store failed to remove a file; it and the rest stay as they are.
    #[error("the file server could not remove {path} (nothing was marked deleted)")]
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
    /// The retention floor (`[retention] minimum`).
    pub floor: RetentionFloor,
    /// Remove files younger than the floor too (an operator's purge that
    /// says why in `note`); holds still win.
    pub before_floor: bool,
    /// Recorded for files retired by age.
    pub reason: Reason,
    /// The moment the rules are evaluated at.
    pub now: SystemTime,
    /// Who retires them (`removed_by`): the operator, or [`SWEEPER`].
    pub by: &'a str,
    /// Why, in the operator's words (`removals.note`; may be empty).
    pub note: &'a str,
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
    let floor = applied_floor(&plan.floor, plan.before_floor);
    let (held, under_floor) = kept(client, plan.node, &plan.rules, floor, plan.now).await?;
    let mut report = SweepReport {
        held,
        under_floor,
        ..SweepReport::default()
    };
    for (file, why) in due(client, plan.node, &plan.rules, floor, plan.reason, plan.now).await? {
        let size = u64::try_from(file.size).unwrap_or(0);
        let young = plan.floor.reached_at(&file.chat_type, file.created) > plan.now;
        if plan.dry_run {
            report.removed += 1;
            report.bytes += size;
            report.before_floor += u64::from(young);
            continue;
        }
        match retire(client, store, &file, why, plan, young).await? {
            Retired::Removed { missing } => {
                report.removed += 1;
                report.bytes += size;
                report.missing += u64::from(missing);
                report.before_floor += u64::from(young);
                mft_metrics::metrics().file_removed(why.as_str());
                tracing::info!(
                    resource = %file.resource,
                    chat_type = %file.chat_type,
                    purpose = %file.purpose,
                    reason = why.as_str(),
                    by = plan.by,
                    before_floor = young,
                    missing,
                    "file retired"
                );
            }
            Retired::Held => {
                report.held += 1;
                tracing::info!(resource = %file.resource, "file kept: a legal hold was placed on it during the sweep");
            }
            Retired::Gone => {}
        }
    }
    if report.held > 0 {
        tracing::info!(
            held = report.held,
            "files due for removal kept: under legal hold (`mftd hold list`)"
        );
    }
    if report.under_floor > 0 {
        tracing::info!(
            under_floor = report.under_floor,
            "files due for removal kept: younger than the retention floor ([retention] minimum)"
        );
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
    floor: RetentionFloor,
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
            floor,
            before_floor: false,
            reason: Reason::Retention,
            now: SystemTime::now(),
            by: SWEEPER,
            note: "",
            dry_run: false,
        };
        match log.prune_bookkeeping().await {
            Ok((rates, claims)) if rates + claims > 0 => {
                tracing::info!(rates, claims, "forgot idle slot rates and old slot claims")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::error::Chain(&e), "forgetting old slot bookkeeping failed; the next round tries again")
            }
        }
        let result = sweep(&log, &store, &plan).await;
        if let Ok(Some(r)) = &result {
            mft_metrics::metrics().files_kept(r.held, r.under_floor);
        }
        match result {
            Ok(Some(r)) if r.removed > 0 => {
                tracing::info!(
                    removed = r.removed,
                    bytes = r.bytes,
                    missing = r.missing,
                    held = r.held,
                    under_floor = r.under_floor,
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
