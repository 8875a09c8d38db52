//! What the tests of the HTTP simulators share: a simulator served for one
//! test with a client to call it, and a call's answer as JSON.

use reqwest::{Client, Method, RequestBuilder, StatusCode, header::HeaderMap};
use serde_json::Value;
use syncfleet_simulators::Server;
use tokio_util::sync::CancellationToken;

/// A simulator served for one test and a client to call it. Dropping it
/// stops the server; [`Served::stop`] also waits until it has stopped.
pub struct Served {
    /// The client the test calls the simulator with.
    pub http: Client,
    server: Option<Server>,
    shutdown: CancellationToken,
}

impl Served {
    /// `server`, started with `shutdown`.
    pub fn new(server: Server, shutdown: CancellationToken) -> Self {
        syncfleet_common::telemetry::install_tls_provider();
        Self {
            http: Client::new(),
            server: Some(server),
            shutdown,
        }
    }

    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        self.server.as_ref().unwrap().base_url()
    }

    /// The URL of `path` on the simulator.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Posts `form` to `path`: the status and the JSON answer.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self.http.post(self.url(path)).form(form).send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Calls `path` with `method` and `body` as JSON, if any: the status and
    /// the JSON answer (null when empty).
    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, body) = send(self.http.request(method, self.url(path)), body).await;
        (status, body)
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.server.take().unwrap().stopped().await.unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Sends `request`, with `body` as JSON if any: the status, the headers and
/// the JSON answer (null when empty).
pub async fn send(request: RequestBuilder, body: Option<Value>) -> (StatusCode, HeaderMap, Value) {
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, headers, body)
}

/// The value of `name` in `headers`, as text.
pub fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| value.to_str().unwrap().to_owned())
}
