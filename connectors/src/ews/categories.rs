//! The master category list, as Outlook keeps it in the `CategoryList` user
//! configuration of the calendar: an XML document of `<category name=...>`
//! elements. The connector adds or removes its own category by splicing the
//! document, leaving every other byte (other categories, attributes Outlook
//! keeps) as it was.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    ops::Range,
    time::{SystemTime, UNIX_EPOCH},
};

use quick_xml::{Reader, events::BytesStart, events::Event};

use super::soap::esc;

/// Outlook's colour preset the product's category takes (`7`: blue).
const COLOR: &str = "7";

fn is_named(start: &BytesStart<'_>, name: &str) -> Result<bool, String> {
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| error.to_string())?;
        if attribute.key.local_name().as_ref() == b"name" {
            let value = attribute.unescape_value().map_err(|error| error.to_string())?;
            return Ok(value == name);
        }
    }
    Ok(false)
}

/// Where the list's parts are: every `category` named `name`, and where a
/// new category goes.
struct Layout {
    matches: Vec<Range<usize>>,
    /// The position of `</categories>`, or the span of `<categories/>`.
    insert: Insert,
}

enum Insert {
    Before(usize),
    Empty(Range<usize>),
}

fn layout(document: &str, name: &str) -> Result<Layout, String> {
    let mut reader = Reader::from_str(document);
    let mut matches = Vec::new();
    let mut insert = None;
    let mut depth = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).map_err(|error| error.to_string())?;
        let event = reader.read_event().map_err(|error| error.to_string())?;
        let after = usize::try_from(reader.buffer_position()).map_err(|error| error.to_string())?;
        match event {
            Event::Empty(start) if start.local_name().as_ref() == b"category" && is_named(&start, name)? => {
                matches.push(before..after);
            }
            Event::Start(start) if start.local_name().as_ref() == b"category" => {
                let named = is_named(&start, name)?;
                reader.read_to_end(start.name()).map_err(|error| error.to_string())?;
                let end = usize::try_from(reader.buffer_position()).map_err(|error| error.to_string())?;
                if named {
                    matches.push(before..end);
                }
            }
            Event::Empty(start) if depth == 0 && start.local_name().as_ref() == b"categories" => {
                insert = Some(Insert::Empty(before..after));
            }
            Event::Start(_) => depth += 1,
            Event::End(end) => {
                depth = depth.saturating_sub(1);
                if depth == 0 && end.local_name().as_ref() == b"categories" {
                    insert = Some(Insert::Before(before));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let insert = insert.ok_or("the category list has no categories element")?;
    Ok(Layout { matches, insert })
}

/// A fresh GUID in Outlook's braced form, from the process's random hasher
/// keys and the clock.
fn new_guid() -> String {
    let mut halves = [0u64; 2];
    for (index, half) in halves.iter_mut().enumerate() {
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        hasher.write_u128(nanos);
        hasher.write_usize(index);
        *half = hasher.finish();
    }
    let bytes: Vec<u8> = halves.iter().flat_map(|half| half.to_be_bytes()).collect();
    let hex: String = bytes
        .iter()
        .enumerate()
        .map(|(index, byte)| match index {
            // Version 4, RFC 4122 variant.
            6 => format!("{:02x}", (byte & 0x0f) | 0x40),
            8 => format!("{:02x}", (byte & 0x3f) | 0x80),
            _ => format!("{byte:02x}"),
        })
        .collect();
    format!(
        "{{{}-{}-{}-{}-{}}}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn category_element(name: &str) -> String {
    format!(
        r#"<category name="{}" color="{COLOR}" keyboardShortcut="0" usageCount="0" guid="{}" renameOnFirstUse="0"/>"#,
        esc(name),
        new_guid()
    )
}

/// A list holding only `name`, for a mailbox that has none yet.
pub(crate) fn new_list(name: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><categories default="{0}" lastSavedSession="0" xmlns="CategoryList.xsd">{1}</categories>"#,
        esc(name),
        category_element(name)
    )
}

/// The list with `name` added, or `None` when it holds it already.
pub(crate) fn with_category(document: &str, name: &str) -> Result<Option<String>, String> {
    let layout = layout(document, name)?;
    if !layout.matches.is_empty() {
        return Ok(None);
    }
    let element = category_element(name);
    Ok(Some(match layout.insert {
        Insert::Before(position) => format!("{}{element}{}", &document[..position], &document[position..]),
        Insert::Empty(span) => {
            let tag = document[span.clone()].trim_end();
            let open = tag.strip_suffix("/>").unwrap_or(tag).trim_end();
            format!(
                "{}{open}>{element}</categories>{}",
                &document[..span.start],
                &document[span.end..]
            )
        }
    }))
}

/// The list without `name`, or `None` when it does not hold it.
pub(crate) fn without_category(document: &str, name: &str) -> Result<Option<String>, String> {
    let layout = layout(document, name)?;
    if layout.matches.is_empty() {
        return Ok(None);
    }
    let mut out = String::with_capacity(document.len());
    let mut kept = 0;
    for span in layout.matches {
        out.push_str(&document[kept..span.start]);
        kept = span.end;
    }
    out.push_str(&document[kept..]);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(document: &str, name: &str) -> Result<bool, String> {
        Ok(!layout(document, name)?.matches.is_empty())
    }

    const LIST: &str = r#"<?xml version="1.0"?>
<categories default="Red category" xmlns="CategoryList.xsd">
  <category name="Red category" color="0" guid="{1}"/>
  <category name="A &amp; B" color="1" guid="{2}"></category>
</categories>"#;

    #[test]
    fn a_category_is_added_once_and_removed_without_touching_the_others() {
        let added = with_category(LIST, "A & B").unwrap();
        assert!(added.is_none(), "it is there already");
        let added = with_category(LIST, "Syncfleet").unwrap().unwrap();
        assert!(holds(&added, "Syncfleet").unwrap());
        assert!(holds(&added, "Red category").unwrap());
        assert!(with_category(&added, "Syncfleet").unwrap().is_none());

        let removed = without_category(&added, "Syncfleet").unwrap().unwrap();
        assert_eq!(removed, LIST);
        let without_pair = without_category(LIST, "A & B").unwrap().unwrap();
        assert!(!without_pair.contains("A &amp; B"));
        assert!(without_category(LIST, "Syncfleet").unwrap().is_none());
    }

    #[test]
    fn an_empty_list_element_is_opened_to_take_the_category() {
        let added = with_category(r#"<categories xmlns="CategoryList.xsd" />"#, "Syncfleet")
            .unwrap()
            .unwrap();
        assert!(added.starts_with(r#"<categories xmlns="CategoryList.xsd"><category name="Syncfleet""#));
        assert!(holds(&added, "Syncfleet").unwrap());
        assert!(holds(&new_list("Syncfleet"), "Syncfleet").unwrap());
        assert_ne!(new_guid(), new_guid());
    }
}
