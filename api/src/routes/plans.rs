//! Plans (the seeds' "Plan" or "License", M6): the catalogue users are
//! assigned from by `PATCH /v1/users/{id}` or the change-plan action. Plans
//! belong to no organization: admins define them, organization admins read
//! them to assign them.

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::ApiJson;
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    idempotency::Idempotency,
};

/// The plan routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create))
}

pub use crate::store::plans::PlanView;

/// Every plan, by code (admins and organization admins).
#[utoipa::path(get, path = "/v1/plans", tag = "plans", responses((status = 200, body = Vec<PlanView>)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<PlanView>>, ApiError> {
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can list plans",
        ));
    }
    let plans = crate::store::plans::all(&state.pool).await?;
    Ok(Json(plans))
}

/// `POST /v1/plans`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    /// 1 to 64 lower-case letters, digits, `-` or `_`; unique.
    code: String,
    /// 1 to 200 characters.
    name: String,
}

/// Adds a plan (admins only). Plans belong to no organization, so no
/// organization's activity records it.
#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = NewPlan, responses((status = 201, body = PlanView)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    ApiJson(new): ApiJson<NewPlan>,
) -> Result<(StatusCode, Json<PlanView>), ApiError> {
    if principal.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin can add plans"));
    }
    let code = new.code.trim();
    if code.is_empty()
        || code.len() > 64
        || !code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid(
            "code",
            "code must be 1 to 64 lower-case letters, digits, - or _",
        ));
    }
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "name must be 1 to 200 characters"));
    }
    let mut tx = state.pool.begin().await?;
    idempotency.claim(&mut tx).await?;
    let plan = crate::store::plans::insert(&mut tx, Uuid::now_v7(), code, name)
        .await?
        .ok_or_else(|| {
            ApiError::conflict("plan_code_taken", format!("a plan already has the code {code:?}")).on_field("code")
        })?;
    idempotency.answer(&mut tx, StatusCode::CREATED, &plan).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok((StatusCode::CREATED, Json(plan)))
}
