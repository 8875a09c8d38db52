//! The panel's way to the API: every read and every change is a request to
//! the `/v1` router, in process, with the signed-in admin's token as the
//! bearer. Authorization, validation and activities are therefore exactly
//! the API's: an organization admin who edits a URL to another
//! organization's id gets the API's 404, whatever page asked.

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use serde_json::Value;
use tower::ServiceExt;

use super::{error::PanelError, session::Session};

/// The `/v1` router, called in process.
#[derive(Clone)]
pub struct V1(pub Router);

/// What the API answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON when the API succeeded; its error otherwise.
    pub fn json(self) -> Result<Value, PanelError> {
        if !self.status.is_success() {
            return Err(self.error());
        }
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|error| PanelError::Internal(format!("the API answered no JSON: {error}")))
    }

    /// The API's error as the panel shows it: its message, naming the field.
    pub fn error(&self) -> PanelError {
        let parsed: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let detail = &parsed["error"];
        PanelError::Api {
            status: self.status,
            message: detail["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the API answered {}", self.status)),
            field: detail["field"].as_str().map(str::to_owned),
        }
    }
}

impl V1 {
    /// Sends one request as the signed-in admin.
    pub async fn call(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, PanelError> {
        self.call_with_token(session.token(), method, path, body).await
    }

    /// Sends one request with this bearer token.
    pub async fn call_with_token(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, PanelError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|error| PanelError::Internal(format!("a request to the API could not be built: {error}")))?;
        let response = self
            .0
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| PanelError::Internal(format!("the API failed: {error}")))?;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
            .await
            .map_err(|error| PanelError::Internal(format!("the API's answer could not be read: {error}")))?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// A GET answered as JSON (the API's error otherwise).
    pub async fn get(&self, session: &Session, path: &str) -> Result<Value, PanelError> {
        self.call(session, Method::GET, path, None).await?.json()
    }

    /// Sends the changed fields of an object, when any changed.
    pub async fn apply(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        change: serde_json::Map<String, Value>,
    ) -> Result<(), PanelError> {
        if change.is_empty() {
            return Ok(());
        }
        self.send(session, method, path, &Value::Object(change))
            .await
            .map(|_| ())
    }

    /// A change answered as JSON (the API's error otherwise).
    pub async fn send(&self, session: &Session, method: Method, path: &str, body: &Value) -> Result<Value, PanelError> {
        self.call(session, method, path, Some(body)).await?.json()
    }
}
