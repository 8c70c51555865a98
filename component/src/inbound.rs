//! What an inbound IQ asks of the component, read once: its type and first
//! child decide one [`Inbound`] variant, which the service handles with a
//! `match`. Nothing here answers; a payload nobody handles is
//! [`Inbound::Unsupported`] (`service-unavailable`).

use crate::adhoc::NS_COMMANDS;
use crate::slot::UPLOAD_NAMESPACES;
use crate::xml::Element;

pub(crate) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub(crate) const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub(crate) const NS_PING: &str = "urn:xmpp:ping";
/// Reports from the router module that a file's URL was sent to someone.
pub const NS_SHARE: &str = "urn:mftd:share:0";

/// One inbound IQ, by what it asks.
#[derive(Debug)]
pub(crate) enum Inbound<'a> {
    /// disco#info on the service (`node` unset) or on a node.
    DiscoInfo { node: Option<&'a str> },
    /// disco#items, with its query (which may name a node).
    DiscoItems { query: &'a Element },
    /// An XEP-0050 command.
    Command,
    /// XEP-0199 ping.
    Ping,
    /// An XEP-0363 slot request in namespace `ns`.
    Slot {
        ns: &'static str,
        request: &'a Element,
    },
    /// A share reported by a router module.
    Share { share: &'a Element },
    /// Anything else (`service-unavailable`).
    Unsupported,
}

impl<'a> Inbound<'a> {
    /// Reads `iq` (type `get` or `set`; anything else is not a request and
    /// is `None`).
    pub(crate) fn of(iq: &'a Element) -> Option<Inbound<'a>> {
        if iq.name != "iq" {
            return None;
        }
        let kind = iq.get_attr("type").unwrap_or("");
        if kind != "get" && kind != "set" {
            return None;
        }
        let Some(payload) = iq.elements().next() else {
            return Some(Inbound::Unsupported);
        };
        let (name, ns) = (payload.name.as_str(), payload.ns.as_str());
        Some(match (kind, name, ns) {
            ("get", "query", NS_DISCO_INFO) => Inbound::DiscoInfo {
                node: payload.get_attr("node"),
            },
            ("get", "query", NS_DISCO_ITEMS) => Inbound::DiscoItems { query: payload },
            ("set", "command", NS_COMMANDS) => Inbound::Command,
            ("get", "ping", NS_PING) => Inbound::Ping,
            ("get", "request", _) => match UPLOAD_NAMESPACES.into_iter().find(|n| *n == ns) {
                Some(ns) => Inbound::Slot {
                    ns,
                    request: payload,
                },
                None => Inbound::Unsupported,
            },
            ("set", "share", NS_SHARE) => Inbound::Share { share: payload },
            _ => Inbound::Unsupported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iq(kind: &str, payload: Option<Element>) -> Element {
        let iq = Element::new("iq", "jabber:component:accept")
            .attr("type", kind)
            .attr("id", "1");
        match payload {
            Some(p) => iq.child(p),
            None => iq,
        }
    }

    #[test]
    fn each_request_is_read_once_by_type_and_first_child() {
        let request = || Element::new("request", "urn:xmpp:http:upload:0").attr("filename", "a");
        assert!(matches!(
            Inbound::of(&iq("get", Some(request()))),
            Some(Inbound::Slot {
                ns: "urn:xmpp:http:upload:0",
                ..
            })
        ));
        assert!(matches!(
            Inbound::of(&iq("set", Some(request()))),
            Some(Inbound::Unsupported)
        ));
        let other = Element::new("request", "urn:example:other");
        assert!(matches!(
            Inbound::of(&iq("get", Some(other))),
            Some(Inbound::Unsupported)
        ));
        let info = Element::new("query", NS_DISCO_INFO).attr("node", "x");
        assert!(matches!(
            Inbound::of(&iq("get", Some(info))),
            Some(Inbound::DiscoInfo { node: Some("x") })
        ));
        assert!(Inbound::of(&iq("result", None)).is_none());
        assert!(matches!(
            Inbound::of(&iq("get", None)),
            Some(Inbound::Unsupported)
        ));
    }
}
