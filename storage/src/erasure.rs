//! Audited erasure: removing every file a person sent (and, if asked, every
//! file sent to them) from the store while the record of each transfer
//! stays. The `erasures` and `erasure_steps` tables of migration 12 and
//! every query on them live here.
//!
//! Legal holds win, as for every removal ([`crate::holds`]): a held file is
//! kept and a `held` step says so. For every other file the removal is
//! two-phase, so a crash at any point leaves a state the next run can finish:
//!
//! 1. an `intent` step is committed (the file is still there, its row live);
//! 2. the file is deleted from the store;
//! 3. one transaction marks `files.deleted`, writes the `removals` row
//!    (reason `erasure`, the operator, their reason) and a `done` step.
//!
//! An `intent` with no later step is an interrupted erasure: [`resume`]
//! (run by every `mftd erase` first, and by `mftd run` at start) finishes
//! it — or keeps the file when a hold placed meanwhile covers it and the
//! file is still there. `aft_log` is never updated: the removal is the
//! append-only fact that says "erased", and the view `aft_log_erasures`
//! joins it to the log rows.
//!
//! The whole erasure holds the hold lock shared at session level, so a hold
//! placed while a file is being erased waits for that file's removal and
//! covers every later one; one erasure runs at a time, cluster-wide.

use tokio_postgres::Client;

use crate::db::DbError;
use crate::holds::{HELD, HOLD_LOCK};
use crate::layout::Location;
use crate::log_schema::{fit, JID, NOTE};
use crate::removal_record::{record_removal, Removal, RemovedBy};
use crate::transfer_log::{file_row, file_row_at, FileRow, FILE_ROW_COLUMNS, FILE_ROW_WIDTH};
use crate::{Store, StoreError};

/// One erasure at a time, cluster-wide (session-level advisory lock).
const ERASE_LOCK: i64 = 0x6d66_7464_4552_4153; // "mftdERAS"

/// The `removals.reason` of an erasure.
pub const REASON: &str = "erasure";

/// Whose files, why, by whom.
#[derive(Debug, Clone)]
pub struct ErasurePlan<'a> {
    /// The person, as a bare JID (normalised the way the log stores it).
    pub subject: &'a str,
    /// Also the files sent to them (as the upload's recipient or in a share).
    pub received: bool,
    /// Why (a request number), recorded with the erasure and each removal.
    pub reason: &'a str,
    /// Who is responsible (the operator).
    pub by: &'a str,
    /// This node's name: files stored by another node are removed from its
    /// directory on the same file server.
    pub node: &'a str,
    /// Only list what would happen.
    pub dry_run: bool,
}

/// A file an erasure keeps because a hold covers it.
#[derive(Debug, Clone)]
pub struct HeldFile {
    /// The file.
    pub file: FileRow,
    /// The holds in force on it: (hold number, what it names, why).
    pub holds: Vec<(i64, String, String)>,
}

/// What an erasure did (or, dry, would do).
#[derive(Debug, Default)]
pub struct ErasureReport {
    /// The erasure's number (none for a dry run).
    pub erasure_id: Option<i64>,
    /// Files erased.
    pub erased: Vec<FileRow>,
    /// Of those, files the store no longer had (recorded all the same).
    pub missing: u64,
    /// Files kept under a legal hold.
    pub held: Vec<HeldFile>,
    /// Files removed by something else while the erasure ran.
    pub gone: u64,
    /// Interrupted erasures' files finished before this one started.
    pub resumed: Resumed,
    /// Uploads (anyone's) in progress when the erasure ended: a slot
    /// claimed in the last day and no file yet. An upload the person
    /// started before the erasure lands after it and is not erased.
    pub in_flight: i64,
}

impl ErasureReport {
    /// Bytes of the files erased.
    pub fn bytes(&self) -> u64 {
        self.erased
            .iter()
            .map(|f| u64::try_from(f.size).unwrap_or(0))
            .sum()
    }
}

/// What [`resume`] did with interrupted erasures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Files whose erasure was finished.
    pub finished: u64,
    /// Files kept: a hold placed since covers them and they are still there.
    pub held: u64,
    /// Files another removal had taken meanwhile.
    pub gone: u64,
}

/// Why an erasure stopped. What was done stays done and recorded; a file
/// whose removal failed keeps its pending intent for the next run.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// The database could not be read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The operator's input is not usable.
    #[error("{0}")]
    Invalid(String),
    /// Another erasure holds the lock.
    #[error("another `mftd erase` is running (it holds the erasure lock in PostgreSQL); try again when it has finished")]
    Busy,
    /// The store failed to remove a file.
    #[error("the file server could not remove {path}; its erasure is pending and the next `mftd erase` (or `mftd run` at start) finishes it")]
    Store {
        /// The file's path below its node directory.
        path: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
}

fn q(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::query(what, e)
}

/// The live files an erasure of `subject` covers, oldest first, each with
/// whether a hold in force covers it.
pub async fn candidates(
    client: &Client,
    subject: &str,
    received: bool,
) -> Result<Vec<(FileRow, bool)>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {FILE_ROW_COLUMNS}, {HELD} FROM files f WHERE f.deleted IS NULL AND ( \
                   split_part(f.uploader, '/', 1) = $1 \
                   OR ($2 AND (split_part(f.to_jid, '/', 1) = $1 OR EXISTS ( \
                     SELECT 1 FROM shares s WHERE s.resource = f.resource \
                     AND split_part(s.recipient, '/', 1) = $1)))) \
                 ORDER BY f.created, f.resource"
            ),
            &[&subject, &received],
        )
        .await
        .map_err(q("listing the files of an erasure"))?;
    Ok(rows
        .iter()
        .map(|r| (file_row(r), r.get(FILE_ROW_WIDTH)))
        .collect())
}

async fn holds_on(client: &Client, resource: &str) -> Result<Vec<(i64, String, String)>, DbError> {
    Ok(crate::holds::on_file(client, resource)
        .await?
        .into_iter()
        .map(|h| (h.id, format!("{} {}", h.kind, h.subject), h.reason))
        .collect())
}

/// Runs `plan`: finishes interrupted erasures first, then erases each
/// covered file that no hold keeps. Needs a connection of its own (the
/// locks are session-level).
pub async fn erase(
    client: &mut Client,
    store: &Store,
    plan: &ErasurePlan<'_>,
) -> Result<ErasureReport, ErasureError> {
    if plan.reason.trim().is_empty() {
        return Err(ErasureError::Invalid(
            "--reason must say why the files are erased (e.g. the request's number); it is recorded with each removal".into(),
        ));
    }
    if plan.by.trim().is_empty() {
        return Err(ErasureError::Invalid(
            "--by must name the person responsible".into(),
        ));
    }
    let mut report = ErasureReport::default();
    if plan.dry_run {
        for (file, held) in candidates(client, plan.subject, plan.received).await? {
            if held {
                let holds = holds_on(client, &file.resource).await?;
                report.held.push(HeldFile { file, holds });
            } else {
                report.erased.push(file);
            }
        }
        report.in_flight = in_flight(client).await?;
        return Ok(report);
    }
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&ERASE_LOCK])
        .await
        .map_err(q("taking the erasure lock"))?
        .get(0);
    if !locked {
        return Err(ErasureError::Busy);
    }
    let result = erase_locked(client, store, plan, &mut report).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&ERASE_LOCK])
        .await;
    result?;
    report.in_flight = in_flight(client).await?;
    Ok(report)
}

/// Uploads in progress on any node: claimed slots without a `files` row
/// yet, claimed in the last day (an older claim is a crashed upload's).
/// `used_slots` does not say whose they are, so an erasure can only say
/// that some upload may still land for the person.
async fn in_flight(client: &Client) -> Result<i64, DbError> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM used_slots u WHERE u.claimed_at > now() - interval '1 day' \
             AND NOT EXISTS (SELECT 1 FROM files f WHERE f.resource = u.resource)",
            &[],
        )
        .await
        .map_err(q("counting uploads in progress"))?
        .get(0))
}

async fn erase_locked(
    client: &mut Client,
    store: &Store,
    plan: &ErasurePlan<'_>,
    report: &mut ErasureReport,
) -> Result<(), ErasureError> {
    report.resumed = resume_locked(client, store, plan.node).await?;
    let id: i64 = client
        .query_one(
            "INSERT INTO erasures (subject, received, reason, requested_by) \
             VALUES ($1, $2, $3, $4) RETURNING erasure_id",
            &[
                &fit(plan.subject, JID),
                &plan.received,
                &fit(plan.reason.trim(), NOTE),
                &fit(plan.by.trim(), JID),
            ],
        )
        .await
        .map_err(q("recording an erasure"))?
        .get(0);
    report.erasure_id = Some(id);
    let job = Job {
        erasure_id: id,
        by: plan.by.trim(),
        note: plan.reason.trim(),
    };
    for (file, _) in candidates(client, plan.subject, plan.received).await? {
        match erase_one(client, store, plan.node, &job, &file).await? {
            Outcome::Erased { missing } => {
                report.missing += u64::from(missing);
                tracing::info!(resource = %file.resource, erasure = id, by = job.by, missing, "file erased");
                mft_metrics::metrics().file_removed(REASON);
                report.erased.push(file);
            }
            Outcome::Held => {
                let holds = holds_on(client, &file.resource).await?;
                report.held.push(HeldFile { file, holds });
            }
            Outcome::Gone => report.gone += 1,
        }
    }
    Ok(())
}

/// The erasure a file belongs to, as its removal records it.
struct Job<'a> {
    erasure_id: i64,
    by: &'a str,
    note: &'a str,
}

enum Outcome {
    Erased { missing: bool },
    Held,
    Gone,
}

/// The store holding `file`: this node's, or its sibling directory.
fn store_of(store: &Store, node: &str, file: &FileRow) -> Result<Store, ErasureError> {
    store
        .of_node(node, &file.node)
        .ok_or_else(|| ErasureError::Store {
            path: file.storage_path.clone(),
            source: Box::new(StoreError::unavailable(format!(
                "the file lies in node directory {:?}, which is not a plain directory name",
                file.node
            ))),
        })
}

async fn step(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    resource: &str,
    step: &str,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO erasure_steps (erasure_id, resource, step) VALUES ($1, $2, $3)",
        &[&id, &resource, &step],
    )
    .await
    .map_err(q("recording an erasure step"))?;
    Ok(())
}

/// Phase 1 (hold check and intent) under the shared hold lock, then the
/// store, then phase 3.
async fn erase_one(
    client: &mut Client,
    store: &Store,
    node: &str,
    job: &Job<'_>,
    file: &FileRow,
) -> Result<Outcome, ErasureError> {
    client
        .execute("SELECT pg_advisory_lock_shared($1)", &[&HOLD_LOCK])
        .await
        .map_err(q("taking the hold lock"))?;
    let result = erase_one_locked(client, store, node, job, file).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock_shared($1)", &[&HOLD_LOCK])
        .await;
    result
}

async fn erase_one_locked(
    client: &mut Client,
    store: &Store,
    node: &str,
    job: &Job<'_>,
    file: &FileRow,
) -> Result<Outcome, ErasureError> {
    let tx = client
        .transaction()
        .await
        .map_err(q("starting an erasure step"))?;
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
    let outcome = match held {
        None => Some(("gone", Outcome::Gone)),
        Some(true) => Some(("held", Outcome::Held)),
        Some(false) => None,
    };
    if let Some((name, outcome)) = outcome {
        step(&tx, job.erasure_id, &file.resource, name).await?;
        tx.commit().await.map_err(q("committing an erasure step"))?;
        return Ok(outcome);
    }
    step(&tx, job.erasure_id, &file.resource, "intent").await?;
    tx.commit()
        .await
        .map_err(q("committing an erasure intent"))?;
    let missing = remove_from_store(store, node, file).await?;
    finish(client, job, file, missing).await
}

/// Deletes the file; `Ok(true)` when it was not there any more.
async fn remove_from_store(
    store: &Store,
    node: &str,
    file: &FileRow,
) -> Result<bool, ErasureError> {
    let Some(loc) = Location::parse(&file.resource) else {
        // Not a name mftd made: nothing of ours to delete in the layout.
        return Ok(true);
    };
    match store_of(store, node, file)?.remove(&loc).await {
        Ok(()) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(source) => Err(ErasureError::Store {
            path: file.storage_path.clone(),
            source: Box::new(source),
        }),
    }
}

/// Phase 3: the file is gone from the store; record it.
async fn finish(
    client: &mut Client,
    job: &Job<'_>,
    file: &FileRow,
    missing: bool,
) -> Result<Outcome, ErasureError> {
    let tx = client
        .transaction()
        .await
        .map_err(q("starting an erasure's record"))?;
    let removal = Removal {
        reason: REASON,
        by: RemovedBy::Named(job.by),
        note: job.note,
        before_floor: false,
    };
    if !record_removal(&tx, &file.resource, &removal).await? {
        step(&tx, job.erasure_id, &file.resource, "gone").await?;
        tx.commit().await.map_err(q("committing an erasure step"))?;
        return Ok(Outcome::Gone);
    }
    step(&tx, job.erasure_id, &file.resource, "done").await?;
    tx.commit()
        .await
        .map_err(q("committing an erasure's record"))?;
    Ok(Outcome::Erased { missing })
}

/// Finishes erasures a crash interrupted (an `intent` with no later step),
/// unless another erasure is running (it does so itself). Run at start by
/// `mftd run`; needs a connection of its own.
pub async fn resume(
    client: &mut Client,
    store: &Store,
    node: &str,
) -> Result<Resumed, ErasureError> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&ERASE_LOCK])
        .await
        .map_err(q("taking the erasure lock"))?
        .get(0);
    if !locked {
        return Ok(Resumed::default());
    }
    let result = resume_locked(client, store, node).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&ERASE_LOCK])
        .await;
    result
}

async fn resume_locked(
    client: &mut Client,
    store: &Store,
    node: &str,
) -> Result<Resumed, ErasureError> {
    let pending = client
        .query(
            &format!(
                "SELECT s.erasure_id, e.requested_by, e.reason, {} \
                 FROM erasure_steps s JOIN erasures e USING (erasure_id) \
                 JOIN files f ON f.resource = s.resource \
                 WHERE s.step = 'intent' AND NOT EXISTS (SELECT 1 FROM erasure_steps t \
                   WHERE t.erasure_id = s.erasure_id AND t.resource = s.resource \
                   AND t.step <> 'intent') \
                 ORDER BY s.step_id",
                FILE_ROW_COLUMNS
                    .split(", ")
                    .map(|c| format!("f.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[],
        )
        .await
        .map_err(q("listing interrupted erasures"))?;
    let mut done = Resumed::default();
    for row in pending {
        let (id, by, note): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        let file = file_row_at(&row, 3);
        let job = Job {
            erasure_id: id,
            by: &by,
            note: &note,
        };
        client
            .execute("SELECT pg_advisory_lock_shared($1)", &[&HOLD_LOCK])
            .await
            .map_err(q("taking the hold lock"))?;
        let outcome = resume_one(client, store, node, &job, &file).await;
        let _ = client
            .execute("SELECT pg_advisory_unlock_shared($1)", &[&HOLD_LOCK])
            .await;
        match outcome? {
            Outcome::Erased { .. } => {
                tracing::warn!(resource = %file.resource, erasure = id, "finished an erasure a crash interrupted");
                done.finished += 1;
            }
            Outcome::Held => {
                tracing::warn!(resource = %file.resource, erasure = id, "an interrupted erasure's file is kept: a legal hold placed since covers it");
                done.held += 1;
            }
            Outcome::Gone => done.gone += 1,
        }
    }
    Ok(done)
}

async fn resume_one(
    client: &mut Client,
    store: &Store,
    node: &str,
    job: &Job<'_>,
    file: &FileRow,
) -> Result<Outcome, ErasureError> {
    let held = client
        .query_opt(
            &format!("SELECT {HELD} FROM files f WHERE f.resource = $1 AND f.deleted IS NULL"),
            &[&file.resource],
        )
        .await
        .map_err(q("checking a file's holds"))?
        .map(|r| r.get::<_, bool>(0));
    match held {
        None => {
            let tx = client
                .transaction()
                .await
                .map_err(q("starting an erasure step"))?;
            step(&tx, job.erasure_id, &file.resource, "gone").await?;
            tx.commit().await.map_err(q("committing an erasure step"))?;
            Ok(Outcome::Gone)
        }
        Some(true) if still_stored(store, node, file).await? => {
            let tx = client
                .transaction()
                .await
                .map_err(q("starting an erasure step"))?;
            step(&tx, job.erasure_id, &file.resource, "held").await?;
            tx.commit().await.map_err(q("committing an erasure step"))?;
            Ok(Outcome::Held)
        }
        // Held but already gone from the store (the crash came after the
        // delete): the record must say so.
        Some(_) => {
            let missing = remove_from_store(store, node, file).await?;
            finish(client, job, file, missing).await
        }
    }
}

async fn still_stored(store: &Store, node: &str, file: &FileRow) -> Result<bool, ErasureError> {
    let Some(loc) = Location::parse(&file.resource) else {
        return Ok(false);
    };
    match store_of(store, node, file)?.stat(&loc).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(source) => Err(ErasureError::Store {
            path: file.storage_path.clone(),
            source: Box::new(source),
        }),
    }
}
