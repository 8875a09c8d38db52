//! Signing in: the admin's token is kept in an `HttpOnly; Secure;
//! SameSite=Strict` cookie scoped to `/panel`, checked on every request the
//! way the API checks a bearer token (a revoked token signs the panel out at
//! once). Every request that changes something carries the CSRF token,
//! derived from the cookie's token, in a form field or a header, and must
//! come from the panel's own origin.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, Method, header, request::Parts},
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Panel, error::PanelError};
use crate::auth::{Principal, Role};

/// The cookie holding the token.
pub const COOKIE: &str = "sf_panel";
/// The header fetch() calls carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field forms carry it in.
pub const CSRF_FIELD: &str = "csrf";

/// A signed-in admin or organization admin.
pub struct Session {
    token: String,
    /// `admin` or `org_admin`.
    pub role: Role,
    /// An organization admin's organization.
    pub organization_id: Option<Uuid>,
    /// The token's label (who is signed in).
    pub label: String,
}

impl Session {
    /// The bearer token, for calls to the API only: never rendered.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// This session's CSRF token.
    pub fn csrf(&self) -> String {
        csrf_for(&self.token)
    }

    /// Whether this is an admin of every organization.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Resolves a token as the API would; a `user` token is refused.
    pub async fn resolve(panel: &Panel, token: &str) -> Result<Self, PanelError> {
        let request = axum::http::Request::builder()
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .map_err(|error| PanelError::Internal(error.to_string()))?;
        let (mut parts, ()) = request.into_parts();
        let principal = Principal::from_request_parts(&mut parts, &panel.app)
            .await
            .map_err(|error| match error.code() {
                // An outage is not a sign-out: the page says so, with Retry-After.
                "unavailable" => PanelError::Api {
                    status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    message: error.message().to_owned(),
                    field: None,
                },
                _ => PanelError::SignedOut,
            })?;
        if principal.role == Role::User {
            return Err(PanelError::NotAnAdmin);
        }
        Ok(Self {
            token: token.to_owned(),
            role: principal.role,
            organization_id: principal.organization_id,
            label: principal.label,
        })
    }
}

#[cfg(test)]
impl Session {
    /// A signed-in session without a token store, for rendering pages in
    /// unit tests.
    pub fn for_tests(role: Role) -> Self {
        Self {
            token: "sf_test_token".to_owned(),
            role,
            organization_id: (role == Role::OrgAdmin).then(Uuid::nil),
            label: "tester@fleet.example".to_owned(),
        }
    }
}

/// The CSRF token of a session: a hash of its token, so it needs no storage,
/// and nobody without the cookie can compute it.
pub fn csrf_for(token: &str) -> String {
    let digest = Sha256::digest(format!("syncfleet panel csrf\0{token}").as_bytes());
    digest.iter().take(20).map(|byte| format!("{byte:02x}")).collect()
}

/// The token in the request's cookie.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` that signs in.
pub fn sign_in_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/panel; HttpOnly; Secure; SameSite=Strict; Max-Age=43200")
}

/// The `Set-Cookie` that signs out.
pub fn sign_out_cookie() -> String {
    format!("{COOKIE}=; Path=/panel; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Refuses a request from another site: a browser sends `Sec-Fetch-Site`
/// and, on a POST, `Origin`; either naming another site is refused.
pub fn check_origin(headers: &HeaderMap) -> Result<(), PanelError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|value| value.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(PanelError::Forbidden("the request came from another site"));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) {
        // The host the browser addressed (a proxy in front names it in
        // X-Forwarded-Host; a cross-site form cannot set that header).
        let host = ["x-forwarded-host", "host"]
            .iter()
            .find_map(|name| headers.get(*name).and_then(|value| value.to_str().ok()))
            .unwrap_or_default();
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
        if origin == "null" || origin_host != host {
            return Err(PanelError::Forbidden("the request came from another origin"));
        }
    }
    Ok(())
}

/// Checks a change's CSRF token (from the form or the header) and origin.
pub fn check_csrf(session: &Session, headers: &HeaderMap, form_token: Option<&str>) -> Result<(), PanelError> {
    check_origin(headers)?;
    let given = form_token
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        })
        .ok_or(PanelError::Forbidden("the request carries no CSRF token"))?;
    let expected = session.csrf();
    // Compared without an early exit, so the time taken tells nothing.
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(PanelError::Forbidden("the CSRF token does not match this session"));
    }
    Ok(())
}

impl FromRequestParts<Panel> for Session {
    type Rejection = PanelError;

    async fn from_request_parts(parts: &mut Parts, panel: &Panel) -> Result<Self, Self::Rejection> {
        let token = cookie_token(&parts.headers).ok_or(PanelError::SignedOut)?;
        let session = Self::resolve(panel, &token).await?;
        // Forms check their token themselves (it is in the body); every
        // other change is a fetch() carrying the header.
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
        if parts.method != Method::GET && parts.method != Method::HEAD && !is_form {
            check_csrf(&session, &parts.headers, None)?;
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_csrf_token_is_stable_per_token_and_differs_between_tokens() {
        assert_eq!(csrf_for("sf_a"), csrf_for("sf_a"));
        assert_ne!(csrf_for("sf_a"), csrf_for("sf_b"));
        assert_eq!(csrf_for("sf_a").len(), 40);
        assert!(!csrf_for("sf_a").contains("sf_a"));
    }

    #[test]
    fn the_token_is_read_from_its_cookie_among_others() {
        let map = headers(&[("cookie", "other=1; sf_panel=sf_tok; more=2")]);
        assert_eq!(cookie_token(&map).as_deref(), Some("sf_tok"));
        assert_eq!(cookie_token(&headers(&[("cookie", "sf_panel=")])), None);
        assert_eq!(cookie_token(&headers(&[("cookie", "sf_panel_x=1")])), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn requests_from_another_site_or_origin_are_refused() {
        assert!(
            check_origin(&headers(&[
                ("host", "panel.example"),
                ("origin", "https://panel.example")
            ]))
            .is_ok()
        );
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(
            check_origin(&headers(&[])).is_ok(),
            "a client that is no browser sends neither"
        );
        for refused in [
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[("host", "panel.example"), ("origin", "https://evil.example")]),
            headers(&[("host", "panel.example"), ("origin", "null")]),
        ] {
            assert!(
                matches!(check_origin(&refused), Err(PanelError::Forbidden(_))),
                "{refused:?}"
            );
        }
        let proxied = headers(&[
            ("host", "api.internal:8080"),
            ("x-forwarded-host", "panel.example"),
            ("origin", "https://panel.example"),
        ]);
        assert!(check_origin(&proxied).is_ok());
    }

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_scoped_to_the_panel() {
        let cookie = sign_in_cookie("sf_tok");
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/panel"] {
            assert!(cookie.contains(flag), "{cookie}");
        }
        assert!(sign_out_cookie().contains("Max-Age=0"));
    }
}
