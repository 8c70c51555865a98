//! `[adhoc]`: the XEP-0050 ad-hoc commands on the component — whether they
//! are offered, who the administrators are, how long a command's session
//! lives. This module owns the section's TOML shape ([`AdhocConfig`]), its
//! defaults and its validation into the runtime type ([`AdhocSettings`]);
//! the duration type is the caller's (`D: Into<Duration>`), so the binary's
//! one duration grammar applies here too.

use std::time::Duration;

use mft_common::jid::Jid;
use serde::Deserialize;

/// How long an unfinished command's session lives by default.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// `[adhoc]` as written; `D` is the binary's duration type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdhocConfig<D> {
    /// Offer the commands (they also need `[database]`). Default: true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Bare JIDs that may run the administrators' commands (holds, a
    /// user's usage).
    #[serde(default)]
    pub admins: Vec<String>,
    /// How long a multi-step command waits for the next step (10 minutes).
    pub session_timeout: Option<D>,
}

fn yes() -> bool {
    true
}

impl<D> Default for AdhocConfig<D> {
    fn default() -> Self {
        AdhocConfig {
            enabled: true,
            admins: Vec::new(),
            session_timeout: None,
        }
    }
}

/// `[adhoc]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdhocSettings {
    /// The commands are offered (enabled and a transfer log configured).
    pub offered: bool,
    /// Administrators' bare JIDs, normalised.
    pub admins: Vec<String>,
    /// How long a session waits for its next step.
    pub session_timeout: Duration,
}

impl Default for AdhocSettings {
    fn default() -> Self {
        AdhocSettings {
            offered: false,
            admins: Vec::new(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
        }
    }
}

/// A key of `[adhoc]` that is wrong, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key, e.g. `adhoc.admins`.
    pub key: &'static str,
    /// What to do.
    pub message: String,
}

/// Checks `[adhoc]` against the rest of the configuration: administrators
/// are bare JIDs of a domain allowed to use the service (nobody else can
/// reach the commands), and the commands need the transfer log.
pub fn validate<D: Into<Duration> + Copy>(
    config: &AdhocConfig<D>,
    allowed_domains: &[String],
    has_database: bool,
) -> Result<AdhocSettings, Invalid> {
    let invalid = |key, message: String| Invalid { key, message };
    let mut admins = Vec::new();
    for given in &config.admins {
        let jid = Jid::parse(given).filter(|j| j.local().is_some());
        let Some(jid) = jid.filter(|j| j.bare() == j.to_string()) else {
            return Err(invalid(
                "adhoc.admins",
                format!("{given:?} is not a bare JID; write the administrator's address, such as \"admin@example.org\""),
            ));
        };
        if !allowed_domains.iter().any(|d| d == jid.domain()) {
            return Err(invalid(
                "adhoc.admins",
                format!(
                    "{given:?} is not of a domain in limits.allowed_domains ({}); users of other domains cannot reach the commands",
                    allowed_domains.join(", ")
                ),
            ));
        }
        if !admins.contains(&jid.bare()) {
            admins.push(jid.bare());
        }
    }
    if !admins.is_empty() && !has_database {
        return Err(invalid(
            "adhoc.admins",
            "the administrators' commands read and write holds in the transfer log: configure [database], or remove adhoc.admins".into(),
        ));
    }
    let session_timeout = config
        .session_timeout
        .map_or(DEFAULT_SESSION_TIMEOUT, Into::into);
    if session_timeout < Duration::from_secs(10) || session_timeout > Duration::from_secs(86_400) {
        return Err(invalid(
            "adhoc.session_timeout",
            "between 10s and 24h (10m by default)".into(),
        ));
    }
    Ok(AdhocSettings {
        offered: config.enabled && has_database,
        admins,
        session_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(admins: &[&str]) -> AdhocConfig<Duration> {
        AdhocConfig {
            admins: admins.iter().map(|a| (*a).to_owned()).collect(),
            ..AdhocConfig::default()
        }
    }

    #[test]
    fn admins_are_bare_jids_of_allowed_domains_and_need_the_database() {
        let domains = ["example.org".to_owned()];
        let ok = validate(&config(&["Admin@Example.ORG"]), &domains, true).expect("valid");
        assert_eq!(ok.admins, ["admin@example.org"]);
        assert!(ok.offered);
        assert_eq!(ok.session_timeout, DEFAULT_SESSION_TIMEOUT);
        for bad in [
            "example.org",
            "admin@example.org/desk",
            "a@b@c",
            "admin@other.org",
        ] {
            let e = validate(&config(&[bad]), &domains, true).expect_err(bad);
            assert_eq!(e.key, "adhoc.admins", "{bad}");
        }
        let e = validate(&config(&["admin@example.org"]), &domains, false).expect_err("no db");
        assert!(e.message.contains("[database]"), "{}", e.message);
        // Without a database and without admins: simply not offered.
        let off = validate(&config(&[]), &domains, false).expect("valid");
        assert!(!off.offered);
        let short = AdhocConfig {
            session_timeout: Some(Duration::from_secs(1)),
            ..config(&[])
        };
        assert_eq!(
            validate(&short, &domains, true).expect_err("short").key,
            "adhoc.session_timeout"
        );
    }
}
