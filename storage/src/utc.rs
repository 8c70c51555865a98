//! UTC calendar arithmetic for the directory layout and XEP-0082 stamps,
//! without a date library: days-from-civil conversion on Unix seconds.

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

    /// Breaks Unix seconds into UTC calendar fields.
    pub fn from_unix(unix: u64) -> Self {
        let days = (unix / 86_400) as i64;
        let secs = (unix % 86_400) as u32;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            unix,
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
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

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        assert_eq!(t.hour, 5);
    }
}
