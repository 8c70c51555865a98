//! Human units in the configuration: sizes (`100 MiB`, `4GB`, `1024`) and
//! durations (`300s`, `5m`, `1h`, `250ms`, or plain seconds).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A byte count written with or without a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

/// A duration written with a unit, or as plain seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

/// Parses `100 MiB`, `1.5GB`, `4096`, `0` (the `bytesize` crate's grammar:
/// SI and IEC units, case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?} is not a size ({e}); write e.g. 100 MiB, 4 GB or 1048576"))
}

/// Parses `300s`, `5m`, `1h 30m`, `250ms`, `2d` (the `humantime` crate's
/// grammar), or plain seconds (`30`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 300s, 5m, 1h"))
}

struct NumberOrText<T>(fn(&str) -> Result<T, String>, fn(u64) -> T, &'static str);

impl<T> Visitor<'_> for NumberOrText<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.2)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok((self.1)(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v)
            .map(self.1)
            .map_err(|_| E::custom(format!("{v} is negative")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText(
            |s| parse_size(s).map(ByteSize),
            ByteSize,
            "a size such as \"100 MiB\" or a number of bytes",
        ))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText(
            |s| parse_duration(s).map(HumanDuration),
            |n| HumanDuration(Duration::from_secs(n)),
            "a duration such as \"300s\" or a number of seconds",
        ))
    }
}

/// How long something is kept: a duration, or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepFor(pub Option<Duration>);

impl<'de> Deserialize<'de> for KeepFor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText(
            |s| {
                if s.trim().eq_ignore_ascii_case("forever") {
                    Ok(KeepFor(None))
                } else {
                    parse_duration(s).map(|d| KeepFor(Some(d)))
                }
            },
            |n| KeepFor(Some(Duration::from_secs(n))),
            "a duration such as \"30d\", or \"forever\"",
        ))
    }
}

/// A duration as people say it: `7 days`, `12 hours`, `90 seconds` (the
/// largest whole unit).
pub fn spoken(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 86_400 && s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100 MiB"), Ok(100 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1.5 kb"), Ok(1500));
        assert!(parse_size("12 XB").unwrap_err().contains("not a size"));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5 fortnights").is_err());
    }
}
