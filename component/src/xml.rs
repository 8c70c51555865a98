//! A minimal XML element tree for stanzas: enough to read what a router sends
//! (namespaces of elements *and* attributes resolved) and to write replies
//! that are always well-formed, namespace-correct XML whatever they carry.
//!
//! The writer is the one place that turns user-supplied data into bytes on
//! the component stream, so it upholds the invariant on its own: every
//! namespaced attribute gets a prefix declared on the element that uses it,
//! duplicate attributes are written once, names that are not XML names are
//! left out, and characters XML cannot carry are replaced. A reply can
//! therefore never make the router close the stream as not-well-formed.
//! Built from quick-xml events by [`crate::link`].

use std::fmt::Write;

/// The namespace bound to the `xml` prefix (`xml:lang`).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A nested element.
    Element(Element),
    /// Character data (unescaped).
    Text(String),
}

/// An attribute with its resolved namespace (empty for an unprefixed one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Namespace URI; empty for ordinary attributes.
    pub ns: String,
    /// Local name.
    pub name: String,
    /// Value (unescaped).
    pub value: String,
}

/// An XML element with its resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Namespace URI (empty when none).
    pub ns: String,
    /// Attributes other than namespace declarations.
    pub attrs: Vec<Attr>,
    /// Children in document order.
    pub children: Vec<Node>,
}

/// `xml:lang` → (XML namespace, `lang`); a plain name → (no namespace, name).
fn split_key(key: &str) -> (&str, &str) {
    match key.strip_prefix("xml:") {
        Some(local) => (NS_XML, local),
        None => ("", key),
    }
}

impl Element {
    /// An empty element.
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_owned(),
            ns: ns.to_owned(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds (or replaces) an attribute; `key` is a plain name or `xml:…`.
    pub fn attr(mut self, key: &str, value: impl Into<String>) -> Element {
        self.set_attr(key, value);
        self
    }

    /// Sets an attribute in place; `key` is a plain name or `xml:…`.
    pub fn set_attr(&mut self, key: &str, value: impl Into<String>) {
        let (ns, name) = split_key(key);
        self.set_attr_ns(ns, name, value);
    }

    /// Sets an attribute in namespace `ns` in place.
    pub fn set_attr_ns(&mut self, ns: &str, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|a| a.ns == ns && a.name == name) {
            Some(slot) => slot.value = value,
            None => self.attrs.push(Attr {
                ns: ns.to_owned(),
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Appends a child element.
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Appends text.
    pub fn text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// An attribute's value; `key` is a plain name or `xml:…`.
    pub fn get_attr(&self, key: &str) -> Option<&str> {
        let (ns, name) = split_key(key);
        self.attrs
            .iter()
            .find(|a| a.ns == ns && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name && e.ns == ns)
    }

    /// All text directly inside this element.
    pub fn text_content(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// Serialises as a child of an element in namespace `parent_ns`
    /// (stanzas: `jabber:component:accept`), declaring `xmlns` only where it changes.
    pub fn to_xml(&self, parent_ns: &str) -> String {
        let mut out = String::new();
        self.write(&mut out, parent_ns);
        out
    }

    fn write(&self, out: &mut String, parent_ns: &str) {
        if !self.is_writable() {
            return; // Not representable: leave it out rather than break the stream.
        }
        let _ = write!(out, "<{}", self.name);
        if self.ns != parent_ns {
            let _ = write!(out, " xmlns='{}'", escape(&self.ns));
        }
        // One prefix per attribute namespace, declared here.
        let mut prefixes: Vec<&str> = Vec::new();
        let mut written: Vec<(&str, &str)> = Vec::new();
        for a in &self.attrs {
            let key = (a.ns.as_str(), a.name.as_str());
            // `xmlns` without a namespace is a declaration, not an attribute.
            let declaration = a.ns.is_empty() && a.name == "xmlns";
            if !is_name(&a.name) || declaration || a.ns == NS_XMLNS || written.contains(&key) {
                continue;
            }
            written.push(key);
            if a.ns.is_empty() {
                let _ = write!(out, " {}='{}'", a.name, escape(&a.value));
            } else if a.ns == NS_XML {
                let _ = write!(out, " xml:{}='{}'", a.name, escape(&a.value));
            } else {
                let i = match prefixes.iter().position(|p| *p == a.ns) {
                    Some(i) => i,
                    None => {
                        prefixes.push(&a.ns);
                        let i = prefixes.len() - 1;
                        let _ = write!(out, " xmlns:a{i}='{}'", escape(&a.ns));
                        i
                    }
                };
                let _ = write!(out, " a{i}:{}='{}'", a.name, escape(&a.value));
            }
        }
        let has_content = self.children.iter().any(|c| match c {
            Node::Element(e) => e.is_writable(),
            Node::Text(t) => !t.is_empty(),
        });
        if !has_content {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write(out, &self.ns),
                Node::Text(t) => out.push_str(&escape(t)),
            }
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

impl Element {
    /// An element can be written when its name is an XML name and its
    /// namespace is not one of the two XML reserves for prefixes.
    fn is_writable(&self) -> bool {
        is_name(&self.name) && self.ns != NS_XML && self.ns != NS_XMLNS
    }
}

/// Whether `name` is an XML name without a colon (an NCName), so it can be
/// written as an element or attribute local name.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let start = |c: char| c.is_ascii_alphabetic() || c == '_' || (!c.is_ascii() && is_xml_char(c));
    start(first) && chars.all(|c| start(c) || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Characters XML 1.0 can carry at all.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text for character data and single- or double-quoted attributes:
/// markup characters as entities, white space other than the space as
/// character references (so attribute values survive normalisation), and
/// characters XML cannot carry as U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_namespaces_only_where_they_change_and_escapes() {
        let e = Element::new("iq", "jabber:component:accept")
            .attr("to", "a@b/c'd")
            .child(Element::new("query", "q:ns").child(Element::new("item", "q:ns").text("x<&>y")));
        assert_eq!(
            e.to_xml("jabber:component:accept"),
            "<iq to='a@b/c&apos;d'><query xmlns='q:ns'><item>x&lt;&amp;&gt;y</item></query></iq>"
        );
    }
}
