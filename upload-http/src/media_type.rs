//! One canonical media type per file, decided once: `type/subtype` in lower
//! case, with `charset` as the only parameter kept. Lists, stray parameters
//! and anything that is not a media type are refused, so what a client
//! declares cannot smuggle a second type past the inline/attachment choice
//! (`text/plain;,text/html` is not `text/plain`).

/// `type/subtype[; charset=…]` in canonical form, or `None` when `raw` is not
/// one media type.
pub fn canonical(raw: &str) -> Option<String> {
    if raw.len() > 255 || raw.contains(',') {
        return None;
    }
    let mut parts = raw.split(';');
    let essence = parts.next()?.trim();
    let (kind, sub) = essence.split_once('/')?;
    if !is_token(kind) || !is_token(sub) {
        return None;
    }
    let mut out = format!("{}/{}", kind.to_ascii_lowercase(), sub.to_ascii_lowercase());
    let mut charset: Option<String> = None;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue; // `text/plain;` is common and harmless.
        }
        let (name, value) = param.split_once('=')?;
        let name = name.trim();
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !is_token(name) || !is_token(value) {
            return None;
        }
        if name.eq_ignore_ascii_case("charset") {
            charset = Some(value.to_ascii_lowercase());
        }
    }
    if let Some(cs) = charset {
        out.push_str("; charset=");
        out.push_str(&cs);
    }
    Some(out)
}

/// The `type/subtype` part of a canonical media type.
pub fn essence(canonical: &str) -> &str {
    canonical.split(';').next().unwrap_or("").trim()
}

/// RFC 9110 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Types a browser may show inline from mftd's origin: images it cannot run
/// (no SVG), audio, video and plain text. Everything else is an attachment —
/// PDF too: a browser's built-in PDF viewer is not expected to run under the
/// `sandbox` policy every download carries, so inline PDF would likely show
/// nothing (not yet checked in a real browser).
pub fn is_safe_inline(canonical: &str) -> bool {
    let essence = essence(canonical);
    matches!(
        essence,
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "image/bmp"
            | "text/plain"
    ) || (essence.starts_with("audio/") || essence.starts_with("video/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_type_in_canonical_form() {
        assert_eq!(canonical("Image/JPEG").as_deref(), Some("image/jpeg"));
        assert_eq!(
            canonical("text/plain; charset=UTF-8").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            canonical("text/plain;format=flowed;charset=\"utf-8\";").as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            canonical("application/octet-stream; q=1").as_deref(),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn lists_and_junk_are_not_media_types() {
        for bad in [
            "text/plain;,text/html",
            "text/plain, text/html",
            "text/plain;text/html",
            "text/plain; charset=utf-8 text/html",
            "text/html\u{0}",
            "text",
            "/plain",
            "text/",
            "te xt/plain",
            "",
            "text/plain; charset=\"a\"b\"",
        ] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_safe_list_is_inline() {
        assert!(is_safe_inline("image/png"));
        assert!(is_safe_inline("text/plain; charset=utf-8"));
        assert!(is_safe_inline("video/mp4"));
        assert!(!is_safe_inline("text/html"));
        assert!(!is_safe_inline("application/pdf"));
        assert!(!is_safe_inline("image/svg+xml"));
        assert!(!is_safe_inline("application/xhtml+xml"));
        assert!(!is_safe_inline("text/xml"));
        assert!(!is_safe_inline("application/javascript"));
    }
}
