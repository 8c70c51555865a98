//! Stanza helpers: replies that swap `from`/`to` and keep the `id`, and
//! RFC 6120 stanza errors that echo the request.

use crate::link::NS_COMPONENT;
use crate::xml::Element;

/// The largest payload an error reply repeats back.
const MAX_ECHO_BYTES: usize = 4096;

/// The namespace of stanza error conditions and texts.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// An `<iq type='result'/>` answering `request`, with optional payload.
pub fn iq_result(request: &Element, payload: Option<Element>) -> Element {
    let mut iq = reply_shell(request, "result");
    if let Some(p) = payload {
        iq = iq.child(p);
    }
    iq
}

fn reply_shell(request: &Element, kind: &str) -> Element {
    let mut iq = Element::new(&request.name, NS_COMPONENT).attr("type", kind);
    if let Some(id) = request.get_attr("id") {
        iq.set_attr("id", id);
    }
    if let Some(from) = request.get_attr("to") {
        iq.set_attr("from", from);
    }
    if let Some(to) = request.get_attr("from") {
        iq.set_attr("to", to);
    }
    iq
}

/// The type of a stanza error (RFC 6120 §8.3.2): what the sender should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry: the error cannot be remedied.
    Cancel,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting: a temporary error.
    Wait,
}

impl ErrorType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// The defined conditions mftd answers with (RFC 6120 §8.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The request is malformed.
    BadRequest,
    /// The requester may not do this.
    Forbidden,
    /// The request violates a limit (too large).
    NotAcceptable,
    /// A resource is exhausted for now (quota, file server, rate).
    ResourceConstraint,
    /// Nothing here answers this request.
    ServiceUnavailable,
    /// The request asks for something this service does not offer.
    FeatureNotImplemented,
    /// The item named does not exist.
    ItemNotFound,
    /// The action is not allowed now (XEP-0050's `session-expired`).
    NotAllowed,
}

impl Condition {
    /// The element name.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Forbidden => "forbidden",
            Condition::NotAcceptable => "not-acceptable",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::ItemNotFound => "item-not-found",
            Condition::NotAllowed => "not-allowed",
        }
    }
}

/// A stanza error: type, condition, human text, and optional
/// application-specific element.
#[derive(Debug, Clone)]
pub struct StanzaError {
    /// What the sender should do.
    pub kind: ErrorType,
    /// The RFC 6120 defined condition.
    pub condition: Condition,
    /// Explanation for the user.
    pub text: String,
    /// An extra element such as `<file-too-large/>` or `<retry/>`.
    pub extra: Option<Box<Element>>,
}

impl StanzaError {
    /// A stanza error without an application element.
    pub fn new(kind: ErrorType, condition: Condition, text: impl Into<String>) -> Self {
        StanzaError {
            kind,
            condition,
            text: text.into(),
            extra: None,
        }
    }

    /// `cancel/feature-not-implemented`.
    pub fn feature_not_implemented(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Cancel, Condition::FeatureNotImplemented, text)
    }

    /// `modify/bad-request`.
    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Modify, Condition::BadRequest, text)
    }

    /// `cancel/item-not-found`.
    pub fn item_not_found(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Cancel, Condition::ItemNotFound, text)
    }

    /// `auth/forbidden`.
    pub fn forbidden(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Auth, Condition::Forbidden, text)
    }

    /// `modify/not-acceptable`.
    pub fn not_acceptable(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Modify, Condition::NotAcceptable, text)
    }

    /// `cancel/service-unavailable`.
    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, Condition::ServiceUnavailable, "")
    }

    /// `wait/resource-constraint`.
    pub fn resource_constraint(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Wait, Condition::ResourceConstraint, text)
    }

    /// The error reply to `request`, without echoing its payload (RFC 6120
    /// §8.3.1 makes the echo optional, and an arbitrary payload is not ours
    /// to repeat).
    pub fn reply_to(&self, request: &Element) -> Element {
        self.reply(request, None)
    }

    /// The error reply to `request`, echoing `payload` (a request we
    /// understood, as XEP-0363's examples do) when it is small.
    pub fn reply_echoing(&self, request: &Element, payload: &Element) -> Element {
        let small = payload.to_xml("").len() <= MAX_ECHO_BYTES;
        self.reply(request, small.then_some(payload))
    }

    fn reply(&self, request: &Element, echo: Option<&Element>) -> Element {
        let mut iq = reply_shell(request, "error");
        if let Some(payload) = echo {
            iq = iq.child(payload.clone());
        }
        let mut error = Element::new("error", NS_COMPONENT)
            .attr("type", self.kind.as_str())
            .child(Element::new(self.condition.as_str(), NS_STANZAS));
        if !self.text.is_empty() {
            error = error.child(
                Element::new("text", NS_STANZAS)
                    .attr("xml:lang", "en")
                    .text(self.text.clone()),
            );
        }
        if let Some(extra) = &self.extra {
            error = error.child((**extra).clone());
        }
        iq.child(error)
    }
}
