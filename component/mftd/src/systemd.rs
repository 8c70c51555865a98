//! systemd integration without a library: the `sd_notify` protocol is one
//! datagram of `KEY=value` lines to the socket in `$NOTIFY_SOCKET` (a path,
//! or an abstract name after `@`). mftd says `READY=1` once it can serve
//! HTTP transfers (HTTP endpoint accepting, file server reachable,
//! transfer log committing — the same test as `/readyz`); the XMPP link is
//! not waited for, only named in `STATUS=` (`serving: …` on the node that
//! holds it, `standby (…)` on one that does not). It keeps `STATUS=`
//! current, says `RELOADING=1` / `STOPPING=1` around a reload and a stop,
//! and, when systemd set `WATCHDOG_USEC`, sends `WATCHDOG=1` at half that
//! interval from a runtime task that stops when the HTTP endpoint does.
//! Outside systemd nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::node_state::{http_alive, link, Link};

/// Sends `state` to the service manager; false when not run by one.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sender) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket.as_os_str());
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| sender.send_to_addr(state.as_bytes(), &addr))
        }
        None => sender.send_to(state.as_bytes(), &socket),
    };
    sent.is_ok()
}

/// Set once `READY=1` went out.
static READY_SENT: AtomicBool = AtomicBool::new(false);

/// How long readiness waits for the first link attempt before saying
/// `READY=1` as a standby: an active node's first datagram then says
/// `serving`, a standby's `standby` (its first refusal ends the wait early).
const LINK_GRACE: Duration = Duration::from_secs(5);

/// After a reload: `READY=1` again, but only if start-up had finished (a
/// reload before that must not end systemd's start-up wait).
pub fn reloaded() {
    if READY_SENT.load(Ordering::SeqCst) {
        notify("READY=1");
    }
}

/// `STATUS=` for the node's state: `serving: …` with the link,
/// `standby (…)` serving HTTP without it, `waiting: …` while it cannot
/// serve HTTP transfers.
fn status(not_ready: Option<&[&str]>, link: Link) -> String {
    match (not_ready, link) {
        (Some(why), link) => format!("waiting: {}; XMPP link {}", why.join("; "), link.word()),
        (None, Link::Standby) => format!("{}; serving HTTP transfers", link.describe()),
        (None, link) => format!("serving: HTTP transfers; XMPP link {}", link.describe()),
    }
}

/// Whether to say `READY=1` now: HTTP transfers can be served, and the
/// link is settled (held, or refused at least once) or had its grace.
fn ready_now(not_ready: bool, link: Link, waited: Duration) -> bool {
    !not_ready && (link != Link::Connecting || waited >= LINK_GRACE)
}

/// Tells the service manager when mftd becomes ready and, afterwards, what
/// it is doing whenever that changes; `STOPPING=1` at shutdown.
pub async fn report_readiness(mut stop: watch::Receiver<bool>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let started = Instant::now();
    let mut last: Option<String> = None;
    loop {
        let not_ready = crate::monitor::not_ready();
        let link = link();
        let status = status(not_ready.as_deref(), link);
        let ready = !READY_SENT.load(Ordering::SeqCst)
            && ready_now(not_ready.is_some(), link, started.elapsed());
        if ready || (READY_SENT.load(Ordering::SeqCst) && last.as_deref() != Some(&status)) {
            let ready_line = if ready { "READY=1\n" } else { "" };
            notify(&format!("{ready_line}STATUS={status}"));
            if ready {
                READY_SENT.store(true, Ordering::SeqCst);
            }
            last = Some(status);
        } else if last.as_deref() != Some(&status) {
            notify(&format!("STATUS={status}"));
            last = Some(status);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => {
                notify("STOPPING=1\nSTATUS=stopping: finishing transfers in flight");
                return;
            }
        }
    }
}

/// Half the watchdog timeout systemd gave this process (`WATCHDOG_USEC`,
/// and `WATCHDOG_PID` when set must be ours), as `sd_watchdog_enabled`
/// reads it; `None` without a watchdog.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Pings systemd's watchdog (`WatchdogSec=` in the unit) every half
/// timeout. It runs as a task on the same runtime as everything else, so
/// a runtime that stops scheduling stops the pings and systemd restarts
/// mftd; and it stops pinging when the HTTP endpoint's accept loop has
/// returned outside a shutdown (mftd would otherwise linger without
/// serving). Runs until the process exits: the pings continue while a
/// shutdown waits for transfers in flight.
pub async fn keep_watchdog(stop: watch::Receiver<bool>) {
    let every = watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    );
    let Some(every) = every.filter(|_| std::env::var_os("NOTIFY_SOCKET").is_some()) else {
        return;
    };
    tracing::info!(
        every_ms = every.as_millis() as u64,
        "systemd watchdog: pinging"
    );
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut silent = false;
    loop {
        ticker.tick().await;
        if http_alive() || *stop.borrow() {
            notify("WATCHDOG=1");
        } else if !silent {
            silent = true;
            tracing::error!(
                "the HTTP endpoint stopped outside a shutdown: no more watchdog pings, systemd restarts mftd"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process_only() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn ready_waits_for_http_and_briefly_for_the_first_link_attempt() {
        let now = Duration::ZERO;
        assert!(ready_now(false, Link::Active, now));
        assert!(ready_now(false, Link::Standby, now));
        assert!(!ready_now(false, Link::Connecting, now));
        assert!(ready_now(false, Link::Connecting, LINK_GRACE));
        assert!(!ready_now(true, Link::Active, LINK_GRACE * 10));
    }

    #[test]
    fn status_says_serving_with_the_link_and_standby_without() {
        assert!(status(None, Link::Active).starts_with("serving: HTTP transfers; XMPP link active"));
        assert!(status(None, Link::Standby).starts_with("standby (component link not held"));
        assert_eq!(
            status(Some(&["file server unreachable"]), Link::Standby),
            "waiting: file server unreachable; XMPP link standby"
        );
    }
}
