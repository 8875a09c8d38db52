//! The OAuth refresh grant: `POST {login host}/services/oauth2/token` with
//! `grant_type=refresh_token`. The answer's `instance_url` becomes the API base
//! (after the SSRF check); a rotated refresh token, when the connected app
//! rotates them, is handed back so the caller persists it before anything else.

use std::{future::Future, pin::Pin};

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::errors;
use crate::{
    error::{ConnectorError, Provider},
    http::{HttpClient, transport_error},
};

/// The connected app the fleet authorizes users through.
#[derive(Debug, Clone)]
pub struct ConnectedApp {
    /// The login host (`https://login.salesforce.com`, a My Domain, or a
    /// simulator); the token endpoint is `/services/oauth2/token` on it.
    pub login_url: Url,
    /// The connected app's consumer key.
    pub client_id: String,
    /// The consumer secret, when the app requires it on refresh.
    pub client_secret: Option<SecretString>,
}

/// What a refresh obtained.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The new access token.
    pub access_token: SecretString,
    /// The API base to use with it, already checked against the SSRF policy.
    pub instance_url: Url,
    /// A new refresh token, when the app rotates them: the old one no longer
    /// works, so persist this one at once.
    pub refresh_token: Option<SecretString>,
}

/// Receives every grant the client obtains, before the client uses it, so a
/// rotated refresh token is persisted at once. An error fails the call that
/// needed the refresh.
pub trait TokenSink: Send + Sync {
    /// Persists `grant` (at least its rotated refresh token, if any).
    fn store<'a>(
        &'a self,
        grant: &'a TokenGrant,
    ) -> Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send + 'a>>;
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    instance_url: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The token endpoint of `app`.
pub(crate) fn token_url(app: &ConnectedApp) -> Result<Url, ConnectorError> {
    app.login_url
        .join("/services/oauth2/token")
        .map_err(|error| ConnectorError::permanent(Provider::Salesforce, format!("bad login URL: {error}")))
}

/// Exchanges `refresh_token` for an access token.
pub(crate) async fn refresh(
    http: &HttpClient,
    app: &ConnectedApp,
    refresh_token: &SecretString,
) -> Result<TokenGrant, ConnectorError> {
    let url = token_url(app)?;
    http.check_url(&url)
        .map_err(|refused| ConnectorError::permanent(Provider::Salesforce, format!("login URL: {refused}")))?;
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose_secret()),
        ("client_id", app.client_id.as_str()),
    ];
    if let Some(secret) = &app.client_secret {
        form.push(("client_secret", secret.expose_secret()));
    }
    let response = http
        .inner()
        .post(url)
        .form(&form)
        .send()
        .await
        .map_err(|error| transport_error(Provider::Salesforce, error))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| transport_error(Provider::Salesforce, error))?;
    if status != StatusCode::OK {
        return Err(errors::from_token_response(status, &body));
    }
    // The body holds tokens: a parse error's text (which may quote a value) is
    // never passed on.
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
        ConnectorError::permanent(Provider::Salesforce, "the token answer is not what Salesforce sends")
    })?;
    let instance_url = Url::parse(&answer.instance_url)
        .map_err(|_| ConnectorError::permanent(Provider::Salesforce, "the token answer's instance_url is not a URL"))?;
    http.check_url(&instance_url)
        .map_err(|refused| ConnectorError::permanent(Provider::Salesforce, format!("instance URL: {refused}")))?;
    Ok(TokenGrant {
        access_token: SecretString::from(answer.access_token),
        instance_url,
        refresh_token: answer.refresh_token.map(SecretString::from),
    })
}
