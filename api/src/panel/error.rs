//! What can go wrong in the panel, and the page each case shows.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};

use super::page;

/// A failure of a panel request.
#[derive(Debug)]
pub enum PanelError {
    /// No valid sign-in: back to the sign-in page.
    SignedOut,
    /// A valid token that is not an admin's.
    NotAnAdmin,
    /// A change without a matching CSRF token, or from another site.
    Forbidden(&'static str),
    /// A form the panel could not read.
    BadForm(String),
    /// The API refused: its message, naming the field.
    Api {
        status: StatusCode,
        message: String,
        field: Option<String>,
    },
    /// Something broke (the message never holds a secret).
    Internal(String),
}

impl PanelError {
    /// The text shown to the admin.
    pub fn message(&self) -> String {
        match self {
            Self::SignedOut => "Please sign in.".to_owned(),
            Self::NotAnAdmin => "This token is not an admin's or an organization admin's.".to_owned(),
            Self::Forbidden(why) => format!("Refused: {why}."),
            Self::BadForm(why) => why.clone(),
            Self::Api { message, field, .. } => match field {
                Some(field) => format!("{field}: {message}"),
                None => message.clone(),
            },
            Self::Internal(_) => "Something went wrong; the details are in the api's log.".to_owned(),
        }
    }

    /// Whether the page shows this error to the admin (the API's refusal or
    /// a form the panel could not read) rather than ending the request (a
    /// missing object, a failure).
    pub fn is_shown(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status != StatusCode::NOT_FOUND,
            Self::BadForm(_) => true,
            _ => false,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SignedOut => StatusCode::SEE_OTHER,
            Self::NotAnAdmin => StatusCode::FORBIDDEN,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadForm(_) => StatusCode::BAD_REQUEST,
            Self::Api { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        match &self {
            Self::SignedOut => Redirect::to("/panel/login").into_response(),
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "Panel request failed.");
                page::bare(self.status(), "Error", &self.message())
            }
            Self::Api { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => {
                let mut response = page::bare(*status, "Unavailable", &self.message());
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                response
            }
            Self::Api { status, .. } if *status == StatusCode::NOT_FOUND => page::bare(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!("Not found: {}", self.message()),
            ),
            _ => {
                let mut response = page::bare(self.status(), "Refused", &self.message());
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
                response
            }
        }
    }
}
