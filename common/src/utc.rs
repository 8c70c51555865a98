//! The one time module: UTC calendar fields for the directory layout,
//! XEP-0082 stamps, and Unix seconds, on the `time` crate's calendar.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant broken into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Seconds since the Unix epoch.
    pub unix: u64,
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month 1–12.
    pub month: u32,
    /// Day 1–31.
    pub day: u32,
    /// Hour 0–23.
    pub hour: u32,
    /// Minute 0–59.
    pub minute: u32,
    /// Second 0–59.
    pub second: u32,
}

impl UtcTime {
    /// The current time.
    pub fn now() -> Self {
        Self::from_unix(unix_now())
    }

    /// The UTC fields of a `SystemTime` (times before 1970 read as 1970).
    pub fn from_system(t: SystemTime) -> Self {
        Self::from_unix(unix_secs(t))
    }

    /// Breaks Unix seconds into UTC calendar fields (beyond year 9999 reads as the epoch).
    pub fn from_unix(unix: u64) -> Self {
        let t = i64::try_from(unix)
            .ok()
            .and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok())
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        UtcTime {
            unix: u64::try_from(t.unix_timestamp()).unwrap_or(0),
            year: i64::from(t.year()),
            month: u32::from(u8::from(t.month())),
            day: u32::from(t.day()),
            hour: u32::from(t.hour()),
            minute: u32::from(t.minute()),
            second: u32::from(t.second()),
        }
    }

    /// Reads an XEP-0082 / RFC 3339 date-time (`2026-11-26T08:00:00Z`,
    /// offsets allowed) or a bare date (`2026-11-26`, midnight UTC).
    pub fn parse_xep0082(s: &str) -> Option<Self> {
        use time::format_description::well_known::Rfc3339;
        let s = s.trim();
        let full = if s.len() == 10 {
            format!("{s}T00:00:00Z")
        } else {
            s.to_owned()
        };
        let t = time::OffsetDateTime::parse(&full, &Rfc3339).ok()?;
        Some(Self::from_unix(u64::try_from(t.unix_timestamp()).ok()?))
    }

    /// `YYYYMMDD`, the date directory of the layout.
    pub fn compact_date(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// `YYYY-MM-DDThh:mm:ssZ` (XEP-0082 DateTime).
    pub fn xep0082(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// The XEP-0082 stamp of `t` (retry stamps, expiry).
pub fn stamp(t: SystemTime) -> String {
    UtcTime::from_system(t).xep0082()
}

/// The XEP-0082 stamp `secs` seconds from now.
pub fn stamp_in(secs: u64) -> String {
    UtcTime::from_unix(unix_now() + secs).xep0082()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Whole seconds since the Unix epoch of `t` (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let t = UtcTime::from_unix(0);
        assert_eq!(t.xep0082(), "1970-01-01T00:00:00Z");
        // 2024-02-29T23:59:59Z, a leap day.
        let t = UtcTime::from_unix(1_709_251_199);
        assert_eq!(t.xep0082(), "2024-02-29T23:59:59Z");
        assert_eq!(t.compact_date(), "20240229");
        // 2026-11-26T05:07:08Z
        let t = UtcTime::from_unix(1_795_669_628);
        assert_eq!(t.xep0082(), "2026-11-26T05:07:08Z");
        assert_eq!(UtcTime::parse_xep0082("2026-11-26T05:07:08Z"), Some(t));
        assert_eq!(UtcTime::parse_xep0082("2026-11-26T06:07:08+01:00"), Some(t));
        assert_eq!(
            UtcTime::parse_xep0082("2026-11-26").map(|d| d.hour),
            Some(0)
        );
        assert_eq!(UtcTime::parse_xep0082("yesterday"), None);
        assert_eq!(t.hour, 5);
    }
}
