//! Sessions of multi-step commands (XEP-0050 `sessionid`): which command,
//! which stage, what was chosen so far, whose it is, and until when. A
//! session belongs to the full JID that started it; anyone else naming it
//! gets `bad-sessionid`, as does a session already finished (replayed) or
//! never issued. Sessions expire after the configured timeout (then
//! `session-expired`), and their number is bounded per user and in all, so
//! nobody can grow the table without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Unfinished sessions one user (bare JID) may hold.
pub const MAX_PER_USER: usize = 8;
/// Unfinished sessions in all.
pub const MAX_TOTAL: usize = 4096;

/// How long an expired session is remembered, to answer `session-expired`
/// rather than `bad-sessionid`.
const REMEMBER_EXPIRED: Duration = Duration::from_secs(3600);

/// What a session has gathered so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The full JID that started it.
    pub owner: String,
    /// Its bare JID (for the per-user bound).
    pub owner_bare: String,
    /// The command node.
    pub node: String,
    /// The stage reached (0: the first form).
    pub stage: u8,
    /// A choice made at an earlier stage (the holds command's action).
    pub choice: Option<String>,
    /// The actions this stage takes; the first is the default.
    pub actions: &'static [&'static str],
}

struct Entry {
    session: Session,
    expires: Instant,
}

/// Why a session cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No such session for this requester and node (never issued, finished,
    /// or someone else's).
    Unknown,
    /// It was this requester's but timed out.
    Expired,
}

/// The session table.
pub struct Sessions {
    timeout: Duration,
    live: Mutex<HashMap<String, Entry>>,
}

/// Full: too many sessions for this user or in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Sessions {
    /// An empty table whose sessions live `timeout` after their last step.
    pub fn new(timeout: Duration) -> Sessions {
        Sessions {
            timeout,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops sessions expired long enough ago that even `session-expired`
    /// is no longer owed.
    fn sweep(table: &mut HashMap<String, Entry>, now: Instant) {
        table.retain(|_, e| e.expires + REMEMBER_EXPIRED > now);
    }

    /// Stores `session` under a new random id.
    pub fn open(&self, session: Session) -> Result<String, Full> {
        let now = Instant::now();
        let mut table = self.table();
        Self::sweep(&mut table, now);
        let live = table.values().filter(|e| e.expires > now);
        let (mine, all) = live.fold((0, 0), |(m, a), e| {
            (
                m + usize::from(e.session.owner_bare == session.owner_bare),
                a + 1,
            )
        });
        if mine >= MAX_PER_USER || all >= MAX_TOTAL || table.len() >= 2 * MAX_TOTAL {
            return Err(Full);
        }
        let id = new_id();
        table.insert(
            id.clone(),
            Entry {
                session,
                expires: now + self.timeout,
            },
        );
        Ok(id)
    }

    /// The session `id` of `owner` for `node`, taken out of the table (the
    /// caller puts it back with [`Sessions::keep`] if it goes on).
    pub fn take(&self, id: &str, owner: &str, node: &str) -> Result<Session, Lookup> {
        let now = Instant::now();
        let mut table = self.table();
        let Some(entry) = table.get(id) else {
            return Err(Lookup::Unknown);
        };
        if entry.session.owner != owner || entry.session.node != node {
            return Err(Lookup::Unknown);
        }
        if entry.expires <= now {
            table.remove(id);
            return Err(Lookup::Expired);
        }
        table.remove(id).map(|e| e.session).ok_or(Lookup::Unknown)
    }

    /// Puts a session that goes on back under its id, with a fresh timeout.
    pub fn keep(&self, id: &str, session: Session) {
        self.table().insert(
            id.to_owned(),
            Entry {
                session,
                expires: Instant::now() + self.timeout,
            },
        );
    }

    /// Unfinished sessions (for tests and metrics).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.table().values().filter(|e| e.expires > now).count()
    }

    /// True when no session is unfinished.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 128 random bits, hex: not guessable, so naming another's session is
/// not a way in even before the owner check.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // getrandom only fails when the OS has no entropy source at all.
    getrandom::getrandom(&mut b).expect("the operating system's random source failed");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(owner: &str) -> Session {
        Session {
            owner: owner.into(),
            owner_bare: owner.split('/').next().unwrap_or(owner).into(),
            node: "n".into(),
            stage: 0,
            choice: None,
            actions: &["complete"],
        }
    }

    #[test]
    fn a_session_is_its_owners_for_its_node_and_used_once() {
        let s = Sessions::new(Duration::from_secs(60));
        let id = s.open(session("a@x/1")).expect("open");
        assert_eq!(
            s.take(&id, "b@x/1", "n"),
            Err(Lookup::Unknown),
            "someone else"
        );
        assert_eq!(
            s.take(&id, "a@x/2", "n"),
            Err(Lookup::Unknown),
            "another device"
        );
        assert_eq!(
            s.take(&id, "a@x/1", "m"),
            Err(Lookup::Unknown),
            "another node"
        );
        let taken = s.take(&id, "a@x/1", "n").expect("owner");
        assert_eq!(s.take(&id, "a@x/1", "n"), Err(Lookup::Unknown), "replayed");
        s.keep(&id, taken);
        assert!(s.take(&id, "a@x/1", "n").is_ok(), "kept for the next step");
    }

    #[test]
    fn sessions_expire_and_are_bounded_per_user() {
        let s = Sessions::new(Duration::ZERO);
        let id = s.open(session("a@x/1")).expect("open");
        assert_eq!(s.take(&id, "a@x/1", "n"), Err(Lookup::Expired));
        let s = Sessions::new(Duration::from_secs(60));
        for _ in 0..MAX_PER_USER {
            s.open(session("a@x/1")).expect("within the bound");
        }
        assert_eq!(s.open(session("a@x/2")), Err(Full));
        assert!(s.open(session("b@x/1")).is_ok(), "others unaffected");
    }
}
