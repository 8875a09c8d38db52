//! The OAuth refresh grant: `POST {login host}/services/oauth2/token` with
//! `grant_type=refresh_token`. The answer's `instance_url` becomes the API base
//! (after the SSRF check); a rotated refresh token, when the connected app
//! rotates them, is handed back so the caller persists it before anything else.
//! The answer's identity URL (`id`: `https://login.salesforce.com/id/{orgId}/{userId}`)
//! names the org and the user the token acts as.

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
    /// The org's id (`00D...`), from the identity URL.
    pub org_id: Option<String>,
    /// The user's id (`005...`), from the identity URL: the `OwnerId` of the
    /// records the user owns.
    pub user_id: Option<String>,
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
    /// The identity URL.
    #[serde(default)]
    id: Option<String>,
}

/// Whether `id` reads like a Salesforce record id: 15 or 18 letters and digits.
fn is_record_id(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The org and user ids of an identity URL, `.../id/{orgId}/{userId}`.
pub(crate) fn identity_ids(identity: &str) -> Option<(String, String)> {
    let url = Url::parse(identity).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|segment| !segment.is_empty()).collect();
    match segments.as_slice() {
        [.., "id", org, user] if is_record_id(org) && is_record_id(user) => {
            Some(((*org).to_owned(), (*user).to_owned()))
        }
        _ => None,
    }
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
    let (org_id, user_id) = answer.id.as_deref().and_then(identity_ids).unzip();
    Ok(TokenGrant {
        access_token: SecretString::from(answer.access_token),
        instance_url,
        refresh_token: answer.refresh_token.map(SecretString::from),
        org_id,
        user_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_url_names_the_org_and_the_user() {
        assert_eq!(
            identity_ids("https://login.salesforce.com/id/00D5g000004bXyzEAE/0055g00000AbCdEAAV"),
            Some(("00D5g000004bXyzEAE".to_owned(), "0055g00000AbCdEAAV".to_owned()))
        );
        assert_eq!(
            identity_ids("http://127.0.0.1:8080/id/00D000000000001/005000000000002/"),
            Some(("00D000000000001".to_owned(), "005000000000002".to_owned()))
        );
        for bad in [
            "not a url",
            "https://login.salesforce.com/id/00D000000000001",
            "https://login.salesforce.com/other/00D000000000001/005000000000002",
            "https://login.salesforce.com/id/00D000000000001/005-bad-id-here",
        ] {
            assert_eq!(identity_ids(bad), None, "{bad}");
        }
    }
}
