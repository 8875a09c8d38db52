//! The `/v1` routes.

pub mod actions;
pub mod configuration;
pub mod jobs;
pub mod organizations;
pub mod users;

use uuid::Uuid;

use crate::error::ApiError;

/// Parses a path id, naming the parameter when it is not a UUID.
pub fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a UUID, got {raw:?}")))
}
