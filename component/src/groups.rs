//! Limits per group of users (`[[limits.group]]`): each group names the
//! JIDs or domains it matches and overrides any of the service's limits —
//! the largest file, the per-user daily quota, the slot request rate, and
//! which XEP-0363 1.2 purposes (ephemeral, permanent) are offered. What a
//! group leaves unset is the service's own setting.
//!
//! Matching is on the normalised JID ([`Jid::parse`]: case-folded,
//! stringprep'd), part by part, never on the text: a resource is only ever
//! compared whole against a full-JID pattern, so `mallory@x/alice@y` is
//! neither `alice@y` nor in `y`. The most specific pattern wins: full JID
//! (`alice@example.org/desk`) > bare JID (`alice@example.org`) > domain
//! (`example.org`, also written `*@example.org`) > the service's defaults.
//! Patterns are exact, so two groups can only tie by naming the same
//! pattern; such a configuration is refused ([`validate`]) rather than
//! resolved by file order.
//!
//! This module owns the section's TOML shape ([`GroupConfig`]), its
//! validation into the runtime type ([`GroupLimits`]), and the lookup. The
//! size type is the caller's (`S: Into<u64>`), so the binary's one size
//! grammar applies here too.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use mft_common::jid::Jid;
use mft_storage::quota::{QuotaPolicy, Quotas};
use serde::Deserialize;

use crate::rate::SlotRateLimiter;
use crate::slot::MAX_FILE_SIZE_CAP;

/// One `[[limits.group]]` entry as written; `S` is the binary's size type.
/// An unset key (`None`) keeps the service's own setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig<S> {
    /// The group's name, shown by `check-config --for` and in logs.
    pub name: String,
    /// Full JIDs, bare JIDs or domains (`example.org` or `*@example.org`).
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Largest file; `0` means the maximum, 4 GiB.
    pub max_file_size: Option<S>,
    /// Bytes one member may upload in any 24 hours; `0`: no limit.
    pub per_user_daily: Option<S>,
    /// Slot requests one member may make per minute (`0`: no limit).
    pub slots_per_minute: Option<u32>,
    /// Slot requests one member may make at once.
    pub slot_burst: Option<u32>,
    /// Offer `ephemeral` uploads to members.
    pub allow_ephemeral: Option<bool>,
    /// Offer `permanent` uploads to members.
    pub allow_permanent: Option<bool>,
}

/// The limits that apply to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file in bytes.
    pub max_file_size: u64,
    /// Daily upload quota per user in bytes (0: none).
    pub per_user_daily: u64,
    /// Slot requests per minute (0: no limit).
    pub slots_per_minute: u32,
    /// Slot requests at once.
    pub slot_burst: u32,
    /// `ephemeral` uploads offered.
    pub allow_ephemeral: bool,
    /// `permanent` uploads offered.
    pub allow_permanent: bool,
}

/// How specific a pattern is; the higher wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Specificity {
    /// `example.org` or `*@example.org`.
    Domain,
    /// `alice@example.org`.
    Bare,
    /// `alice@example.org/desk`.
    Full,
}

impl fmt::Display for Specificity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Specificity::Domain => "domain",
            Specificity::Bare => "bare JID",
            Specificity::Full => "full JID",
        })
    }
}

/// A pattern, normalised: its kind and the normalised text compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// How specific.
    pub kind: Specificity,
    /// The normalised JID or domain.
    pub key: String,
}

impl Pattern {
    /// Parses one `match` entry.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (domain_only, jid) = match text.trim().strip_prefix("*@") {
            Some(domain) => (true, domain),
            None => (false, text.trim()),
        };
        if jid.contains('*') {
            return Err(format!(
                "{text:?}: the only wildcard is \"*@domain\" (every user of that domain)"
            ));
        }
        let parsed = Jid::parse(jid)
            .ok_or_else(|| {
                format!("{text:?} is not a JID or a domain (write alice@example.org, example.org or *@example.org)")
            })?
            .unicode_domain();
        if domain_only && !parsed.is_domain() {
            return Err(format!("{text:?}: after \"*@\" comes a domain only"));
        }
        let full = parsed.to_string();
        let pattern = if full != parsed.bare() {
            if parsed.local().is_none() {
                return Err(format!(
                    "{text:?}: a domain with a resource matches no user"
                ));
            }
            Pattern {
                kind: Specificity::Full,
                key: full,
            }
        } else if parsed.local().is_some() {
            Pattern {
                kind: Specificity::Bare,
                key: parsed.bare(),
            }
        } else {
            Pattern {
                kind: Specificity::Domain,
                key: parsed.domain().to_owned(),
            }
        };
        Ok(pattern)
    }

    /// The keys a requester is looked up under, most specific first.
    fn keys_of(jid: &Jid) -> [(Specificity, String); 3] {
        let jid = jid.unicode_domain();
        [
            (Specificity::Full, jid.to_string()),
            (Specificity::Bare, jid.bare()),
            (Specificity::Domain, jid.domain().to_owned()),
        ]
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// One group, validated.
#[derive(Debug)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its limits, with the service's defaults for what it leaves unset.
    pub limits: Limits,
    /// Its members' slot request buckets.
    pub slot_rate: SlotRateLimiter,
}

/// Which group a requester fell in, and by which pattern.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The group.
    pub group: &'a Group,
    /// The pattern that matched.
    pub pattern: &'a Pattern,
}

/// Every group, indexed by pattern.
#[derive(Debug, Default)]
pub struct GroupLimits {
    groups: Vec<Group>,
    index: HashMap<(Specificity, String), (usize, Pattern)>,
}

/// A `[[limits.group]]` mistake: the key and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct GroupError {
    /// The configuration key.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

fn error(key: &'static str, message: impl Into<String>) -> GroupError {
    GroupError {
        key,
        message: message.into(),
    }
}

/// The largest file a group may allow: `0` is the 4 GiB cap, more is an
/// error, and no group gets a larger slot than the scanner can scan when
/// it refuses such files (`scan_cap`).
fn file_size(value: u64, scan_cap: Option<u64>, group: &str) -> Result<u64, GroupError> {
    let size = match value {
        0 => MAX_FILE_SIZE_CAP,
        n if n > MAX_FILE_SIZE_CAP => {
            return Err(error(
                "limits.group.max_file_size",
                format!("group {group:?}: at most 4 GiB (0 also means 4 GiB)"),
            ))
        }
        n => n,
    };
    Ok(scan_cap.map_or(size, |cap| size.min(cap)))
}

/// Checks the groups and resolves each against the service's `defaults`.
/// `scan_cap` is `scan.max_size` when files above it are refused;
/// `has_log` whether a transfer log is configured (quotas need it).
pub fn validate<S: Copy + Into<u64>>(
    configs: &[GroupConfig<S>],
    defaults: &Limits,
    scan_cap: Option<u64>,
    has_log: bool,
) -> Result<GroupLimits, GroupError> {
    let mut out = GroupLimits::default();
    for (i, config) in configs.iter().enumerate() {
        let name = config.name.trim();
        if name.is_empty() {
            return Err(error(
                "limits.group.name",
                format!("group number {} has no name", i + 1),
            ));
        }
        if out.groups.iter().any(|g| g.name == name) {
            return Err(error(
                "limits.group.name",
                format!("two groups are named {name:?}: give each its own name"),
            ));
        }
        if config.matches.is_empty() {
            return Err(error(
                "limits.group.match",
                format!("group {name:?} matches nobody: list JIDs or domains in match"),
            ));
        }
        let per_user_daily = config
            .per_user_daily
            .map_or(defaults.per_user_daily, Into::into);
        if per_user_daily > 0 && !has_log {
            return Err(error(
                "limits.group.per_user_daily",
                format!("group {name:?}: quotas are counted from the transfer log: configure [database]"),
            ));
        }
        let limits = Limits {
            max_file_size: match config.max_file_size {
                Some(size) => file_size(size.into(), scan_cap, name)?,
                None => defaults.max_file_size,
            },
            per_user_daily,
            slots_per_minute: config.slots_per_minute.unwrap_or(defaults.slots_per_minute),
            slot_burst: config.slot_burst.unwrap_or(defaults.slot_burst),
            allow_ephemeral: config.allow_ephemeral.unwrap_or(defaults.allow_ephemeral),
            allow_permanent: config.allow_permanent.unwrap_or(defaults.allow_permanent),
        };
        let index = out.groups.len();
        for text in &config.matches {
            let pattern = Pattern::parse(text)
                .map_err(|why| error("limits.group.match", format!("group {name:?}: {why}")))?;
            let key = (pattern.kind, pattern.key.clone());
            match out.index.get(&key) {
                Some((other, _)) if *other != index => {
                    return Err(error(
                        "limits.group.match",
                        format!(
                            "{} {:?} is in both group {:?} and group {name:?}: a user must fall in one group; keep it in one",
                            pattern.kind, pattern.key, out.groups[*other].name
                        ),
                    ))
                }
                _ => {
                    out.index.insert(key, (index, pattern));
                }
            }
        }
        out.groups.push(Group {
            name: name.to_owned(),
            slot_rate: SlotRateLimiter::new(limits.slots_per_minute, limits.slot_burst),
            limits,
        });
    }
    Ok(out)
}

/// Whether users of `jid`'s domain may upload at all (`limits.allowed_domains`,
/// normalised with [`Jid::domain_of`]): the one test the slot handler and
/// `check-config --for` both make, before any group applies.
pub fn domain_allowed(allowed_domains: &[String], jid: &Jid) -> bool {
    let unicode = jid.unicode_domain();
    allowed_domains.iter().any(|d| {
        d == jid.domain()
            || Jid::parse(d).is_some_and(|a| a.unicode_domain().domain() == unicode.domain())
    })
}

impl GroupLimits {
    /// Patterns no requester can ever match because their domain is not in
    /// `allowed_domains` (such users are refused before any group
    /// applies): (group, pattern), for a warning.
    pub fn unreachable(&self, allowed_domains: &[String]) -> Vec<(&str, &Pattern)> {
        let mut out: Vec<(&str, &Pattern)> = self
            .index
            .values()
            .filter(|(_, p)| {
                !Jid::parse(&p.key).is_some_and(|j| domain_allowed(allowed_domains, &j))
            })
            .map(|(i, p)| (self.groups[*i].name.as_str(), p))
            .collect();
        out.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
        out
    }

    /// The group `jid` falls in, by its most specific matching pattern.
    pub fn for_jid(&self, jid: &Jid) -> Option<Matched<'_>> {
        Pattern::keys_of(jid).into_iter().find_map(|key| {
            self.index.get(&key).map(|(i, pattern)| Matched {
                group: &self.groups[*i],
                pattern,
            })
        })
    }

    /// What applies to `jid` and why, for `mftd check-config --for`:
    /// the group and the pattern that matched (or the defaults), then
    /// each limit. `has_log`: ephemeral uploads also need the transfer log.
    pub fn explain(&self, jid: &Jid, defaults: &Limits, has_log: bool) -> String {
        let matched = self.for_jid(jid);
        let (limits, origin) = match matched {
            Some(m) => (
                &m.group.limits,
                format!(
                    "group {:?} (matched by {} {:?})",
                    m.group.name, m.pattern.kind, m.pattern.key
                ),
            ),
            None => (
                defaults,
                "no group: the defaults of [limits], [quotas] and [retention]".to_owned(),
            ),
        };
        let mut purposes = vec!["message", "profile"];
        if limits.allow_ephemeral && has_log {
            purposes.push("ephemeral");
        }
        if limits.allow_permanent {
            purposes.push("permanent");
        }
        let quota = match limits.per_user_daily {
            0 => "no limit".to_owned(),
            n => format!("{n} bytes"),
        };
        let rate = match limits.slots_per_minute {
            0 => "no limit".to_owned(),
            n => format!("{n} a minute, {} at once", limits.slot_burst),
        };
        format!(
            "limits for {jid}: {origin}
  max_file_size: {} bytes (disco#info max-file-size)
  per_user_daily: {quota}
  slot requests: {rate}
  purposes: {}
",
            limits.max_file_size,
            purposes.join(", ")
        )
    }

    /// The groups, in file order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// True when no group is configured.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Each uploader's quotas: their group's per-user quota, or the default,
/// and the service-wide quota either way. The PUT side re-checks quotas
/// with this, so a slot and its upload count against the same limit.
#[derive(Debug, Clone)]
pub struct GroupQuotas {
    /// The groups.
    pub groups: Arc<GroupLimits>,
    /// Everyone else's quotas (`[quotas]`).
    pub default: Quotas,
}

impl QuotaPolicy for GroupQuotas {
    fn quotas_for(&self, uploader: &str) -> Quotas {
        match Jid::parse(uploader).and_then(|j| self.groups.for_jid(&j)) {
            Some(m) => Quotas {
                per_user: m.group.limits.per_user_daily,
                global: self.default.global,
            },
            None => self.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Limits = Limits {
        max_file_size: 1 << 20,
        per_user_daily: 0,
        slots_per_minute: 60,
        slot_burst: 30,
        allow_ephemeral: true,
        allow_permanent: false,
    };

    fn group(name: &str, matches: &[&str], max: Option<u64>) -> GroupConfig<u64> {
        GroupConfig {
            name: name.into(),
            matches: matches.iter().map(|m| (*m).to_owned()).collect(),
            max_file_size: max,
            per_user_daily: None,
            slots_per_minute: None,
            slot_burst: None,
            allow_ephemeral: None,
            allow_permanent: None,
        }
    }

    fn name_for(groups: &GroupLimits, jid: &str) -> Option<String> {
        let jid = Jid::parse(jid).expect("jid");
        groups.for_jid(&jid).map(|m| m.group.name.clone())
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let groups = validate(
            &[
                group(
                    "staff",
                    &["*@staff.example.org", "example.org"],
                    Some(5 << 20),
                ),
                group("alice", &["alice@example.org"], Some(10 << 20)),
                group("desk", &["alice@example.org/desk"], Some(20 << 20)),
            ],
            &DEFAULTS,
            None,
            false,
        )
        .expect("valid");
        assert_eq!(
            name_for(&groups, "alice@example.org/desk").as_deref(),
            Some("desk")
        );
        assert_eq!(
            name_for(&groups, "alice@example.org/phone").as_deref(),
            Some("alice")
        );
        assert_eq!(
            name_for(&groups, "bob@example.org/phone").as_deref(),
            Some("staff")
        );
        assert_eq!(
            name_for(&groups, "carol@staff.example.org").as_deref(),
            Some("staff")
        );
        assert_eq!(name_for(&groups, "dave@other.org"), None);
        let m = groups
            .for_jid(&Jid::parse("alice@example.org/x").expect("jid"))
            .expect("match");
        assert_eq!(m.group.limits.max_file_size, 10 << 20);
        assert_eq!(m.group.limits.slots_per_minute, 60, "inherited");
        assert_eq!(m.pattern.kind, Specificity::Bare);
    }

    #[test]
    fn tricks_in_the_jid_gain_nothing() {
        let groups = validate(
            &[group(
                "big",
                &["alice@example.org", "staff.example.org"],
                Some(10 << 20),
            )],
            &DEFAULTS,
            None,
            false,
        )
        .expect("valid");
        // Case is folded: the same account, the same group.
        assert_eq!(
            name_for(&groups, "ALICE@Example.ORG/x").as_deref(),
            Some("big")
        );
        // Fullwidth letters are folded by nodeprep (NFKC) into the same
        // account, which the router also logs in as alice.
        assert_eq!(
            name_for(&groups, "\u{ff41}lice@example.org").as_deref(),
            Some("big")
        );
        for outsider in [
            "mallory@evil.test/alice@example.org",
            "mallory@evil.test/staff.example.org",
            "alice@example.org.evil.test",
            "alice@evilexample.org",
            "x@evilstaff.example.org",
            "x@sub.staff.example.org",
            "alice.example.org@evil.test",
            // Cyrillic а (U+0430) in place of Latin a: another account.
            "\u{0430}lice@example.org",
        ] {
            assert_eq!(name_for(&groups, outsider), None, "{outsider}");
        }
    }

    #[test]
    fn the_root_labels_dot_is_no_part_of_a_pattern_or_a_requester() {
        let groups = validate(
            &[
                group("big", &["alice@example.org."], Some(10 << 20)),
                group("partners", &["*@Other.ORG."], None),
            ],
            &DEFAULTS,
            None,
            false,
        )
        .expect("valid");
        for (jid, want) in [
            ("alice@example.org/x", Some("big")),
            ("alice@example.org./x", Some("big")),
            ("carol@other.org", Some("partners")),
            ("carol@other.org.", Some("partners")),
            ("bob@example.org.", None),
        ] {
            assert_eq!(name_for(&groups, jid).as_deref(), want, "{jid}");
        }
        let allowed = ["example.org".to_owned()];
        let unreachable: Vec<String> = groups
            .unreachable(&allowed)
            .into_iter()
            .map(|(g, p)| format!("{g}:{p}"))
            .collect();
        assert_eq!(unreachable, ["partners:other.org"]);
        let carol = Jid::parse("carol@other.org").expect("jid");
        assert!(!domain_allowed(&allowed, &carol));
    }

    #[test]
    fn a_domain_in_a_labels_is_the_same_domain_in_u_labels() {
        let groups = validate(
            &[
                group("a", &["*@xn--bcher-kva.example"], None),
                group("u", &["alice@m\u{fc}ller.example"], None),
            ],
            &DEFAULTS,
            None,
            false,
        )
        .expect("valid");
        for (jid, want) in [
            ("x@b\u{fc}cher.example", Some("a")),
            ("x@xn--bcher-kva.example/r", Some("a")),
            ("alice@xn--mller-kva.example", Some("u")),
            ("alice@m\u{fc}ller.example", Some("u")),
            ("x@bucher.example", None),
        ] {
            assert_eq!(name_for(&groups, jid).as_deref(), want, "{jid}");
        }
        // Both spellings in one configuration are one pattern: refused.
        assert!(validate(
            &[
                group("a", &["*@xn--bcher-kva.example"], None),
                group("b", &["b\u{fc}cher.example"], None),
            ],
            &DEFAULTS,
            None,
            false,
        )
        .is_err());
        let allowed = ["xn--bcher-kva.example".to_owned()];
        let x = Jid::parse("x@b\u{fc}cher.example").expect("jid");
        assert!(domain_allowed(&allowed, &x));
        assert!(groups.unreachable(&allowed).iter().any(|(g, _)| *g == "u"));
    }

    #[test]
    fn ambiguous_or_wrong_groups_are_refused() {
        let tie = validate(
            &[
                group("a", &["Example.ORG"], None),
                group("b", &["*@example.org"], None),
            ],
            &DEFAULTS,
            None,
            false,
        )
        .expect_err("tie");
        assert!(
            tie.message
                .contains("domain \"example.org\" is in both group \"a\" and group \"b\""),
            "{tie}"
        );
        let dup = validate(
            &[group("a", &["x.org"], None), group("a", &["y.org"], None)],
            &DEFAULTS,
            None,
            false,
        )
        .expect_err("same name");
        assert!(dup.message.contains("two groups are named"), "{dup}");
        for bad in [
            "*.example.org",
            "al*ce@example.org",
            "*@alice@example.org",
            "a@b@c",
        ] {
            let e = validate(&[group("a", &[bad], None)], &DEFAULTS, None, false).expect_err(bad);
            assert_eq!(e.key, "limits.group.match", "{bad}: {e}");
        }
        let e = validate(&[group("a", &[], None)], &DEFAULTS, None, false).expect_err("empty");
        assert!(e.message.contains("matches nobody"), "{e}");
        let huge = validate(
            &[group("a", &["x.org"], Some(5 << 30))],
            &DEFAULTS,
            None,
            false,
        )
        .expect_err("huge");
        assert_eq!(huge.key, "limits.group.max_file_size");
        let mut quota = group("a", &["x.org"], None);
        quota.per_user_daily = Some(1 << 30);
        let e = validate(&[quota], &DEFAULTS, None, false).expect_err("no log");
        assert!(e.message.contains("[database]"), "{e}");
        // The same pattern twice in one group is harmless.
        assert!(validate(
            &[group("a", &["x.org", "*@X.org"], None)],
            &DEFAULTS,
            None,
            false
        )
        .is_ok());
    }

    #[test]
    fn zero_is_the_cap_and_the_scanner_caps_groups_too() {
        let groups =
            validate(&[group("a", &["x.org"], Some(0))], &DEFAULTS, None, false).expect("valid");
        assert_eq!(groups.groups()[0].limits.max_file_size, MAX_FILE_SIZE_CAP);
        let groups = validate(
            &[group("a", &["x.org"], Some(0))],
            &DEFAULTS,
            Some(25 << 20),
            false,
        )
        .expect("valid");
        assert_eq!(groups.groups()[0].limits.max_file_size, 25 << 20);
    }
}
