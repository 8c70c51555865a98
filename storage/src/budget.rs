//! One process-wide budget for the bytes transfers hold in buffers: an
//! upload's gather buffers, the writes an SFTP upload keeps in flight
//! between pieces, and a download's pieces, from the moment they are
//! allocated until the last copy is dropped (a download's piece lives on in
//! the HTTP server's write queue until the client took it).
//!
//! The budget is counted in units of [`UNIT`] bytes. A transfer asks for a
//! full-size buffer when there is room; under pressure (less than half the
//! budget free) it makes do with one unit and reads no further ahead; when
//! not even one unit is free it waits for one — it never fails for want of
//! memory, and the buffers of all transfers together never exceed the
//! budget. Slow and stalled clients therefore cost at most the budget, not
//! their number times the read-ahead.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget's unit and the smallest buffer a transfer works with.
pub const UNIT: usize = 64 * 1024;

/// The budget when none is configured (`[http] memory_budget`): 128 MiB,
/// sized for a small VM — 512 stalled downloads and 512 stalled uploads
/// stay within it.
pub const DEFAULT_BYTES: u64 = 128 * 1024 * 1024;

/// The shared budget; clones share it.
#[derive(Clone, Debug)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: usize,
}

/// Room taken from the budget; it returns when this is dropped.
#[derive(Debug)]
pub struct Grant {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
}

impl Grant {
    fn new(permit: OwnedSemaphorePermit, units: usize) -> Grant {
        let bytes = units * UNIT;
        mft_metrics::metrics().buffer_bytes.inc_by(bytes as i64);
        Grant {
            _permit: permit,
            bytes,
        }
    }

    /// The bytes this grant covers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        mft_metrics::metrics()
            .buffer_bytes
            .dec_by(self.bytes as i64);
    }
}

fn units_for(bytes: usize) -> usize {
    bytes.div_ceil(UNIT).max(1)
}

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Budget {
        let total = usize::try_from(bytes / UNIT as u64)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            units: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The bytes the budget holds in all.
    pub fn total_bytes(&self) -> u64 {
        self.total as u64 * UNIT as u64
    }

    /// The bytes buffers hold now.
    pub fn used_bytes(&self) -> u64 {
        (self.total - self.units.available_permits().min(self.total)) as u64 * UNIT as u64
    }

    /// Less than half the budget is free: transfers take one unit at a
    /// time and read nothing ahead.
    pub fn under_pressure(&self) -> bool {
        self.units.available_permits() * 2 < self.total
    }

    /// Room for `bytes` now, if there is.
    pub fn try_take(&self, bytes: usize) -> Option<Grant> {
        let units = units_for(bytes).min(self.total);
        let permit = self
            .units
            .clone()
            .try_acquire_many_owned(units as u32)
            .ok()?;
        Some(Grant::new(permit, units))
    }

    /// Room for `bytes` when there is no pressure, one unit otherwise:
    /// what a transfer may use for its next buffer right now.
    pub fn try_take_up_to(&self, bytes: usize) -> Option<Grant> {
        if !self.under_pressure() {
            if let Some(g) = self.try_take(bytes) {
                return Some(g);
            }
        }
        self.try_take(UNIT.min(bytes))
    }

    /// One unit, waiting until one is free.
    pub async fn take_one(&self) -> Grant {
        let permit = self
            .units
            .clone()
            .acquire_owned()
            .await
            .expect("the budget's semaphore is never closed");
        mft_metrics::metrics().buffer_waits.inc();
        Grant::new(permit, 1)
    }
}

/// A buffer whose room returns to the budget when its last copy is dropped.
struct Budgeted {
    buf: Vec<u8>,
    _grant: Grant,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// Freezes `buf` into [`Bytes`] that hold `grant` as long as they live.
pub fn budgeted_bytes(buf: Vec<u8>, grant: Grant) -> Bytes {
    Bytes::from_owner(Budgeted { buf, _grant: grant })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_return_when_dropped_and_pressure_shrinks_requests() {
        let budget = Budget::new(8 * UNIT as u64);
        let big = budget.try_take_up_to(4 * UNIT).unwrap();
        assert_eq!(big.bytes(), 4 * UNIT);
        assert!(!budget.under_pressure());
        let more = budget.try_take(UNIT).unwrap();
        // 3 of 8 units free: under pressure, only one unit at a time.
        assert!(budget.under_pressure());
        assert_eq!(budget.try_take_up_to(4 * UNIT).unwrap().bytes(), UNIT);
        let bytes = budgeted_bytes(vec![1; 10], more);
        assert_eq!(budget.used_bytes(), 5 * UNIT as u64);
        let copy = bytes.slice(2..4);
        drop(bytes);
        assert_eq!(budget.used_bytes(), 5 * UNIT as u64, "a slice keeps it");
        drop(copy);
        drop(big);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[tokio::test]
    async fn a_transfer_waits_for_room_instead_of_failing() {
        let budget = Budget::new(UNIT as u64);
        let held = budget.try_take(UNIT).unwrap();
        assert!(budget.try_take_up_to(UNIT).is_none());
        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.take_one().await.bytes() });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap(), UNIT);
    }
}
