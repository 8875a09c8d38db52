//! Exchange's answers mapped to the taxonomy: HTTP statuses, SOAP faults
//! (`faultcode` and the detail's `ResponseCode`, `BackOffMilliseconds`) and
//! the `ResponseCode` of each response message.

use std::time::Duration;

use crate::error::{ConnectorError, Provider, bounded};

pub(crate) const EWS: Provider = Provider::Ews;

/// Codes that say the account may not open the mailbox.
const AUTHORIZATION_CODES: &[&str] = &[
    "ErrorAccessDenied",
    "ErrorAccountDisabled",
    "ErrorImpersonateUserDenied",
    "ErrorImpersonationDenied",
    "ErrorImpersonationFailed",
    "ErrorInvalidLicense",
    "ErrorMailboxLogonFailed",
    "ErrorNonExistentMailbox",
    "ErrorNotAllowedExternalSharingByPolicy",
    "ErrorPasswordExpired",
];

/// Codes that ask the caller to slow down.
const THROTTLING_CODES: &[&str] = &[
    "ErrorExceededConnectionCount",
    "ErrorExceededFindCountLimit",
    "ErrorExceededSubscriptionCount",
    "ErrorServerBusy",
    "ErrorTooManyObjectsOpened",
];

/// Codes of a temporary failure of the server or the mailbox store.
const TRANSIENT_CODES: &[&str] = &[
    "ErrorConnectionFailed",
    "ErrorInternalServerTransientError",
    "ErrorMailboxMoveInProgress",
    "ErrorMailboxStoreUnavailable",
    "ErrorTimeoutExpired",
];

/// Codes that say a sync state is no longer usable.
const SYNC_STATE_CODES: &[&str] = &["ErrorInvalidSyncStateData", "ErrorSyncFolderNotFound"];

fn describe(code: &str, message: &str) -> String {
    if message.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", bounded(message))
    }
}

/// The error a response code names when it concerns the whole call, or
/// `None` when it concerns one item only.
fn call_level(code: &str, message: &str, backoff: Option<Duration>) -> Option<ConnectorError> {
    let text = describe(code, message);
    if AUTHORIZATION_CODES.contains(&code) {
        Some(ConnectorError::authorization(EWS, text))
    } else if THROTTLING_CODES.contains(&code) {
        Some(ConnectorError::Throttled {
            provider: EWS,
            retry_after: backoff,
            message: bounded(&text),
        })
    } else if TRANSIENT_CODES.contains(&code) {
        Some(ConnectorError::transient(EWS, text))
    } else if SYNC_STATE_CODES.contains(&code) {
        Some(ConnectorError::SyncStateExpired {
            provider: EWS,
            message: bounded(&text),
        })
    } else {
        None
    }
}

/// A SOAP fault or a call's single response message in error. A code the
/// taxonomy does not know is a malformed request or an answer the connector
/// cannot act on: permanent.
pub(crate) fn call_error(code: &str, message: &str, backoff: Option<Duration>) -> ConnectorError {
    call_level(code, message, backoff).unwrap_or_else(|| ConnectorError::permanent(EWS, describe(code, message)))
}

/// The response message of one item of a batch in error: `Err` when it fails
/// the whole call (authorization, throttling, an unavailable store), else the
/// item's own error, a validation error the sync skips.
pub(crate) fn item_error(code: &str, message: &str) -> Result<ConnectorError, ConnectorError> {
    match call_level(code, message, None) {
        Some(error) => Err(error),
        None => Ok(ConnectorError::Validation {
            provider: EWS,
            code: code.to_owned(),
            fields: Vec::new(),
            message: bounded(message),
        }),
    }
}

/// An answer with an HTTP status other than 200 and no SOAP fault in it.
pub(crate) fn http_error(status: u16) -> ConnectorError {
    match status {
        // Basic authentication: a 401 is the stored password refused.
        401 => ConnectorError::grant_refused(EWS, format!("the account or its password was refused (HTTP {status})")),
        403 => ConnectorError::authorization(EWS, format!("the account or its password was refused (HTTP {status})")),
        503 => ConnectorError::Throttled {
            provider: EWS,
            retry_after: None,
            message: "the server is unavailable (HTTP 503)".to_owned(),
        },
        status if status >= 500 => ConnectorError::transient(EWS, format!("HTTP {status}")),
        status if (300..400).contains(&status) => {
            ConnectorError::permanent(EWS, format!("redirects are not followed (HTTP {status})"))
        }
        status => ConnectorError::permanent(EWS, format!("unexpected HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn codes_map_to_the_taxonomy() {
        let busy = call_error("ErrorServerBusy", "busy", Some(Duration::from_millis(250)));
        assert_eq!(busy.kind(), ErrorKind::Throttled);
        assert_eq!(busy.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(
            call_error("ErrorImpersonateUserDenied", "", None).kind(),
            ErrorKind::Authorization
        );
        assert_eq!(
            call_error("ErrorInvalidSyncStateData", "", None).kind(),
            ErrorKind::SyncStateExpired
        );
        assert_eq!(call_error("ErrorInvalidRequest", "", None).kind(), ErrorKind::Permanent);
        assert_eq!(
            item_error("ErrorCalendarEndDateIsEarlierThanStartDate", "x")
                .unwrap()
                .kind(),
            ErrorKind::Validation
        );
        assert_eq!(
            item_error("ErrorAccessDenied", "x").unwrap_err().kind(),
            ErrorKind::Authorization
        );
    }

    #[test]
    fn statuses_map_to_the_taxonomy() {
        assert_eq!(http_error(401).kind(), ErrorKind::Authorization);
        assert_eq!(http_error(503).kind(), ErrorKind::Throttled);
        assert_eq!(http_error(502).kind(), ErrorKind::Transient);
        assert_eq!(http_error(302).kind(), ErrorKind::Permanent);
    }
}
