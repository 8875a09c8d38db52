//! One JSON shape for every error: `{"error": {"code", "message", "field"}}`,
//! with a stable `code` clients branch on and the offending `field` when
//! there is one. Internal details (database errors) are logged, never sent.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after_seconds: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// The same error, naming the field it is about.
    pub fn on_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The stable code, for per-item results of bulk actions.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The message, for per-item results of bulk actions.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_seconds: None,
        }
    }

    /// No valid bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The resource does not exist, or the caller may not see it (the two are
    /// indistinguishable on purpose: an id from another organization is 404).
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// The caller is known but its role may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A malformed or invalid input, naming the field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// A 404 with its own code (an unknown action, say).
    pub fn not_found_code(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// Part of the product this build does not offer yet.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", message)
    }

    /// The request is valid but the resource's state forbids it.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// Too soon: try again after this many seconds.
    pub fn too_many_requests(retry_after_seconds: u64, message: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: Some(retry_after_seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    /// The request body is too large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            field: Some("body".to_owned()),
            ..Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
        }
    }

    /// A dependency (the database, the broker, the key ring) is unavailable;
    /// the details are logged. Answered with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: Some(RETRY_AFTER_OUTAGE_SECONDS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// A request that failed at or after its commit: it may have taken
    /// effect. 503 with `Retry-After`; a retry with the same
    /// `Idempotency-Key` is safe.
    pub fn outcome_unknown() -> Self {
        Self {
            retry_after_seconds: Some(RETRY_AFTER_OUTAGE_SECONDS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the database became unreachable while the change was committed: it may or may not have \
                 taken effect. Retrying with the same Idempotency-Key is safe (it answers the first answer \
                 or runs once); without one, read the resource before retrying",
            )
        }
    }

    /// The request ran longer than `limit` and was stopped where it was: like
    /// [`ApiError::outcome_unknown`], it may or may not have taken effect.
    /// 503 with `Retry-After`.
    pub fn timed_out(limit: std::time::Duration) -> Self {
        Self {
            retry_after_seconds: Some(RETRY_AFTER_OUTAGE_SECONDS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {} seconds and was stopped: it may or may not have taken \
                     effect. Retrying with the same Idempotency-Key is safe (it answers the first answer or runs \
                     once); without one, read the resource before retrying",
                    limit.as_secs()
                ),
            )
        }
    }

    /// The same key is already used by another request (422, naming the header).
    pub fn key_reused() -> Self {
        Self {
            field: Some(crate::idempotency::HEADER_NAME.to_owned()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request (method, path or body) in the last 24 hours; \
                 use a new key for a new request",
            )
        }
    }

    /// The first request with this key took effect and has not answered yet.
    pub fn key_in_progress(message: impl Into<String>) -> Self {
        Self {
            field: Some(crate::idempotency::HEADER_NAME.to_owned()),
            retry_after_seconds: Some(1),
            ..Self::new(StatusCode::CONFLICT, "idempotency_key_in_progress", message)
        }
    }

    /// A database error that occurred at COMMIT: when the connection was
    /// lost, the outcome is unknown; when the server refused the commit,
    /// nothing happened and the error maps as any other.
    pub fn at_commit(error: sqlx::Error) -> Self {
        if is_outage(&error) {
            tracing::error!(%error, "The database became unreachable during a commit; the outcome is unknown.");
            return Self::outcome_unknown();
        }
        error.into()
    }
}

/// The code of [`ApiError::concurrent_update`], which the retry layer looks for.
pub const CONCURRENT_UPDATE: &str = "concurrent_update";

/// The `Retry-After` of an outage answer, in seconds.
const RETRY_AFTER_OUTAGE_SECONDS: u64 = 5;

/// The PostgreSQL error codes of an unreachable or restarting server:
/// `57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect
/// now, `53300` too many connections (class `08` is matched as a class).
const OUTAGE_CODES: [&str; 4] = ["57P01", "57P02", "57P03", "53300"];

/// Whether a database error means the database is unreachable (the pool
/// timed out, the connection broke or closed, the server is shutting down
/// or starting), as opposed to a refused statement.
pub fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| code.starts_with("08") || OUTAGE_CODES.contains(&code.as_ref())),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    /// Through the store's mapping: a unique or foreign-key violation or a
    /// serialization failure is the client's race, not a server error.
    fn from(error: sqlx::Error) -> Self {
        crate::store::StoreError::from(error).into()
    }
}

impl ApiError {
    /// A concurrent transaction got in the way (a serialization failure or
    /// a deadlock): nothing happened. The request is run again (see
    /// `crate::retry`); this answers only when every attempt met one.
    pub fn concurrent_update() -> Self {
        Self {
            retry_after_seconds: Some(1),
            ..Self::new(
                StatusCode::CONFLICT,
                CONCURRENT_UPDATE,
                "concurrent requests changed the same data; nothing was changed, try again",
            )
        }
    }

    /// A database error the store has no meaning for: the database is
    /// unreachable (503) or the statement is wrong (500, logged).
    pub fn from_database(error: sqlx::Error) -> Self {
        if is_outage(&error) {
            tracing::error!(%error, "The database is unreachable while answering a request.");
            return Self::unavailable(
                "the database is unreachable; try again shortly (a request retried with its Idempotency-Key never runs twice)",
            );
        }
        tracing::error!(%error, "Database error while answering a request.");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

/// The `code` of an error answer, kept in the response's extensions so a
/// middleware can tell one error from another without reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    #[tokio::test]
    async fn a_terminated_connection_is_an_outage_and_a_refused_statement_is_not() {
        let url = format!("{}/postgres", syncfleet_testkit::server_url());
        let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
        let refused = sqlx::query("SELECT 1 / 0").execute(&mut connection).await.unwrap_err();
        assert!(!is_outage(&refused), "{refused:?}");
        assert_eq!(ApiError::from(refused).status, StatusCode::INTERNAL_SERVER_ERROR);
        sqlx::query("CREATE TEMPORARY TABLE taken (email text CONSTRAINT users_email UNIQUE)")
            .execute(&mut connection)
            .await
            .unwrap();
        let taken = sqlx::query("INSERT INTO taken VALUES ('a@b.test'), ('a@b.test')")
            .execute(&mut connection)
            .await
            .unwrap_err();
        let deadlock = sqlx::query("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$")
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert_eq!(ApiError::from(deadlock).code, CONCURRENT_UPDATE);
        let answer = ApiError::from(taken);
        assert_eq!(
            (answer.status, answer.code, answer.field.as_deref()),
            (StatusCode::CONFLICT, "email_taken", Some("email"))
        );

        // The server ends the connection as an administrator's shutdown
        // (57P01) or a restart would; the next statement finds it closed.
        let terminated = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert!(is_outage(&terminated), "{terminated:?}");
        let closed = sqlx::query("SELECT 1").execute(&mut connection).await.unwrap_err();
        assert!(is_outage(&closed), "{closed:?}");
        let answer = ApiError::from(closed);
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.retry_after_seconds.is_some());
        assert_eq!(ApiError::at_commit(terminated).code, "outcome_unknown");
    }
}
