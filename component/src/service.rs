//! What the component answers: disco#info/#items, pings, and slot requests
//! (policy, location, signed token, URLs). Every IQ get/set gets exactly one
//! answer; results and errors are never answered.

use std::time::Duration;

use mft_storage::{ChatType, Store};
use mft_upload_http::urls::slot_url;
use mft_upload_http::{SlotClaims, SlotSigner};

use crate::slot::{self, find_request, jid_domain, parse_request, UPLOAD_NAMESPACES};
use crate::stanza::{iq_result, StanzaError};
use crate::xml::Element;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PING: &str = "urn:xmpp:ping";
const NS_DATA: &str = "jabber:x:data";

/// How long a client is asked to wait when the file server is down.
const RETRY_AFTER_UNAVAILABLE: u64 = 30;

/// The upload service behind the component JID.
pub struct UploadService {
    /// Slot tokens.
    pub signer: SlotSigner,
    /// Where files go.
    pub store: Store,
    /// Base of slot URLs.
    pub public_url: String,
    /// Largest file in bytes.
    pub max_file_size: u64,
    /// How long PUT URLs stay valid.
    pub slot_ttl: Duration,
    /// Requesters' domains allowed to upload (lower case).
    pub allowed_domains: Vec<String>,
}

impl UploadService {
    /// The reply to one inbound stanza, if it needs one.
    pub async fn handle(&self, stanza: &Element) -> Option<Element> {
        if stanza.name != "iq" {
            return None; // Messages and presence are not ours to answer.
        }
        let kind = stanza.get_attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return None;
        }
        let payload = stanza.elements().next();
        let reply = match (kind, payload.map(|p| (p.name.as_str(), p.ns.as_str()))) {
            ("get", Some(("query", NS_DISCO_INFO)))
                if payload.and_then(|p| p.get_attr("node")).is_none() =>
            {
                iq_result(stanza, Some(self.disco_info()))
            }
            ("get", Some(("query", NS_DISCO_ITEMS))) => {
                iq_result(stanza, Some(Element::new("query", NS_DISCO_ITEMS)))
            }
            ("get", Some(("ping", NS_PING))) => iq_result(stanza, None),
            ("get", Some(("request", _))) if find_request(stanza).is_some() => {
                self.slot(stanza).await
            }
            _ => StanzaError::new("cancel", "service-unavailable", "").reply_to(stanza),
        };
        Some(reply)
    }

    fn disco_info(&self) -> Element {
        let mut query = Element::new("query", NS_DISCO_INFO).child(
            Element::new("identity", NS_DISCO_INFO)
                .attr("category", "store")
                .attr("type", "file")
                .attr("name", "HTTP File Upload"),
        );
        for feature in [NS_DISCO_INFO, NS_PING]
            .into_iter()
            .chain(UPLOAD_NAMESPACES)
        {
            query = query.child(Element::new("feature", NS_DISCO_INFO).attr("var", feature));
        }
        for ns in UPLOAD_NAMESPACES {
            let field = |var: &str, value: &str| {
                Element::new("field", NS_DATA)
                    .attr("var", var)
                    .child(Element::new("value", NS_DATA).text(value))
            };
            let form = Element::new("x", NS_DATA)
                .attr("type", "result")
                .child(field("FORM_TYPE", ns).attr("type", "hidden"))
                .child(field("max-file-size", &self.max_file_size.to_string()));
            query = query.child(form);
        }
        query
    }

    async fn slot(&self, iq: &Element) -> Element {
        match self.grant(iq).await {
            Ok(slot) => iq_result(iq, Some(slot)),
            Err(e) => e.reply_to(iq),
        }
    }

    async fn grant(&self, iq: &Element) -> Result<Element, StanzaError> {
        let (ns, req) =
            find_request(iq).ok_or_else(|| StanzaError::new("modify", "bad-request", ""))?;
        let from = iq.get_attr("from").unwrap_or("");
        if !self.allowed_domains.contains(&jid_domain(from)) {
            tracing::info!(from, "slot refused: domain not allowed");
            return Err(StanzaError::new(
                "auth",
                "forbidden",
                "Users of your server may not upload files here.",
            ));
        }
        let request = parse_request(ns, req)?;
        if request.size > self.max_file_size {
            tracing::info!(
                from,
                size = request.size,
                max = self.max_file_size,
                "slot refused: too large"
            );
            return Err(slot::too_large(ns, self.max_file_size));
        }
        let loc = self.store.allocate(ChatType::Im).await.map_err(|e| {
            tracing::warn!(error = %e, "slot refused: file server unavailable");
            let stamp = mft_storage::utc::UtcTime::from_unix(
                mft_storage::utc::unix_now() + RETRY_AFTER_UNAVAILABLE,
            );
            slot::retry_later(
                ns,
                "The file server is unavailable; try again shortly.",
                &stamp.xep0082(),
            )
        })?;
        let claims = SlotClaims {
            resource: loc.resource().to_owned(),
            filename: request.filename.clone(),
            size: request.size,
            content_type: request.content_type.clone(),
            uploader: from.to_owned(),
            to: String::new(),
            expires: mft_storage::utc::unix_now() + self.slot_ttl.as_secs(),
        };
        let token = self.signer.sign(&claims);
        let url = slot_url(&self.public_url, loc.resource(), &request.filename);
        tracing::info!(
            from,
            size = request.size,
            resource = loc.resource(),
            "slot granted"
        );
        Ok(slot::slot_element(ns, &url, &url, &token))
    }
}
