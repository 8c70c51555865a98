//! Rolling 24-hour upload quotas, per user and for the whole service.
//!
//! What counts: every upload logged in the window, plus every slot granted
//! and not yet used or expired (a *reservation*), so asking for many slots at
//! once cannot outrun the quota. The arithmetic here is pure; the transfer
//! log applies it inside one locked transaction ([`crate::transfer_log::TransferLog::reserve`]).

use std::time::{Duration, SystemTime};

/// The rolling quota window.
pub const QUOTA_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The configured limits in bytes per 24 hours; 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// One user's uploads.
    pub per_user: u64,
    /// Everyone's uploads together.
    pub global: u64,
}

impl Quotas {
    /// True when neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.per_user == 0 && self.global == 0
    }
}

/// The quotas that apply to each uploader, when they differ by user
/// (limits per group of users); a plain [`Quotas`] applies to everyone.
pub trait QuotaPolicy: Send + Sync {
    /// The quotas `uploader` counts against: the JID a slot was granted to
    /// (full or bare; normalised by the implementation).
    fn quotas_for(&self, uploader: &str) -> Quotas;
}

impl QuotaPolicy for Quotas {
    fn quotas_for(&self, _uploader: &str) -> Quotas {
        *self
    }
}

/// Which limit refused an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    /// The uploader's own quota.
    User,
    /// The service-wide quota.
    Global,
}

/// The verdict on one more upload, with the limit that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaVerdict {
    /// It fits (and is now reserved).
    Fits,
    /// Refused by `scope`'s limit of `quota` bytes.
    Refused {
        /// Which limit.
        scope: QuotaScope,
        /// Its size in bytes.
        quota: u64,
        /// When it would fit, or `Never`.
        answer: QuotaAnswer,
    },
}

/// What a quota says about one more upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaAnswer {
    /// It fits.
    Fits,
    /// It fits once enough of the window has passed: at this time.
    RetryAt(SystemTime),
    /// It can never fit: larger than the whole quota.
    Never,
}

/// Decides whether `size` more bytes fit in `quota` given the uploads in the
/// window (`(time, bytes)`, oldest first) at time `now`.
pub fn check_quota(
    quota: u64,
    uploads: &[(SystemTime, i64)],
    size: u64,
    now: SystemTime,
) -> QuotaAnswer {
    if size > quota {
        return QuotaAnswer::Never;
    }
    let window_start = now
        .checked_sub(QUOTA_WINDOW)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let live: Vec<(SystemTime, u64)> = uploads
        .iter()
        .filter(|(t, _)| *t > window_start)
        .map(|(t, b)| (*t, u64::try_from(*b).unwrap_or(0)))
        .collect();
    let mut used: u64 = live.iter().map(|(_, b)| b).sum();
    if used + size <= quota {
        return QuotaAnswer::Fits;
    }
    // Uploads leave the window oldest first; find the one whose departure makes room.
    for (t, bytes) in live {
        used -= bytes;
        if used + size <= quota {
            return QuotaAnswer::RetryAt(t + QUOTA_WINDOW);
        }
    }
    QuotaAnswer::RetryAt(now + QUOTA_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_retry_is_when_enough_of_the_window_frees_up() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = |hours_ago: u64| now - Duration::from_secs(hours_ago * 3600);
        let uploads = [(h(30), 900), (h(20), 400), (h(10), 300), (h(1), 200)];
        // In the window: 400 + 300 + 200 = 900 of 1000.
        assert_eq!(check_quota(1000, &uploads, 100, now), QuotaAnswer::Fits);
        // 500 more needs 400 freed: the upload 20 h ago leaves in 4 h.
        assert_eq!(
            check_quota(1000, &uploads, 500, now),
            QuotaAnswer::RetryAt(h(20) + QUOTA_WINDOW)
        );
        // 800 more needs 700 freed: the 10-hour-old one must leave too.
        assert_eq!(
            check_quota(1000, &uploads, 800, now),
            QuotaAnswer::RetryAt(h(10) + QUOTA_WINDOW)
        );
        assert_eq!(check_quota(1000, &uploads, 1001, now), QuotaAnswer::Never);
    }
}
