//! The api work of the run, as a careful client does it: every request that
//! creates something or queues work carries an `Idempotency-Key`; an answer
//! lost or a 5xx is retried with the same key until it is answered; once
//! answered, the same request is sent once more with its key (it must answer
//! the first answer and do nothing), retried the same way when the fleet is
//! down at that moment. Every answer is recorded.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

/// How long a request is retried before the client gives up on it.
const PATIENCE: Duration = Duration::from_secs(150);

/// One answer (or its absence).
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The HTTP status; `None` when no answer came (refused, reset, timeout).
    pub status: Option<u16>,
    /// The error's `code`, when the answer is an error.
    pub code: Option<String>,
    /// Whether a 503 carried `Retry-After`.
    pub retry_after: bool,
    /// `Idempotency-Replayed: true`.
    pub replayed: bool,
    /// The created thing's id, when the answer names one.
    pub effect: Option<String>,
}

/// A request, its retries and its deliberate replay.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// `push`, `force_sync` or `create_user`.
    pub kind: &'static str,
    pub key: String,
    /// For `create_user`, the new user's email (unique: how its effect is found).
    pub email: Option<String>,
    /// Every attempt until the first answer that is not a 5xx.
    pub attempts: Vec<Attempt>,
    /// The deliberate replay of an answered request: its attempts, retried
    /// like the request's until one is answered (a replay sent while the
    /// database is stopped is answered 503, and a careful client retries).
    pub replays: Vec<Attempt>,
}

impl Call {
    /// The final answer (the last attempt).
    pub fn last(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The replay's answer (its last attempt), when the request was replayed.
    pub fn replay(&self) -> Option<&Attempt> {
        self.replays.last()
    }

    /// The id of what the request created, from its final 2xx answer.
    pub fn effect(&self) -> Option<&str> {
        self.last()
            .filter(|attempt| attempt.status.is_some_and(|status| (200..300).contains(&status)))
            .and_then(|attempt| attempt.effect.as_deref())
    }
}

/// The run's api client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: String, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { http, base, token })
    }

    async fn send(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: &Value) -> Attempt {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let Ok(response) = request.send().await else {
            return Attempt {
                status: None,
                code: None,
                retry_after: false,
                replayed: false,
                effect: None,
            };
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after").is_some();
        let replayed = header("idempotency-replayed").as_deref() == Some("true");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let effect = body["id"]
            .as_str()
            .or_else(|| body["job"]["id"].as_str())
            .map(str::to_owned);
        Attempt {
            status: Some(status),
            code: body["error"]["code"].as_str().map(str::to_owned),
            retry_after,
            replayed,
            effect,
        }
    }

    /// Sends `body` to `path` with a new key until it is answered (not a
    /// 5xx) or the patience runs out, then replays it once.
    pub async fn call(&self, kind: &'static str, path: &str, body: Value, email: Option<String>) -> Call {
        let key = Uuid::new_v4().to_string();
        let mut call = Call {
            kind,
            key: key.clone(),
            email,
            attempts: Vec::new(),
            replays: Vec::new(),
        };
        call.attempts = self.until_answered(path, &key, &body).await;
        if call
            .last()
            .and_then(|attempt| attempt.status)
            .is_some_and(|status| status < 300)
        {
            call.replays = self.until_answered(path, &key, &body).await;
        }
        call
    }

    /// Posts `body` with `key` until it is answered (not a 5xx) or the
    /// patience runs out: every attempt.
    async fn until_answered(&self, path: &str, key: &str, body: &Value) -> Vec<Attempt> {
        let mut attempts = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let attempt = self.send(reqwest::Method::POST, path, Some(key), body).await;
            let answered = attempt.status.is_some_and(|status| status < 500);
            attempts.push(attempt);
            if answered || Instant::now() >= deadline {
                return attempts;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Saves `user`'s customization (the document pushes copy), retrying
    /// until it is stored.
    pub async fn save_customization(&self, user: Uuid, version: usize) -> anyhow::Result<()> {
        let body = json!({ "document": { "behavior": { "faults_run": version } } });
        let deadline = Instant::now() + PATIENCE;
        loop {
            let attempt = self
                .send(
                    reqwest::Method::PUT,
                    &format!("/v1/users/{user}/customization"),
                    None,
                    &body,
                )
                .await;
            match attempt.status {
                Some(200..=299) => return Ok(()),
                Some(status) if status < 500 => anyhow::bail!("saving a customization answered {status}: {attempt:?}"),
                _ => anyhow::ensure!(Instant::now() < deadline, "saving a customization: {attempt:?}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
