//! Reading EWS answers: a small element tree built with quick-xml's event
//! reader (elements by local name, so the server's namespace prefixes do not
//! matter), the SOAP fault or body, response messages, sync pages and items.

use std::time::Duration;

use base64::{
    Engine as _, alphabet,
    engine::{GeneralPurpose, GeneralPurposeConfig},
};
use chrono::{DateTime, Utc};
use quick_xml::{Reader, escape, events::BytesStart, events::Event};

use super::errors::{EWS, call_error};
use crate::{
    error::ConnectorError,
    mailbox::{EmailAddress, MailMessage},
};

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

    /// Every element named `name` in the subtree, depth first.
    pub(crate) fn descendants<'a>(&'a self, name: &str, found: &mut Vec<&'a Element>) {
        for child in &self.children {
            if child.name == name {
                found.push(child);
            }
            child.descendants(name, found);
        }
    }
}

fn local(name: &[u8]) -> String {
    let local = match name.iter().rposition(|byte| *byte == b':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    };
    String::from_utf8_lossy(local).into_owned()
}

fn open(start: &BytesStart<'_>) -> Result<Element, String> {
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

/// Reads a whole document into its root element. The error names what is
/// wrong, never the document's content.
pub(crate) fn parse(document: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(document);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        match reader.read_event().map_err(|error| error.to_string())? {
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
                        let resolved = escape::resolve_predefined_entity(&name).ok_or("an unknown entity reference")?;
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

fn unexpected(what: &str) -> ConnectorError {
    ConnectorError::permanent(EWS, format!("unexpected answer: {what}"))
}

/// What a SOAP answer holds.
#[derive(Debug)]
pub(crate) enum Soap {
    /// The body's element (`m:{Operation}Response`).
    Response(Element),
    /// A SOAP fault, classified.
    Fault(ConnectorError),
}

/// Reads a SOAP envelope into its response element or its fault.
pub(crate) fn soap(document: &str) -> Result<Soap, ConnectorError> {
    let root = parse(document).map_err(|error| unexpected(&format!("not XML ({error})")))?;
    if root.name != "Envelope" {
        return Err(unexpected("not a SOAP envelope"));
    }
    let body = root.child("Body").ok_or_else(|| unexpected("no SOAP body"))?;
    let first = body.children.first().ok_or_else(|| unexpected("an empty SOAP body"))?;
    if first.name != "Fault" {
        return Ok(Soap::Response(first.clone()));
    }
    let detail = first.child("detail");
    let code = detail
        .and_then(|detail| detail.child_text("ResponseCode"))
        .or_else(|| first.child_text("faultcode"))
        .map(|code| code.rsplit(':').next().unwrap_or(code).trim())
        .unwrap_or_default();
    let message = first.child_text("faultstring").unwrap_or_default().trim();
    let backoff = detail
        .and_then(|detail| detail.child("MessageXml"))
        .and_then(|xml| {
            xml.children_named("Value")
                .find(|value| value.attribute("Name") == Some("BackOffMilliseconds"))
        })
        .and_then(|value| value.text.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    Ok(Soap::Fault(call_error(code, message, backoff)))
}

/// One response message of an operation.
#[derive(Debug)]
pub(crate) struct ResponseMessage<'a> {
    /// `ResponseClass` is `Success` or `Warning`.
    pub success: bool,
    /// `ResponseCode`.
    pub code: &'a str,
    /// `MessageText`.
    pub text: &'a str,
    /// The whole message, for its content.
    pub element: &'a Element,
}

fn message_of(element: &Element) -> ResponseMessage<'_> {
    ResponseMessage {
        success: element.attribute("ResponseClass") != Some("Error"),
        code: element.child_text("ResponseCode").unwrap_or("NoError").trim(),
        text: element.child_text("MessageText").unwrap_or_default().trim(),
        element,
    }
}

/// The response messages of an operation, in request order.
pub(crate) fn response_messages(response: &Element) -> Result<Vec<ResponseMessage<'_>>, ConnectorError> {
    let messages = response
        .child("ResponseMessages")
        .ok_or_else(|| unexpected("no ResponseMessages"))?;
    Ok(messages.children.iter().map(message_of).collect())
}

/// The one response message of an operation that answers one.
pub(crate) fn single_message(response: &Element) -> Result<ResponseMessage<'_>, ConnectorError> {
    response_messages(response)?
        .into_iter()
        .next()
        .ok_or_else(|| unexpected("no response message"))
}

/// The status of an operation that carries it on its response element
/// (`InstallApp`, `UninstallApp`, `GetAppManifests`).
pub(crate) fn top_level_message(response: &Element) -> ResponseMessage<'_> {
    message_of(response)
}

/// A successful message, or its error as a call error.
pub(crate) fn succeeded<'a>(message: ResponseMessage<'a>) -> Result<&'a Element, ConnectorError> {
    if message.success {
        Ok(message.element)
    } else {
        Err(call_error(message.code, message.text, None))
    }
}

/// One change of a `SyncFolderItems` page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncChange {
    /// `Create` or `Update`: the item to read.
    Changed(String),
    /// `Delete`.
    Deleted(String),
}

/// A `SyncFolderItems` page.
#[derive(Debug)]
pub(crate) struct SyncPage {
    pub state: String,
    pub last: bool,
    pub changes: Vec<SyncChange>,
}

fn item_id(item: &Element) -> Option<String> {
    item.child("ItemId")
        .and_then(|id| id.attribute("Id"))
        .map(str::to_owned)
}

/// Reads a successful `SyncFolderItemsResponseMessage`. `ReadFlagChange`
/// entries are left out: the read flag means nothing to the sync.
pub(crate) fn sync_page(message: &Element) -> Result<SyncPage, ConnectorError> {
    let state = message
        .child_text("SyncState")
        .map(str::trim)
        .filter(|state| !state.is_empty())
        .ok_or_else(|| unexpected("no SyncState"))?
        .to_owned();
    let last = match message.child_text("IncludesLastItemInRange").map(str::trim) {
        Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        _ => return Err(unexpected("no IncludesLastItemInRange")),
    };
    let mut changes = Vec::new();
    if let Some(list) = message.child("Changes") {
        for change in &list.children {
            match change.name.as_str() {
                "Create" | "Update" => {
                    let id = change
                        .children
                        .first()
                        .and_then(item_id)
                        .ok_or_else(|| unexpected("a change without an item id"))?;
                    changes.push(SyncChange::Changed(id));
                }
                "Delete" => {
                    let id = item_id(change).ok_or_else(|| unexpected("a deletion without an item id"))?;
                    changes.push(SyncChange::Deleted(id));
                }
                _ => {}
            }
        }
    }
    Ok(SyncPage { state, last, changes })
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?.trim())
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn address(mailbox: &Element) -> Option<EmailAddress> {
    let address = mailbox.child_text("EmailAddress")?.trim();
    if address.is_empty() {
        return None;
    }
    Some(EmailAddress {
        address: address.to_owned(),
        name: mailbox
            .child_text("Name")
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned),
    })
}

fn recipients(item: &Element, name: &str) -> Vec<EmailAddress> {
    item.child(name)
        .map(|list| list.children_named("Mailbox").filter_map(address).collect())
        .unwrap_or_default()
}

/// The start of `body`, whitespace runs folded, at most `chars` characters.
fn preview(body: &str, chars: usize) -> String {
    let mut out = String::new();
    for (index, word) in body.split_whitespace().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= chars {
            break;
        }
    }
    match out.char_indices().nth(chars) {
        Some((end, _)) => out[..end].to_owned(),
        None => out,
    }
}

/// A message read by `GetItem`.
#[derive(Debug)]
pub(crate) struct FetchedMessage {
    pub message: MailMessage,
    pub received: Option<DateTime<Utc>>,
}

/// Reads the item of a successful `GetItemResponseMessage`; `None` for an
/// item that is no message (no id, or neither sent nor received time).
pub(crate) fn fetched_message(message: &Element, sent_by_owner: bool, preview_chars: usize) -> Option<FetchedMessage> {
    let item = message.child("Items")?.children.first()?;
    let id = item_id(item)?;
    let received = parse_time(item.child_text("DateTimeReceived"));
    let sent_at = parse_time(item.child_text("DateTimeSent")).or(received)?;
    Some(FetchedMessage {
        message: MailMessage {
            id,
            internet_message_id: item
                .child_text("InternetMessageId")
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
            sent_by_owner,
            subject: item.child_text("Subject").unwrap_or_default().to_owned(),
            from: item
                .child("From")
                .and_then(|from| from.child("Mailbox"))
                .and_then(address),
            to: recipients(item, "ToRecipients"),
            cc: recipients(item, "CcRecipients"),
            sent_at,
            body_preview: preview(item.child_text("Body").unwrap_or_default(), preview_chars),
        },
        received,
    })
}

/// The id of the item a successful `CreateItem` or `UpdateItem` message names.
pub(crate) fn written_item_id(message: &Element) -> Option<String> {
    message.child("Items")?.children.first().and_then(item_id)
}

/// Base64 as EWS answers it (user configuration data, add-in manifests):
/// the standard alphabet with its padding required, and the unused bits of
/// a last symbol not checked.
const EWS_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The bytes an element's base64 `text` holds, or `None` when it is not
/// base64. Whitespace is ignored: a server may break the text into lines.
pub(crate) fn base64(text: &str) -> Option<Vec<u8>> {
    let symbols: Vec<u8> = text.bytes().filter(|byte| !byte.is_ascii_whitespace()).collect();
    EWS_BASE64.decode(symbols).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_server_busy_fault_carries_its_back_off() {
        let document = r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode><faultstring xml:lang="en-US">The server cannot service this request right now. Try again later.</faultstring><detail><e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy</e:ResponseCode><t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><t:Value Name="BackOffMilliseconds">297749</t:Value></t:MessageXml></detail></s:Fault></s:Body></s:Envelope>"#;
        let Soap::Fault(error) = soap(document).unwrap() else {
            panic!("a fault");
        };
        assert_eq!(error.kind(), ErrorKind::Throttled);
        assert_eq!(error.retry_after(), Some(Duration::from_millis(297_749)));
    }

    #[test]
    fn a_sync_page_keeps_creates_updates_and_deletes_in_order() {
        let message = parse(
            r#"<m:M xmlns:m="m" xmlns:t="t"><m:SyncState>abc=</m:SyncState><m:IncludesLastItemInRange>false</m:IncludesLastItemInRange><m:Changes><t:Create><t:Message><t:ItemId Id="1"/></t:Message></t:Create><t:ReadFlagChange><t:ItemId Id="1"/><t:IsRead>true</t:IsRead></t:ReadFlagChange><t:Update><t:MeetingRequest><t:ItemId Id="2"/></t:MeetingRequest></t:Update><t:Delete><t:ItemId Id="3"/></t:Delete></m:Changes></m:M>"#,
        )
        .unwrap();
        let page = sync_page(&message).unwrap();
        assert_eq!(page.state, "abc=");
        assert!(!page.last);
        assert_eq!(
            page.changes,
            [
                SyncChange::Changed("1".to_owned()),
                SyncChange::Changed("2".to_owned()),
                SyncChange::Deleted("3".to_owned())
            ]
        );
    }

    #[test]
    fn a_preview_folds_whitespace_and_stops_at_the_bound() {
        assert_eq!(preview("  Hello,\n\n  world  and more", 12), "Hello, world");
        assert_eq!(preview("éé", 5), "éé");
    }

    #[test]
    fn base64_text_matches_the_rfc_vectors_ignores_whitespace_and_refuses_what_is_not_base64() {
        use base64::engine::general_purpose::STANDARD;
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(encoded).unwrap(), plain.as_bytes());
        }
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(base64(&STANDARD.encode(&bytes)).unwrap(), bytes);
        assert_eq!(base64("Zm9v\r\nYmFy").unwrap(), b"foobar");
        assert_eq!(base64(" Zm9v\tYg==\n").unwrap(), b"foob");
        // The bits a last symbol does not use are not checked.
        assert_eq!(base64("Zh==").unwrap(), b"f");
        for not_base64 in [
            "Zm9",
            "Zg",
            "Zg=",
            "Zg==Zg==",
            "Z!==",
            "Z===",
            "====",
            "Zm9v-_==",
            "Zm9v\u{e9}A==",
        ] {
            assert!(base64(not_base64).is_none(), "{not_base64:?}");
        }
    }
}
