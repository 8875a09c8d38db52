//! The batch format: a `multipart/mixed` body whose parts are each one
//! `application/http` request (`GET /gmail/v1/users/me/messages/ID HTTP/1.1`,
//! headers, an optional body), answered by a `multipart/mixed` body of
//! `application/http` responses in the same order, each with the `Content-ID`
//! of its request prefixed by `response-`.

use axum::http::{Method, StatusCode};

use super::api::Answer;

/// One request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartRequest {
    /// The part's `Content-ID` without its angle brackets, if it had one.
    pub content_id: Option<String>,
    pub method: Method,
    /// The path, without scheme and host.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    pub body: Vec<u8>,
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut parameters = content_type.split(';');
    let media_type = parameters.next()?.trim();
    if !media_type.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    parameters.find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_owned())
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
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The requests of a batch body, in order.
pub(crate) fn parse(body: &[u8], boundary: &str) -> Result<Vec<PartRequest>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the batch body is not UTF-8".to_owned())?;
    let delimiter = format!("--{boundary}");
    let mut sections = text.split(delimiter.as_str());
    // Whatever precedes the first delimiter is a preamble.
    sections.next();
    let mut parts = Vec::new();
    let mut closed = false;
    for section in sections {
        if section.starts_with("--") {
            closed = true;
            break;
        }
        let section = section
            .strip_prefix("\r\n")
            .or_else(|| section.strip_prefix('\n'))
            .ok_or_else(|| "a boundary line must end with a line break".to_owned())?;
        let section = section
            .strip_suffix("\r\n")
            .or_else(|| section.strip_suffix('\n'))
            .unwrap_or(section);
        let (part_head, request) = split_head(section);
        let content_type = header(part_head, "content-type").unwrap_or_default();
        if !content_type.eq_ignore_ascii_case("application/http") {
            return Err(format!("each part must be application/http, not {content_type:?}"));
        }
        let content_id = header(part_head, "content-id").map(|id| id.trim_matches(['<', '>']).to_owned());
        let (request_head, request_body) = split_head(request);
        let request_line = request_head.lines().next().unwrap_or_default();
        let mut words = request_line.split_whitespace();
        let (Some(method), Some(target)) = (words.next(), words.next()) else {
            return Err(format!("a part's request line is malformed: {request_line:?}"));
        };
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("unknown method {method:?}"))?;
        // An absolute URL (https://gmail.googleapis.com/gmail/v1/...) names the same path.
        let target = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
            None => target,
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        parts.push(PartRequest {
            content_id,
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            body: request_body.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
        });
    }
    if !closed {
        return Err("the batch body does not end with its closing boundary".to_owned());
    }
    Ok(parts)
}

/// The batch answer: one `application/http` part per answer, in order.
pub(crate) fn render(answers: &[(Option<String>, Answer)], boundary: &str) -> String {
    let mut out = String::new();
    for (content_id, answer) in answers {
        out.push_str(&format!("--{boundary}\r\nContent-Type: application/http\r\n"));
        if let Some(id) = content_id {
            out.push_str(&format!("Content-ID: <response-{id}>\r\n"));
        }
        let reason = answer.status.canonical_reason().unwrap_or("Unknown");
        out.push_str(&format!("\r\nHTTP/1.1 {} {reason}\r\n", answer.status.as_u16()));
        if let Some(seconds) = answer.retry_after {
            out.push_str(&format!("Retry-After: {seconds}\r\n"));
        }
        match &answer.body {
            Some(body) if answer.status != StatusCode::NO_CONTENT => {
                let json = body.to_string();
                out.push_str("Content-Type: application/json; charset=UTF-8\r\n");
                out.push_str(&format!("Content-Length: {}\r\n\r\n{json}\r\n", json.len()));
            }
            _ => out.push_str("\r\n"),
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_is_read_from_the_content_type() {
        assert_eq!(
            boundary("multipart/mixed; boundary=\"batch_x\"").as_deref(),
            Some("batch_x")
        );
        assert_eq!(boundary("multipart/mixed;boundary=b1").as_deref(), Some("b1"));
        assert_eq!(boundary("application/json"), None);
    }

    #[test]
    fn parts_are_read_in_order_with_their_ids_and_bodies() {
        let body = "preamble\r\n--b1\r\nContent-Type: application/http\r\nContent-ID: <item-0>\r\n\r\n\
                    GET /gmail/v1/users/me/messages/a1?format=metadata&metadataHeaders=From HTTP/1.1\r\n\r\n\
                    --b1\nContent-Type: application/http\n\n\
                    POST https://gmail.googleapis.com/gmail/v1/users/me/labels HTTP/1.1\n\
                    Content-Type: application/json\n\n{\"name\":\"x\"}\n--b1--\r\n";
        let parts = parse(body.as_bytes(), "b1").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_id.as_deref(), Some("item-0"));
        assert_eq!(parts[0].method, Method::GET);
        assert_eq!(parts[0].path, "/gmail/v1/users/me/messages/a1");
        assert_eq!(parts[0].query, "format=metadata&metadataHeaders=From");
        assert_eq!(parts[1].path, "/gmail/v1/users/me/labels");
        assert_eq!(parts[1].body, b"{\"name\":\"x\"}");
        assert!(
            parse(
                b"--b1\r\nContent-Type: text/plain\r\n\r\nGET / HTTP/1.1\r\n--b1--",
                "b1"
            )
            .is_err()
        );
        assert!(
            parse(
                b"--b1\r\nContent-Type: application/http\r\n\r\nGET / HTTP/1.1\r\n",
                "b1"
            )
            .is_err()
        );
    }
}
