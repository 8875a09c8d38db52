//! The OAuth2 refresh grant the mailbox providers share (Microsoft identity
//! platform for Graph, Google for Gmail): `POST {token endpoint}` with
//! `grant_type=refresh_token`. Every grant is handed to a [`GrantSink`]
//! before its access token is used, so a rotated refresh token is persisted
//! at once (Microsoft answers a new one on every refresh, and a strict
//! provider revokes the old one) and the access token can be kept for the
//! next session: an [`OAuthSession`] started with a kept access token makes
//! no refresh until it expires or the provider refuses it.
//!
//! `invalid_grant` (Microsoft's AADSTS70008, 700082, 50173, 50076, 50158;
//! Google's "Token has been expired or revoked.") is an authorization failure,
//! permanent until the user authorizes again; a 5xx is transient.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    error::{ConnectorError, Provider},
    http::{HttpClient, transport_error},
};

/// The OAuth client the fleet authorizes users through, at one provider.
#[derive(Debug, Clone)]
pub struct OAuthApp {
    /// Which provider's tokens these are (named in errors).
    pub provider: Provider,
    /// The token endpoint, e.g. `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`
    /// or `https://oauth2.googleapis.com/token` (or a simulator's).
    pub token_url: Url,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// The scopes asked on refresh (space separated when sent); Google takes none.
    pub scopes: Vec<String>,
}

/// Receives every grant before its access token is used. An error fails the
/// call that needed the refresh (the old refresh token may be dead already,
/// so going on without persisting the rotated one would lose the user's
/// authorization).
pub trait GrantSink: Send + Sync {
    /// Persists `grant`: its rotated refresh token, if any, durably; its
    /// access token, if the sink keeps them.
    fn store<'a>(
        &'a self,
        grant: &'a OAuthGrant,
    ) -> Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send + 'a>>;
}

/// What a refresh obtained.
#[derive(Debug, Clone)]
pub struct OAuthGrant {
    /// The access token.
    pub access_token: SecretString,
    /// When it stops working (a margin is taken off the provider's figure).
    pub expires_at: Instant,
    /// The same moment on the wall clock, to keep the token past this
    /// process.
    pub valid_until: DateTime<Utc>,
    /// The new refresh token, when the provider rotated it.
    pub refresh_token: Option<SecretString>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Taken off a token's lifetime so it is not used in its last moments (a
/// kept token must outlast the session that picks it up).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Exchanges `refresh_token` for an access token.
pub async fn refresh(
    http: &HttpClient,
    app: &OAuthApp,
    refresh_token: &SecretString,
) -> Result<OAuthGrant, ConnectorError> {
    let provider = app.provider;
    http.check_url(&app.token_url)
        .map_err(|refused| ConnectorError::permanent(provider, format!("token URL: {refused}")))?;
    let scope = app.scopes.join(" ");
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose_secret()),
        ("client_id", app.client_id.as_str()),
        ("client_secret", app.client_secret.expose_secret()),
    ];
    if !scope.is_empty() {
        form.push(("scope", scope.as_str()));
    }
    let response = http
        .inner()
        .post(app.token_url.clone())
        .form(&form)
        .send()
        .await
        .map_err(|error| transport_error(provider, error))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| transport_error(provider, error))?;
    if status != StatusCode::OK {
        return Err(token_error(provider, status, &body));
    }
    // The body holds tokens: a parse error's text (which may quote a value) is
    // never passed on.
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|_| ConnectorError::permanent(provider, "the token answer is not an OAuth2 token answer"))?;
    let usable = Duration::from_secs(answer.expires_in.unwrap_or(3600)).saturating_sub(EXPIRY_MARGIN);
    Ok(OAuthGrant {
        access_token: SecretString::from(answer.access_token),
        expires_at: Instant::now() + usable,
        valid_until: Utc::now() + chrono::Duration::from_std(usable).unwrap_or_default(),
        refresh_token: answer.refresh_token.map(SecretString::from),
    })
}

/// Classifies an error answer of a token endpoint.
fn token_error(provider: Provider, status: StatusCode, body: &[u8]) -> ConnectorError {
    let code = status.as_u16();
    if status.is_server_error() {
        return ConnectorError::transient(provider, format!("token endpoint answered HTTP {code}"));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return ConnectorError::Throttled {
            provider,
            retry_after: None,
            message: "token endpoint answered HTTP 429".to_owned(),
        };
    }
    let Ok(error) = serde_json::from_slice::<ErrorAnswer>(body) else {
        return ConnectorError::permanent(provider, format!("token endpoint answered HTTP {code}"));
    };
    // The description names the cause (AADSTS code, "expired or revoked") and
    // never the token.
    let text = match error.error_description.as_deref() {
        Some(description) if !description.is_empty() => format!("{}: {description}", error.error),
        _ => error.error.clone(),
    };
    match error.error.as_str() {
        "invalid_grant" | "invalid_client" | "unauthorized_client" | "interaction_required" | "consent_required" => {
            ConnectorError::grant_refused(provider, text)
        }
        "temporarily_unavailable" => ConnectorError::transient(provider, text),
        _ => ConnectorError::permanent(provider, text),
    }
}

/// A user's OAuth session at one provider: the refresh token, the current
/// access token, and the sink rotated refresh tokens go to. Cheap to clone;
/// clones share the session.
#[derive(Clone)]
pub struct OAuthSession {
    http: HttpClient,
    app: Arc<OAuthApp>,
    sink: Option<Arc<dyn GrantSink>>,
    state: Arc<tokio::sync::Mutex<SessionState>>,
    refreshes: Arc<Mutex<u32>>,
}

struct SessionState {
    refresh_token: SecretString,
    access: Option<(SecretString, Instant)>,
}

impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OAuthSession")
            .field("provider", &self.app.provider)
            .field("client_id", &self.app.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuthSession {
    /// A session that refreshes before its first call.
    pub fn new(http: HttpClient, app: Arc<OAuthApp>, refresh_token: SecretString) -> Self {
        Self {
            http,
            app,
            sink: None,
            state: Arc::new(tokio::sync::Mutex::new(SessionState {
                refresh_token,
                access: None,
            })),
            refreshes: Arc::new(Mutex::new(0)),
        }
    }

    /// Hands every grant to `sink` before its access token is used.
    pub fn with_sink(mut self, sink: Arc<dyn GrantSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Starts with `access_token`, kept from an earlier grant and usable until
    /// `valid_until` (the margin already taken off): no refresh until then,
    /// unless the provider refuses it. A token already past it is ignored.
    pub fn with_access_token(self, access_token: SecretString, valid_until: DateTime<Utc>) -> Self {
        let left = (valid_until - Utc::now()).to_std().unwrap_or_default();
        if !left.is_zero()
            && let Ok(mut state) = self.state.try_lock()
        {
            state.access = Some((access_token, Instant::now() + left));
        }
        self
    }

    /// The provider.
    pub fn provider(&self) -> Provider {
        self.app.provider
    }

    /// Refreshes made so far (each one a call to the provider).
    pub fn refreshes(&self) -> u32 {
        *self.refreshes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A valid access token, refreshing when there is none or it expired.
    pub async fn access_token(&self) -> Result<SecretString, ConnectorError> {
        let mut state = self.state.lock().await;
        if let Some((token, expires_at)) = &state.access
            && Instant::now() < *expires_at
        {
            return Ok(token.clone());
        }
        self.refresh_locked(&mut state).await
    }

    /// Drops the access token `rejected` (the provider answered 401 with it)
    /// and refreshes, unless another call refreshed meanwhile.
    pub async fn refresh_after_rejection(&self, rejected: &SecretString) -> Result<SecretString, ConnectorError> {
        let mut state = self.state.lock().await;
        if let Some((token, expires_at)) = &state.access
            && token.expose_secret() != rejected.expose_secret()
            && Instant::now() < *expires_at
        {
            return Ok(token.clone());
        }
        self.refresh_locked(&mut state).await
    }

    async fn refresh_locked(&self, state: &mut SessionState) -> Result<SecretString, ConnectorError> {
        *self.refreshes.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        let grant = refresh(&self.http, &self.app, &state.refresh_token).await?;
        if let Some(sink) = &self.sink {
            sink.store(&grant).await?;
        }
        if let Some(rotated) = &grant.refresh_token {
            state.refresh_token = rotated.clone();
        }
        state.access = Some((grant.access_token.clone(), grant.expires_at));
        Ok(grant.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn kind(status: u16, body: &str) -> ErrorKind {
        token_error(Provider::Graph, StatusCode::from_u16(status).unwrap(), body.as_bytes()).kind()
    }

    #[test]
    fn invalid_grant_is_an_authorization_failure_and_a_5xx_is_transient() {
        let revoked = r#"{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired due to it being revoked."}"#;
        assert_eq!(kind(400, revoked), ErrorKind::Authorization);
        let google = r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#;
        assert_eq!(kind(400, google), ErrorKind::Authorization);
        assert_eq!(kind(503, "<html>"), ErrorKind::Transient);
        assert_eq!(kind(400, r#"{"error":"invalid_request"}"#), ErrorKind::Permanent);
        assert_eq!(kind(429, ""), ErrorKind::Throttled);
        let error = token_error(Provider::Gmail, StatusCode::BAD_REQUEST, google.as_bytes());
        assert_eq!(
            error.to_string(),
            "Gmail refused the authorization: invalid_grant: Token has been expired or revoked."
        );
    }
}
