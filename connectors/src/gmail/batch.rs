//! The batch endpoint's format (`POST /batch/gmail/v1`): a `multipart/mixed`
//! body of `application/http` parts, each one request, answered by a
//! `multipart/mixed` body of `application/http` parts, each one response, in
//! order and with the request's `Content-ID` prefixed by `response-`.

use std::time::Duration;

use reqwest::StatusCode;

use super::errors;
use crate::error::{ConnectorError, Provider};

/// The boundary of the requests this client builds. Parts hold only request
/// lines with percent-encoded paths, so it cannot occur inside one.
pub(crate) const BOUNDARY: &str = "batch_syncfleet_7c1e";

/// The `Content-Type` of a batch request.
pub(crate) fn content_type() -> String {
    format!("multipart/mixed; boundary={BOUNDARY}")
}

/// The `Content-ID` of the `index`th request.
fn content_id(index: usize) -> String {
    format!("item-{index}")
}

/// A batch body of `GET` requests, one per target (`/path?query`).
pub(crate) fn request_body(targets: &[String]) -> String {
    let mut body = String::new();
    for (index, target) in targets.iter().enumerate() {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Type: application/http\r\nContent-ID: <{}>\r\n\r\nGET {target} HTTP/1.1\r\n\r\n",
            content_id(index)
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body
}

/// One answer of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartResponse {
    /// The index of the request it answers.
    pub index: usize,
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: String,
}

fn malformed(what: &str) -> ConnectorError {
    ConnectorError::permanent(Provider::Gmail, format!("malformed batch answer: {what}"))
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Option<&str> {
    let mut parameters = content_type.split(';');
    if !parameters.next()?.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    parameters.find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
            .filter(|value| !value.is_empty())
    })
}

/// Splits `text` at its first blank line (CRLF or LF line ends).
fn split_head(text: &str) -> (&str, &str) {
    let crlf = text.find("\r\n\r\n").map(|at| (at, 4));
    let lf = text.find("\n\n").map(|at| (at, 2));
    let split = match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    match split {
        Some((at, length)) => (&text[..at], &text[at + length..]),
        None => (text, ""),
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip_while(|line| line.is_empty()).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The answers of a batch of `count` requests, each matched to its request by
/// `Content-ID` (or by position when the answer has none).
pub(crate) fn parse_response(
    content_type: &str,
    body: &str,
    count: usize,
) -> Result<Vec<PartResponse>, ConnectorError> {
    let boundary = boundary_of(content_type).ok_or_else(|| malformed("not multipart/mixed with a boundary"))?;
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::with_capacity(count);
    for (position, section) in body.split(delimiter.as_str()).skip(1).enumerate() {
        if section.starts_with("--") {
            break;
        }
        let (part_head, response) = split_head(section.trim_start_matches(['\r', '\n']));
        let index = match header(part_head, "content-id") {
            Some(id) => id
                .trim_matches(['<', '>'])
                .strip_prefix("response-item-")
                .and_then(|index| index.parse().ok())
                .ok_or_else(|| malformed("a part's Content-ID is not one this client sent"))?,
            None => position,
        };
        let (response_head, response_body) = split_head(response);
        let status_line = response_head.lines().next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .filter(|_| status_line.starts_with("HTTP/"))
            .ok_or_else(|| malformed("a part has no HTTP status line"))?;
        let retry_after = header(response_head, "retry-after").and_then(errors::retry_after_value);
        parts.push(PartResponse {
            index,
            status,
            retry_after,
            body: response_body.trim_end_matches(['\r', '\n']).to_owned(),
        });
    }
    let mut seen = vec![false; count];
    for part in &parts {
        match seen.get_mut(part.index) {
            Some(seen) if !*seen => *seen = true,
            _ => return Err(malformed("a part answers an unknown or already answered request")),
        }
    }
    if parts.len() != count {
        return Err(malformed(&format!("{} answers for {count} requests", parts.len())));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_body_has_one_application_http_part_per_target() {
        let body = request_body(&["/gmail/v1/users/me/messages/a?format=metadata".to_owned()]);
        assert_eq!(
            body,
            "--batch_syncfleet_7c1e\r\nContent-Type: application/http\r\nContent-ID: <item-0>\r\n\r\n\
             GET /gmail/v1/users/me/messages/a?format=metadata HTTP/1.1\r\n\r\n--batch_syncfleet_7c1e--\r\n"
        );
    }

    #[test]
    fn answers_are_matched_to_their_requests_with_status_delay_and_body() {
        let body = "--b\r\nContent-Type: application/http\r\nContent-ID: <response-item-1>\r\n\r\n\
                    HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"error\":{}}\r\n\
                    --b\r\nContent-Type: application/http\r\nContent-ID: <response-item-0>\r\n\r\n\
                    HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n\r\n\r\n--b--\r\n";
        let parts = parse_response("multipart/mixed; boundary=b", body, 2).unwrap();
        assert_eq!(parts[0].index, 1);
        assert_eq!(parts[0].status, StatusCode::NOT_FOUND);
        assert_eq!(parts[0].body, "{\"error\":{}}");
        assert_eq!(parts[1].index, 0);
        assert_eq!(parts[1].retry_after, Some(Duration::from_secs(3)));
        assert!(parse_response("multipart/mixed; boundary=b", body, 3).is_err());
        assert!(parse_response("application/json", body, 2).is_err());
    }
}
