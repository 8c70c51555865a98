//! The node's health as the admin listener reports it: a sampler checks the
//! file server (and its free space) and the transfer log on a fixed
//! interval, never per request, and stores the results in the metrics
//! gauges; readiness is read back from those same gauges, so `/readyz`,
//! `/metrics` and the status page cannot disagree.

use std::time::Duration;

use mft_metrics::metrics;
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;
use tokio::sync::watch;

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

/// Why the node is not ready, or `None` when it is: the XMPP link must be
/// up, the file server reachable and, when configured, the transfer log
/// able to commit.
pub fn not_ready() -> Option<Vec<&'static str>> {
    let m = metrics();
    let mut down = Vec::new();
    if m.link_up.get() != 1 {
        down.push("XMPP link down");
    }
    if m.file_server_up.get() != 1 {
        down.push("file server unreachable");
    }
    if m.log_configured.get() == 1 && m.log_up.get() != 1 {
        down.push("transfer log cannot commit");
    }
    (!down.is_empty()).then_some(down)
}
