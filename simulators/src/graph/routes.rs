//! HTTP: the token endpoint and the API under `/v1.0`, `$batch` included,
//! handed to the dispatcher.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use serde_json::Value;

use super::{
    api::{self, ApiRequest, ApiResponse, Prefer, Target},
    auth, batch,
    store::Store,
};

pub(crate) fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token))
        .route("/v1.0/{*path}", any(call))
        .with_state(store)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// Every call under `/v1.0`.
async fn call(State(store): State<Arc<Store>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path_and_query = uri.path_and_query().map_or("/", |target| target.as_str());
    let target = path_and_query
        .strip_prefix("/v1.0")
        .unwrap_or(path_and_query)
        .to_owned();
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    let base = format!("http://{host}");
    let token = bearer(&headers);
    if Target::parse(&target).segments == ["$batch"] {
        if method != Method::POST {
            return ApiResponse::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BadRequest",
                "A batch is sent with POST.",
            )
            .into_response();
        }
        return batch::batch(store, token, base, &body).await.into_response();
    }
    let body = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(body) => Some(body),
            Err(_) => {
                return ApiResponse::error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
                )
                .into_response();
            }
        }
    };
    let prefer = Prefer::parse(headers.get_all("prefer").iter().filter_map(|value| value.to_str().ok()));
    let request = ApiRequest {
        method,
        target,
        prefer,
        body,
        base,
        token,
    };
    api::execute(store, request).await.into_response()
}
