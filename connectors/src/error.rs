//! The one error taxonomy every connector answers with. The worker decides
//! retries, issues and auto-suspend from the variant, never from the text.
//!
//! A message holds what the provider said (its error code and message) and what
//! the connector was doing; it never holds a token, password or secret, and
//! never a request body.

use std::{fmt, time::Duration};

/// The outside service an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Salesforce REST and its OAuth endpoint.
    Salesforce,
    /// Microsoft Graph (Office 365 mailboxes).
    Graph,
    /// Exchange Web Services (on-premises Exchange).
    Ews,
    /// The Gmail API.
    Gmail,
}

impl fmt::Display for Provider {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Provider::Salesforce => "Salesforce",
            Provider::Graph => "Microsoft Graph",
            Provider::Ews => "Exchange Web Services",
            Provider::Gmail => "Gmail",
        })
    }
}

/// The variant of a [`ConnectorError`] without its data, to count or match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`ConnectorError::Authorization`].
    Authorization,
    /// [`ConnectorError::Throttled`].
    Throttled,
    /// [`ConnectorError::QuotaExhausted`].
    QuotaExhausted,
    /// [`ConnectorError::SyncStateExpired`].
    SyncStateExpired,
    /// [`ConnectorError::Validation`].
    Validation,
    /// [`ConnectorError::LockContention`].
    LockContention,
    /// [`ConnectorError::Duplicate`].
    Duplicate,
    /// [`ConnectorError::Transient`].
    Transient,
    /// [`ConnectorError::Permanent`].
    Permanent,
    /// [`ConnectorError::RateLimited`].
    RateLimited,
}

/// What went wrong talking to a provider, classified for the worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The credentials were refused (revoked refresh token, invalid session
    /// after a refresh, missing permission). Permanent until the user
    /// authorizes again; counts toward auto-suspend.
    #[error("{provider} refused the authorization: {message}")]
    Authorization {
        provider: Provider,
        message: String,
        /// Whether the token endpoint refused the grant itself (a revoked or
        /// expired refresh token): only then is the stored credential dead.
        /// An API's 401 after a good refresh is not.
        grant_refused: bool,
    },
    /// The provider asked to slow down, with the delay it gave when it gave one.
    #[error("{provider} throttled the call{}: {message}", RetryAfter(*retry_after))]
    Throttled {
        provider: Provider,
        retry_after: Option<Duration>,
        message: String,
    },
    /// An allocation is spent (Salesforce's daily API requests); calls fail
    /// until it rolls over.
    #[error("{provider} quota is exhausted: {message}")]
    QuotaExhausted { provider: Provider, message: String },
    /// A delta token or sync state is no longer valid: a full resync is needed.
    #[error("{provider} sync state expired: {message}")]
    SyncStateExpired { provider: Provider, message: String },
    /// The provider refused this item's content; skip it and record an issue.
    #[error("{provider} refused the item ({code}): {message}")]
    Validation {
        provider: Provider,
        /// The provider's error code, e.g. `REQUIRED_FIELD_MISSING`.
        code: String,
        /// The fields the provider named, if any.
        fields: Vec<String>,
        message: String,
    },
    /// A record was locked by another transaction; retry with jitter.
    #[error("{provider} could not lock the record: {message}")]
    LockContention { provider: Provider, message: String },
    /// The item already exists (a duplicate the provider refused).
    #[error("{provider} reports a duplicate: {message}")]
    Duplicate {
        provider: Provider,
        /// The id of the record it duplicates, when the provider named it.
        existing_id: Option<String>,
        message: String,
    },
    /// A temporary failure (5xx, timeout, connection failure): retry later.
    #[error("{provider} is unavailable: {message}")]
    Transient { provider: Provider, message: String },
    /// A failure retrying will not fix (a refused URL, a malformed request, an
    /// answer the connector does not understand).
    #[error("{provider} call failed: {message}")]
    Permanent { provider: Provider, message: String },
    /// The fleet's own limit for the account is spent for longer than a
    /// session waits (no call was made): try again after the delay.
    #[error("the fleet's {provider} limit for this account is spent for {} ms: {message}", retry_after.as_millis())]
    RateLimited {
        provider: Provider,
        retry_after: Duration,
        message: String,
    },
}

struct RetryAfter(Option<Duration>);

impl fmt::Display for RetryAfter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(delay) => write!(formatter, " (retry after {} ms)", delay.as_millis()),
            None => Ok(()),
        }
    }
}

/// The longest provider text kept in a message.
const MAX_MESSAGE: usize = 500;

/// `text` cut to a bounded length on a character boundary.
pub(crate) fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

impl ConnectorError {
    /// The variant, without its data.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectorError::Authorization { .. } => ErrorKind::Authorization,
            ConnectorError::Throttled { .. } => ErrorKind::Throttled,
            ConnectorError::QuotaExhausted { .. } => ErrorKind::QuotaExhausted,
            ConnectorError::SyncStateExpired { .. } => ErrorKind::SyncStateExpired,
            ConnectorError::Validation { .. } => ErrorKind::Validation,
            ConnectorError::LockContention { .. } => ErrorKind::LockContention,
            ConnectorError::Duplicate { .. } => ErrorKind::Duplicate,
            ConnectorError::Transient { .. } => ErrorKind::Transient,
            ConnectorError::Permanent { .. } => ErrorKind::Permanent,
            ConnectorError::RateLimited { .. } => ErrorKind::RateLimited,
        }
    }

    /// The provider that answered.
    pub fn provider(&self) -> Provider {
        match self {
            ConnectorError::Authorization { provider, .. }
            | ConnectorError::Throttled { provider, .. }
            | ConnectorError::QuotaExhausted { provider, .. }
            | ConnectorError::SyncStateExpired { provider, .. }
            | ConnectorError::Validation { provider, .. }
            | ConnectorError::LockContention { provider, .. }
            | ConnectorError::Duplicate { provider, .. }
            | ConnectorError::Transient { provider, .. }
            | ConnectorError::Permanent { provider, .. }
            | ConnectorError::RateLimited { provider, .. } => *provider,
        }
    }

    /// The delay the provider asked for, when it throttled with one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::Throttled { retry_after, .. } => *retry_after,
            ConnectorError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without anyone acting.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Throttled | ErrorKind::LockContention | ErrorKind::Transient | ErrorKind::RateLimited
        )
    }

    pub(crate) fn authorization(provider: Provider, message: impl AsRef<str>) -> Self {
        ConnectorError::Authorization {
            provider,
            message: bounded(message.as_ref()),
            grant_refused: false,
        }
    }

    /// The token endpoint refused the grant (`invalid_grant` and the like).
    pub(crate) fn grant_refused(provider: Provider, message: impl AsRef<str>) -> Self {
        ConnectorError::Authorization {
            provider,
            message: bounded(message.as_ref()),
            grant_refused: true,
        }
    }

    /// Whether the token endpoint refused the stored grant.
    pub fn is_grant_refused(&self) -> bool {
        matches!(
            self,
            ConnectorError::Authorization {
                grant_refused: true,
                ..
            }
        )
    }

    pub(crate) fn transient(provider: Provider, message: impl AsRef<str>) -> Self {
        ConnectorError::Transient {
            provider,
            message: bounded(message.as_ref()),
        }
    }

    pub(crate) fn permanent(provider: Provider, message: impl AsRef<str>) -> Self {
        ConnectorError::Permanent {
            provider,
            message: bounded(message.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_error_shows_the_delay_asked_for() {
        let error = ConnectorError::Throttled {
            provider: Provider::Graph,
            retry_after: Some(Duration::from_secs(3)),
            message: "429".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "Microsoft Graph throttled the call (retry after 3000 ms): 429"
        );
        assert_eq!(error.kind(), ErrorKind::Throttled);
        assert!(error.is_retryable());
    }

    #[test]
    fn long_provider_text_is_bounded() {
        let message = bounded(&"é".repeat(2 * MAX_MESSAGE));
        assert_eq!(message.chars().count(), MAX_MESSAGE + 3);
    }
}
