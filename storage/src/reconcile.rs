//! The audit invariant between the store and the transfer log: every file
//! served has its rows, and every live `files` row has its file.
//!
//! [`inventory`] walks the node directory (optionally only recent dates) and
//! sorts what it finds: published files, hidden temporary files, and
//! descriptions without their file. [`recover`] runs at start-up, before
//! the HTTP endpoint serves: it removes temporary files and orphan
//! descriptions a crash left behind and moves published files that have no
//! `files` row (a crash between publishing and committing) to
//! `quarantine/`, logging each. `mftd verify` builds on the same pieces.

use std::collections::HashSet;

use crate::backend::Session;
use crate::layout::{parse_hour_dir, ChatType, Location};
use crate::store::Store;
use crate::transfer_log::TransferLog;
use crate::utc::{unix_now, UtcTime};
use crate::StoreError;

/// What a walk of the node directory found.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Published files (their resource names parse and sit in their directory).
    pub files: Vec<Location>,
    /// Hidden `.part` files: uploads that never finished.
    pub temporaries: Vec<String>,
    /// `.meta` descriptions whose file is not there.
    pub orphan_metas: Vec<String>,
    /// Anything else in the layout's directories, left alone.
    pub strays: Vec<String>,
}

/// Walks `files/<chat>/<date>/<hour>/` for dates on or after `since`
/// (`YYYYMMDD`; `None` for all).
pub async fn inventory(store: &Store, since: Option<String>) -> Result<Inventory, StoreError> {
    store
        .with_session(move |session| walk(session, since.as_deref()))
        .await
}

fn list_or_empty(session: &mut dyn Session, dir: &str) -> Result<Vec<String>, StoreError> {
    match session.list_dir(dir) {
        Ok(names) => Ok(names),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn walk(session: &mut dyn Session, since: Option<&str>) -> Result<Inventory, StoreError> {
    let mut inv = Inventory::default();
    for chat in ChatType::ALL {
        let chat_dir = format!("files/{chat}");
        let mut dates = list_or_empty(session, &chat_dir)?;
        dates.retain(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()));
        dates.retain(|d| since.is_none_or(|s| d.as_str() >= s));
        dates.sort();
        for date in dates {
            let date_dir = format!("{chat_dir}/{date}");
            for hour in list_or_empty(session, &date_dir)? {
                if parse_hour_dir(&hour).is_none() {
                    continue;
                }
                let dir = format!("{date_dir}/{hour}");
                let names = list_or_empty(session, &dir)?;
                let present: HashSet<&str> = names.iter().map(String::as_str).collect();
                for name in &names {
                    let path = format!("{dir}/{name}");
                    if name.starts_with('.') && name.ends_with(".part") {
                        inv.temporaries.push(path);
                    } else if let Some(resource) = name.strip_suffix(".meta") {
                        if !present.contains(resource) {
                            inv.orphan_metas.push(path);
                        }
                    } else {
                        match Location::parse(name).filter(|l| l.dir() == dir) {
                            Some(loc) => inv.files.push(loc),
                            None => inv.strays.push(path),
                        }
                    }
                }
            }
        }
    }
    Ok(inv)
}

/// When each temporary file in `paths` last changed (`None` when the file
/// server does not say). Files gone since the walk — uploads that finished
/// or were abandoned meanwhile — are left out.
pub async fn temporary_ages(
    store: &Store,
    paths: Vec<String>,
) -> Result<Vec<(String, Option<std::time::SystemTime>)>, StoreError> {
    store
        .with_session(move |session| {
            let mut out = Vec::with_capacity(paths.len());
            for path in paths {
                match session.modified(&path) {
                    Ok(at) => out.push((path, at)),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
}

/// What start-up recovery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Temporary files removed (and unfinished S3 multipart uploads
    /// aborted).
    pub temporaries_removed: usize,
    /// Descriptions without a file removed.
    pub orphan_metas_removed: usize,
    /// Published files without rows moved to `quarantine/`.
    pub quarantined: usize,
}

/// The `YYYYMMDD` of `days` days ago.
pub fn date_days_ago(days: u64) -> String {
    UtcTime::from_unix(unix_now().saturating_sub(days * 86_400)).compact_date()
}

/// Cleans what a crash can leave behind in dates on or after `since`.
/// Must run before this node accepts uploads: every temporary file in its
/// directory is then known to be abandoned.
pub async fn recover(
    store: &Store,
    log: Option<&TransferLog>,
    since: Option<String>,
) -> Result<Recovery, StoreError> {
    let inv = inventory(store, since).await?;
    let mut done = Recovery {
        temporaries_removed: store.abort_unfinished_uploads().await?,
        ..Recovery::default()
    };
    for path in &inv.temporaries {
        tracing::warn!(
            path,
            "removing a temporary file left by an interrupted upload"
        );
        store.remove_path(path).await?;
        done.temporaries_removed += 1;
    }
    for path in &inv.orphan_metas {
        tracing::warn!(
            path,
            "removing a file description whose file was never published"
        );
        store.remove_path(path).await?;
        done.orphan_metas_removed += 1;
    }
    if let Some(log) = log {
        for loc in unlogged_settled(log, &inv.files).await? {
            quarantine(store, &loc).await?;
            done.quarantined += 1;
        }
    }
    Ok(done)
}

/// The files among `files` that have no `files` row.
pub async fn unlogged(log: &TransferLog, files: &[Location]) -> Result<Vec<Location>, StoreError> {
    let mut out = Vec::new();
    for chunk in files.chunks(1000) {
        let names: Vec<String> = chunk.iter().map(|l| l.resource().to_owned()).collect();
        let known = log
            .known_resources(&names)
            .await
            .map_err(|e| StoreError::unavailable_because("reading the transfer log", e))?;
        out.extend(
            chunk
                .iter()
                .filter(|l| !known.contains(l.resource()))
                .cloned(),
        );
    }
    Ok(out)
}

/// How long a commit sent just before a crash may still take to land.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The files among `files` that have no `files` row and still have none a
/// moment later: a commit sent by a process that just died (or by a running
/// upload) is still being applied by the database when we first ask.
pub async fn unlogged_settled(
    log: &TransferLog,
    files: &[Location],
) -> Result<Vec<Location>, StoreError> {
    let first = unlogged(log, files).await?;
    if first.is_empty() {
        return Ok(first);
    }
    tokio::time::sleep(SETTLE).await;
    unlogged(log, &first).await
}

/// Moves a published file without rows (and its description) out of the
/// served layout into `quarantine/<its path>`, never overwriting.
pub async fn quarantine(store: &Store, loc: &Location) -> Result<(), StoreError> {
    tracing::warn!(
        path = %loc.path(),
        "file has no transfer-log row (a crash between storing and logging): moved to quarantine/"
    );
    let (path, meta) = (loc.path(), loc.meta_path());
    store
        .with_session(move |session| {
            let target = format!("quarantine/{path}");
            let dir = target
                .rsplit_once('/')
                .map_or("quarantine", |(d, _)| d)
                .to_owned();
            session.create_dir_all(&dir)?;
            session.publish(&path, &target)?;
            let _ = session.publish(&meta, &format!("quarantine/{meta}"));
            Ok(())
        })
        .await
}
