//! Gmail's error answers mapped to the taxonomy. The body is Google's
//! `{"error":{"code","message","errors":[{"domain","reason","message"}],"status"}}`;
//! the reason decides between a rate limit (throttled), a spent daily quota
//! and a refused permission, which all answer 403.

use std::time::Duration;

use reqwest::{
    StatusCode,
    header::{HeaderMap, RETRY_AFTER},
};
use serde::Deserialize;

use crate::error::{ConnectorError, Provider, bounded};

const GMAIL: Provider = Provider::Gmail;

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

#[derive(Debug, Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// Reasons of a 403 that ask to slow down.
const RATE_LIMIT_REASONS: &[&str] = &["userRateLimitExceeded", "rateLimitExceeded"];

/// Reasons of a 403 that say a daily allocation is spent.
const QUOTA_REASONS: &[&str] = &["dailyLimitExceeded", "quotaExceeded", "dailyLimitExceededUnreg"];

/// The delay of a `Retry-After: <seconds>` value.
pub(crate) fn retry_after_value(value: &str) -> Option<Duration> {
    value.trim().parse().ok().map(Duration::from_secs)
}

/// The delay of an answer's `Retry-After` header.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_value(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

/// The reason and text of an error body, when it is Google's shape.
fn reason_and_text(status: StatusCode, body: &[u8]) -> (String, String) {
    let code = status.as_u16();
    let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) else {
        return (String::new(), format!("HTTP {code}"));
    };
    let reason = error
        .errors
        .into_iter()
        .map(|item| item.reason)
        .find(|reason| !reason.is_empty())
        .or(error.status)
        .unwrap_or_default();
    let text = match (reason.is_empty(), error.message.is_empty()) {
        (true, true) => format!("HTTP {code}"),
        (true, false) => format!("HTTP {code}: {}", bounded(&error.message)),
        (false, true) => format!("HTTP {code} {reason}"),
        (false, false) => format!("HTTP {code} {reason}: {}", bounded(&error.message)),
    };
    (reason, text)
}

/// Classifies an error answer (of a call or of a batch part).
pub(crate) fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> ConnectorError {
    let (reason, text) = reason_and_text(status, body);
    match status.as_u16() {
        401 => ConnectorError::authorization(GMAIL, text),
        403 if RATE_LIMIT_REASONS.contains(&reason.as_str()) => ConnectorError::Throttled {
            provider: GMAIL,
            retry_after,
            message: text,
        },
        403 if QUOTA_REASONS.contains(&reason.as_str()) => ConnectorError::QuotaExhausted {
            provider: GMAIL,
            message: text,
        },
        // insufficientPermissions, forbidden, domainPolicy: the user or the
        // admin must grant something.
        403 => ConnectorError::authorization(GMAIL, text),
        429 => ConnectorError::Throttled {
            provider: GMAIL,
            retry_after,
            message: text,
        },
        409 => ConnectorError::Duplicate {
            provider: GMAIL,
            existing_id: None,
            message: text,
        },
        408 | 500..=599 => ConnectorError::transient(GMAIL, text),
        300..=399 => ConnectorError::permanent(GMAIL, format!("redirects are not followed ({text})")),
        _ => ConnectorError::permanent(GMAIL, text),
    }
}

/// Classifies an error answer with its headers.
pub(crate) fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ConnectorError {
    classify(status, retry_after(headers), body)
}

/// Only the position: the text of a serde error may quote the answer.
pub(crate) fn unexpected(what: &str, error: &serde_json::Error) -> ConnectorError {
    ConnectorError::permanent(
        GMAIL,
        format!(
            "unexpected {what} answer (line {}, column {})",
            error.line(),
            error.column()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn google(code: u16, reason: &str) -> String {
        format!(
            r#"{{"error":{{"code":{code},"message":"m","errors":[{{"domain":"usageLimits","reason":"{reason}","message":"m"}}]}}}}"#
        )
    }

    fn kind(code: u16, body: &str) -> ErrorKind {
        classify(StatusCode::from_u16(code).unwrap(), None, body.as_bytes()).kind()
    }

    #[test]
    fn each_gmail_error_maps_to_its_kind() {
        assert_eq!(kind(403, &google(403, "userRateLimitExceeded")), ErrorKind::Throttled);
        assert_eq!(kind(403, &google(403, "rateLimitExceeded")), ErrorKind::Throttled);
        assert_eq!(kind(403, &google(403, "dailyLimitExceeded")), ErrorKind::QuotaExhausted);
        assert_eq!(kind(403, &google(403, "quotaExceeded")), ErrorKind::QuotaExhausted);
        assert_eq!(
            kind(403, &google(403, "insufficientPermissions")),
            ErrorKind::Authorization
        );
        assert_eq!(kind(403, &google(403, "forbidden")), ErrorKind::Authorization);
        assert_eq!(kind(401, &google(401, "authError")), ErrorKind::Authorization);
        assert_eq!(kind(429, &google(429, "rateLimitExceeded")), ErrorKind::Throttled);
        assert_eq!(kind(409, &google(409, "duplicate")), ErrorKind::Duplicate);
        assert_eq!(kind(500, &google(500, "backendError")), ErrorKind::Transient);
        assert_eq!(kind(503, "<html>"), ErrorKind::Transient);
        assert_eq!(kind(400, &google(400, "invalidArgument")), ErrorKind::Permanent);
        assert_eq!(kind(302, ""), ErrorKind::Permanent);
    }

    #[test]
    fn a_throttled_answer_keeps_the_delay_and_names_the_reason() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "17".parse().unwrap());
        let error = from_response(
            StatusCode::FORBIDDEN,
            &headers,
            google(403, "userRateLimitExceeded").as_bytes(),
        );
        assert_eq!(error.retry_after(), Some(Duration::from_secs(17)));
        assert!(error.to_string().contains("userRateLimitExceeded"), "{error}");
    }
}
