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

/// Media types a browser may show inline; everything else is an attachment.
fn is_safe_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "video/mp4"
            | "video/webm"
            | "audio/mpeg"
            | "audio/ogg"
            | "audio/mp4"
            | "audio/webm"
            | "audio/aac"
            | "text/plain"
    )
}

/// Headers that keep an uploaded file from running as a page.
pub fn add_download_security(h: &mut HeaderMap, content_type: &str, filename: &str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let disposition = if is_safe_inline(content_type) {
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
        add_download_security(&mut h, "IMAGE/PNG; q=1", "ä b.png");
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "inline; filename*=UTF-8''%C3%A4%20b.png"
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
