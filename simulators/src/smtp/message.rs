//! An accepted message and the few header fields read from it: header
//! lines unfolded (RFC 5322 2.2.3) and RFC 2047 encoded words in UTF-8 or
//! US-ASCII decoded, as a mail client would show them.

use std::borrow::Cow;

use base64::Engine;
use chrono::{DateTime, Utc};

/// A message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`, without angle brackets; empty for
    /// the null reverse path `<>`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in the order given.
    pub recipients: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, without the final
    /// `.` line: header, blank line, body, with their CRLFs.
    pub data: Vec<u8>,
    /// The `Subject` header, unfolded and decoded.
    pub subject: Option<String>,
    /// The `Message-ID` header as written (with its angle brackets).
    pub message_id: Option<String>,
    /// The username the client authenticated as, if it did.
    pub authenticated_as: Option<String>,
    /// When the server accepted it.
    pub received_at: DateTime<Utc>,
}

impl ReceivedMail {
    /// Builds the record of an accepted message, reading its header.
    pub(super) fn new(from: String, recipients: Vec<String>, data: Vec<u8>, authenticated_as: Option<String>) -> Self {
        let subject = header(&data, "Subject").map(|value| decode_words(&value));
        let message_id = header(&data, "Message-ID");
        Self {
            from,
            recipients,
            data,
            subject,
            message_id,
            authenticated_as,
            received_at: Utc::now(),
        }
    }

    /// The message as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }

    /// The first header field called `name` (case-insensitive), unfolded and
    /// trimmed, not decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.data, name)
    }
}

/// The header section of `data`: everything before the first empty line.
fn header_section(data: &[u8]) -> &[u8] {
    let mut start = 0;
    for line in data.split_inclusive(|byte| *byte == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            return &data[..start];
        }
        start += line.len();
    }
    data
}

/// The first field called `name` of `data`'s header, unfolded and trimmed.
pub(super) fn header(data: &[u8], name: &str) -> Option<String> {
    let section = String::from_utf8_lossy(header_section(data));
    let mut value: Option<String> = None;
    for line in section.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the field before it.
            if let Some(value) = value.as_mut() {
                value.push_str(line);
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((field, rest)) = line.split_once(':')
            && field.trim_end().eq_ignore_ascii_case(name)
        {
            value = Some(rest.to_owned());
        }
    }
    value.map(|value| value.trim().to_owned())
}

/// `text` with its RFC 2047 encoded words (`=?utf-8?B?...?=`, `=?utf-8?Q?...?=`)
/// decoded; whitespace between two encoded words is dropped, and a word in
/// another charset or not well-formed is left as it is.
pub(super) fn decode_words(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut pending_space = String::new();
    let mut previous_was_word = false;
    let mut rest = text;
    while !rest.is_empty() {
        let space_len = rest.len() - rest.trim_start().len();
        if space_len > 0 {
            pending_space.push_str(&rest[..space_len]);
            rest = &rest[space_len..];
            continue;
        }
        let token_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = &rest[..token_len];
        rest = &rest[token_len..];
        match decode_word(token) {
            Some(word) => {
                if !previous_was_word {
                    decoded.push_str(&pending_space);
                }
                decoded.push_str(&word);
                previous_was_word = true;
            }
            None => {
                decoded.push_str(&pending_space);
                decoded.push_str(token);
                previous_was_word = false;
            }
        }
        pending_space.clear();
    }
    decoded
}

fn decode_word(token: &str) -> Option<String> {
    let inner = token.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let (charset, encoding, payload) = (parts.next()?, parts.next()?, parts.next()?);
    // `charset*language` (RFC 2231) names the language after a star.
    let charset = charset.split('*').next().unwrap_or(charset);
    if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("us-ascii")) {
        return None;
    }
    let bytes = if encoding.eq_ignore_ascii_case("B") {
        base64::engine::general_purpose::STANDARD.decode(payload).ok()?
    } else if encoding.eq_ignore_ascii_case("Q") {
        decode_q(payload)?
    } else {
        return None;
    };
    String::from_utf8(bytes).ok()
}

fn decode_q(payload: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(payload.len());
    let mut input = payload.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'_' => bytes.push(b' '),
            b'=' => {
                let high = (input.next()? as char).to_digit(16)?;
                let low = (input.next()? as char).to_digit(16)?;
                bytes.push(u8::try_from(high * 16 + low).ok()?);
            }
            byte => bytes.push(byte),
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"From: a@example.test\r\nSubject: A long\r\n  folded subject\r\nMessage-ID: <id-1@example.test>\r\n\r\nSubject: not a header\r\n";

    #[test]
    fn header_fields_are_unfolded_and_the_body_is_not_read() {
        assert_eq!(header(MESSAGE, "subject").as_deref(), Some("A long  folded subject"));
        assert_eq!(header(MESSAGE, "Message-Id").as_deref(), Some("<id-1@example.test>"));
        assert_eq!(header(b"From: a\r\n\r\nSubject: body\r\n", "Subject"), None);
    }

    #[test]
    fn encoded_words_are_decoded_and_the_space_between_two_is_dropped() {
        assert_eq!(decode_words("=?utf-8?b?w4l0w6k=?= report"), "Été report");
        assert_eq!(
            decode_words("=?UTF-8?Q?caf=C3=A9_time?= =?utf-8?q?_now?="),
            "café time now"
        );
        assert_eq!(decode_words("plain  text"), "plain  text");
        assert_eq!(decode_words("=?iso-8859-1?q?caf=E9?="), "=?iso-8859-1?q?caf=E9?=");
    }
}
