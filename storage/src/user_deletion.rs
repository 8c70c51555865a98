//! A user deleting one of their own uploads (the component's ad-hoc command
//! "Delete an upload"): the same audited, crash-safe removal as an erasure
//! ([`crate::erasure`]), for one file, asked for by its uploader. The
//! `user_deletions` table of migration 14 and every query on it live here.
//!
//! Policy beats the user. A file is deleted only when all of these hold,
//! checked in one transaction with the file's row locked:
//!
//! - the requester uploaded it (the bare JID the log stores) and it is live;
//! - no legal hold in force covers it ([`crate::holds`]);
//! - it is older than its chat type's retention floor (`[retention] minimum`).
//!
//! Then, like an erasure: an `intent` step is committed (the file is still
//! there), the file is deleted from the store, and one transaction marks
//! `files.deleted`, writes the `removals` row (reason [`REASON`],
//! `removed_by` = the user's bare JID) and a `done` step. The hold lock is
//! held shared throughout, so a hold placed meanwhile waits for this one
//! file. An `intent` with no later step is a deletion a crash interrupted:
//! [`resume`] (run by `mftd run` at start) finishes it, or keeps the file
//! when a hold placed since covers it and it is still there.

use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use crate::db::DbError;
use crate::holds::{HELD, HOLD_LOCK};
use crate::layout::Location;
use crate::log_schema::{fit, JID};
use crate::removal_record::{record_removal, Removal, RemovedBy};
use crate::retention::RetentionFloor;
use crate::transfer_log::{file_row, file_row_at, FileRow, FILE_ROW_COLUMNS, FILE_ROW_WIDTH};
use crate::{Store, StoreError};

/// The `removals.reason` of a user's own deletion.
pub const REASON: &str = "user-deletion";

/// The `removals.note` of a user's own deletion: how it was asked for.
pub const NOTE_TEXT: &str = "deleted by its uploader (XMPP ad-hoc command)";

/// Why a user's deletion was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The requester has no live upload of that name (it is someone
    /// else's, already removed, or never existed — deliberately one answer).
    NotFound,
    /// A legal hold in force covers the file.
    Held,
    /// The file is younger than its chat type's retention floor.
    Floor {
        /// When it may be deleted.
        until: SystemTime,
        /// The floor.
        floor: Duration,
        /// The file's chat type.
        chat_type: String,
    },
}

/// Why a deletion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UserDeletionError {
    /// Policy refused it; nothing changed.
    #[error("deletion refused: {0:?}")]
    Refused(Refusal),
    /// The database could not be read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The store failed to remove the file; the intent stays pending and
    /// `mftd run` finishes it at its next start.
    #[error("the file server could not remove {path}; the deletion is pending and mftd finishes it at its next start")]
    Store {
        /// The file's path below its node directory.
        path: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
}

/// A file a user deleted.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The file as it was.
    pub file: FileRow,
    /// The store no longer had it (recorded all the same).
    pub missing: bool,
}

/// Who asks, about which file, under which floor.
#[derive(Debug, Clone, Copy)]
pub struct DeletionRequest<'a> {
    /// The requester's bare JID (normalised): must be the file's uploader.
    pub user: &'a str,
    /// The full JID the request came from (recorded in `user_deletions`).
    pub from: &'a str,
    /// The file's resource name.
    pub resource: &'a str,
    /// The retention floor in force.
    pub floor: &'a RetentionFloor,
    /// This node's name: a file stored by another node is removed from its
    /// directory on the same file server.
    pub node: &'a str,
}

fn q(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::query(what, e)
}

/// Deletes the requester's file if policy allows. Needs a connection of its
/// own (the hold lock is held at session level across the store's removal).
pub async fn delete(
    client: &mut Client,
    store: &Store,
    req: &DeletionRequest<'_>,
) -> Result<Deleted, UserDeletionError> {
    client
        .execute("SELECT pg_advisory_lock_shared($1)", &[&HOLD_LOCK])
        .await
        .map_err(q("taking the hold lock"))?;
    let result = delete_locked(client, store, req).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock_shared($1)", &[&HOLD_LOCK])
        .await;
    result
}

async fn delete_locked(
    client: &mut Client,
    store: &Store,
    req: &DeletionRequest<'_>,
) -> Result<Deleted, UserDeletionError> {
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a user's deletion"))?;
    let row = tx
        .query_opt(
            &format!(
                "SELECT {FILE_ROW_COLUMNS}, {HELD} FROM files f \
                 WHERE f.resource = $1 AND f.uploader = $2 AND f.deleted IS NULL FOR UPDATE"
            ),
            &[&req.resource, &req.user],
        )
        .await
        .map_err(q("looking up the user's file"))?;
    let Some(row) = row else {
        return Err(UserDeletionError::Refused(Refusal::NotFound));
    };
    let file = file_row(&row);
    if row.get::<_, bool>(FILE_ROW_WIDTH) {
        return Err(UserDeletionError::Refused(Refusal::Held));
    }
    let until = req.floor.reached_at(&file.chat_type, file.created);
    if until > SystemTime::now() {
        return Err(UserDeletionError::Refused(Refusal::Floor {
            until,
            floor: req.floor.for_chat(&file.chat_type),
            chat_type: file.chat_type.clone(),
        }));
    }
    step(&tx, &file.resource, req.from, "intent").await?;
    tx.commit()
        .await
        .map_err(q("committing a user's deletion intent"))?;
    let missing = remove_from_store(store, req.node, &file).await?;
    finish(client, &file, req.from, missing).await
}

async fn step(
    tx: &tokio_postgres::Transaction<'_>,
    resource: &str,
    from: &str,
    step: &str,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO user_deletions (resource, requested_by, step) VALUES ($1, $2, $3)",
        &[&resource, &fit(from, JID), &step],
    )
    .await
    .map_err(q("recording a user's deletion step"))?;
    Ok(())
}

/// Deletes the file; `Ok(true)` when it was not there any more.
async fn remove_from_store(
    store: &Store,
    node: &str,
    file: &FileRow,
) -> Result<bool, UserDeletionError> {
    let Some(loc) = Location::parse(&file.resource) else {
        return Ok(true); // Not a name mftd made: nothing of ours in the layout.
    };
    let owner = store.of_node(node, &file.node);
    let result = match owner {
        Some(s) => s.remove(&loc).await,
        None => Err(StoreError::unavailable(format!(
            "the file lies in node directory {:?}, which is not a plain directory name",
            file.node
        ))),
    };
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(source) => Err(UserDeletionError::Store {
            path: file.storage_path.clone(),
            source: Box::new(source),
        }),
    }
}

/// The file is gone from the store: record it.
async fn finish(
    client: &mut Client,
    file: &FileRow,
    from: &str,
    missing: bool,
) -> Result<Deleted, UserDeletionError> {
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a user's deletion record"))?;
    let removal = Removal {
        reason: REASON,
        by: RemovedBy::Uploader,
        note: NOTE_TEXT,
        before_floor: false,
    };
    if !record_removal(&tx, &file.resource, &removal).await? {
        step(&tx, &file.resource, from, "gone").await?;
        tx.commit().await.map_err(q("committing a deletion step"))?;
        return Err(UserDeletionError::Refused(Refusal::NotFound));
    }
    step(&tx, &file.resource, from, "done").await?;
    tx.commit()
        .await
        .map_err(q("committing a user's deletion record"))?;
    mft_metrics::metrics().file_removed(REASON);
    Ok(Deleted {
        file: file.clone(),
        missing,
    })
}

/// What [`resume`] did with interrupted deletions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Deletions finished.
    pub finished: u64,
    /// Files kept: a hold placed since covers them and they are still there.
    pub held: u64,
    /// Files another removal had taken meanwhile.
    pub gone: u64,
}

/// Finishes users' deletions a crash interrupted (an `intent` with no later
/// step for that file). Run by `mftd run` at start, before it serves; needs
/// a connection of its own.
pub async fn resume(
    client: &mut Client,
    store: &Store,
    node: &str,
) -> Result<Resumed, UserDeletionError> {
    let columns = FILE_ROW_COLUMNS
        .split(", ")
        .map(|c| format!("f.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let pending = client
        .query(
            &format!(
                "SELECT s.requested_by, {columns} FROM user_deletions s \
                 JOIN files f ON f.resource = s.resource \
                 WHERE s.step = 'intent' AND NOT EXISTS (SELECT 1 FROM user_deletions t \
                   WHERE t.resource = s.resource AND t.step_id > s.step_id) \
                 ORDER BY s.step_id"
            ),
            &[],
        )
        .await
        .map_err(q("listing interrupted user deletions"))?;
    let mut done = Resumed::default();
    for row in pending {
        let from: String = row.get(0);
        let file = file_row_at(&row, 1);
        client
            .execute("SELECT pg_advisory_lock_shared($1)", &[&HOLD_LOCK])
            .await
            .map_err(q("taking the hold lock"))?;
        let outcome = resume_one(client, store, node, &file, &from).await;
        let _ = client
            .execute("SELECT pg_advisory_unlock_shared($1)", &[&HOLD_LOCK])
            .await;
        match outcome? {
            Resume::Finished => {
                tracing::warn!(resource = %file.resource, from = %from, "finished a user's deletion a crash interrupted");
                done.finished += 1;
            }
            Resume::Held => {
                tracing::warn!(resource = %file.resource, "an interrupted user deletion's file is kept: a legal hold placed since covers it");
                done.held += 1;
            }
            Resume::Gone => done.gone += 1,
        }
    }
    Ok(done)
}

enum Resume {
    Finished,
    Held,
    Gone,
}

async fn resume_one(
    client: &mut Client,
    store: &Store,
    node: &str,
    file: &FileRow,
    from: &str,
) -> Result<Resume, UserDeletionError> {
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
            close(client, file, from, "gone").await?;
            Ok(Resume::Gone)
        }
        Some(true) if still_stored(store, node, file).await? => {
            close(client, file, from, "held").await?;
            Ok(Resume::Held)
        }
        // Not held, or held but its bytes already gone (the crash came
        // after the delete): the record must say so.
        Some(_) => {
            let missing = remove_from_store(store, node, file).await?;
            match finish(client, file, from, missing).await {
                Ok(_) => Ok(Resume::Finished),
                Err(UserDeletionError::Refused(_)) => Ok(Resume::Gone),
                Err(e) => Err(e),
            }
        }
    }
}

/// Closes an interrupted intent with `name`.
async fn close(
    client: &mut Client,
    file: &FileRow,
    from: &str,
    name: &str,
) -> Result<(), UserDeletionError> {
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a deletion step"))?;
    step(&tx, &file.resource, from, name).await?;
    tx.commit().await.map_err(q("committing a deletion step"))?;
    Ok(())
}

async fn still_stored(
    store: &Store,
    node: &str,
    file: &FileRow,
) -> Result<bool, UserDeletionError> {
    let Some(loc) = Location::parse(&file.resource) else {
        return Ok(false);
    };
    let owner = store.of_node(node, &file.node);
    let Some(owner) = owner else {
        return Ok(true);
    };
    match owner.stat(&loc).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(source) => Err(UserDeletionError::Store {
            path: file.storage_path.clone(),
            source: Box::new(source),
        }),
    }
}
