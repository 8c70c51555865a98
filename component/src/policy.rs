//! Slot policy that needs more than the request: which chat type a
//! destination belongs to, and whether a rolling 24-hour quota leaves room
//! (and if not, from when it will).

use std::time::{Duration, SystemTime};

use mft_storage::ChatType;

use crate::config::ChatConfig;

/// Our namespace for naming the intended recipient inside a slot request:
/// `<request …><destination xmlns='urn:mftd:destination:0' jid='room@conference.example.test'/></request>`.
pub const NS_DESTINATION: &str = "urn:mftd:destination:0";

/// The rolling quota window.
pub const QUOTA_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The chat type of an upload to `destination` (empty: none given → `im`).
pub fn chat_type(cfg: &ChatConfig, destination: &str) -> ChatType {
    let bare = destination.split('/').next().unwrap_or("").to_lowercase();
    if bare.is_empty() {
        return ChatType::Im;
    }
    let domain = bare.rsplit('@').next().unwrap_or("");
    let listed = |list: &[String], value: &str| list.iter().any(|x| x.eq_ignore_ascii_case(value));
    if listed(&cfg.persistent_rooms, &bare) || listed(&cfg.persistent_services, domain) {
        ChatType::Persistent
    } else if listed(&cfg.groupchat_services, domain) {
        ChatType::Groupchat
    } else {
        ChatType::Im
    }
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
    fn destinations_map_to_chat_types() {
        let cfg = ChatConfig {
            groupchat_services: vec!["conference.example.test".into()],
            persistent_services: vec!["persistent.example.test".into()],
            persistent_rooms: vec!["board@conference.example.test".into()],
        };
        assert_eq!(chat_type(&cfg, ""), ChatType::Im);
        assert_eq!(chat_type(&cfg, "bob@example.test/phone"), ChatType::Im);
        assert_eq!(
            chat_type(&cfg, "lunch@Conference.example.test"),
            ChatType::Groupchat
        );
        assert_eq!(
            chat_type(&cfg, "team@persistent.example.test"),
            ChatType::Persistent
        );
        assert_eq!(
            chat_type(&cfg, "board@conference.example.test/nick"),
            ChatType::Persistent
        );
    }

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
