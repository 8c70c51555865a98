//! The record of a file leaving the store, written alike by every kind of
//! removal (retention and expiry sweeps, `mftd purge`, erasure, a user's own
//! deletion): its `files` row marked deleted and a `removals` row copied
//! from it, with why and by whom, in the caller's transaction — so the two
//! can never disagree, whoever removed the file.

use tokio_postgres::Transaction;

use crate::db::DbError;
use crate::log_schema::{fit, JID, NOTE};

/// Who removed a file, as `removals.removed_by` says.
pub(crate) enum RemovedBy<'a> {
    /// An operator, the sweeper or a user, named.
    Named(&'a str),
    /// The file's own uploader (a user deleting their upload).
    Uploader,
}

/// Why and by whom a file was removed.
pub(crate) struct Removal<'a> {
    /// `removals.reason` (`retention`, `expired`, `purge`, `erasure`, …).
    pub reason: &'a str,
    /// `removals.removed_by`.
    pub by: RemovedBy<'a>,
    /// `removals.note`.
    pub note: &'a str,
    /// Removed before the retention floor allowed (an operator's choice).
    pub before_floor: bool,
}

/// Marks `resource` deleted and records its removal, in `tx`. `false` when
/// the file was already marked deleted (another removal took it first):
/// then nothing is written.
pub(crate) async fn record_removal(
    tx: &Transaction<'_>,
    resource: &str,
    removal: &Removal<'_>,
) -> Result<bool, DbError> {
    let marked = tx
        .execute(
            "UPDATE files SET deleted = now() WHERE resource = $1 AND deleted IS NULL",
            &[&resource],
        )
        .await
        .map_err(|e| DbError::query("marking a file deleted", e))?;
    if marked == 0 {
        return Ok(false);
    }
    let named = match removal.by {
        RemovedBy::Named(who) => Some(fit(who, JID)),
        RemovedBy::Uploader => None,
    };
    tx.execute(
        "INSERT INTO removals (resource, storage_path, file_server, node, chat_type, purpose, \
         size, sha256, created, reason, removed_by, note, before_floor) \
         SELECT resource, storage_path, file_server, node, chat_type, purpose, size, sha256, \
         created, $2, COALESCE($3, uploader), $4, $5 FROM files WHERE resource = $1",
        &[
            &resource,
            &removal.reason,
            &named,
            &fit(removal.note, NOTE),
            &removal.before_floor,
        ],
    )
    .await
    .map_err(|e| DbError::query("recording a removal", e))?;
    Ok(true)
}
