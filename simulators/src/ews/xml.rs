//! A small element tree read with quick-xml's event reader: SOAP requests are
//! small, and a tree lets each operation pick the elements it needs by local
//! name (the namespace prefixes a client chooses do not matter).

use quick_xml::{Reader, escape, events::Event};

/// An element: its local name, attributes (local names), children and text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child named `name`.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|child| child.name == name)
    }

    /// The children named `name`.
    pub(crate) fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |child| child.name == name)
    }

    /// The element at the end of `path`, child by child.
    pub(crate) fn find(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |element, name| element.child(name))
    }

    /// The text of the child named `name`.
    pub(crate) fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|child| child.text.as_str())
    }

    /// The value of the attribute named `name`.
    pub(crate) fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn local(name: &[u8]) -> String {
    let local = match name.iter().rposition(|byte| *byte == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    };
    String::from_utf8_lossy(local).into_owned()
}

fn open(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| error.to_string())?;
        let key = attribute.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let value = attribute.unescape_value().map_err(|error| error.to_string())?;
        attributes.push((local(key), value.into_owned()));
    }
    Ok(Element {
        name: local(start.name().as_ref()),
        attributes,
        ..Element::default()
    })
}

/// Reads a whole document into its root element.
pub(crate) fn parse(document: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(document);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(|error| error.to_string())?;
        match event {
            Event::Start(start) => stack.push(open(&start)?),
            Event::Empty(start) => {
                let element = open(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or("an end tag without its start")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => {
                if let Some(current) = stack.last_mut() {
                    let raw = text.decode().map_err(|error| error.to_string())?;
                    current
                        .text
                        .push_str(&escape::unescape(&raw).map_err(|error| error.to_string())?);
                }
            }
            Event::CData(data) => {
                if let Some(current) = stack.last_mut() {
                    current
                        .text
                        .push_str(&data.decode().map_err(|error| error.to_string())?);
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(current) = stack.last_mut() {
                    if let Some(character) = reference.resolve_char_ref().map_err(|error| error.to_string())? {
                        current.text.push(character);
                    } else {
                        let name = reference.decode().map_err(|error| error.to_string())?;
                        let resolved = escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?;
                        current.text.push_str(resolved);
                    }
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".to_owned());
    }
    root.ok_or_else(|| "the document has no element".to_owned())
}

/// `text` escaped for XML content or an attribute value.
pub(crate) fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    escape::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_prefix_and_text_is_unescaped() {
        let root = parse(
            r#"<?xml version="1.0"?><s:Envelope xmlns:s="x"><s:Body><m:Op a:Id="1&amp;2"><t:Subject>A &amp; B &lt;c&gt; &#233; <![CDATA[<raw>]]></t:Subject><t:Empty/></m:Op></s:Body></s:Envelope>"#,
        )
        .unwrap();
        let operation = root.find(&["Body", "Op"]).unwrap();
        assert_eq!(operation.attribute("Id"), Some("1&2"));
        assert_eq!(operation.child_text("Subject"), Some("A & B <c> é <raw>"));
        assert!(operation.child("Empty").is_some());
        assert!(parse("<a><b></a>").is_err());
    }
}
