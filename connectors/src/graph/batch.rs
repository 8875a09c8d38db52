//! Event and contact writes through JSON batching (`POST /v1.0/$batch`).
//!
//! Each batch holds at most [`BATCH_LIMIT`] requests chained with
//! `dependsOn`, so Graph runs them one after the other: independent requests
//! run in parallel, and more than the mailbox's 4 concurrent requests would
//! be throttled one by one (a serial chain is also one of the dependency
//! patterns Graph documents). Answers may come back in any order and are
//! matched by id. Then, per request:
//! - 2xx: written, the answer's `id` is the item's;
//! - 404 on an update of an `existing` item: the user deleted it, it is
//!   created again in a following batch;
//! - 424: a request earlier in the chain failed, so this one did not run: it
//!   goes into the next batch as it was;
//! - 429 with a `Retry-After` of at most [`INLINE_RETRY_LIMIT`]: sent once
//!   more after that delay; otherwise the item's own `Throttled` with the
//!   delay Graph gave;
//! - anything else: the item's own error (a 4xx is a validation error).

use std::{collections::HashMap, collections::VecDeque, time::Duration};

use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::debug;

use chrono::{DateTime, Utc};

use super::{
    client::{GRAPH, GraphClient, IMMUTABLE_IDS},
    delta,
    errors::{self, Scope},
};
use crate::{
    error::ConnectorError,
    mailbox::{MailFolder, MessagePage},
};

/// The most requests one batch takes.
pub const BATCH_LIMIT: usize = 20;

/// The longest `Retry-After` of an inner 429 the client waits out itself
/// before sending the request once more.
pub const INLINE_RETRY_LIMIT: Duration = Duration::from_secs(5);

/// How many batches one upsert sends at most; each batch settles at least
/// its first request, so this is never reached unless Graph misbehaves.
const MAX_BATCHES_PER_ITEM: usize = 4;

/// One item to write: its body, and the mailbox item it updates if any.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub existing: Option<String>,
    pub body: Value,
}

/// An item still to write.
#[derive(Debug, Clone)]
struct Pending {
    index: usize,
    /// The item to update; `None` creates.
    target: Option<String>,
    throttle_retried: bool,
}

/// A `$batch` as sent: serialized straight from the writes it carries, so a
/// session waiting for its answer holds no second copy of their bodies.
#[derive(Serialize)]
struct BatchRequest<'a> {
    requests: &'a [InnerRequest<'a>],
}

/// One request of a `$batch`.
#[derive(Serialize)]
struct InnerRequest<'a> {
    id: String,
    method: &'static str,
    url: String,
    headers: InnerHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a Value>,
    #[serde(rename = "dependsOn", skip_serializing_if = "Option::is_none")]
    depends_on: Option<[String; 1]>,
}

/// The headers of one request of a `$batch`.
#[derive(Serialize)]
struct InnerHeaders<'a> {
    #[serde(rename = "Content-Type", skip_serializing_if = "Option::is_none")]
    content_type: Option<&'static str>,
    #[serde(rename = "Prefer")]
    prefer: &'a str,
}

#[derive(Debug, Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    responses: Vec<InnerAnswer>,
}

#[derive(Debug, Deserialize)]
struct InnerAnswer {
    id: String,
    status: u16,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    body: Value,
}

impl InnerAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.as_str())
    }
}

/// What became of one request of a batch.
#[derive(Debug)]
enum Outcome {
    Done(Result<String, ConnectorError>),
    /// Send again in the next batch (after `wait`, if any).
    Again {
        pending: Pending,
        wait: Option<Duration>,
    },
}

fn settle(mut pending: Pending, answer: &InnerAnswer) -> Outcome {
    match answer.status {
        200..=299 => Outcome::Done(match answer.body.get("id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_owned()),
            None => Err(ConnectorError::permanent(GRAPH, "a written item's answer has no id")),
        }),
        404 if pending.target.is_some() => {
            debug!(
                index = pending.index,
                "The mailbox item was deleted; creating it again."
            );
            pending.target = None;
            Outcome::Again { pending, wait: None }
        }
        424 => Outcome::Again { pending, wait: None },
        status => {
            let retry_after = errors::retry_after(answer.header("Retry-After"));
            if status == 429
                && !pending.throttle_retried
                && let Some(delay) = retry_after.filter(|delay| *delay <= INLINE_RETRY_LIMIT)
            {
                pending.throttle_retried = true;
                return Outcome::Again {
                    pending,
                    wait: Some(delay),
                };
            }
            let (code, message) = errors::error_of_value(&answer.body);
            Outcome::Done(Err(errors::classify(status, retry_after, &code, &message, Scope::Item)))
        }
    }
}

impl GraphClient {
    /// Sends one `$batch` of `requests`; answers its inner answers by id
    /// (they may come back in any order).
    async fn send_batch(
        &self,
        url: Url,
        requests: &[InnerRequest<'_>],
    ) -> Result<HashMap<String, InnerAnswer>, ConnectorError> {
        let answer = self
            .call_with(Method::POST, url, Some(&BatchRequest { requests }))
            .await?;
        let parsed: BatchAnswer = serde_json::from_slice(&answer.body).map_err(|error| {
            ConnectorError::permanent(
                GRAPH,
                format!(
                    "unexpected batch answer (line {}, column {})",
                    error.line(),
                    error.column()
                ),
            )
        })?;
        Ok(parsed
            .responses
            .into_iter()
            .map(|answer| (answer.id.clone(), answer))
            .collect())
    }

    fn inner_request<'a>(
        &self,
        collection: &str,
        pending: &Pending,
        write: &'a Write,
        previous: Option<usize>,
    ) -> InnerRequest<'a> {
        let (method, url) = match &pending.target {
            Some(id) => (
                "PATCH",
                self.relative_users_path(&format!("{collection}/{}", encode_id(id))),
            ),
            None => ("POST", self.relative_users_path(collection)),
        };
        InnerRequest {
            id: pending.index.to_string(),
            method,
            url,
            headers: InnerHeaders {
                content_type: Some("application/json"),
                prefer: IMMUTABLE_IDS,
            },
            body: Some(&write.body),
            depends_on: previous.map(|previous| [previous.to_string()]),
        }
    }

    /// Writes `writes` into `collection` (`events` or `contacts`) in batches;
    /// the results answer each write in input order.
    pub(crate) async fn upsert_batched(
        &self,
        collection: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<Result<String, ConnectorError>>, ConnectorError> {
        let mut results: Vec<Option<Result<String, ConnectorError>>> = writes.iter().map(|_| None).collect();
        let mut queue: VecDeque<Pending> = writes
            .iter()
            .enumerate()
            .map(|(index, write)| Pending {
                index,
                target: write.existing.clone(),
                throttle_retried: false,
            })
            .collect();
        let batch_url = self.api_url(&["$batch"])?;
        let most_batches = writes.len().div_ceil(BATCH_LIMIT) + MAX_BATCHES_PER_ITEM * writes.len();
        let mut batches = 0;
        while !queue.is_empty() && batches < most_batches {
            batches += 1;
            let chunk: Vec<Pending> = queue.drain(..queue.len().min(BATCH_LIMIT)).collect();
            let requests: Vec<InnerRequest<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(position, pending)| {
                    let previous = position.checked_sub(1).map(|previous| chunk[previous].index);
                    self.inner_request(collection, pending, &writes[pending.index], previous)
                })
                .collect();
            let mut answers = self.send_batch(batch_url.clone(), &requests).await?;

            let mut again = Vec::new();
            let mut wait = Duration::ZERO;
            for pending in chunk {
                let index = pending.index;
                let outcome = match answers.remove(&index.to_string()) {
                    Some(answer) => settle(pending, &answer),
                    None => Outcome::Done(Err(ConnectorError::permanent(
                        GRAPH,
                        format!("the batch answer lacks request {index}"),
                    ))),
                };
                match outcome {
                    Outcome::Done(result) => results[index] = Some(result),
                    Outcome::Again { pending, wait: delay } => {
                        wait = wait.max(delay.unwrap_or_default());
                        again.push(pending);
                    }
                }
            }
            // What is sent again goes first, in input order.
            for pending in again.into_iter().rev() {
                queue.push_front(pending);
            }
            if !wait.is_zero() {
                debug!(
                    wait_ms = wait.as_millis() as u64,
                    "Graph throttled inner requests; waiting."
                );
                tokio::time::sleep(wait).await;
            }
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(ConnectorError::transient(
                        GRAPH,
                        "the item was not written after several batches",
                    ))
                })
            })
            .collect())
    }
}

impl GraphClient {
    /// The first page of changes of each `(folder, cursor)`, as
    /// [`crate::mailbox::Mailbox::message_changes`] answers them, carried in
    /// one `$batch` (one call and one turn of the mailbox's limits instead of
    /// one per folder). Each page answers for itself: a throttled or expired
    /// delta is that folder's error, with the delay or the kind Graph gave.
    pub(crate) async fn message_changes_batched(
        &self,
        streams: &[(MailFolder, Option<&str>)],
        since: DateTime<Utc>,
    ) -> Result<Vec<Result<MessagePage, ConnectorError>>, ConnectorError> {
        let api_root = self.api_url(&[])?;
        let root = api_root.path().trim_end_matches('/').to_owned();
        let prefer = format!(
            "IdType=\"ImmutableId\", odata.maxpagesize={}",
            self.options.page_size.max(1)
        );
        let mut requests = Vec::with_capacity(streams.len());
        for (index, (folder, cursor)) in streams.iter().enumerate() {
            let url = self.delta_url(*folder, *cursor, since)?;
            let path = url.path().strip_prefix(&root).unwrap_or(url.path());
            let relative = match url.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            };
            requests.push(InnerRequest {
                id: index.to_string(),
                method: "GET",
                url: relative,
                headers: InnerHeaders {
                    content_type: None,
                    prefer: &prefer,
                },
                body: None,
                depends_on: None,
            });
        }
        let mut answers = self.send_batch(self.api_url(&["$batch"])?, &requests).await?;
        Ok(streams
            .iter()
            .enumerate()
            .map(|(index, (folder, _))| {
                let answer = answers.remove(&index.to_string()).ok_or_else(|| {
                    ConnectorError::permanent(GRAPH, format!("the batch answer lacks request {index}"))
                })?;
                if (200..300).contains(&answer.status) {
                    let body = serde_json::to_vec(&answer.body).unwrap_or_default();
                    return delta::parse_page(&body, *folder, self.options.body_preview_chars);
                }
                let retry_after = errors::retry_after(answer.header("Retry-After"));
                let (code, message) = errors::error_of_value(&answer.body);
                Err(errors::classify(
                    answer.status,
                    retry_after,
                    &code,
                    &message,
                    Scope::Call,
                ))
            })
            .collect())
    }
}

/// An item id as one path segment of an inner URL (Graph ids may hold `/`,
/// `+` and `=`).
fn encode_id(id: &str) -> String {
    let mut encoded = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~=".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    fn answer(status: u16, headers: Value, body: Value) -> InnerAnswer {
        InnerAnswer {
            id: "0".to_owned(),
            status,
            headers: headers.as_object().cloned().unwrap_or_default(),
            body,
        }
    }

    fn pending(target: Option<&str>) -> Pending {
        Pending {
            index: 0,
            target: target.map(str::to_owned),
            throttle_retried: false,
        }
    }

    #[test]
    fn a_deleted_item_is_created_again_and_a_failed_dependency_sent_again() {
        let gone = answer(404, json!({}), json!({"error": {"code": "ErrorItemNotFound"}}));
        let Outcome::Again { pending: again, wait } = settle(pending(Some("AAk1")), &gone) else {
            panic!("a 404 on an update is created again");
        };
        assert_eq!((again.target, wait), (None, None));
        assert!(matches!(
            settle(pending(None), &gone),
            Outcome::Done(Err(ConnectorError::Validation { .. }))
        ));
        assert!(matches!(
            settle(pending(None), &answer(424, json!({}), Value::Null)),
            Outcome::Again { wait: None, .. }
        ));
    }

    #[test]
    fn a_short_throttle_is_waited_out_once_and_a_long_one_is_the_items_error() {
        let short = answer(
            429,
            json!({"Retry-After": "2"}),
            json!({"error": {"code": "ApplicationThrottled"}}),
        );
        let Outcome::Again { pending: again, wait } = settle(pending(None), &short) else {
            panic!("a short throttle is retried");
        };
        assert_eq!(wait, Some(Duration::from_secs(2)));
        let Outcome::Done(Err(error)) = settle(again, &short) else {
            panic!("only once");
        };
        assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));

        let long = answer(429, json!({"retry-after": "30"}), Value::Null);
        let Outcome::Done(Err(error)) = settle(pending(None), &long) else {
            panic!("a long throttle is the item's");
        };
        assert_eq!(
            (error.kind(), error.retry_after()),
            (ErrorKind::Throttled, Some(Duration::from_secs(30)))
        );
    }

    #[test]
    fn an_id_is_one_path_segment() {
        assert_eq!(encode_id("AAk/AL+g=="), "AAk%2FAL%2Bg==");
    }
}
