//! The Microsoft identity platform's token endpoint, refresh grant only:
//! `POST /{tenant}/oauth2/v2.0/token`. Each refresh answers a new access
//! token bound to the refresh token's mailbox and (with rotation, as
//! Microsoft always does) a new refresh token. The one used stays valid, as
//! Microsoft documents; the strict mode revokes it. Errors
//! are Azure AD's: `{"error","error_description":"AADSTSnnnn: ...",
//! "error_codes",...}`, and never repeat a token.

use std::sync::Arc;

use axum::{
    Form, Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::{Endpoint, store::Store};
use crate::shared::latency;

/// The form of a token request (every field optional, so a missing one is
/// answered as Azure AD does rather than by the form parser).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace_id = uuid::Uuid::new_v4();
    let correlation_id = uuid::Uuid::new_v4();
    let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id.to_string(),
            "correlation_id": correlation_id.to_string(),
        })),
    )
        .into_response()
}

fn missing(parameter: &str) -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{parameter}'."),
    )
}

fn filled(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(store): State<Arc<Store>>,
    Path(_tenant): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    latency::wait(store.with(|state| state.latency.draw(&mut state.random))).await;
    let config = &store.config;
    store.with(|state| {
        let mailbox = filled(&form.refresh_token).and_then(|token| state.refresh_tokens.get(token).cloned());
        let revoked_for =
            filled(&form.refresh_token).and_then(|token| state.revoked_refresh_tokens.get(token).cloned());
        state.count(mailbox.as_deref().or(revoked_for.as_deref()), Endpoint::Token);
        let Some(grant_type) = filled(&form.grant_type) else {
            return missing("grant_type");
        };
        if grant_type != "refresh_token" {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
        if filled(&form.client_id).is_none() {
            return missing("client_id");
        }
        if filled(&form.client_secret).is_none() {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
        let Some(refresh_token) = filled(&form.refresh_token) else {
            return missing("refresh_token");
        };
        let Some(mailbox) = mailbox else {
            return if revoked_for.is_some() {
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
                )
            } else {
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to inactivity.",
                )
            };
        };
        let access_token = state.issue_access_token(&mailbox, config.access_token_lifetime);
        let expires_in = config.access_token_lifetime.as_secs().max(1);
        let scope = form
            .scope
            .clone()
            .unwrap_or_else(|| "https://graph.microsoft.com/.default".to_owned());
        let mut answer = json!({
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        });
        if config.rotate_refresh_tokens {
            if state.revokes_rotated_refresh_tokens(config) {
                state.revoke_refresh_token(refresh_token);
            }
            answer["refresh_token"] = json!(state.issue_refresh_token(&mailbox));
        }
        Json(answer).into_response()
    })
}
