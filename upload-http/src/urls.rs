//! The URL scheme of slots: `<public url>/<resource>/<percent-encoded file name>`,
//! the same URL for PUT and GET, and the file-name rules that keep a user's
//! name intact (unicode, spaces, `%`) while nothing in it can escape a path
//! segment or break a header.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The longest file name kept, in bytes (typical file-system limit).
pub const MAX_FILENAME_BYTES: usize = 255;

/// Characters that change how a name is shown without being seen: bidi
/// embeddings, overrides and isolates (`invoice\u{202E}fdp.exe` shows as
/// `invoiceexe.pdf`), zero-width and other format characters (Unicode
/// category Cf), line and paragraph separators, and the interlinear and tag
/// characters.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}' | '\u{890}'..='\u{891}'
        | '\u{8E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// Makes a user's file name safe to store in a URL, a log and a
/// Content-Disposition header: path separators become `_`, control
/// characters (NUL included) and invisible ones ([`is_invisible`]: bidi
/// overrides, zero-width) go, names made only of dots become `file`, and
/// over-long names are shortened keeping the extension. `None` when nothing
/// usable is left.
pub fn sanitize_filename(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control() && !is_invisible(*c))
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.chars().all(|c| c == '.') {
        return Some("file".to_owned());
    }
    Some(shorten(trimmed, MAX_FILENAME_BYTES))
}

fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) if ext.len() <= 16 => format!(".{ext}"),
        _ => String::new(),
    };
    let mut stem_end = max - ext.len();
    while !name.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    format!("{}{ext}", &name[..stem_end])
}

/// The extension for the log's FILE_TYPE column: lower case, at most 10 characters.
pub fn file_type(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_lowercase().chars().take(10).collect(),
        _ => String::new(),
    }
}

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The slot URL for `resource` and `filename` below `public_url`.
pub fn slot_url(public_url: &str, resource: &str, filename: &str) -> String {
    format!(
        "{}/{}/{}",
        public_url.trim_end_matches('/'),
        resource,
        encode_segment(filename)
    )
}

/// Splits a request path below `base_path` into (resource, decoded file name).
pub fn parse_path<'a>(base_path: &str, path: &'a str) -> Option<(&'a str, String)> {
    let rest = path.strip_prefix(base_path.trim_end_matches('/'))?;
    let rest = rest.strip_prefix('/')?;
    let (resource, name) = rest.split_once('/')?;
    if resource.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    let name = percent_decode_str(name).decode_utf8().ok()?.into_owned();
    Some((resource, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_spaces_and_percent_survive_the_round_trip() {
        for name in [
            "Résumé final.pdf",
            "100% done.txt",
            "日本語 ファイル.png",
            "a+b=c&d?.doc",
            "#1.jpg",
        ] {
            let url = slot_url("https://up.example.test:5443/", "RES", name);
            let path = url
                .strip_prefix("https://up.example.test:5443")
                .expect("prefix");
            let segment = path.rsplit('/').next().expect("segment");
            assert!(!segment.contains([' ', '?', '#', '&', '+']), "{segment}");
            assert_eq!(
                parse_path("", path),
                Some(("RES", name.to_owned())),
                "{url}"
            );
        }
        assert_eq!(
            slot_url("https://h/up", "R", "a b%.txt"),
            "https://h/up/R/a%20b%25.txt"
        );
    }

    #[test]
    fn path_tricks_cannot_escape() {
        assert_eq!(
            sanitize_filename("../../etc/passwd").as_deref(),
            Some(".._.._etc_passwd")
        );
        assert_eq!(
            sanitize_filename("..\\..\\boot.ini").as_deref(),
            Some(".._.._boot.ini")
        );
        assert_eq!(sanitize_filename("..").as_deref(), Some("file"));
        assert_eq!(
            sanitize_filename("a\0b\r\nc.txt").as_deref(),
            Some("abc.txt")
        );
        assert_eq!(sanitize_filename(" \t\0 "), None);
        // What is shown is what is stored: no bidi override, no zero-width.
        assert_eq!(
            sanitize_filename("invoice\u{202E}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(
            sanitize_filename("a\u{200B}\u{2066}b\u{FEFF}.\u{E0041}txt").as_deref(),
            Some("ab.txt")
        );
        assert_eq!(sanitize_filename("\u{202E}\u{200F}"), None);
        assert_eq!(sanitize_filename(""), None);
        let url = slot_url(
            "https://h",
            "R",
            &sanitize_filename("../x/y").expect("name"),
        );
        assert_eq!(url, "https://h/R/.._x_y");
        // An encoded slash in a request does not create a new segment.
        assert_eq!(parse_path("", "/R/a%2Fb"), Some(("R", "a/b".to_owned())));
        assert_eq!(parse_path("", "/R/a/b"), None);
        assert_eq!(parse_path("/up", "/other/R/a"), None);
    }

    #[test]
    fn long_names_keep_their_extension() {
        let long = format!("{}.tar.gz", "é".repeat(300));
        let short = sanitize_filename(&long).expect("name");
        assert!(short.len() <= MAX_FILENAME_BYTES);
        assert!(short.ends_with(".gz"));
    }

    #[test]
    fn file_types() {
        assert_eq!(file_type("photo.JPG"), "jpg");
        assert_eq!(file_type("archive.tar.gz"), "gz");
        assert_eq!(file_type("README"), "");
        assert_eq!(file_type(".bashrc"), "");
        assert_eq!(file_type("x.abcdefghijklmn"), "abcdefghij");
    }
}
