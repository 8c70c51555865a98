//! The one JID type: who uploaded, who a file is for, who fetched it. Every
//! JID that reaches the log, a quota or a policy decision goes through
//! [`Jid::parse`], which applies RFC 7622's normalisation (the `jid` crate
//! from xmpp-rs: case-folded local part and domain, stringprep), so the same
//! person is always the same string — quotas and compliance queries depend
//! on it.

use std::fmt;

/// A normalised JID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jid(jid::Jid);

impl Jid {
    /// Parses and normalises; `None` for anything that is not a JID.
    ///
    /// A final dot of the domain (the DNS root label, `example.org.`) is
    /// stripped, as RFC 7622 §3.2 requires before any comparison: the
    /// router strips it too, and the `jid` crate strips it only from a
    /// JID that is a bare domain, so `alice@example.org.` would otherwise
    /// be another person than `alice@example.org`.
    pub fn parse(s: &str) -> Option<Jid> {
        let s = s.trim();
        // The parts as RFC 7622 splits them: the resource after the first
        // `/`, the local part before the first `@` ahead of it.
        let (head, resource) = match s.split_once('/') {
            Some((head, resource)) => (head, Some(resource)),
            None => (s, None),
        };
        let (node, domain) = match head.split_once('@') {
            Some((node, domain)) => (Some(node), domain),
            None => (None, head),
        };
        let Some(domain) = domain.strip_suffix('.') else {
            return jid::Jid::new(s).ok().map(Jid);
        };
        // Only one final dot is the root label; `example.org..` is no domain.
        if domain.ends_with('.') {
            return None;
        }
        let mut text = String::with_capacity(s.len());
        if let Some(node) = node {
            text.push_str(node);
            text.push('@');
        }
        text.push_str(domain);
        if let Some(resource) = resource {
            text.push('/');
            text.push_str(resource);
        }
        jid::Jid::new(&text).ok().map(Jid)
    }

    /// The same JID with its domain's IDNA A-labels (`xn--…`) as Unicode
    /// U-labels, the one form RFC 7622 §3.2.1 lets a domainpart take, for
    /// comparing a JID written one way with one written the other way
    /// (`alice@xn--bcher-kva.example` is `alice@bücher.example`). Itself
    /// when there is no A-label or it does not decode.
    pub fn unicode_domain(&self) -> Jid {
        let domain = self.domain();
        if !domain.split('.').any(|label| {
            label
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
        }) {
            return self.clone();
        }
        let (unicode, errors) = idna::domain_to_unicode(domain);
        if errors.is_err() {
            return self.clone();
        }
        let mut text = String::new();
        if let Some(local) = self.local() {
            text.push_str(local);
            text.push('@');
        }
        text.push_str(&unicode);
        if let Some(resource) = self.0.resource() {
            text.push('/');
            text.push_str(resource.as_str());
        }
        Jid::parse(&text).unwrap_or_else(|| self.clone())
    }

    /// The normalised form of a domain as written in the configuration
    /// (`Example.ORG.` → `example.org`), so a configured domain compares
    /// equal to [`Jid::domain`]; `None` when it is not a domain.
    pub fn domain_of(text: &str) -> Option<String> {
        Jid::parse(text)
            .filter(Jid::is_domain)
            .map(|j| j.domain().to_owned())
    }

    /// `local@domain` (or `domain`), without the resource.
    pub fn bare(&self) -> String {
        self.0.to_bare().to_string()
    }

    /// The domain part.
    pub fn domain(&self) -> &str {
        self.0.domain().as_str()
    }

    /// The local part, if any.
    pub fn local(&self) -> Option<&str> {
        self.0.node().map(|n| n.as_str())
    }

    /// True for a bare domain (no local part, no resource): what a
    /// server or a component sends from.
    pub fn is_domain(&self) -> bool {
        self.0.node().is_none() && self.0.resource().is_none()
    }

    /// The domain a component domain is under: `upload.example.test` →
    /// `example.test` (itself when it has no dot).
    pub fn parent_domain(&self) -> &str {
        let d = self.domain();
        d.split_once('.').map_or(d, |(_, p)| p)
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The normalised bare JID of `s`, or `s` itself when it is no JID (the
/// log then shows exactly what was given).
pub fn bare_or_raw(s: &str) -> String {
    Jid::parse(s).map_or_else(|| s.to_owned(), |j| j.bare())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_one_string() {
        let a = Jid::parse("Romeo@Montague.TLD/Garden").expect("jid");
        assert_eq!(a.bare(), "romeo@montague.tld");
        assert_eq!(a.domain(), "montague.tld");
        assert_eq!(a.local(), Some("romeo"));
        assert_eq!(a.to_string(), "romeo@montague.tld/Garden");
        assert_eq!(
            Jid::parse("romeo@montague.tld").expect("jid").bare(),
            a.bare()
        );
        let d = Jid::parse("upload.example.test").expect("domain");
        assert_eq!(d.local(), None);
        assert_eq!(d.parent_domain(), "example.test");
        assert!(Jid::parse("").is_none());
        assert!(Jid::parse("a@b@c").is_none());
        assert_eq!(bare_or_raw("not a jid@"), "not a jid@");
        // The root label's dot is no part of the domain, wherever it is.
        for dotted in [
            "alice@example.org.",
            "Alice@Example.ORG./desk",
            "alice@example.org",
        ] {
            let j = Jid::parse(dotted).expect("jid");
            assert_eq!(j.bare(), "alice@example.org", "{dotted}");
            assert_eq!(j.domain(), "example.org", "{dotted}");
        }
        assert_eq!(
            Jid::parse("alice@example.org./desk")
                .expect("jid")
                .to_string(),
            "alice@example.org/desk"
        );
        assert!(Jid::parse("alice@example.org..").is_none());
        assert_eq!(
            Jid::domain_of("Example.ORG.").as_deref(),
            Some("example.org")
        );
        assert_eq!(Jid::domain_of("alice@example.org"), None);
        // A-labels and U-labels: one domain.
        let a = Jid::parse("Alice@XN--bcher-kva.example/desk").expect("jid");
        let u = Jid::parse("alice@B\u{fc}cher.example/desk").expect("jid");
        assert_eq!(a.unicode_domain(), u);
        assert_eq!(u.unicode_domain(), u);
        assert_eq!(
            a.unicode_domain().to_string(),
            "alice@b\u{fc}cher.example/desk"
        );
    }
}
