//! How fast operator commands read stored files: one average rate over a
//! whole run, shared by the re-hash and the rescan of `mftd verify`.

use std::time::{Duration, Instant};

/// Reading stored files at most `--max-rate` bytes a second, averaged
/// over the whole run: the re-hash and the rescan share one.
pub struct Pace {
    max_rate: u64,
    started: Instant,
    read: u64,
}

impl Pace {
    /// At most `max_rate` bytes a second (0: no limit), from now.
    pub fn new(max_rate: u64) -> Pace {
        Pace {
            max_rate,
            started: Instant::now(),
            read: 0,
        }
    }

    /// Counts `n` bytes read, then waits until the average is back under
    /// the rate.
    pub async fn read(&mut self, n: usize) {
        self.read += n as u64;
        if self.max_rate > 0 {
            let due = Duration::from_secs_f64(self.read as f64 / self.max_rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}
