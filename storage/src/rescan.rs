//! Quarantining a stored file that a rescan (`mftd verify --rescan`, the
//! scanner's current signatures) found infected: the `files` row records
//! the verdict (signature, time, source `rescan`) and the moment it was
//! quarantined, after which GET refuses it; the bytes go where
//! `[scan] quarantine` says — `quarantine/<path>` or removed — except that a
//! file under a legal hold is never moved or removed: it stays in place,
//! unserved. One transaction per file, under the hold lock (as a sweep's
//! removal), so a hold placed meanwhile wins; a store failure rolls the
//! row back and the file is as it was.

use tokio_postgres::Client;

use crate::db::DbError;
use crate::holds::{HELD, HOLD_LOCK};
use crate::layout::Location;
use crate::log_schema::fit;
use crate::store::QUARANTINE_DIR;
use crate::transfer_log::FileRow;
use crate::{Store, StoreError};

/// Where the bytes of a quarantined file went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quarantined {
    /// Moved to this path below the node directory.
    Moved(String),
    /// Removed (`[scan] quarantine = "remove"`).
    Removed,
    /// Left at its path: a legal hold covers it.
    Held,
    /// Not quarantined now: already quarantined or retired meanwhile.
    Gone,
}

/// Why a file could not be quarantined.
#[derive(Debug, thiserror::Error)]
pub enum RescanError {
    /// The database could not be read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The file server could not move or remove the file; nothing changed.
    #[error("the file server could not set {path} aside (the files row was not changed)")]
    Store {
        /// The file's path below the node directory.
        path: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// The column's width (`scan_detail`).
const DETAIL: usize = 255;

/// Quarantines `file`, found infected with `signature`; `keep` moves its
/// bytes to `quarantine/`, otherwise they are removed (a held file is
/// neither).
pub async fn quarantine(
    client: &mut Client,
    store: &Store,
    file: &FileRow,
    signature: &str,
    keep: bool,
) -> Result<Quarantined, RescanError> {
    let q = |what: &'static str| move |e| DbError::query(what, e);
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a quarantine"))?;
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&HOLD_LOCK])
        .await
        .map_err(q("taking the hold lock"))?;
    let held = tx
        .query_opt(
            &format!(
                "SELECT {HELD} FROM files f WHERE f.resource = $1 AND f.deleted IS NULL \
                 AND f.quarantined IS NULL FOR UPDATE"
            ),
            &[&file.resource],
        )
        .await
        .map_err(q("checking a file's holds"))?
        .map(|r| r.get::<_, bool>(0));
    let Some(held) = held else {
        return Ok(Quarantined::Gone);
    };
    let Some(loc) = Location::parse(&file.resource) else {
        return Ok(Quarantined::Gone);
    };
    let outcome = match (held, keep) {
        (true, _) => Quarantined::Held,
        (false, true) => Quarantined::Moved(format!("{QUARANTINE_DIR}/{}", loc.path())),
        (false, false) => Quarantined::Removed,
    };
    let now_at = match &outcome {
        Quarantined::Moved(path) => path.clone(),
        Quarantined::Held => loc.path(),
        _ => String::new(),
    };
    tx.execute(
        "UPDATE files SET quarantined = now(), quarantined_to = $2, scan_verdict = 'infected', \
         scan_detail = $3, scan_source = 'rescan', scanned_at = now() WHERE resource = $1",
        &[&file.resource, &now_at, &fit(signature, DETAIL)],
    )
    .await
    .map_err(q("recording a quarantine"))?;
    let moved = match &outcome {
        Quarantined::Moved(_) => move_aside(store, &loc).await,
        Quarantined::Removed => match store.remove(&loc).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        },
        _ => Ok(()),
    };
    moved.map_err(|source| RescanError::Store {
        path: file.storage_path.clone(),
        source,
    })?;
    tx.commit().await.map_err(q("committing a quarantine"))?;
    Ok(outcome)
}

/// Moves a published file and its description to `quarantine/<path>`,
/// never overwriting.
async fn move_aside(store: &Store, loc: &Location) -> Result<(), StoreError> {
    let (path, meta) = (loc.path(), loc.meta_path());
    store
        .with_session(move |session| {
            let target = format!("{QUARANTINE_DIR}/{path}");
            let dir = target
                .rsplit_once('/')
                .map_or(QUARANTINE_DIR, |(d, _)| d)
                .to_owned();
            session.create_dir_all(&dir)?;
            session.publish(&path, &target)?;
            let _ = session.publish(&meta, &format!("{QUARANTINE_DIR}/{meta}"));
            Ok(())
        })
        .await
}
