//! Bulk seeding, what a load test needs to shape hundreds of thousands of
//! accounts in few calls: a batch is checked whole before anything is created
//! (an error names the entry and the field, and nothing is created), and is
//! served on a route whose body limit is raised for it alone.

use axum::{
    Json,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, post},
};
use serde::{Serialize, de::DeserializeOwned};

use super::control::problem;

/// The largest body a bulk route takes: 10,000 mailboxes of a few messages
/// each weigh a few MB; axum's default (2 MB) would refuse them.
pub(crate) const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Why a bulk seed was refused whole; nothing of the batch was created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    /// An entry is wrong: where (`mailboxes[3].upn`) and what.
    #[error("{at}: {reason}")]
    Invalid {
        /// The entry and field, as a path into the request's body.
        at: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The batch has more entries than one call takes.
    #[error("{what}: at most {max} per call, got {given}")]
    TooMany {
        /// What the batch lists (`mailboxes`, `orgs`).
        what: &'static str,
        /// The most one call takes.
        max: usize,
        /// How many the batch has.
        given: usize,
    },
}

impl BulkError {
    /// An entry at `at` is wrong for `reason`.
    pub(crate) fn invalid(at: impl Into<String>, reason: impl ToString) -> Self {
        Self::Invalid {
            at: at.into(),
            reason: reason.to_string(),
        }
    }

    /// Refuses a batch of `given` `what` over `max`.
    pub(crate) fn check_count(what: &'static str, given: usize, max: usize) -> Result<(), Self> {
        if given > max {
            return Err(Self::TooMany { what, max, given });
        }
        Ok(())
    }
}

/// `POST` of a bulk body `B`, its body limit raised to [`BODY_LIMIT`] on this
/// route only: `seed` runs on a blocking thread (a batch holds the store's
/// lock a while), given the body and the request's base URL (`http://{Host}`,
/// which links and instance URLs in its answer start with, as the API's own
/// answers' do), and its result answers `201` with its JSON, `400` naming the
/// entry at fault or `413` naming the cap. A body over the limit answers `413`
/// naming the limit; one that does not parse, `400` naming where.
pub(crate) fn route<S, B, T>(seed: fn(&S, B, &str) -> Result<T, BulkError>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    B: DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
{
    post(
        move |State(simulator): State<S>, headers: HeaderMap, body: Result<Bytes, BytesRejection>| async move {
            let base = format!(
                "http://{}",
                headers
                    .get(header::HOST)
                    .and_then(|host| host.to_str().ok())
                    .unwrap_or("127.0.0.1")
            );
            let bytes = match body {
                Ok(bytes) => bytes,
                Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the body is over {} MiB, the most a bulk call takes: send fewer entries per call",
                            BODY_LIMIT / (1024 * 1024)
                        ),
                    );
                }
                Err(rejection) => return problem(rejection.status(), rejection.body_text()),
            };
            let seeded = tokio::task::spawn_blocking(move || {
                let Json(batch) =
                    Json::<B>::from_bytes(&bytes).map_err(|rejection| Refusal::Unparsed(rejection.body_text()))?;
                seed(&simulator, batch, &base).map_err(Refusal::Refused)
            })
            .await;
            match seeded {
                Ok(Ok(created)) => (StatusCode::CREATED, Json(created)).into_response(),
                Ok(Err(Refusal::Refused(error))) => answer(&error),
                Ok(Err(Refusal::Unparsed(reason))) => problem(StatusCode::BAD_REQUEST, reason),
                Err(error) => problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the bulk seed stopped: {error}"),
                ),
            }
        },
    )
    .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Why a bulk body was not seeded.
enum Refusal {
    /// It does not parse: where and why.
    Unparsed(String),
    /// The seed refused it.
    Refused(BulkError),
}

/// A refused batch as an answer: `413` over the cap, else `400`.
fn answer(error: &BulkError) -> Response {
    let status = match error {
        BulkError::Invalid { .. } => StatusCode::BAD_REQUEST,
        BulkError::TooMany { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    };
    problem(status, error.to_string())
}
