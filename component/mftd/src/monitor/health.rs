//! The node's health as the admin listener reports it: a sampler checks the
//! file server (and its free space) and the transfer log on a fixed
//! interval, never per request, and stores the results in the metrics
//! gauges; readiness is read back from those same gauges, so `/readyz`,
//! `/metrics` and the status page cannot disagree. Readiness means "this
//! node can serve HTTP transfers"; the XMPP link is reported beside it
//! (`crate::node_state::link`) and never makes a node unready, so a standby
//! serves.

use std::time::Duration;

use mft_metrics::metrics;
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;
use tokio::sync::watch;

use crate::node_state::{link, Link};

/// What is sampled and how often.
#[derive(Clone)]
pub struct Sampler {
    /// The node's store.
    pub store: Store,
    /// The transfer log, when configured.
    pub log: Option<TransferLog>,
    /// Between samples.
    pub every: Duration,
}

impl Sampler {
    /// Samples until shutdown; the first sample is taken at once.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        metrics().log_configured.set(i64::from(self.log.is_some()));
        loop {
            self.sample().await;
            tokio::select! {
                () = tokio::time::sleep(self.every) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One round of checks; each bounded so a hung peer counts as down.
    pub async fn sample(&self) {
        let m = metrics();
        let limit = self.every.max(Duration::from_secs(5));
        let store_up = matches!(
            tokio::time::timeout(limit, self.store.health_check()).await,
            Ok(Ok(()))
        );
        m.file_server_up.set(i64::from(store_up));
        if store_up {
            if let Ok(Ok(Some(space))) = tokio::time::timeout(limit, self.store.free_space()).await
            {
                m.file_server_free_bytes
                    .set(i64::try_from(space.available).unwrap_or(i64::MAX));
                m.file_server_free_ratio.set(space.percent_free() / 100.0);
            }
        }
        if let Some(log) = &self.log {
            let up = log.is_available()
                && matches!(tokio::time::timeout(limit, log.ping()).await, Ok(Ok(())));
            m.log_up.set(i64::from(up));
        }
    }
}

/// Refreshes the gauges that are cheap to read live, just before a scrape.
pub fn refresh_live(log: Option<&TransferLog>) {
    if let Some(log) = log {
        metrics()
            .log_queue_depth
            .set(i64::try_from(log.queue_depth()).unwrap_or(i64::MAX));
    }
}

/// Why this node cannot serve HTTP transfers, or `None` when it can: the
/// HTTP endpoint is accepting, the file server is reachable and, when
/// configured, the transfer log can commit. The XMPP link is not part of
/// it: a node without the link (a standby under a Prosody component JID
/// another node holds, or while the router restarts) still serves every
/// download and the PUT of every slot signed with a key it holds; see
/// [`crate::node_state::link`] for the link.
pub fn not_ready() -> Option<Vec<&'static str>> {
    let m = metrics();
    let mut down = why_not_ready(
        crate::node_state::http_serving(),
        m.file_server_up.get() == 1,
        m.log_configured.get() == 1,
        m.log_up.get() == 1,
    )
    .unwrap_or_default();
    if super::scanner::blocks_uploads() {
        down.push("malware scanner unreachable (scan.fail = closed)");
    }
    (!down.is_empty()).then_some(down)
}

fn why_not_ready(
    http: bool,
    file_server: bool,
    log_configured: bool,
    log_up: bool,
) -> Option<Vec<&'static str>> {
    let mut down = Vec::new();
    if !http {
        down.push("HTTP endpoint not accepting");
    }
    if !file_server {
        down.push("file server unreachable");
    }
    if log_configured && !log_up {
        down.push("transfer log cannot commit");
    }
    (!down.is_empty()).then_some(down)
}

// `readyz` and `readyz_xmpp` are the admin router's answers
// (monitor/mod.rs); kept here, with readiness, so the two cannot drift.

/// `/readyz`: `true` (200) while this node can serve HTTP transfers
/// ([`not_ready`]); the body's first line is `ready` or `not ready: …`,
/// the second `xmpp: ` and the link state, which never changes the status.
pub fn readyz() -> (bool, String) {
    let (ok, mut body) = readyz_body(not_ready(), link());
    if let Some(scanner) = super::scanner::state() {
        body.push_str(&format!("scan: {}\n", super::scanner::describe(&scanner)));
    }
    (ok, body)
}

fn readyz_body(not_ready: Option<Vec<&'static str>>, link: Link) -> (bool, String) {
    let first = match &not_ready {
        None => "ready".to_owned(),
        Some(why) => format!("not ready: {}", why.join("; ")),
    };
    (
        not_ready.is_none(),
        format!("{first}\nxmpp: {}\n", link.describe()),
    )
}

/// `/readyz/xmpp`: `true` (200) while this node holds the component link,
/// for a check that wants the active node; the body names the state.
pub fn readyz_xmpp() -> (bool, String) {
    let link = link();
    (link == Link::Active, format!("xmpp: {}\n", link.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_about_http_transfers_and_never_the_link() {
        assert_eq!(why_not_ready(true, true, true, true), None);
        assert_eq!(why_not_ready(true, true, false, false), None);
        assert_eq!(
            why_not_ready(true, false, true, false),
            Some(vec![
                "file server unreachable",
                "transfer log cannot commit"
            ])
        );
        assert_eq!(
            why_not_ready(false, true, false, false),
            Some(vec!["HTTP endpoint not accepting"])
        );
    }

    #[test]
    fn readyz_names_the_link_on_its_own_line_and_a_standby_is_ready() {
        let (ok, body) = readyz_body(None, Link::Standby);
        assert!(ok);
        assert!(body.starts_with("ready\nxmpp: standby ("), "{body}");
        let (ok, body) = readyz_body(Some(vec!["file server unreachable"]), Link::Active);
        assert!(!ok);
        assert_eq!(
            body.lines().collect::<Vec<_>>(),
            [
                "not ready: file server unreachable",
                "xmpp: active (component link held; answering slot requests)"
            ]
        );
    }
}
