//! Response headers every answer carries: CORS for browser clients
//! (Converse.js) and the XEP-0363 security headers for downloads.

use http::header::{self, HeaderMap, HeaderValue};

use crate::urls::encode_segment;

/// CORS: any origin may upload and download with a slot.
pub fn add_cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, HEAD, GET, PUT"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Content-Disposition"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

/// Headers that keep an uploaded file from running as a page; `content_type`
/// is canonical ([`crate::media_type::canonical`]).
pub fn add_download_security(h: &mut HeaderMap, content_type: &str, filename: &str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; form-action 'none'; sandbox",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let disposition = if crate::media_type::is_safe_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let value = format!(
        "{disposition}; filename*=UTF-8''{}",
        encode_segment(filename)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_svg_are_attachments_images_inline() {
        let mut h = HeaderMap::new();
        add_download_security(&mut h, "text/html", "x.html");
        assert!(h[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii")
            .starts_with("attachment"));
        add_download_security(&mut h, "image/svg+xml", "x.svg");
        assert!(h[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii")
            .starts_with("attachment"));
        add_download_security(&mut h, "image/png", "ä b.png");
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "inline; filename*=UTF-8''%C3%A4%20b.png"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
