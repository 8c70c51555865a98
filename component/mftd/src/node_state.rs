//! What this node is doing, as the service manager, readiness and the
//! status page all read it: whether the public HTTP endpoint's accept loop
//! runs, and the state of the XMPP component link (from the same gauges
//! `/metrics` exports). A leaf: it imports nothing of the program.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the public HTTP endpoint's accept loop is (set by `app::run`).
const HTTP_NOT_STARTED: u8 = 0;
const HTTP_SERVING: u8 = 1;
const HTTP_ENDED: u8 = 2;
static HTTP_STATE: AtomicU8 = AtomicU8::new(HTTP_NOT_STARTED);

/// The public HTTP endpoint's accept loop started (true) or returned
/// (false). Only `app::run` calls this.
pub fn set_http_serving(serving: bool) {
    HTTP_STATE.store(
        if serving { HTTP_SERVING } else { HTTP_ENDED },
        Ordering::SeqCst,
    );
}

/// True while the HTTP accept loop runs (part of readiness).
pub fn http_serving() -> bool {
    HTTP_STATE.load(Ordering::SeqCst) == HTTP_SERVING
}

/// False once the HTTP accept loop has returned (an error, or shutdown);
/// true before it starts and while it runs. The watchdog stops pinging
/// when this turns false outside a shutdown.
pub fn http_alive() -> bool {
    HTTP_STATE.load(Ordering::SeqCst) != HTTP_ENDED
}

/// The XMPP component link as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The component stream is authenticated: this node answers slot
    /// requests.
    Active,
    /// Not connected, and no attempt has failed yet (at start).
    Connecting,
    /// Not connected after at least one failed attempt, still retrying:
    /// another node holds the component JID (Prosody answers `conflict`;
    /// the log says "another connection holds this component JID") or the
    /// router is away. mftd's metrics do not tell the two apart; the
    /// service as a whole is down only when no node is active.
    Standby,
}

impl Link {
    /// One line for `/readyz`, `STATUS=` and the status page.
    pub fn describe(self) -> &'static str {
        match self {
            Link::Active => "active (component link held; answering slot requests)",
            Link::Connecting => "connecting (reaching the router)",
            Link::Standby => {
                "standby (component link not held: another node holds the component JID, or the router is away; retrying)"
            }
        }
    }

    /// The first word: `active`, `connecting` or `standby`.
    pub fn word(self) -> &'static str {
        match self {
            Link::Active => "active",
            Link::Connecting => "connecting",
            Link::Standby => "standby",
        }
    }
}

/// The link state, from the same gauges `/metrics` exports.
pub fn link() -> Link {
    let m = mft_metrics::metrics();
    link_from(m.link_up.get() == 1, m.link_failures.get() > 0)
}

fn link_from(up: bool, retried: bool) -> Link {
    match (up, retried) {
        (true, _) => Link::Active,
        (false, false) => Link::Connecting,
        (false, true) => Link::Standby,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_failed_to_connect_is_a_standby() {
        assert_eq!(link_from(true, true), Link::Active);
        assert_eq!(link_from(true, false), Link::Active);
        assert_eq!(link_from(false, false), Link::Connecting);
        assert_eq!(link_from(false, true), Link::Standby);
    }
}
