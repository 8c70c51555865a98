//! XEP-0363 slot requests: reading them in all three namespaces clients use,
//! checking them against policy, and building slot results or the exact
//! errors the XEP prescribes.

use mft_upload_http::media_type;
use mft_upload_http::urls::sanitize_filename;

use crate::stanza::StanzaError;
#[cfg(test)]
use crate::stanza::{Condition, ErrorType};
use crate::xml::Element;

/// The largest file mftd accepts, and what `max_file_size = 0` means: 4 GiB.
pub const MAX_FILE_SIZE_CAP: u64 = 4 << 30;

/// Current XEP-0363 namespace.
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// XEP-0363 v0.2 (child elements, no headers).
pub const NS_UPLOAD_LEGACY: &str = "urn:xmpp:http:upload";
/// The Conversations namespace (as v0.2).
pub const NS_UPLOAD_SIACS: &str = "eu:siacs:conversations:http:upload";

/// The namespaces we answer, newest first.
pub const UPLOAD_NAMESPACES: [&str; 3] = [NS_UPLOAD, NS_UPLOAD_LEGACY, NS_UPLOAD_SIACS];

/// A slot request as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The namespace it came in (decides the reply's shape).
    pub ns: &'static str,
    /// Sanitised file name.
    pub filename: String,
    /// Size in bytes, positive.
    pub size: u64,
    /// Declared Content-Type, if any.
    pub content_type: Option<String>,
    /// What the upload is for (XEP-0363 1.2); `Message` when not said.
    pub purpose: Purpose,
}

/// XEP-0363 1.2 purposes.
pub const NS_PURPOSE: &str = "urn:xmpp:http:upload:purpose:0";

/// What an upload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Shared in a message (the default).
    Message,
    /// An avatar or other profile data.
    Profile,
    /// To be gone by the given time (Unix seconds).
    Ephemeral {
        /// Unix seconds by which the file must be removed.
        expire_before: u64,
    },
    /// To be kept without age limit.
    Permanent,
}

impl Purpose {
    /// The element and feature name.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Message => "message",
            Purpose::Profile => "profile",
            Purpose::Ephemeral { .. } => "ephemeral",
            Purpose::Permanent => "permanent",
        }
    }

    /// The disco feature advertising it.
    pub fn feature(name: &str) -> String {
        format!("{NS_PURPOSE}#{name}")
    }
}

/// Reads the purpose child of a request: at most one element in the
/// purpose namespace; `expire-before` must be a future XEP-0082 time.
fn parse_purpose(req: &Element, now: u64) -> Result<Purpose, StanzaError> {
    let mut found = req.elements().filter(|e| e.ns == NS_PURPOSE);
    let Some(el) = found.next() else {
        return Ok(Purpose::Message);
    };
    if found.next().is_some() {
        return Err(bad_request("Give at most one purpose."));
    }
    match el.name.as_str() {
        "message" => Ok(Purpose::Message),
        "profile" => Ok(Purpose::Profile),
        "permanent" => Ok(Purpose::Permanent),
        "ephemeral" => {
            let stamp = el.get_attr("expire-before").ok_or_else(|| {
                bad_request("An ephemeral upload needs expire-before (an XEP-0082 UTC time).")
            })?;
            let at = mft_common::utc::UtcTime::parse_xep0082(stamp.trim()).ok_or_else(|| {
                bad_request("expire-before is not an XEP-0082 time such as 2026-11-26T12:00:00Z.")
            })?;
            if at.unix <= now {
                return Err(bad_request("expire-before is in the past."));
            }
            Ok(Purpose::Ephemeral {
                expire_before: at.unix,
            })
        }
        other => Err(StanzaError::feature_not_implemented(format!(
            "The purpose {other:?} is not supported here."
        ))),
    }
}

/// Finds the upload `<request/>` in an IQ, if there is one (the tests'
/// shortcut; the service reads each IQ once, in `inbound.rs`).
#[cfg(test)]
fn find_request(iq: &Element) -> Option<(&'static str, &Element)> {
    UPLOAD_NAMESPACES
        .into_iter()
        .find_map(|ns| iq.get_child("request", ns).map(|r| (ns, r)))
}

fn bad_request(text: &str) -> StanzaError {
    StanzaError::bad_request(text)
}

/// Reads a `<request/>` in namespace `ns`.
pub fn parse_request(ns: &'static str, req: &Element) -> Result<SlotRequest, StanzaError> {
    let field = |name: &str| -> Option<String> {
        if ns == NS_UPLOAD {
            req.get_attr(name).map(str::to_owned)
        } else {
            req.get_child(name, ns).map(Element::text_content)
        }
    };
    let raw_name = field("filename").unwrap_or_default();
    let filename = sanitize_filename(&raw_name)
        .ok_or_else(|| bad_request("The filename is missing or empty."))?;
    let size = field("size")
        .as_deref()
        .and_then(parse_size)
        .ok_or_else(|| bad_request("The size must be a positive number of bytes."))?;
    let content_type = match field("content-type").map(|c| c.trim().to_owned()) {
        None => None,
        Some(c) if c.is_empty() => None,
        Some(c) => Some(media_type::canonical(&c).ok_or_else(|| {
            bad_request("The content-type must be one media type, such as image/jpeg.")
        })?),
    };
    let purpose = parse_purpose(req, mft_common::utc::unix_now())?;
    Ok(SlotRequest {
        ns,
        filename,
        size,
        content_type,
        purpose,
    })
}

/// A positive size in bytes. A number too large for 64 bits is still a
/// size (`u64::MAX`), so it is refused as too large, not as malformed.
fn parse_size(raw: &str) -> Option<u64> {
    let digits = raw.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let size = digits.parse::<u64>().unwrap_or(u64::MAX);
    (size > 0).then_some(size)
}

/// The `file-too-large` error carrying the limit. Every namespace gets
/// `<max-file-size>`: it is what v0.2 and later clients read (only v0.1,
/// which no client speaks any more, said `<max-size>`).
pub fn too_large(ns: &'static str, max: u64) -> StanzaError {
    let limit_name = "max-file-size";
    StanzaError {
        extra: Some(Box::new(
            Element::new("file-too-large", ns)
                .child(Element::new(limit_name, ns).text(max.to_string())),
        )),
        ..StanzaError::not_acceptable(format!(
            "File too large. The maximum file size is {max} bytes."
        ))
    }
}

/// A temporary refusal with the time to retry (XEP-0082 stamp).
pub fn retry_later(ns: &'static str, text: &str, stamp: &str) -> StanzaError {
    StanzaError {
        extra: Some(Box::new(Element::new("retry", ns).attr("stamp", stamp))),
        ..StanzaError::resource_constraint(text)
    }
}

/// The `<slot/>` payload for a granted request.
pub fn slot_element(ns: &'static str, put_url: &str, get_url: &str, token: &str) -> Element {
    if ns == NS_UPLOAD {
        Element::new("slot", ns)
            .child(
                Element::new("put", ns).attr("url", put_url).child(
                    Element::new("header", ns)
                        .attr("name", "Authorization")
                        .text(format!("Bearer {token}")),
                ),
            )
            .child(Element::new("get", ns).attr("url", get_url))
    } else {
        // v0.2 clients cannot send headers: the token rides in the PUT URL.
        Element::new("slot", ns)
            .child(Element::new("put", ns).text(format!("{put_url}?token={token}")))
            .child(Element::new("get", ns).text(get_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{Inbound, StanzaReader};

    async fn stanza(xml: &str) -> Element {
        let doc = format!(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='1'>{xml}"
        );
        let mut r = StanzaReader::new(doc.as_bytes());
        let _ = r.next().await;
        match r.next().await {
            Ok(Inbound::Stanza(e)) => e,
            other => panic!("no stanza: {other:?}"),
        }
    }

    // XEP-0363 §4, Example 4 (requesting a slot).
    const XEP_EXAMPLE_4: &str = "<iq from='romeo@montague.tld/garden' id='step_03' to='upload.montague.tld' type='get'>\
        <request xmlns='urn:xmpp:http:upload:0' filename='tr\u{e8}s cool.jpg' size='23456' content-type='image/jpeg' />\
        </iq>";

    #[tokio::test]
    async fn xep_example_request_parses() {
        let iq = stanza(XEP_EXAMPLE_4).await;
        let (ns, req) = find_request(&iq).expect("request");
        let parsed = parse_request(ns, req).expect("valid");
        assert_eq!(
            parsed,
            SlotRequest {
                ns: NS_UPLOAD,
                filename: "très cool.jpg".into(),
                size: 23456,
                content_type: Some("image/jpeg".into()),
                purpose: Purpose::Message,
            }
        );
    }

    #[tokio::test]
    async fn content_type_is_optional_and_legacy_children_work() {
        let iq = stanza("<iq type='get' id='1'><request xmlns='urn:xmpp:http:upload:0' filename='a.bin' size='1'/></iq>").await;
        let (ns, req) = find_request(&iq).expect("request");
        assert_eq!(parse_request(ns, req).expect("valid").content_type, None);
        let iq = stanza(
            "<iq type='get' id='2'><request xmlns='eu:siacs:conversations:http:upload'><filename>x.png</filename><size>42</size></request></iq>",
        )
        .await;
        let (ns, req) = find_request(&iq).expect("request");
        assert_eq!(ns, NS_UPLOAD_SIACS);
        assert_eq!(parse_request(ns, req).expect("valid").size, 42);
    }

    #[tokio::test]
    async fn bad_requests() {
        for attrs in [
            "filename='a.bin'",
            "filename='a.bin' size='0'",
            "filename='a.bin' size='-5'",
            "filename='a.bin' size='lots'",
            "size='5'",
            "filename='' size='5'",
            "filename='&#0;' size='5'".replace("&#0;", "\u{1}").as_str(),
            "filename='a' size='5' content-type='not a type'",
            "filename='a' size='5' content-type='text/plain;,text/html'",
            "filename='a' size='5' content-type='text/plain, text/html'",
            "filename='a' size='+5'",
            "filename='a' size='5.0'",
        ] {
            let iq = stanza(&format!(
                "<iq type='get' id='1'><request xmlns='urn:xmpp:http:upload:0' {attrs}/></iq>"
            ))
            .await;
            let (ns, req) = find_request(&iq).expect("request");
            let err = parse_request(ns, req).expect_err(attrs);
            assert_eq!(
                (err.kind, err.condition),
                (ErrorType::Modify, Condition::BadRequest),
                "{attrs}"
            );
        }
    }

    #[tokio::test]
    async fn sizes_beyond_64_bits_are_too_large_not_malformed() {
        for size in ["18446744073709551616", "99999999999999999999999999"] {
            let iq = stanza(&format!(
                "<iq type='get' id='1'><request xmlns='urn:xmpp:http:upload:0' filename='a' size='{size}'/></iq>"
            ))
            .await;
            let (ns, req) = find_request(&iq).expect("request");
            assert_eq!(parse_request(ns, req).expect("a size").size, u64::MAX);
        }
        let legacy = too_large(NS_UPLOAD_LEGACY, 10)
            .extra
            .expect("file-too-large")
            .to_xml("");
        assert!(
            legacy.contains("<max-file-size>10</max-file-size>"),
            "{legacy}"
        );
    }

    #[tokio::test]
    async fn content_types_are_made_canonical() {
        let iq = stanza("<iq type='get' id='1'><request xmlns='urn:xmpp:http:upload:0' filename='a' size='5' content-type='Text/Plain; Charset=UTF-8'/></iq>").await;
        let (ns, req) = find_request(&iq).expect("request");
        assert_eq!(
            parse_request(ns, req)
                .expect("valid")
                .content_type
                .as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn error_and_slot_shapes_follow_the_xep() {
        let request = Element::new("iq", "jabber:component:accept")
            .attr("id", "step_03")
            .attr("from", "romeo@montague.tld/garden")
            .attr("to", "upload.montague.tld")
            .attr("type", "get")
            .child(
                Element::new("request", NS_UPLOAD)
                    .attr("filename", "a")
                    .attr("size", "9"),
            );
        let payload = request.elements().next().expect("request").clone();
        let xml = too_large(NS_UPLOAD, 20000)
            .reply_echoing(&request, &payload)
            .to_xml("jabber:component:accept");
        assert_eq!(
            xml,
            "<iq type='error' id='step_03' from='upload.montague.tld' to='romeo@montague.tld/garden'>\
             <request xmlns='urn:xmpp:http:upload:0' filename='a' size='9'/>\
             <error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>File too large. The maximum file size is 20000 bytes.</text>\
             <file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>20000</max-file-size></file-too-large></error></iq>"
        );
        let slot = slot_element(NS_UPLOAD, "https://u/p", "https://u/p", "T").to_xml("");
        assert_eq!(
            slot,
            "<slot xmlns='urn:xmpp:http:upload:0'><put url='https://u/p'><header name='Authorization'>Bearer T</header></put><get url='https://u/p'/></slot>"
        );
    }
}
