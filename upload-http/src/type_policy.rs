//! Which media types may be uploaded (`[limits] allowed_types` and
//! `refused_types`): patterns such as `image/*`, `application/pdf` or `*/*`,
//! checked against the canonical type at slot time (the request's
//! content-type) and again on PUT (the type the file is stored with). A
//! refused pattern wins over an allowed one; with an allow-list, a file
//! that names no type is refused, since it could be anything.

use crate::media_type;

/// One `type/subtype` pattern; either half may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePattern {
    kind: String,
    sub: String,
}

impl TypePattern {
    /// `image/*`, `application/pdf`, `*/*`; lower-cased.
    pub fn parse(text: &str) -> Result<TypePattern, String> {
        let (kind, sub) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a media type pattern such as image/*"))?;
        let token = |s: &str| {
            s == "*"
                || (!s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b)))
        };
        if !token(kind) || !token(sub) || (kind == "*" && sub != "*") {
            return Err(format!(
                "{text:?} is not a media type pattern such as image/*, application/pdf or */*"
            ));
        }
        Ok(TypePattern {
            kind: kind.to_ascii_lowercase(),
            sub: sub.to_ascii_lowercase(),
        })
    }

    fn matches(&self, essence: &str) -> bool {
        let Some((kind, sub)) = essence.split_once('/') else {
            return false;
        };
        (self.kind == "*" || self.kind == kind) && (self.sub == "*" || self.sub == sub)
    }
}

impl std::fmt::Display for TypePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.sub)
    }
}

/// The allow- and refuse-lists; empty lists allow everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypePolicy {
    /// Only these (empty: any).
    pub allowed: Vec<TypePattern>,
    /// Never these.
    pub refused: Vec<TypePattern>,
}

impl TypePolicy {
    /// Whether the policy lets everything through.
    pub fn is_open(&self) -> bool {
        self.allowed.is_empty() && self.refused.is_empty()
    }

    /// `Ok` when a file of `content_type` (as the client wrote it, or
    /// `None`) may be uploaded; otherwise a sentence for the user.
    pub fn check(&self, content_type: Option<&str>) -> Result<(), String> {
        if self.is_open() {
            return Ok(());
        }
        let canonical = content_type.and_then(media_type::canonical);
        let Some(canonical) = canonical else {
            if self.allowed.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "This service accepts only files of the types {}; name the file's content type.",
                self.list_allowed()
            ));
        };
        let essence = media_type::essence(&canonical);
        if self.refused.iter().any(|p| p.matches(essence)) {
            return Err(format!("Files of type {essence} are not accepted here."));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|p| p.matches(essence)) {
            return Err(format!(
                "Files of type {essence} are not accepted here; accepted types: {}.",
                self.list_allowed()
            ));
        }
        Ok(())
    }

    fn list_allowed(&self) -> String {
        self.allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], refused: &[&str]) -> TypePolicy {
        TypePolicy {
            allowed: allowed
                .iter()
                .map(|p| TypePattern::parse(p).unwrap())
                .collect(),
            refused: refused
                .iter()
                .map(|p| TypePattern::parse(p).unwrap())
                .collect(),
        }
    }

    #[test]
    fn patterns_parse_strictly() {
        assert!(TypePattern::parse("image/*").is_ok());
        assert!(TypePattern::parse("*/*").is_ok());
        assert!(TypePattern::parse("Application/PDF").is_ok());
        assert!(TypePattern::parse("*/png").is_err());
        assert!(TypePattern::parse("image").is_err());
        assert!(TypePattern::parse("image/png;q=1").is_err());
        assert!(TypePattern::parse("image/").is_err());
    }

    #[test]
    fn refused_wins_and_an_allow_list_needs_a_type() {
        let p = policy(&["image/*", "application/pdf"], &["image/svg+xml"]);
        assert!(p.check(Some("image/png")).is_ok());
        assert!(p.check(Some("IMAGE/JPEG; charset=x")).is_ok());
        assert!(p.check(Some("application/pdf")).is_ok());
        assert!(p.check(Some("image/svg+xml")).is_err());
        assert!(p.check(Some("text/html")).is_err());
        assert!(p.check(None).is_err());
        assert!(p.check(Some("text/plain;,image/png")).is_err());
        let open = TypePolicy::default();
        assert!(open.check(None).is_ok());
        let refuse_only = policy(&[], &["application/x-msdownload"]);
        assert!(refuse_only.check(None).is_ok());
        assert!(refuse_only.check(Some("application/x-msdownload")).is_err());
        assert!(refuse_only.check(Some("text/plain")).is_ok());
    }
}
