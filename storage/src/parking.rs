//! Where a transfer's open file (and the file-server session under it)
//! waits between pieces, and how a transfer whose client went quiet gives
//! that session back.
//!
//! On the SFTP store each open file holds an SSH session: about 80 KiB of
//! libssh2 state in mftd and an sshd process on the file server. A client
//! that stops reading or sending would hold both for as long as its
//! connection lasts — 1024 stalled transfers, 1024 sessions. Left idle for
//! [`PARK_AFTER`] (less while memory is short), the file is put away (an upload's writes in flight are
//! acknowledged first) and its session returns to the pool; the transfer
//! reopens the file at its offset when its client moves again. Backends
//! whose files hold no connection keep theirs open.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::budget::Budget;
use crate::StoreError;

/// How long a transfer's file may sit unused before it is put away.
pub const PARK_AFTER: Duration = Duration::from_secs(2);

/// The same while the memory budget is under pressure: many transfers are
/// open and their pieces are small (64 KiB, a quarter second's worth at
/// 256 KB/s), so a file idle this long belongs to a client that stopped,
/// and a burst of them should not hold a burst of sessions.
pub const PARK_UNDER_PRESSURE: Duration = Duration::from_millis(250);

/// A transfer's open file between pieces; clones share it.
pub(crate) struct Parking<T: Send + 'static> {
    slot: Arc<Mutex<Slot<T>>>,
    /// Puts an idle file away (`None`: files stay open however long idle).
    park: Option<fn(T) -> Result<(), StoreError>>,
    /// How long a file may sit idle first ([`PARK_AFTER`]).
    after: Duration,
    /// Whose pressure shortens that to [`PARK_UNDER_PRESSURE`].
    budget: Option<Budget>,
}

impl<T: Send + 'static> Clone for Parking<T> {
    fn clone(&self) -> Self {
        Parking {
            slot: self.slot.clone(),
            park: self.park,
            after: self.after,
            budget: self.budget.clone(),
        }
    }
}

struct Slot<T> {
    held: Option<T>,
    /// Counts every leave and take: a timer acts only on the leave that
    /// armed it.
    turn: u64,
    /// Putting the file away failed (an upload's writes in flight were not
    /// acknowledged): the transfer cannot go on.
    failed: Option<StoreError>,
}

impl<T: Send + 'static> Parking<T> {
    /// An empty place; with `park`, files left idle are put away with it.
    pub(crate) fn new(park: Option<fn(T) -> Result<(), StoreError>>) -> Self {
        Parking {
            slot: Arc::new(Mutex::new(Slot {
                held: None,
                turn: 0,
                failed: None,
            })),
            park,
            after: PARK_AFTER,
            budget: None,
        }
    }

    /// Puts files away sooner while `budget` is under pressure.
    pub(crate) fn watching(self, budget: &Budget) -> Self {
        Parking {
            budget: Some(budget.clone()),
            ..self
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves the file here after a piece; unless taken within
    /// [`PARK_AFTER`] ([`PARK_UNDER_PRESSURE`] while the budget is), it is
    /// put away on a blocking thread.
    pub(crate) fn leave(&self, value: T) {
        let turn = {
            let mut slot = self.lock();
            slot.turn += 1;
            slot.held = Some(value);
            slot.turn
        };
        let Some(park) = self.park else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let after = match &self.budget {
            Some(budget) if budget.under_pressure() => PARK_UNDER_PRESSURE.min(self.after),
            _ => self.after,
        };
        let weak = Arc::downgrade(&self.slot);
        runtime.spawn(async move {
            tokio::time::sleep(after).await;
            if weak.strong_count() == 0 {
                return;
            }
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(slot) = weak.upgrade() {
                    put_away_if_idle(&slot, turn, park);
                }
            })
            .await;
        });
    }

    /// For a blocking call: the file left here, or — when it was put away
    /// — a fresh one from `reopen`; the error that putting it away met, if
    /// it failed. Waits for a put-away in progress.
    pub(crate) fn take_or_reopen(
        &self,
        reopen: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.lock();
        slot.turn += 1;
        if let Some(e) = slot.failed.take() {
            return Err(e);
        }
        match slot.held.take() {
            Some(value) => Ok(value),
            None => {
                drop(slot);
                reopen()
            }
        }
    }

    /// For a blocking call: the file left here, if it is (not put away).
    pub(crate) fn take_held(&self) -> Option<T> {
        let mut slot = self.lock();
        slot.turn += 1;
        slot.held.take()
    }
}

/// Puts the file away if it is still the one left at `turn`. The slot
/// stays locked meanwhile, so a transfer that moves again waits for it.
fn put_away_if_idle<T>(slot: &Mutex<Slot<T>>, turn: u64, park: fn(T) -> Result<(), StoreError>) {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if slot.turn != turn {
        return;
    }
    if let Some(value) = slot.held.take() {
        if let Err(e) = park(value) {
            slot.failed = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The last value put away by `record`.
    static PUT_AWAY: AtomicU32 = AtomicU32::new(0);

    fn record(value: u32) -> Result<(), StoreError> {
        PUT_AWAY.store(value, Ordering::SeqCst);
        Ok(())
    }

    fn close(_: u32) -> Result<(), StoreError> {
        Ok(())
    }

    fn refuse(_: u32) -> Result<(), StoreError> {
        Err(StoreError::unavailable("writes in flight were lost"))
    }

    fn quick(park: fn(u32) -> Result<(), StoreError>) -> Parking<u32> {
        Parking {
            after: Duration::from_millis(50),
            ..Parking::new(Some(park))
        }
    }

    /// Waits (really: the put-away runs on a blocking thread) for `done`.
    fn wait_for(done: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_idle_file_is_put_away_and_the_next_piece_reopens_it() {
        let parking = quick(record);
        parking.leave(7);
        assert!(wait_for(|| PUT_AWAY.load(Ordering::SeqCst) == 7));
        assert_eq!(parking.take_held(), None);
        assert_eq!(parking.take_or_reopen(|| Ok(8)).unwrap(), 8, "reopened");
    }

    #[test]
    fn a_timer_puts_away_only_the_file_left_when_it_was_armed() {
        let parking = Parking::new(Some(close as fn(u32) -> Result<(), StoreError>));
        parking.leave(1);
        let first_turn = parking.lock().turn;
        assert_eq!(parking.take_held(), Some(1));
        parking.leave(2);
        // The first leave's timer fires after the file was taken and left
        // again: it must leave the second alone.
        put_away_if_idle(&parking.slot, first_turn, close);
        assert_eq!(parking.take_held(), Some(2));
        parking.leave(3);
        let turn = parking.lock().turn;
        put_away_if_idle(&parking.slot, turn, close);
        assert_eq!(parking.take_held(), None, "put away");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_failed_put_away_fails_the_transfer() {
        let parking = quick(refuse);
        parking.leave(1);
        assert!(wait_for(|| parking.lock().failed.is_some()));
        assert!(parking.take_or_reopen(|| Ok(2)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn under_memory_pressure_idle_files_are_put_away_sooner() {
        let budget = Budget::new(2 * crate::budget::UNIT as u64);
        let _held = budget.try_take(2 * crate::budget::UNIT).unwrap();
        assert!(budget.under_pressure());
        let parking = Parking {
            after: Duration::from_secs(30),
            ..Parking::new(Some(close as fn(u32) -> Result<(), StoreError>))
        }
        .watching(&budget);
        parking.leave(5);
        let parking_in_test = parking.clone();
        let put_away =
            tokio::task::spawn_blocking(move || wait_for(|| parking_in_test.lock().held.is_none()));
        assert!(put_away.await.unwrap(), "still held long after 250 ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn without_a_way_to_put_away_files_stay() {
        let parking: Parking<u32> = Parking {
            after: Duration::from_millis(50),
            ..Parking::new(None)
        };
        parking.leave(7);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(parking.take_held(), Some(7));
    }
}
