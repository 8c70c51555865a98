//! Legal holds: the `holds` and `hold_events` tables and every query on
//! them. A hold keeps the files it covers from every removal — retention,
//! ephemeral expiry, an operator's purge — until it is released; nothing
//! else lifts it. It names a user (as uploader, intended recipient, or
//! sender or recipient of a reported share), a room (as intended or share
//! recipient), one file (its resource name) or a content (its SHA-256: every
//! copy, past and future). Whether a hold covers a file is decided in one
//! place, the SQL function `mftd_hold_covers` of migration 8, which
//! retention and auditors' queries share.
//!
//! Placing and releasing are each one event in `hold_events`, written in the
//! same transaction as the change to `holds`; neither table ever loses a row
//! (triggers refuse deletes and rewrites).

use std::fmt;
use std::time::SystemTime;

use tokio_postgres::{Client, Row};

use crate::db::DbError;
use crate::jid::Jid;
use crate::layout::Location;
use crate::log_schema::{fit, JID, NOTE};

/// Taken shared by each file's removal and exclusively by placing a hold,
/// so a hold placed while a sweep runs is seen by the next file it removes,
/// and no removal in flight outlives the placing of a hold that covers it.
pub(crate) const HOLD_LOCK: i64 = 0x6d66_7464_484f_4c44; // "mftdHOLD"

/// The SQL condition "file `f` is under a hold in force".
pub(crate) const HELD: &str = "EXISTS (SELECT 1 FROM mftd_file_holds(f.resource))";

/// What a hold names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// A user's files: uploaded by them, meant for them, or shared by or with them.
    User,
    /// A room's files: meant for it or shared in it.
    Room,
    /// One file, by resource name.
    File,
    /// Every file with this content.
    Sha256,
}

impl HoldKind {
    /// The `kind` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::User => "user",
            HoldKind::Room => "room",
            HoldKind::File => "file",
            HoldKind::Sha256 => "sha256",
        }
    }
}

/// What a hold covers, checked and normalised the way the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldTarget {
    kind: HoldKind,
    subject: String,
}

impl HoldTarget {
    /// A user, by JID (its bare form is held).
    pub fn user(jid: &str) -> Result<HoldTarget, HoldError> {
        Ok(HoldTarget {
            kind: HoldKind::User,
            subject: bare(jid, "user")?,
        })
    }

    /// A room, by JID.
    pub fn room(jid: &str) -> Result<HoldTarget, HoldError> {
        Ok(HoldTarget {
            kind: HoldKind::Room,
            subject: bare(jid, "room")?,
        })
    }

    /// One file, by its resource name or by a URL mftd handed out for it.
    pub fn file(resource_or_url: &str) -> Result<HoldTarget, HoldError> {
        let given = resource_or_url.trim();
        let path = given
            .split_once("://")
            .map_or(given, |(_, rest)| rest.split_once('/').map_or("", |p| p.1));
        let resource = path
            .split(['/', '?', '#'])
            .find_map(Location::parse)
            .ok_or_else(|| {
                HoldError::Invalid(format!(
                    "{given:?} is neither a resource name (such as 20261126-08-im-…) nor one of mftd's URLs; `mftd log` shows each file's resource in the FILENAME column"
                ))
            })?;
        Ok(HoldTarget {
            kind: HoldKind::File,
            subject: resource.resource().to_owned(),
        })
    }

    /// Every file whose content has this SHA-256 (64 hex digits).
    pub fn sha256(hex: &str) -> Result<HoldTarget, HoldError> {
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HoldError::Invalid(format!(
                "{hex:?} is not a SHA-256: give 64 hexadecimal digits, as `sha256sum` prints them"
            )));
        }
        Ok(HoldTarget {
            kind: HoldKind::Sha256,
            subject: hex,
        })
    }

    /// The kind.
    pub fn kind(&self) -> HoldKind {
        self.kind
    }

    /// The normalised subject (bare JID, resource or hex digest).
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl fmt::Display for HoldTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.subject)
    }
}

fn bare(jid: &str, what: &str) -> Result<String, HoldError> {
    let example = if what == "room" {
        "room@conference.example.com"
    } else {
        "alice@example.com"
    };
    let parsed = Jid::parse(jid).ok_or_else(|| {
        HoldError::Invalid(format!(
            "{jid:?} is not a JID: give the {what}'s address, such as {example}"
        ))
    })?;
    // A JID without a local part is a server or a component, never a
    // person or a room: a hold on it would hold nothing, an erasure or an
    // export of it would find nothing, and both would look as if they had
    // worked. `example.com/alice@example.com` parses as the domain
    // `example.com` with a resource, so it lands here too.
    if parsed.local().is_none() {
        return Err(HoldError::Invalid(format!(
            "{jid:?} names the domain {:?}, not a {what}: give the {what}'s own address, such as {example} (one {what} at a time; there is no domain-wide {what})",
            parsed.domain()
        )));
    }
    Ok(parsed.bare())
}

/// A hold and, once released, its release.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hold {
    /// Its number.
    pub id: i64,
    /// `user`, `room`, `file` or `sha256`.
    pub kind: String,
    /// Bare JID, resource name or hex digest.
    pub subject: String,
    /// Why it was placed.
    pub reason: String,
    /// Who placed it.
    pub placed_by: String,
    /// When (RFC 3339, UTC).
    pub placed_at: String,
    /// Who released it.
    pub released_by: Option<String>,
    /// When.
    pub released_at: Option<String>,
    /// Why.
    pub release_reason: Option<String>,
}

const HOLD_COLUMNS: &str = "hold_id, kind, subject, reason, placed_by, placed_at, \
                            released_by, released_at, release_reason";

fn hold_row(r: &Row) -> Hold {
    Hold {
        id: r.get(0),
        kind: r.get(1),
        subject: r.get(2),
        reason: r.get(3),
        placed_by: r.get(4),
        placed_at: rfc3339(r.get(5)),
        released_by: r.get(6),
        released_at: r.get::<_, Option<SystemTime>>(7).map(rfc3339),
        release_reason: r.get(8),
    }
}

/// One entry of a hold's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HoldEvent {
    /// Its number (history order).
    pub event_id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// `add` or `remove`.
    pub action: String,
    /// The hold.
    pub hold_id: i64,
    /// The hold's kind.
    pub kind: String,
    /// The hold's subject.
    pub subject: String,
    /// Who (the operator's name as given).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The database role that wrote it.
    pub db_user: String,
}

fn rfc3339(t: SystemTime) -> String {
    crate::utc::UtcTime::from_system(t).xep0082()
}

/// Why a hold could not be placed or released.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The database could not be read or written.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The operator's input is not usable.
    #[error("{0}")]
    Invalid(String),
    /// No hold has this number.
    #[error("there is no hold {0}; `mftd hold list --all` shows every hold")]
    NoSuchHold(i64),
    /// The hold was already released.
    #[error("hold {id} was already released at {at} by {by}; nothing changed")]
    AlreadyReleased {
        /// The hold.
        id: i64,
        /// When.
        at: String,
        /// By whom.
        by: String,
    },
}

/// A hold just placed, and how many live files it covers now.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The hold.
    pub hold: Hold,
    /// Files not yet removed that it covers.
    pub live_files: i64,
}

fn q(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::query(what, e)
}

/// The resource of the upload logged as `aft_index` (a POST row).
pub async fn resource_of_log_row(client: &Client, aft_index: i64) -> Result<String, HoldError> {
    client
        .query_opt(
            "SELECT filename FROM aft_log WHERE aft_index = $1 AND method = 'POST'",
            &[&aft_index],
        )
        .await
        .map_err(q("looking up a log row"))?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            HoldError::Invalid(format!(
                "no upload (POST row) has AFT_INDEX {aft_index}; `mftd log --method POST` lists them"
            ))
        })
}

/// Places a hold on `target` for `reason`, by `by`. A hold on one file
/// needs that file to be still there.
pub async fn place(
    client: &mut Client,
    target: &HoldTarget,
    reason: &str,
    by: &str,
) -> Result<Placed, HoldError> {
    let reason = required(
        reason,
        "--reason",
        "why the hold is placed (a case or matter number)",
    )?;
    let by = required(by, "--by", "who places it")?;
    let tx = client.transaction().await.map_err(q("starting a hold"))?;
    // Waits for a removal in flight; later removals see this hold.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&HOLD_LOCK])
        .await
        .map_err(q("taking the hold lock"))?;
    if target.kind == HoldKind::File {
        let live = tx
            .query_opt(
                "SELECT deleted FROM files WHERE resource = $1",
                &[&target.subject],
            )
            .await
            .map_err(q("looking up the file"))?;
        match live.map(|r| r.get::<_, Option<SystemTime>>(0)) {
            None => {
                return Err(HoldError::Invalid(format!(
                    "no file {} in the transfer log; check the name (`mftd log` shows it)",
                    target.subject
                )))
            }
            Some(Some(at)) => {
                return Err(HoldError::Invalid(format!(
                    "file {} was already removed at {}; the removals table says by whom and why",
                    target.subject,
                    rfc3339(at)
                )))
            }
            Some(None) => {}
        }
    }
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO holds (kind, subject, reason, placed_by) VALUES ($1, $2, $3, $4) \
                 RETURNING {HOLD_COLUMNS}"
            ),
            &[
                &target.kind.as_str(),
                &fit(&target.subject, JID),
                &reason,
                &by,
            ],
        )
        .await
        .map_err(q("placing a hold"))?;
    let hold = hold_row(&row);
    tx.execute(
        "INSERT INTO hold_events (hold_id, action, actor, reason) VALUES ($1, 'add', $2, $3)",
        &[&hold.id, &by, &reason],
    )
    .await
    .map_err(q("recording a hold"))?;
    let live_files: i64 = tx
        .query_one(
            "SELECT count(*) FROM files f, holds h \
             WHERE h.hold_id = $1 AND f.deleted IS NULL AND mftd_hold_covers(h, f)",
            &[&hold.id],
        )
        .await
        .map_err(q("counting the files a hold covers"))?
        .get(0);
    tx.commit().await.map_err(q("committing a hold"))?;
    Ok(Placed { hold, live_files })
}

/// Releases hold `id` for `reason`, by `by`: the hold row records the
/// release and one `remove` event joins its history.
pub async fn release(
    client: &mut Client,
    id: i64,
    reason: &str,
    by: &str,
) -> Result<Hold, HoldError> {
    let reason = required(reason, "--reason", "why the hold is lifted")?;
    let by = required(by, "--by", "who lifts it")?;
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a release"))?;
    let current = tx
        .query_opt(
            &format!("SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .map_err(q("looking up a hold"))?
        .map(|r| hold_row(&r))
        .ok_or(HoldError::NoSuchHold(id))?;
    if let (Some(at), Some(by)) = (current.released_at, current.released_by) {
        return Err(HoldError::AlreadyReleased { id, at, by });
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE holds SET released_at = now(), released_by = $2, release_reason = $3 \
                 WHERE hold_id = $1 RETURNING {HOLD_COLUMNS}"
            ),
            &[&id, &by, &reason],
        )
        .await
        .map_err(q("releasing a hold"))?;
    tx.execute(
        "INSERT INTO hold_events (hold_id, action, actor, reason) VALUES ($1, 'remove', $2, $3)",
        &[&id, &by, &reason],
    )
    .await
    .map_err(q("recording a release"))?;
    tx.commit().await.map_err(q("committing a release"))?;
    Ok(hold_row(&row))
}

fn required(value: &str, flag: &str, what: &str) -> Result<String, HoldError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(HoldError::Invalid(format!(
            "{flag} must say {what}; it is kept in the hold's history"
        )));
    }
    Ok(fit(value, if flag == "--by" { JID } else { NOTE }))
}

/// The holds in force (and the released ones too with `all`), oldest first.
pub async fn list(client: &Client, all: bool) -> Result<Vec<Hold>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {HOLD_COLUMNS} FROM holds WHERE $1 OR released_at IS NULL ORDER BY hold_id"
            ),
            &[&all],
        )
        .await
        .map_err(q("listing holds"))?;
    Ok(rows.iter().map(hold_row).collect())
}

/// The history of every hold, or of one.
pub async fn history(client: &Client, id: Option<i64>) -> Result<Vec<HoldEvent>, DbError> {
    let rows = client
        .query(
            "SELECT e.event_id, e.at, e.action, e.hold_id, h.kind, h.subject, e.actor, e.reason, \
             e.db_user FROM hold_events e JOIN holds h USING (hold_id) \
             WHERE $1::BIGINT IS NULL OR e.hold_id = $1 ORDER BY e.event_id",
            &[&id],
        )
        .await
        .map_err(q("reading hold history"))?;
    Ok(rows
        .iter()
        .map(|r| HoldEvent {
            event_id: r.get(0),
            at: rfc3339(r.get(1)),
            action: r.get(2),
            hold_id: r.get(3),
            kind: r.get(4),
            subject: r.get(5),
            actor: r.get(6),
            reason: r.get(7),
            db_user: r.get(8),
        })
        .collect())
}

/// The holds in force on one file.
pub async fn on_file(client: &Client, resource: &str) -> Result<Vec<Hold>, DbError> {
    let rows = client
        .query(
            &format!("SELECT {HOLD_COLUMNS} FROM mftd_file_holds($1)"),
            &[&resource],
        )
        .await
        .map_err(q("reading a file's holds"))?;
    Ok(rows.iter().map(hold_row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_and_normalised() {
        assert_eq!(
            HoldTarget::user("Alice@Example.TEST/phone")
                .expect("user")
                .subject(),
            "alice@example.test"
        );
        assert_eq!(
            HoldTarget::room("Hall@Rooms.example.test")
                .expect("room")
                .to_string(),
            "room hall@rooms.example.test"
        );
        assert!(HoldTarget::user("a@b@c").is_err());
        for domain in [
            "example.test",
            "Example.TEST/phone",
            "example.test/alice@example.test",
            "@example.test",
            "",
        ] {
            assert!(HoldTarget::user(domain).is_err(), "{domain:?}");
            assert!(HoldTarget::room(domain).is_err(), "{domain:?}");
        }
        let res = "20261126-08-im-AAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(HoldTarget::file(res).expect("resource").subject(), res);
        let url = format!("https://up.example.test/base/{res}/a%20b.txt");
        assert_eq!(HoldTarget::file(&url).expect("url").subject(), res);
        assert!(HoldTarget::file("https://up.example.test/nothing/here").is_err());
        let digest = "AB".repeat(32);
        assert_eq!(
            HoldTarget::sha256(&digest).expect("hex").subject(),
            "ab".repeat(32)
        );
        assert!(HoldTarget::sha256("abc").is_err());
        assert!(HoldTarget::sha256(&"zz".repeat(32)).is_err());
    }
}
