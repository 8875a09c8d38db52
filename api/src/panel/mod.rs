//! The admin panel: server-rendered HTML pages under `/panel` for admins and
//! organization admins, built on the `/v1` API (every read and change is an
//! in-process call to it with the signed-in token; see [`client`]). One CSS
//! and one small script are embedded in the binary: nothing is fetched from
//! elsewhere, and there is no build step.

mod client;
mod customization;
mod error;
mod ops;
mod organizations;
mod page;
mod session;
mod user_details;
mod users;

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, State},
    http::request::Parts,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};

use crate::AppState;
pub use client::V1;
use error::PanelError;
use session::Session;

/// What the panel's handlers reach.
#[derive(Clone)]
pub struct Panel {
    /// The `/v1` router, called in process.
    pub v1: V1,
    /// The API's state (the panel only resolves tokens with it).
    pub app: AppState,
}

/// The panel's routes, on top of `v1`.
pub fn router(v1: Router, app: AppState) -> Router {
    let panel = Panel { v1: V1(v1), app };
    Router::new()
        .route("/panel", get(|| async { Redirect::to("/panel/organizations") }))
        .route("/panel/", get(|| async { Redirect::to("/panel/organizations") }))
        .route("/panel/login", get(sign_in_page).post(sign_in))
        .route("/panel/logout", post(sign_out))
        .route("/panel/assets/panel.css", get(css))
        .route("/panel/assets/panel.js", get(script))
        .merge(organizations::routes())
        .merge(users::routes())
        .merge(user_details::routes())
        .merge(customization::routes())
        .merge(ops::routes())
        .route("/panel/{*rest}", get(not_found))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(panel)
}

/// Headers every panel answer carries: no framing, no sniffing, only the
/// panel's own script and style, nothing cached.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn not_found(uri: axum::http::Uri) -> Response {
    page::bare(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("Not found: there is no page {}", uri.path()),
    )
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/panel.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/panel.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn sign_in_page() -> Response {
    page::sign_in(StatusCode::OK, None)
}

async fn sign_in(State(panel): State<Panel>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(error) = session::check_origin(&headers) {
        return error.into_response();
    }
    let form = Fields::parse(&body);
    let Some(token) = form.get("token").map(str::trim).filter(|token| !token.is_empty()) else {
        return page::sign_in(StatusCode::BAD_REQUEST, Some("token: enter your token"));
    };
    // The token goes into a cookie: nothing that would end or extend it.
    if !token
        .bytes()
        .all(|byte| byte.is_ascii_graphic() && !matches!(byte, b';' | b',' | b'"' | b'\\'))
    {
        return page::sign_in(
            StatusCode::BAD_REQUEST,
            Some("token: a token holds only letters, digits and punctuation other than ; , \" \\"),
        );
    }
    match Session::resolve(&panel, token).await {
        Ok(_) => {
            let mut response = Redirect::to("/panel/organizations").into_response();
            if let Ok(value) = HeaderValue::from_str(&session::sign_in_cookie(token)) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(PanelError::NotAnAdmin) => page::sign_in(
            StatusCode::FORBIDDEN,
            Some("token: this token is a user's; the panel is for admins and organization admins"),
        ),
        Err(PanelError::SignedOut) => page::sign_in(
            StatusCode::UNAUTHORIZED,
            Some("token: the token is unknown, expired or revoked"),
        ),
        Err(error) => error.into_response(),
    }
}

async fn sign_out(State(panel): State<Panel>, headers: HeaderMap, body: Bytes) -> Response {
    // Signing out needs the CSRF token too (no site may sign an admin out),
    // but an already dead session just lands on the sign-in page.
    if let Some(token) = session::cookie_token(&headers)
        && let Ok(session) = Session::resolve(&panel, &token).await
        && let Err(error) = session::check_csrf(&session, &headers, Fields::parse(&body).get(session::CSRF_FIELD))
    {
        return error.into_response();
    }
    let mut response = Redirect::to("/panel/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::sign_out_cookie()).unwrap_or(HeaderValue::from_static("")),
    );
    response
}

/// An id in the path; anything else is the not-found page (never a
/// malformed call to the API).
pub struct Id(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = PanelError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| organizations::not_found("the address"))?;
        organizations::parse_id(&raw).map(Self)
    }
}

/// A submitted form of a signed-in admin, its CSRF token and origin checked.
pub struct Form {
    pub session: Session,
    pub fields: Fields,
}

/// The largest form the panel reads (a customization document and more).
const MAX_FORM: usize = 1024 * 1024;

impl FromRequest<Panel> for Form {
    type Rejection = PanelError;

    async fn from_request(request: axum::extract::Request, panel: &Panel) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, panel).await?;
        let body = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| PanelError::BadForm(format!("the form is larger than {MAX_FORM} bytes")))?;
        let fields = Fields::checked(&session, &parts.headers, &body)?;
        Ok(Self { session, fields })
    }
}

/// A submitted form's fields (repeated names kept in order).
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Self {
        Self(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    /// Parses a form and checks its CSRF token and origin.
    pub fn checked(session: &Session, headers: &HeaderMap, body: &[u8]) -> Result<Self, PanelError> {
        let fields = Self::parse(body);
        session::check_csrf(session, headers, fields.get(session::CSRF_FIELD))?;
        Ok(fields)
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value, trimmed, when not empty.
    pub fn filled(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|value| !value.is_empty())
    }

    /// Every value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// A file the API serves (CSV, zip, JSON export), passed through with its
/// type and name.
pub async fn download(panel: &Panel, session: &Session, path: &str) -> Result<Response, PanelError> {
    let answer = panel.v1.call(session, Method::GET, path, None).await?;
    if !answer.status.is_success() {
        return Err(answer.error());
    }
    let mut response = (StatusCode::OK, answer.body).into_response();
    for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(value) = answer.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}
