//! The api's extractors: each rejects with the one error shape, naming the
//! input at fault, so a handler starts from checked values.
//!
//! - [`PathId`]: the `{id}` of the path, a UUID (400 on `id`);
//! - [`ApiJson`]: the body, where a wrong type names the JSON path of the
//!   field (`access_type`, `filter.role`, `user_ids[2]`) and no message
//!   quotes a value (a body may hold a secret);
//! - [`ApiQuery`]: the query string, naming the parameter at fault;
//! - [`ListQuery`]: a list's query string, its filters and the paging
//!   parameters every list shares ([`PageParams`]).

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{
    error::ApiError,
    routes::list::{Listing, PageParams},
};

/// The `{id}` path parameter, a UUID.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid("id", rejection.body_text()))?;
        let raw = params
            .iter()
            .find_map(|(name, value)| (name == "id").then_some(value))
            .ok_or_else(|| ApiError::invalid("id", "the path names no id"))?;
        crate::routes::parse_id("id", raw).map(Self)
    }
}

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::invalid("body", rejection.body_text()))?;
        json(&bytes).map(Self)
    }
}

/// Reads `bytes` as a `T`; an error names the field at fault by its JSON
/// path and says what was expected, never the value that was sent.
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if !inner.is_data() {
            return ApiError::invalid(
                "body",
                format!(
                    "the body is not a JSON object (line {}, column {})",
                    inner.line(),
                    inner.column()
                ),
            );
        }
        data_error(&path, &inner.to_string())
    })?;
    deserializer
        .end()
        .map_err(|_| ApiError::invalid("body", "the body holds more than one JSON value"))?;
    Ok(value)
}

/// The answer to a data error of serde at `path` (`.` for the body itself):
/// a missing or unknown field is named in the message (the field, not its
/// value); a wrong type or value keeps only what was expected.
fn data_error(path: &str, message: &str) -> ApiError {
    // Where in the text is of no use once the field is named.
    let (message, _) = message.split_once(" at line ").unwrap_or((message, ""));
    let parent = if path == "." { "" } else { path };
    let within = |name: &str| {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    let quoted = message.split('`').nth(1).unwrap_or_default();
    if message.starts_with("missing field") {
        let field = within(quoted);
        return ApiError::invalid(field.clone(), format!("{field} is required"));
    }
    if message.starts_with("unknown field") {
        // The path already ends with the unknown field's name.
        let field = if parent.is_empty() {
            quoted.to_owned()
        } else {
            parent.to_owned()
        };
        let expected = message
            .split_once(", expected ")
            .map(|(_, expected)| format!(": expected {expected}"))
            .unwrap_or_default();
        return ApiError::invalid(field.clone(), format!("{field} is not a field of this body{expected}"));
    }
    let field = if parent.is_empty() { "body" } else { parent };
    // Strip the value serde quotes ("invalid type: string \"...\", expected
    // a boolean"): only what was expected is safe to repeat.
    let expected = message
        .rsplit_once("expected ")
        .map(|(_, expected)| expected)
        .unwrap_or("another value");
    ApiError::invalid(
        field,
        format!("{field} has the wrong type or value: expected {expected}"),
    )
}

/// A query string of type `T`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

/// The error of a query string that does not fit its type: serde names an
/// unknown or missing parameter in backquotes; a wrong value is about the
/// query as a whole.
fn query_error(text: String) -> ApiError {
    let field = text
        .split('`')
        .nth(1)
        .filter(|name| !name.is_empty())
        .unwrap_or("query")
        .to_owned();
    ApiError::invalid(field, text)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| query_error(rejection.body_text()))?;
        Ok(Self(value))
    }
}

/// A list's query string: its filters (`F`, which refuses unknown
/// parameters) and the paging parameters every list shares.
#[derive(Debug)]
pub struct ListQuery<F, L>(pub F, pub PageParams<L>);

impl<S: Send + Sync, F: DeserializeOwned, L: Listing> FromRequestParts<S> for ListQuery<F, L> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|_| ApiError::invalid("query", "the query string is not URL-encoded"))?;
        let mut paging = PageParams::default();
        let mut filters = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            match paging.slot(&key) {
                Some(Some(_)) => return Err(ApiError::invalid(key.clone(), format!("{key} is given twice"))),
                Some(slot) => *slot = Some(value),
                None => filters.push((key, value)),
            }
        }
        let filters = serde_urlencoded::to_string(&filters)
            .map_err(|_| ApiError::invalid("query", "the query string is not URL-encoded"))?;
        let filters = serde_urlencoded::from_str(&filters)
            .map_err(|error: serde_urlencoded::de::Error| query_error(error.to_string()))?;
        Ok(Self(filters, paging))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        access_type: String,
        #[serde(default)]
        filter: Option<Filter>,
        #[serde(default)]
        ids: Vec<Uuid>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Filter {
        enabled: bool,
    }

    fn field(body: &str) -> (String, String) {
        let error = json::<Body>(body.as_bytes()).unwrap_err();
        (error.field().unwrap_or_default().to_owned(), error.message().to_owned())
    }

    #[test]
    fn every_error_names_the_json_path_of_its_field_and_never_the_value() {
        assert_eq!(field(r#"{"access_type": 12345}"#).0, "access_type");
        let (name, message) = field(r#"{"access_type": "x", "filter": {"enabled": "hunter2"}}"#);
        assert_eq!(name, "filter.enabled");
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(field(r#"{"access_type": "x", "ids": ["a", "not-a-uuid"]}"#).0, "ids[0]");
        assert_eq!(field(r#"{}"#).0, "access_type");
        assert_eq!(field(r#"{"access_type": "x", "nope": 1}"#).0, "nope");
        assert_eq!(
            field(r#"{"access_type": "x", "filter": {"enabled": true, "more": 1}}"#).0,
            "filter.more"
        );
        assert_eq!(field(r#"{"access_type": "#).0, "body");
        assert_eq!(field(r#"{"access_type": "x"} {}"#).0, "body");
    }
}
