//! Watches free space on the file server: a warning in the log when it drops
//! below `alarm_free_percent`, and slots refused (`wait`) while less than
//! `min_free_bytes` is left, until space returns. Measured every
//! `[admin] check_interval`, and at once when an upload ran out of space.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mft_storage::Store;
use tokio::sync::watch;

/// Shared "too little space" flag.
#[derive(Clone, Default)]
pub struct SpaceGuard {
    low: Arc<AtomicBool>,
}

impl SpaceGuard {
    /// True while new uploads must wait for space.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Measures once and updates the flag; logs transitions.
    pub async fn check(
        &self,
        store: &Store,
        alarm_percent: f64,
        min_free: u64,
        alarmed: &mut bool,
    ) {
        let Ok(Some(space)) = store.free_space().await else {
            return;
        };
        let pct = space.percent_free();
        if pct < alarm_percent && !*alarmed {
            tracing::warn!(
                free_percent = pct,
                available = space.available,
                "file server free space below the alarm threshold"
            );
        } else if pct >= alarm_percent && *alarmed {
            tracing::info!(
                free_percent = pct,
                "file server free space back above the alarm threshold"
            );
        }
        *alarmed = pct < alarm_percent;
        let low = space.available < min_free;
        if low != self.low.swap(low, Ordering::Relaxed) {
            if low {
                tracing::error!(
                    available = space.available,
                    min_free,
                    "file server nearly full: refusing new uploads until space returns"
                );
            } else {
                tracing::info!(
                    available = space.available,
                    "file server has space again: accepting uploads"
                );
            }
        }
    }

    /// Checks every `every`, and as soon as an upload ran out of space,
    /// until shutdown.
    pub async fn watch(
        self,
        store: Store,
        alarm_percent: f64,
        min_free: u64,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut alarmed = false;
        loop {
            self.check(&store, alarm_percent, min_free, &mut alarmed)
                .await;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = store.ran_out_of_space() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
