//! Salesforce's answers mapped to the taxonomy: request-level errors (a list of
//! `{errorCode, message}` with an HTTP status), per-record errors of sObject
//! Collections (`{statusCode, message, fields}`), OAuth errors
//! (`{error, error_description}`), and the `Sforce-Limit-Info` header.

use std::time::Duration;

use reqwest::{
    StatusCode,
    header::{HeaderMap, RETRY_AFTER},
};
use serde::Deserialize;

use crate::error::{ConnectorError, Provider, bounded};

const SALESFORCE: Provider = Provider::Salesforce;

/// The org's use of its daily API allocation, from `Sforce-Limit-Info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    /// Calls counted in the rolling 24 hours.
    pub used: u64,
    /// The org's daily allocation.
    pub max: u64,
}

impl ApiUsage {
    /// Reads `api-usage=USED/MAX` out of a `Sforce-Limit-Info` value (which may
    /// carry other `;`-separated parts, such as `per-app-api-usage`).
    pub fn parse(header: &str) -> Option<Self> {
        header.split(';').find_map(|part| {
            let (used, max) = part.trim().strip_prefix("api-usage=")?.split_once('/')?;
            Some(Self {
                used: used.trim().parse().ok()?,
                max: max.trim().parse().ok()?,
            })
        })
    }

    /// Calls left before the allocation is spent.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// One error of a request-level answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiError {
    error_code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    fields: Vec<String>,
}

/// One error of a record in a collection answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordError {
    pub status_code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// An OAuth error answer of the token endpoint.
#[derive(Debug, Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

const VALIDATION_CODES: &[&str] = &[
    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
    "ENTITY_IS_DELETED",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
    "FIELD_FILTER_VALIDATION_EXCEPTION",
    "FIELD_INTEGRITY_EXCEPTION",
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
    "INVALID_CROSS_REFERENCE_KEY",
    "INVALID_EMAIL_ADDRESS",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "INVALID_TYPE_ON_FIELD_IN_RECORD",
    "MALFORMED_ID",
    "MISSING_ARGUMENT",
    "NUMBER_OUTSIDE_VALID_RANGE",
    "REQUIRED_FIELD_MISSING",
    "STRING_TOO_LONG",
];

const AUTHORIZATION_CODES: &[&str] = &[
    "API_CURRENTLY_DISABLED",
    "API_DISABLED_FOR_ORG",
    "INVALID_AUTH_HEADER",
    "INVALID_OPERATION_WITH_EXPIRED_PASSWORD",
    "INVALID_SESSION_ID",
];

fn describe(code: &str, message: &str) -> String {
    if message.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", bounded(message))
    }
}

/// The id a `DUPLICATE_VALUE` message names (`... duplicates value on record
/// with id: 00T...`).
pub(crate) fn duplicate_of(message: &str) -> Option<String> {
    let (_, id) = message.rsplit_once("record with id:")?;
    let id = id.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then(|| id.to_owned())
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// The error a Salesforce error code names, if the code is one the taxonomy
/// knows; `retry_after` is the delay the answer asked for, if any.
fn classify_code(
    code: &str,
    message: &str,
    fields: &[String],
    retry_after: Option<Duration>,
) -> Option<ConnectorError> {
    let text = describe(code, message);
    Some(match code {
        "REQUEST_LIMIT_EXCEEDED" if message.contains("Concurrent") => ConnectorError::Throttled {
            provider: SALESFORCE,
            retry_after,
            message: text,
        },
        "REQUEST_LIMIT_EXCEEDED" | "STORAGE_LIMIT_EXCEEDED" => ConnectorError::QuotaExhausted {
            provider: SALESFORCE,
            message: text,
        },
        "UNABLE_TO_LOCK_ROW" => ConnectorError::LockContention {
            provider: SALESFORCE,
            message: text,
        },
        "DUPLICATE_VALUE" | "DUPLICATE_EXTERNAL_ID" | "DUPLICATES_DETECTED" => ConnectorError::Duplicate {
            provider: SALESFORCE,
            existing_id: duplicate_of(message),
            message: text,
        },
        "SERVER_UNAVAILABLE" | "ALL_OR_NONE_OPERATION_ROLLED_BACK" => ConnectorError::transient(SALESFORCE, text),
        code if AUTHORIZATION_CODES.contains(&code) => ConnectorError::authorization(SALESFORCE, text),
        code if VALIDATION_CODES.contains(&code) => ConnectorError::Validation {
            provider: SALESFORCE,
            code: code.to_owned(),
            fields: fields.to_vec(),
            message: bounded(message),
        },
        _ => return None,
    })
}

/// A per-record error of a collection answer. A code the taxonomy does not
/// know concerns this record only: the item is skipped (validation).
pub(crate) fn from_record_error(error: &RecordError) -> ConnectorError {
    classify_code(&error.status_code, &error.message, &error.fields, None).unwrap_or_else(|| {
        ConnectorError::Validation {
            provider: SALESFORCE,
            code: error.status_code.clone(),
            fields: error.fields.clone(),
            message: bounded(&error.message),
        }
    })
}

/// A request-level error answer of the REST API.
pub(crate) fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ConnectorError {
    let delay = retry_after(headers);
    let first = serde_json::from_slice::<Vec<ApiError>>(body)
        .ok()
        .and_then(|errors| errors.into_iter().next());
    if let Some(error) = &first
        && let Some(classified) = classify_code(&error.error_code, &error.message, &error.fields, delay)
    {
        return classified;
    }
    let text = match &first {
        Some(error) => describe(&error.error_code, &error.message),
        None => format!("HTTP {}", status.as_u16()),
    };
    match status {
        StatusCode::MULTIPLE_CHOICES => ConnectorError::Duplicate {
            provider: SALESFORCE,
            existing_id: None,
            message: format!("the external id matches several records ({text})"),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ConnectorError::authorization(SALESFORCE, text),
        StatusCode::TOO_MANY_REQUESTS => ConnectorError::Throttled {
            provider: SALESFORCE,
            retry_after: delay,
            message: text,
        },
        status if status.is_server_error() => ConnectorError::transient(SALESFORCE, text),
        status if status.is_redirection() => {
            ConnectorError::permanent(SALESFORCE, format!("redirects are not followed ({text})"))
        }
        _ => ConnectorError::permanent(SALESFORCE, text),
    }
}

/// An error answer of the OAuth token endpoint. `invalid_grant` (revoked or
/// expired refresh token) and the other client and user refusals are
/// authorization errors; only a server error is worth retrying.
pub(crate) fn from_token_response(status: StatusCode, body: &[u8]) -> ConnectorError {
    let Ok(error) = serde_json::from_slice::<OAuthError>(body) else {
        return if status.is_server_error() {
            ConnectorError::transient(SALESFORCE, format!("token endpoint answered HTTP {}", status.as_u16()))
        } else {
            ConnectorError::permanent(SALESFORCE, format!("token endpoint answered HTTP {}", status.as_u16()))
        };
    };
    let text = describe(&error.error, &error.error_description);
    match error.error.as_str() {
        _ if status.is_server_error() => ConnectorError::transient(SALESFORCE, text),
        "unsupported_grant_type" | "unsupported_response_type" => ConnectorError::permanent(SALESFORCE, text),
        _ => ConnectorError::grant_refused(SALESFORCE, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn kind_of(status: u16, body: &str) -> ErrorKind {
        from_response(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
        .kind()
    }

    #[test]
    fn the_limit_header_is_read_with_or_without_other_parts() {
        assert_eq!(
            ApiUsage::parse("api-usage=18/5000"),
            Some(ApiUsage { used: 18, max: 5000 })
        );
        assert_eq!(
            ApiUsage::parse("api-usage=25/5000; per-app-api-usage=17/250(appName=sample)"),
            Some(ApiUsage { used: 25, max: 5000 })
        );
        assert_eq!(ApiUsage::parse("per-app-api-usage=17/250"), None);
    }

    #[test]
    fn request_level_answers_map_to_the_taxonomy() {
        let limit = r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"TotalRequests Limit exceeded."}]"#;
        assert_eq!(kind_of(403, limit), ErrorKind::QuotaExhausted);
        let concurrent =
            r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"ConcurrentPerOrgLongTxn Limit exceeded."}]"#;
        assert_eq!(kind_of(403, concurrent), ErrorKind::Throttled);
        assert_eq!(
            kind_of(
                401,
                r#"[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]"#
            ),
            ErrorKind::Authorization
        );
        assert_eq!(
            kind_of(400, r#"[{"errorCode":"UNABLE_TO_LOCK_ROW","message":"x"}]"#),
            ErrorKind::LockContention
        );
        assert_eq!(
            kind_of(400, r#"[{"errorCode":"MALFORMED_QUERY","message":"x"}]"#),
            ErrorKind::Permanent
        );
        assert_eq!(kind_of(503, "<html>down</html>"), ErrorKind::Transient);
        assert_eq!(kind_of(300, "[]"), ErrorKind::Duplicate);
        assert_eq!(kind_of(302, ""), ErrorKind::Permanent);
    }

    #[test]
    fn a_duplicate_value_names_the_existing_record() {
        let error = from_record_error(&RecordError {
            status_code: "DUPLICATE_VALUE".to_owned(),
            message: "duplicate value found: Key__c duplicates value on record with id: 00T000000000042".to_owned(),
            fields: vec!["Key__c".to_owned()],
        });
        assert!(matches!(
            error,
            ConnectorError::Duplicate { existing_id: Some(ref id), .. } if id == "00T000000000042"
        ));
    }

    #[test]
    fn an_unknown_record_error_skips_the_item() {
        let error = from_record_error(&RecordError {
            status_code: "SOMETHING_NEW".to_owned(),
            message: "x".to_owned(),
            fields: Vec::new(),
        });
        assert_eq!(error.kind(), ErrorKind::Validation);
    }

    #[test]
    fn token_errors_are_authorization_unless_the_server_failed() {
        let invalid = br#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#;
        assert_eq!(
            from_token_response(StatusCode::BAD_REQUEST, invalid).kind(),
            ErrorKind::Authorization
        );
        assert_eq!(
            from_token_response(StatusCode::BAD_GATEWAY, b"bad gateway").kind(),
            ErrorKind::Transient
        );
    }
}
