//! Reading the few S3 XML answers mftd needs (an upload id, a listing, an
//! error code): the text of named elements, in document order. S3 answers
//! are flat enough that a scan for `<Name>…</Name>` is exact; entities are
//! decoded.

/// The text of every `<tag>…</tag>` in `xml`, in order.
pub fn all(xml: &str, tag: &str) -> Vec<String> {
    blocks(xml, tag).into_iter().map(unescape).collect()
}

/// The text of the first `<tag>…</tag>` in `xml`.
pub fn first(xml: &str, tag: &str) -> Option<String> {
    all(xml, tag).into_iter().next()
}

/// The inner XML of every `<tag>…</tag>` (for grouped fields such as one
/// `<Upload>`'s key and id).
pub fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// Text with XML's five entities and numeric references decoded.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=semi]),
        }
        rest = &tail[semi + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_prefixes_and_grouped_uploads() {
        let listing = "<ListBucketResult><Contents><Key>n/a&amp;b</Key></Contents>\
            <Contents><Key>n/c</Key></Contents><CommonPrefixes><Prefix>n/d/</Prefix>\
            </CommonPrefixes><IsTruncated>false</IsTruncated></ListBucketResult>";
        assert_eq!(all(listing, "Key"), ["n/a&b", "n/c"]);
        assert_eq!(all(listing, "Prefix"), ["n/d/"]);
        assert_eq!(first(listing, "IsTruncated").as_deref(), Some("false"));
        let uploads = "<Upload><Key>k1</Key><UploadId>u1</UploadId></Upload>\
            <Upload><Key>k2</Key><UploadId>u2</UploadId></Upload>";
        let pairs: Vec<_> = blocks(uploads, "Upload")
            .iter()
            .map(|b| (first(b, "Key").unwrap(), first(b, "UploadId").unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [("k1".into(), "u1".into()), ("k2".into(), "u2".into())]
        );
        assert_eq!(unescape("&#x41;&#66;&bogus;"), "AB&bogus;");
    }
}
