//! A per-user limit on slot requests: a token bucket per bare JID
//! (`[limits] slots_per_minute`, `slot_burst`). A user who asks for
//! thousands of slots at once gets `wait` with a retry stamp instead of
//! filling hour directories with slots they never use. With a transfer
//! log the same bucket is also kept in PostgreSQL for the whole service
//! (`TransferLog::take_slot_token`), so N nodes do not give N times the
//! rate; this in-memory one stays as the first, free gate on each node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before idle (full) ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Slot requests allowed per user.
#[derive(Debug)]
pub struct SlotRateLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl SlotRateLimiter {
    /// `per_minute` requests a minute on average, `burst` at once; a
    /// `per_minute` of 0 turns the limit off.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        SlotRateLimiter {
            per_minute,
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Requests a minute on average (0: no limit) and at once.
    pub fn limits(&self) -> (u32, u32) {
        (self.per_minute, self.burst)
    }

    /// Takes one request for `who`; `Err(wait)` when they must wait first.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        self.take_at(who, Instant::now())
    }

    fn take_at(&self, who: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_minute) / 60.0;
        let burst = f64::from(self.burst);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(who) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(who.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_average_rate() {
        let limiter = SlotRateLimiter::new(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at("a@x", t0).is_ok());
        }
        let wait = limiter.take_at("a@x", t0).expect_err("burst used");
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        // Someone else is not affected.
        assert!(limiter.take_at("b@x", t0).is_ok());
        // One second later one more request fits.
        assert!(limiter.take_at("a@x", t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.take_at("a@x", t0 + Duration::from_secs(1)).is_err());
        assert!(SlotRateLimiter::new(0, 1).take_at("a@x", t0).is_ok());
    }
}
