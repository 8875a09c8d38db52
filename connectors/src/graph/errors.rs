//! Graph's error answers mapped to the taxonomy. Graph answers
//! `{"error":{"code","message"}}` with an HTTP status, top-level or inside a
//! `$batch` answer; throttling comes as 429 (or 503) with `Retry-After` in
//! seconds.

use std::time::Duration;

use reqwest::{StatusCode, header::HeaderMap};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ConnectorError, Provider, bounded};

const GRAPH: Provider = Provider::Graph;

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// What a failed call is about, which decides how a refusal of its content
/// is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A call about the mailbox (a delta page, setup, the add-in): a 4xx the
    /// taxonomy does not know is permanent.
    Call,
    /// One item's write (an inner request of a batch): a 4xx concerns that
    /// item only, which is skipped (validation).
    Item,
}

/// Codes saying a delta or sync token is no longer valid.
const SYNC_STATE_CODES: &[&str] = &[
    "syncStateNotFound",
    "resyncRequired",
    "SyncStateNotFound",
    "SyncStateInvalid",
    "ErrorInvalidSyncStateData",
];

/// Codes of Outlook's and Graph's throttling, whatever the status.
const THROTTLING_CODES: &[&str] = &[
    "ApplicationThrottled",
    "TooManyRequests",
    "ActivityLimitReached",
    "ErrorServerBusy",
    "MailboxConcurrency",
];

/// Codes saying a mailbox or tenant allocation is spent.
const QUOTA_CODES: &[&str] = &["ErrorQuotaExceeded", "ErrorQuotaExceededOnDelete", "QuotaLimitReached"];

/// `Retry-After` in seconds, the form Graph gives.
pub(crate) fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `Retry-After` of a top-level answer.
pub(crate) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    retry_after(
        headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()),
    )
}

/// The code and message of a Graph error body, if it is one.
pub(crate) fn error_of(body: &[u8]) -> (String, String) {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    (parsed.error.code, parsed.error.message)
}

/// The code and message of an inner answer's body.
pub(crate) fn error_of_value(body: &Value) -> (String, String) {
    let parsed: ErrorBody = serde_json::from_value(body.clone()).unwrap_or_default();
    (parsed.error.code, parsed.error.message)
}

/// The property an `ErrorInvalidProperty` message names (`Could not find a
/// property named 'x' on type ...`).
fn named_property(message: &str) -> Vec<String> {
    let Some((_, rest)) = message.split_once("property named '") else {
        return Vec::new();
    };
    rest.split_once('\'')
        .map(|(name, _)| vec![name.to_owned()])
        .unwrap_or_default()
}

fn describe(status: u16, code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (true, _) => format!("HTTP {status}"),
        (false, true) => format!("HTTP {status} {code}"),
        (false, false) => format!("HTTP {status} {code}: {}", bounded(message)),
    }
}

/// Classifies a failed answer: its status, `Retry-After`, and Graph's error
/// code and message.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    code: &str,
    message: &str,
    scope: Scope,
) -> ConnectorError {
    let text = describe(status, code, message);
    if status == 410 || SYNC_STATE_CODES.contains(&code) {
        return ConnectorError::SyncStateExpired {
            provider: GRAPH,
            message: text,
        };
    }
    let throttled = status == 429 || THROTTLING_CODES.contains(&code) || (status == 503 && retry_after.is_some());
    if throttled {
        return ConnectorError::Throttled {
            provider: GRAPH,
            retry_after,
            message: text,
        };
    }
    if QUOTA_CODES.contains(&code) {
        return ConnectorError::QuotaExhausted {
            provider: GRAPH,
            message: text,
        };
    }
    match status {
        401 | 403 => ConnectorError::authorization(GRAPH, text),
        409 => ConnectorError::Duplicate {
            provider: GRAPH,
            existing_id: None,
            message: text,
        },
        423 => ConnectorError::LockContention {
            provider: GRAPH,
            message: text,
        },
        500..=599 => ConnectorError::transient(GRAPH, text),
        400..=499 if scope == Scope::Item => ConnectorError::Validation {
            provider: GRAPH,
            code: if code.is_empty() {
                format!("HTTP {status}")
            } else {
                code.to_owned()
            },
            fields: named_property(message),
            message: bounded(message),
        },
        300..=399 => ConnectorError::permanent(GRAPH, format!("redirects are not followed ({text})")),
        _ => ConnectorError::permanent(GRAPH, text),
    }
}

/// Classifies a failed top-level answer.
pub(crate) fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8], scope: Scope) -> ConnectorError {
    let (code, message) = error_of(body);
    classify(status.as_u16(), retry_after_header(headers), &code, &message, scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn kind(status: u16, retry: Option<u64>, code: &str, scope: Scope) -> ErrorKind {
        classify(status, retry.map(Duration::from_secs), code, "message", scope).kind()
    }

    #[test]
    fn graph_answers_map_to_the_taxonomy() {
        assert_eq!(kind(410, None, "", Scope::Call), ErrorKind::SyncStateExpired);
        assert_eq!(
            kind(400, None, "syncStateNotFound", Scope::Call),
            ErrorKind::SyncStateExpired
        );
        assert_eq!(
            kind(400, None, "resyncRequired", Scope::Call),
            ErrorKind::SyncStateExpired
        );
        assert_eq!(kind(429, None, "", Scope::Call), ErrorKind::Throttled);
        assert_eq!(kind(503, Some(4), "", Scope::Call), ErrorKind::Throttled);
        assert_eq!(kind(503, None, "ServiceUnavailable", Scope::Call), ErrorKind::Transient);
        assert_eq!(kind(504, None, "UnknownError", Scope::Item), ErrorKind::Transient);
        assert_eq!(
            kind(401, None, "InvalidAuthenticationToken", Scope::Call),
            ErrorKind::Authorization
        );
        assert_eq!(
            kind(403, None, "ErrorAccessDenied", Scope::Item),
            ErrorKind::Authorization
        );
        assert_eq!(
            kind(507, None, "ErrorQuotaExceeded", Scope::Item),
            ErrorKind::QuotaExhausted
        );
        assert_eq!(kind(409, None, "ErrorFolderExists", Scope::Call), ErrorKind::Duplicate);
        assert_eq!(
            kind(400, None, "ErrorInvalidProperty", Scope::Item),
            ErrorKind::Validation
        );
        assert_eq!(kind(400, None, "BadRequest", Scope::Call), ErrorKind::Permanent);
        assert_eq!(kind(302, None, "", Scope::Call), ErrorKind::Permanent);
    }

    #[test]
    fn a_throttled_answer_keeps_the_delay_and_a_refused_item_names_its_property() {
        let error = classify(
            429,
            retry_after(Some("7")),
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
            Scope::Call,
        );
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        let error = classify(
            400,
            None,
            "ErrorInvalidProperty",
            "Could not find a property named 'subjet' on type 'Microsoft.OutlookServices.Event'.",
            Scope::Item,
        );
        let ConnectorError::Validation { code, fields, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!(
            (code.as_str(), fields),
            ("ErrorInvalidProperty", vec!["subjet".to_owned()])
        );
    }

    #[test]
    fn an_error_body_is_read_when_there_is_one() {
        let body =
            br#"{"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store."}}"#;
        assert_eq!(error_of(body).0, "ErrorItemNotFound");
        assert_eq!(error_of(b"<html>").0, "");
        assert_eq!(retry_after(Some(" 12 ")), Some(Duration::from_secs(12)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}
