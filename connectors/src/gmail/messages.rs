//! A Gmail message in `format=metadata` turned into the sync's
//! [`MailMessage`]: address headers parsed, the `Date` header (else the
//! internal date) as the sending time, the snippet unescaped and bounded as
//! the body preview, the `SENT` label as "sent by the owner".

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::{
    error::{ConnectorError, Provider},
    mailbox::{EmailAddress, MailMessage},
};

/// The headers asked for with `format=metadata`.
pub(crate) const METADATA_HEADERS: &[&str] = &["From", "To", "Cc", "Subject", "Message-ID", "Date"];

/// The most characters of the snippet kept as the body preview.
pub const PREVIEW_CHARS: usize = 255;

/// Labels of items that are not mail the sync follows.
const NOT_MAIL: &[&str] = &["DRAFT", "CHAT"];

/// Whether an item with these labels is mail the sync follows.
pub(crate) fn is_mail(labels: &[String]) -> bool {
    !labels.iter().any(|label| NOT_MAIL.contains(&label.as_str()))
}

/// A message as `messages.get` answers it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GmailMessage {
    pub id: String,
    #[serde(default)]
    pub label_ids: Vec<String>,
    #[serde(default)]
    pub snippet: String,
    /// Milliseconds since the epoch, as a string.
    #[serde(default)]
    pub internal_date: Option<String>,
    #[serde(default)]
    pub payload: Option<Payload>,
}

/// The part of a message that carries its headers.
#[derive(Debug, Deserialize)]
pub(crate) struct Payload {
    #[serde(default)]
    pub headers: Vec<Header>,
}

/// One header.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub name: String,
    pub value: String,
}

impl GmailMessage {
    fn header(&self, name: &str) -> Option<&str> {
        self.payload
            .as_ref()?
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value.as_str())
    }

    /// Whether it is mail the sync follows (drafts and chats are not).
    pub(crate) fn is_mail(&self) -> bool {
        is_mail(&self.label_ids)
    }

    /// The sync's view of the message.
    pub(crate) fn into_mail_message(self) -> Result<MailMessage, ConnectorError> {
        let sent_at = self
            .header("Date")
            .and_then(parse_date)
            .or_else(|| {
                let millis = self.internal_date.as_deref()?.parse::<i64>().ok()?;
                DateTime::from_timestamp_millis(millis)
            })
            .ok_or_else(|| {
                ConnectorError::permanent(
                    Provider::Gmail,
                    format!("message {} has neither a Date header nor an internal date", self.id),
                )
            })?;
        Ok(MailMessage {
            internet_message_id: self
                .header("Message-ID")
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
            sent_by_owner: self.label_ids.iter().any(|label| label == "SENT"),
            subject: self.header("Subject").unwrap_or_default().to_owned(),
            from: self
                .header("From")
                .map(addresses)
                .and_then(|list| list.into_iter().next()),
            to: self.header("To").map(addresses).unwrap_or_default(),
            cc: self.header("Cc").map(addresses).unwrap_or_default(),
            sent_at,
            body_preview: preview(&self.snippet),
            id: self.id,
        })
    }
}

/// An RFC 5322 date, with or without a trailing comment such as `(UTC)`.
fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    let value = match value.rfind('(') {
        Some(at) if value.ends_with(')') => value[..at].trim_end(),
        _ => value,
    };
    DateTime::parse_from_rfc2822(value).ok().map(|date| date.to_utc())
}

/// Splits an address list at the commas outside quotes and angle brackets.
fn split_list(list: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (at, c) in list.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' | ';' if !quoted && !angle => {
                entries.push(&list[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    entries.push(&list[start..]);
    entries
}

/// A display name without its quotes and escapes.
fn unquote(name: &str) -> String {
    let name = name.trim();
    let inner = name
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(name);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out.trim().to_owned()
}

/// The addresses of an address header (`Ann <ann@x>, "Doe, Bo" <bo@y>, z@w`);
/// group names (`team: a@x, b@y;`) are dropped, entries without an address skipped.
pub(crate) fn addresses(header: &str) -> Vec<EmailAddress> {
    split_list(header)
        .into_iter()
        .filter_map(|entry| {
            let entry = entry.trim();
            // A group's name ends with a colon outside quotes and brackets.
            let entry = match (entry.find(':'), entry.find(['"', '<'])) {
                (Some(colon), None) => &entry[colon + 1..],
                (Some(colon), Some(open)) if colon < open => &entry[colon + 1..],
                _ => entry,
            }
            .trim();
            let (name, address) = match (entry.rfind('<'), entry.rfind('>')) {
                (Some(open), Some(close)) if open < close => (unquote(&entry[..open]), entry[open + 1..close].trim()),
                _ => (String::new(), entry),
            };
            if !address.contains('@') || address.contains(char::is_whitespace) {
                return None;
            }
            Some(EmailAddress {
                address: address.to_owned(),
                name: (!name.is_empty()).then_some(name),
            })
        })
        .collect()
}

/// The snippet unescaped (Gmail answers it HTML-escaped) and bounded.
fn preview(snippet: &str) -> String {
    let mut out = String::with_capacity(snippet.len());
    let mut rest = snippet;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let entity = rest.find(';').filter(|end| *end <= 10).map(|end| &rest[1..end]);
        let decoded = entity.and_then(|entity| match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => {
                let number = entity.strip_prefix('#')?;
                let code = match number.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => number.parse().ok()?,
                };
                char::from_u32(code)
            }
        });
        match (entity, decoded) {
            (Some(entity), Some(c)) => {
                out.push(c);
                rest = &rest[entity.len() + 2..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    match out.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => out[..end].to_owned(),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(address: &str, name: Option<&str>) -> EmailAddress {
        EmailAddress {
            address: address.to_owned(),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn address_lists_keep_quoted_commas_and_skip_groups_and_garbage() {
        assert_eq!(
            addresses(r#"Ann Example <ann@example.test>, "Doe, Bo \"B\"" <bo@example.test>, zed@example.test"#),
            [
                address("ann@example.test", Some("Ann Example")),
                address("bo@example.test", Some("Doe, Bo \"B\"")),
                address("zed@example.test", None),
            ]
        );
        assert_eq!(
            addresses("team: a@example.test, b@example.test;, undisclosed-recipients:;"),
            [address("a@example.test", None), address("b@example.test", None)]
        );
        assert!(addresses("not an address").is_empty());
    }

    #[test]
    fn the_date_header_wins_over_the_internal_date_and_the_snippet_is_unescaped() {
        let message: GmailMessage = serde_json::from_value(serde_json::json!({
            "id": "m1",
            "labelIds": ["SENT"],
            "snippet": "Tom &amp; Jerry&#39;s &lt;plan&gt; &bogus; &#x263A;",
            "internalDate": "1700000000000",
            "payload": {"headers": [
                {"name": "Date", "value": "Tue, 14 Nov 2023 22:13:20 +0100 (CET)"},
                {"name": "Subject", "value": "Plan"},
                {"name": "Message-Id", "value": "<m1@example.test>"},
                {"name": "From", "value": "Me <me@example.test>"},
            ]},
        }))
        .unwrap();
        let mail = message.into_mail_message().unwrap();
        assert!(mail.sent_by_owner);
        assert_eq!(mail.sent_at.to_rfc3339(), "2023-11-14T21:13:20+00:00");
        assert_eq!(mail.body_preview, "Tom & Jerry's <plan> &bogus; \u{263a}");
        assert_eq!(mail.internet_message_id.as_deref(), Some("<m1@example.test>"));
        assert_eq!(mail.from, Some(address("me@example.test", Some("Me"))));
        assert!(mail.to.is_empty());

        let bare: GmailMessage =
            serde_json::from_value(serde_json::json!({"id": "m2", "internalDate": "1700000000000"})).unwrap();
        assert_eq!(bare.into_mail_message().unwrap().sent_at.timestamp(), 1_700_000_000);
        let dateless: GmailMessage = serde_json::from_value(serde_json::json!({"id": "m3"})).unwrap();
        assert!(dateless.into_mail_message().is_err());
    }

    #[test]
    fn a_long_snippet_is_cut_on_a_character_boundary() {
        assert_eq!(preview(&"é".repeat(400)).chars().count(), PREVIEW_CHARS);
    }
}
