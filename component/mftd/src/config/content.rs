//! The content-policy sections: `[scan]` (the malware scanner, ClamAV's
//! clamd) and the media types of `[limits]` (`allowed_types`,
//! `refused_types`), each validated once into the type the runtime uses.

use std::time::Duration;

use serde::Deserialize;

use mft_upload_http::clamd::{Clamd, ClamdAddr};
use mft_upload_http::scan::{AboveMaxSize, FailMode, Quarantine, ScanSettings};
use mft_upload_http::type_policy::{TypePattern, TypePolicy};

use super::{invalid, ConfigError};
use mft_common::units::{ByteSize, HumanDuration};

/// `[scan]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// Where clamd listens: `unix:/run/clamav/clamd.ctl` (its `LocalSocket`)
    /// or `127.0.0.1:3310` (its `TCPSocket`/`TCPAddr`).
    pub clamd: String,
    /// The most clamd may take to accept a piece of a file or to give its
    /// verdict after the last byte.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Without a verdict (scanner unreachable, timed out, error):
    /// `"closed"` refuses the upload, `"open"` publishes it recorded as
    /// not scanned.
    #[serde(default)]
    pub fail: FailConfig,
    /// Infected files: `"keep"` (under `quarantine/` in the node
    /// directory, never served) or `"remove"`.
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// The largest file streamed to clamd; keep it at most clamd's
    /// `StreamMaxLength` (Debian's default is 25M).
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// Files above `max_size`: `"refuse"` (no slot is granted for them) or
    /// `"unscanned"` (published, recorded as not scanned).
    #[serde(default)]
    pub above_max_size: AboveMaxSizeConfig,
}

/// `scan.fail`
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum FailConfig {
    /// Refuse.
    #[default]
    Closed,
    /// Publish unscanned.
    Open,
}

/// `scan.quarantine`
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineConfig {
    /// Keep aside.
    #[default]
    Keep,
    /// Remove.
    Remove,
}

/// `scan.above_max_size`
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum AboveMaxSizeConfig {
    /// Refuse.
    #[default]
    Refuse,
    /// Publish unscanned.
    Unscanned,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(mft_upload_http::scan::DEFAULT_TIMEOUT)
}

fn default_max_size() -> ByteSize {
    ByteSize(25 * 1024 * 1024)
}

impl ScanConfig {
    /// The scanner's runtime settings. `stall_timeout` is
    /// `http.stall_timeout`: a scanner that stops taking bytes holds the
    /// body up to `scan.timeout`, which must end first so the upload is
    /// decided by the scan policy, not cut as a stalled transfer.
    pub fn settings(&self, stall_timeout: Duration) -> Result<ScanSettings, ConfigError> {
        let addr = ClamdAddr::parse(&self.clamd).map_err(|why| invalid("scan.clamd", why))?;
        if let ClamdAddr::Unix(path) = &addr {
            if !path.is_absolute() {
                return Err(invalid(
                    "scan.clamd",
                    "a Unix socket path must be absolute, e.g. unix:/run/clamav/clamd.ctl",
                ));
            }
        }
        if self.timeout.0 < std::time::Duration::from_millis(100) {
            return Err(invalid(
                "scan.timeout",
                "at least 100ms; clamd needs time for large files",
            ));
        }
        if self.timeout.0 >= stall_timeout {
            return Err(invalid(
                "scan.timeout",
                format!(
                    "must be shorter than http.stall_timeout ({stall_timeout:?}): a scanner that stops \
                     reading holds the body that long; lower scan.timeout or raise http.stall_timeout"
                ),
            ));
        }
        if self.max_size.0 == 0 {
            return Err(invalid(
                "scan.max_size",
                "must be above 0 (clamd's StreamMaxLength, e.g. \"25 MiB\")",
            ));
        }
        Ok(ScanSettings {
            clamd: Clamd::new(addr, self.timeout.0),
            fail: match self.fail {
                FailConfig::Closed => FailMode::Closed,
                FailConfig::Open => FailMode::Open,
            },
            quarantine: match self.quarantine {
                QuarantineConfig::Keep => Quarantine::Keep,
                QuarantineConfig::Remove => Quarantine::Remove,
            },
            max_size: self.max_size.0,
            above_max_size: match self.above_max_size {
                AboveMaxSizeConfig::Refuse => AboveMaxSize::Refuse,
                AboveMaxSizeConfig::Unscanned => AboveMaxSize::Unscanned,
            },
        })
    }
}

/// `limits.allowed_types` and `limits.refused_types`, parsed.
pub fn type_policy(allowed: &[String], refused: &[String]) -> Result<TypePolicy, ConfigError> {
    let parse = |list: &[String], key: &'static str| {
        list.iter()
            .map(|p| TypePattern::parse(p).map_err(|why| invalid(key, why)))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(TypePolicy {
        allowed: parse(allowed, "limits.allowed_types")?,
        refused: parse(refused, "limits.refused_types")?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    const BASE: &str = r#"
[xmpp]
component_jid = "upload.example.test"
secret = "s3cret"
[http]
listen = "127.0.0.1:5443"
public_url = "https://upload.example.test:5443/"
token_key = "0123456789abcdef0123"
[node]
name = "node_1"
[store]
kind = "local"
path = "/tmp/node_1"
"#;

    fn err(text: &str) -> String {
        Settings::from_toml(text, "test.toml")
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn scan_defaults_are_closed_keep_and_cap_slots_at_max_size() {
        let text = format!("{BASE}[scan]\nclamd = \"unix:/run/clamav/clamd.ctl\"\n");
        let s = Settings::from_toml(&text, "test.toml").expect("valid");
        let scan = s.scan.expect("configured");
        assert_eq!(scan.fail, mft_upload_http::scan::FailMode::Closed);
        assert_eq!(scan.quarantine, mft_upload_http::scan::Quarantine::Keep);
        assert_eq!(scan.max_size, 25 << 20);
        assert_eq!(
            s.max_file_size,
            25 << 20,
            "no slot above what can be scanned"
        );
        let text = format!("{text}above_max_size = \"unscanned\"\n");
        let s = Settings::from_toml(&text, "test.toml").expect("valid");
        assert_eq!(s.max_file_size, 100 << 20);
    }

    #[test]
    fn scan_mistakes_name_the_key_and_line() {
        let bad = format!("{BASE}[scan]\nclamd = \"localhost\"\n");
        let e = err(&bad);
        assert!(e.contains("scan.clamd (line 15)"), "{e}");
        let slow = format!("{BASE}[scan]\nclamd = \"127.0.0.1:3310\"\ntimeout = \"20s\"\n");
        let e = err(&slow);
        assert!(
            e.contains("scan.timeout") && e.contains("http.stall_timeout"),
            "{e}"
        );
        let typo = format!("{BASE}[scan]\nclamd = \"127.0.0.1:3310\"\nfail = \"shut\"\n");
        assert!(err(&typo).contains("unknown variant"), "{}", err(&typo));
        let types = format!("{BASE}[limits]\nallowed_types = [\"image\"]\n");
        let e = err(&types);
        assert!(e.contains("limits.allowed_types"), "{e}");
    }
}
