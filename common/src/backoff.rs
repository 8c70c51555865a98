//! The one retry schedule for everything that reconnects — the router link,
//! the transfer log's connections, the file server: the wait doubles from a
//! minimum to a maximum with ±25 % jitter (so nodes restarted together do not
//! retry in step), and a success starts it over.

use std::time::{Duration, Instant};

/// When to try again after failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// A schedule from `min` to `max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
            retry_at: None,
        }
    }

    /// Records a failure; returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let wait = jittered(self.next);
        self.next = (self.next * 2).min(self.max);
        self.retry_at = Some(Instant::now() + wait);
        wait
    }

    /// Records a success: the next failure waits the minimum again.
    pub fn succeeded(&mut self) {
        self.next = self.min;
        self.retry_at = None;
    }

    /// How long until the next attempt is due, while one is not.
    pub fn waiting(&self) -> Option<Duration> {
        self.retry_at
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::getrandom(&mut b);
    let factor = 0.75 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) * 0.5;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        assert!(b.waiting().is_none());
        let waits: Vec<Duration> = (0..5).map(|_| b.failed()).collect();
        for (w, nominal) in waits.iter().zip([100u64, 200, 400, 400, 400]) {
            let nominal = Duration::from_millis(nominal);
            assert!(
                *w >= nominal.mul_f64(0.74) && *w <= nominal.mul_f64(1.26),
                "{waits:?}"
            );
        }
        assert!(b.waiting().is_some());
        b.succeeded();
        assert!(b.waiting().is_none());
        assert!(b.failed() <= Duration::from_millis(126));
    }
}
