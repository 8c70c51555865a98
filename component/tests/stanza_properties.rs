//! Whatever a user can make the router forward, the component's output is
//! well-formed, namespace-correct XML: a property test over generated
//! stanzas (prefixed and namespaced attributes, default-namespace changes,
//! escapes, characters XML cannot carry, deep nesting, huge attributes).
//!
//! Each generated element tree is (1) written by our serialiser and checked
//! by a strict reader, (2) read back by the component's own stream reader and
//! written again with the same result, and (3) wrapped as an IQ to the
//! upload service, whose reply must pass the same strict check.

use std::time::Duration;

use mft_component::link::{Inbound, StanzaReader, NS_COMPONENT};
use mft_component::service::UploadService;
use mft_component::xml::{Attr, Element, Node};
use mft_storage::local::LocalBackend;
use mft_storage::Store;
use mft_upload_http::SlotSigner;
use proptest::prelude::*;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

const STREAM_OPEN: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='s1'>";

/// Checks `xml` (one stanza, inside a component stream) the way a strict
/// router does: well-formed, every prefix bound, no attribute twice by
/// expanded name, only characters XML allows. Returns the reason if not.
fn strict_check(xml: &str) -> Result<(), String> {
    if let Some(c) = xml.chars().find(|c| {
        !matches!(*c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    }) {
        return Err(format!("character U+{:04X} is not allowed in XML", c as u32));
    }
    let doc = format!("{STREAM_OPEN}{xml}</stream:stream>");
    let mut reader = NsReader::from_str(&doc);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| e.to_string())?;
        if let ResolveResult::Unknown(p) = ns {
            return Err(format!("unbound prefix {}", String::from_utf8_lossy(&p)));
        }
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
                let mut seen: Vec<(String, String)> = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    let key = a.key.as_ref();
                    if key == b"xmlns" || key.starts_with(b"xmlns:") {
                        let uri = a.unescape_value().map_err(|e| e.to_string())?;
                        if uri == "http://www.w3.org/XML/1998/namespace"
                            || uri == "http://www.w3.org/2000/xmlns/"
                        {
                            return Err(format!("reserved namespace {uri} bound"));
                        }
                        if key.starts_with(b"xmlns:") && uri.is_empty() {
                            return Err("prefix bound to the empty namespace".into());
                        }
                        continue;
                    }
                    a.unescape_value().map_err(|e| e.to_string())?;
                    let (rns, local) = reader.resolve_attribute(a.key);
                    let uri = match rns {
                        ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                        ResolveResult::Unbound => String::new(),
                        ResolveResult::Unknown(p) => {
                            return Err(format!(
                                "unbound attribute prefix {}",
                                String::from_utf8_lossy(&p)
                            ))
                        }
                    };
                    let key = (uri, String::from_utf8_lossy(local.as_ref()).into_owned());
                    if seen.contains(&key) {
                        return Err(format!("attribute {key:?} twice"));
                    }
                    seen.push(key);
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) => {
                t.unescape().map_err(|e| e.to_string())?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(())
}

fn read_one(xml: &str) -> Element {
    let doc = format!("{STREAM_OPEN}{xml}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut r = StanzaReader::new(doc.as_bytes());
        assert!(matches!(r.next().await, Ok(Inbound::Header(_))));
        match r.next().await {
            Ok(Inbound::Stanza(e)) => e,
            other => panic!("our reader rejected our own output {xml}: {other:?}"),
        }
    })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z <>&'\"]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
        Just("]]>".to_owned()),
        Just("\u{1}\u{0}\u{FFFE}\r\n\t".to_owned()),
        Just("x".repeat(70_000)),
    ]
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z][a-z0-9._-]{0,8}",
        1 => Just("p:attr".to_owned()),
        1 => Just("xmlns".to_owned()),
        1 => Just("1bad".to_owned()),
        1 => Just(String::new()),
        1 => Just("na me".to_owned()),
        1 => Just("é".to_owned()),
    ]
}

fn any_ns() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(NS_COMPONENT.to_owned()),
        Just("urn:xmpp:http:upload:0".to_owned()),
        Just("urn:probe".to_owned()),
        Just("urn:probe:p".to_owned()),
        Just(mft_component::xml::NS_XML.to_owned()),
        Just("http://www.w3.org/2000/xmlns/".to_owned()),
        Just("urn:'quote\"&<>".to_owned()),
    ]
}

fn any_attr() -> impl Strategy<Value = Attr> {
    (any_ns(), any_name(), any_text()).prop_map(|(ns, name, value)| Attr { ns, name, value })
}

fn any_element() -> impl Strategy<Value = Element> {
    let leaf = (
        any_name(),
        any_ns(),
        prop::collection::vec(any_attr(), 0..4),
    )
        .prop_map(|(name, ns, attrs)| Element {
            name,
            ns,
            attrs,
            children: Vec::new(),
        });
    leaf.prop_recursive(6, 48, 6, |inner| {
        (
            any_name(),
            any_ns(),
            prop::collection::vec(any_attr(), 0..4),
            prop::collection::vec(
                prop_oneof![
                    3 => inner.prop_map(Node::Element),
                    1 => any_text().prop_map(Node::Text)
                ],
                0..6,
            ),
        )
            .prop_map(|(name, ns, attrs, children)| Element {
                name,
                ns,
                attrs,
                children,
            })
    })
}

fn service() -> (tempfile::TempDir, UploadService) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut svc = UploadService::new(
        SlotSigner::new(b"property-test-key-0123456789"),
        Store::new(LocalBackend::new(dir.path()).expect("store")),
        "https://up.example.test/",
        vec!["example.test".into()],
    );
    svc.slot_ttl = Duration::from_secs(300);
    (dir, svc)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MFTD_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn whatever_we_write_is_well_formed_and_reads_back_stably(payload in any_element()) {
        let iq = Element::new("iq", NS_COMPONENT).attr("type", "get").attr("id", "p1").child(payload);
        let xml = iq.to_xml(NS_COMPONENT);
        prop_assert_eq!(strict_check(&xml), Ok(()), "{}", xml);
        let back = read_one(&xml);
        let again = back.to_xml(NS_COMPONENT);
        prop_assert_eq!(&again, &xml, "not stable");
    }

    #[test]
    fn every_reply_to_any_iq_is_well_formed(
        payload in any_element(),
        kind in prop_oneof![Just("get"), Just("set")],
        upload_request in any::<bool>(),
        size in prop_oneof![Just("12".to_owned()), Just("18446744073709551616".to_owned()), "[0-9a-z-]{0,6}"],
    ) {
        let (_dir, svc) = service();
        let mut payload = payload;
        if upload_request {
            payload.name = "request".into();
            payload.ns = "urn:xmpp:http:upload:0".into();
            payload.set_attr("filename", "a.txt");
            payload.set_attr("size", size);
        }
        let iq = Element::new("iq", NS_COMPONENT)
            .attr("type", kind)
            .attr("id", "q'1")
            .attr("from", "mallory@example.test/x")
            .attr("to", "upload.example.test")
            .child(payload);
        // What the router would hand us is what our reader makes of the wire form.
        let inbound = read_one(&iq.to_xml(NS_COMPONENT));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let reply = rt.block_on(svc.handle(&inbound)).expect("an IQ get/set is always answered");
        let xml = reply.to_xml(NS_COMPONENT);
        prop_assert_eq!(strict_check(&xml), Ok(()), "{}", xml);
        prop_assert_eq!(reply.get_attr("id"), Some("q'1"));
        prop_assert!(matches!(reply.get_attr("type"), Some("result" | "error")));
    }
}

#[test]
fn the_reported_probe_gets_a_well_formed_error() {
    let probe = "<iq type='get' to='upload.example.test' from='m@example.test/x' id='x'>\
                 <probe xmlns='urn:probe' xmlns:p='urn:probe:p' p:attr='1'/></iq>";
    let (_dir, svc) = service();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply = rt.block_on(svc.handle(&read_one(probe))).expect("answered");
    let xml = reply.to_xml(NS_COMPONENT);
    assert_eq!(strict_check(&xml), Ok(()), "{xml}");
    assert!(xml.contains("service-unavailable"), "{xml}");
    // A slot request carrying the same attribute is echoed with its prefix declared.
    let slot = "<iq type='get' to='upload.example.test' from='m@other.test/x' id='y'>\
                <request xmlns='urn:xmpp:http:upload:0' xmlns:p='urn:probe:p' p:attr='1' filename='a' size='1'/></iq>";
    let reply = rt.block_on(svc.handle(&read_one(slot))).expect("answered");
    let xml = reply.to_xml(NS_COMPONENT);
    assert_eq!(strict_check(&xml), Ok(()), "{xml}");
    assert!(xml.contains("xmlns:a0='urn:probe:p' a0:attr='1'"), "{xml}");
}

#[test]
fn deep_nesting_is_cut_not_followed() {
    let depth = 5000;
    let xml = format!(
        "<iq type='get' id='d' from='m@example.test/x'>{}{}</iq>",
        "<a xmlns='urn:deep'>".repeat(depth),
        "</a>".repeat(depth)
    );
    let parsed = read_one(&xml);
    let mut levels = 0;
    let mut cur = Some(&parsed);
    while let Some(e) = cur {
        levels += 1;
        cur = e.elements().next();
    }
    assert!(
        levels <= mft_component::link::MAX_DEPTH,
        "{levels} levels kept"
    );
}
