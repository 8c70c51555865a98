//! XEP-0004 data forms as the ad-hoc commands use them: building forms and
//! result tables (every value goes through the XML writer, which escapes it),
//! and reading a submitted form strictly — one form of type `submit`, each
//! field once, single-valued fields with one value, every value bounded — so
//! a malformed payload is `bad-payload`, never a guess.

use std::collections::HashMap;

use crate::xml::Element;

/// The data forms namespace.
pub const NS_DATA: &str = "jabber:x:data";

/// The longest value a submitted field may carry (in bytes): the longest
/// column a value can end up in (a hold's reason) is 1024 characters.
pub const MAX_VALUE_BYTES: usize = 1024;

/// Most fields a submitted form may carry.
const MAX_FIELDS: usize = 16;

/// A form under construction.
pub struct Form(Element);

impl Form {
    /// A form of `kind` (`form` or `result`) with a title.
    pub fn new(kind: &str, title: &str) -> Form {
        Form(
            Element::new("x", NS_DATA)
                .attr("type", kind)
                .child(Element::new("title", NS_DATA).text(title)),
        )
    }

    /// Adds instructions.
    pub fn instructions(self, text: &str) -> Form {
        Form(
            self.0
                .child(Element::new("instructions", NS_DATA).text(text)),
        )
    }

    /// Adds a field.
    pub fn field(self, field: Element) -> Form {
        Form(self.0.child(field))
    }

    /// Lines of text as `fixed` fields (`file-1`, `file-2` …): what
    /// clients without result tables (poezio) show of a table.
    pub fn lines(self, prefix: &str, lines: &[String]) -> Form {
        let mut form = self;
        for (i, line) in lines.iter().enumerate() {
            form = form.field(fixed(&format!("{prefix}-{}", i + 1), line));
        }
        form
    }

    /// A result table: the columns (var, label), then one item per row.
    pub fn table(self, columns: &[(&str, &str)], rows: &[Vec<String>]) -> Form {
        let mut reported = Element::new("reported", NS_DATA);
        for (var, label) in columns {
            reported = reported.child(
                Element::new("field", NS_DATA)
                    .attr("var", *var)
                    .attr("label", *label)
                    .attr("type", "text-single"),
            );
        }
        let mut x = self.0.child(reported);
        for row in rows {
            let mut item = Element::new("item", NS_DATA);
            for ((var, _), value) in columns.iter().zip(row) {
                item = item.child(
                    Element::new("field", NS_DATA)
                        .attr("var", *var)
                        .child(value_el(value)),
                );
            }
            x = x.child(item);
        }
        Form(x)
    }

    /// The `<x/>` element.
    pub fn build(self) -> Element {
        self.0
    }
}

fn value_el(value: &str) -> Element {
    Element::new("value", NS_DATA).text(value)
}

/// A table's rows as lines of text (`Label: value, Label: value`).
pub fn row_lines(columns: &[(&str, &str)], rows: &[Vec<String>]) -> Vec<String> {
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .zip(row)
                .map(|((_, label), value)| format!("{label}: {value}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

/// A field of `kind` with a label, optionally required.
pub fn field(var: &str, kind: &str, label: &str, required: bool) -> Element {
    let f = Element::new("field", NS_DATA)
        .attr("var", var)
        .attr("type", kind)
        .attr("label", label);
    if required {
        f.child(Element::new("required", NS_DATA))
    } else {
        f
    }
}

/// A read-only field (`fixed` has no var; `text-single` in a result has one).
pub fn shown(var: &str, label: &str, value: &str) -> Element {
    Element::new("field", NS_DATA)
        .attr("var", var)
        .attr("type", "text-single")
        .attr("label", label)
        .child(value_el(value))
}

/// A line of text in a form (`fixed`), named so that clients which key
/// fields by name keep every line.
pub fn fixed(var: &str, text: &str) -> Element {
    Element::new("field", NS_DATA)
        .attr("var", var)
        .attr("type", "fixed")
        .child(value_el(text))
}

/// Adds a default value to a field.
pub fn with_value(field: Element, value: &str) -> Element {
    field.child(value_el(value))
}

/// Adds options (label, value) to a list field.
pub fn with_options(mut field: Element, options: &[(String, String)]) -> Element {
    for (label, value) in options {
        field = field.child(
            Element::new("option", NS_DATA)
                .attr("label", label.as_str())
                .child(value_el(value)),
        );
    }
    field
}

/// Why a submitted form cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPayload(pub String);

/// A submitted form, read strictly.
#[derive(Debug, Default)]
pub struct Submitted {
    fields: HashMap<String, Vec<String>>,
}

impl Submitted {
    /// Reads the form inside `command`: exactly one `jabber:x:data` form of
    /// type `submit`, at most a few fields, each named once, values bounded.
    pub fn read(command: &Element) -> Result<Submitted, BadPayload> {
        let mut forms = command
            .elements()
            .filter(|e| e.ns == NS_DATA && e.name == "x");
        let Some(x) = forms.next() else {
            return Err(BadPayload(
                "this step needs the form filled in and submitted".into(),
            ));
        };
        if forms.next().is_some() {
            return Err(BadPayload("send one form, not several".into()));
        }
        if x.get_attr("type") != Some("submit") {
            return Err(BadPayload("the form must be of type 'submit'".into()));
        }
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for f in x
            .elements()
            .filter(|e| e.name == "field" && e.ns == NS_DATA)
        {
            if fields.len() >= MAX_FIELDS {
                return Err(BadPayload("too many fields".into()));
            }
            // A field without a name carries nothing to read: XEP-0004's
            // `fixed` fields, or text a client turned into a field and sent
            // back (poezio does so with a step's note).
            let Some(var) = f.get_attr("var") else {
                continue;
            };
            let mut values = Vec::new();
            for v in f
                .elements()
                .filter(|e| e.name == "value" && e.ns == NS_DATA)
            {
                let text = v.text_content();
                if text.len() > MAX_VALUE_BYTES {
                    return Err(BadPayload(format!(
                        "field {var:?} is longer than {MAX_VALUE_BYTES} bytes"
                    )));
                }
                values.push(text);
                if values.len() > MAX_FIELDS {
                    return Err(BadPayload(format!("field {var:?} has too many values")));
                }
            }
            if fields.insert(var.to_owned(), values).is_some() {
                return Err(BadPayload(format!("field {var:?} appears twice")));
            }
        }
        Ok(Submitted { fields })
    }

    /// The one value of a single-valued field; `None` when it is absent or
    /// empty; an error when it carries several.
    pub fn single(&self, var: &str) -> Result<Option<&str>, BadPayload> {
        match self.fields.get(var).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one.trim()).filter(|v| !v.is_empty())),
            Some(_) => Err(BadPayload(format!("field {var:?} takes one value"))),
        }
    }

    /// The one value of a required single-valued field.
    pub fn required(&self, var: &str) -> Result<&str, BadPayload> {
        self.single(var)?
            .ok_or_else(|| BadPayload(format!("field {var:?} is required")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(x: Element) -> Element {
        Element::new("command", super::super::NS_COMMANDS).child(x)
    }

    fn submit(fields: &[(&str, &[&str])]) -> Element {
        let mut x = Element::new("x", NS_DATA).attr("type", "submit");
        for (var, values) in fields {
            let mut f = Element::new("field", NS_DATA).attr("var", *var);
            for v in *values {
                f = f.child(value_el(v));
            }
            x = x.child(f);
        }
        x
    }

    #[test]
    fn submitted_forms_are_read_strictly() {
        let ok = Submitted::read(&command(submit(&[("a", &["1"]), ("b", &[])]))).expect("ok");
        assert_eq!(ok.required("a"), Ok("1"));
        assert_eq!(ok.single("b"), Ok(None));
        assert!(ok.required("b").is_err());
        let two = Submitted::read(&command(submit(&[("a", &["1", "2"])]))).expect("read");
        assert!(two.single("a").is_err());
        assert!(
            Submitted::read(&Element::new("command", "x")).is_err(),
            "no form"
        );
        let form = submit(&[]).attr("type", "form");
        assert!(Submitted::read(&command(form)).is_err(), "not a submission");
        assert!(Submitted::read(&command(submit(&[("a", &["1"]), ("a", &["2"])]))).is_err());
        let huge = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(Submitted::read(&command(submit(&[("a", &[huge.as_str()])]))).is_err());
    }

    #[test]
    fn every_value_is_escaped_in_the_table() {
        let x = Form::new("result", "t")
            .table(&[("name", "Name")], &[vec!["<evil/>&'\"".into()]])
            .build()
            .to_xml("jabber:client");
        assert!(x.contains("&lt;evil/&gt;&amp;&apos;&quot;"), "{x}");
    }
}
