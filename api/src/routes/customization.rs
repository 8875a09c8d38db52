//! Customizations (M13-M16): the add-in's settings document per user, the
//! organization's default, and resetting users to it.
//!
//! A document is a JSON object of at most 256 KiB and 20 levels whose known
//! settings have their types (see [`check_settings`]); other settings are
//! kept as they are. A user's saved customization grows a `version` on every
//! save, so a push copies exactly one saved state. A user reads and saves
//! their own, reads a colleague's and retrieves it (M15: a one-off copy into
//! their own); admins and organization admins read and save those of the
//! users they manage and set their organization's default. A customization is
//! exported as a `.json` file (a [`CustomizationFile`]) and imported from one
//! (M13), checked as a whole before anything is saved.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ApiJson, PathId};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    idempotency::Idempotency,
    routes::{
        parse_id, record_activity,
        users::{self, ActionResult},
    },
};

/// The largest document, serialized.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The deepest document: the top object is level 1.
const MAX_DEPTH: usize = 20;

/// The customization routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_default, put_default))
        .routes(routes!(get_customization, put_customization))
        .routes(routes!(export_customization))
        .routes(routes!(import_customization))
        .routes(routes!(retrieve_customization))
}

use crate::store::customizations as store;
pub use crate::store::customizations::{CustomizationView, DefaultCustomizationView};

/// `PUT /v1/organizations/{id}/default-customization`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultBody {
    /// A JSON object, at most 256 KiB and 20 levels deep.
    #[schema(value_type = Object)]
    document: serde_json::Value,
}

/// `PUT /v1/users/{id}/customization`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomizationBody {
    /// A JSON object, at most 256 KiB and 20 levels deep.
    #[schema(value_type = Object)]
    document: serde_json::Value,
    /// `saved` (default) or `imported` (M13: read from a file).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(saved|imported)$")]
    source: Option<String>,
}

/// `format` of an exported file.
pub const FILE_FORMAT: &str = "syncfleet.customization";
/// `format_version` this build writes and reads.
pub const FILE_FORMAT_VERSION: u64 = 1;
/// The largest file import takes: the document and the file's own fields.
const MAX_FILE_BYTES: usize = MAX_DOCUMENT_BYTES + 16 * 1024;

/// A customization as a `.json` file (M13): what export answers and import
/// takes. Only `format`, `format_version` and `document` are needed; the
/// other fields say where the file came from and are not used on import.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomizationFile {
    /// Always `syncfleet.customization`.
    #[schema(pattern = "^syncfleet\\.customization$")]
    pub format: String,
    /// Always 1.
    #[schema(minimum = 1, maximum = 1)]
    pub format_version: u64,
    /// When it was exported.
    pub exported_at: Option<DateTime<Utc>>,
    /// Whose customization it was.
    pub user_id: Option<Uuid>,
    /// Its version then.
    #[schema(minimum = 0)]
    pub version: Option<i64>,
    /// The add-in's settings: a JSON object of at most 256 KiB and 20 levels.
    /// Known settings have types: `schema_version` (1); `objects`, Salesforce
    /// objects by API name, each with `visible`, `create` and `search`
    /// (booleans), `order` (a whole number from 0) and `fields` (field API
    /// names, at most 500); `behavior`, settings by name, each a boolean, a
    /// number or a text of at most 1000 characters. Other settings are kept.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

/// `POST /v1/users/{id}/customization/retrieve`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrieveBody {
    /// The colleague (same organization) whose saved customization is copied.
    #[schema(value_type = Uuid)]
    from_user_id: String,
}

/// How deep a value nests: a scalar is 0, an object or array one more than
/// its deepest member.
fn depth(value: &serde_json::Value) -> usize {
    let deepest = |members: &mut dyn Iterator<Item = &serde_json::Value>| members.map(depth).max().unwrap_or(0);
    match value {
        serde_json::Value::Object(map) => 1 + deepest(&mut map.values()),
        serde_json::Value::Array(items) => 1 + deepest(&mut items.iter()),
        _ => 0,
    }
}

/// Checks a document: an object, at most [`MAX_DOCUMENT_BYTES`] serialized,
/// at most [`MAX_DEPTH`] levels, its known settings of their types.
fn check_document(document: &serde_json::Value) -> Result<(), ApiError> {
    let Some(settings) = document.as_object() else {
        return Err(ApiError::invalid("document", "document must be a JSON object"));
    };
    let size = serde_json::to_vec(document).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_DOCUMENT_BYTES {
        return Err(ApiError::invalid(
            "document",
            format!("document is {size} bytes; at most {MAX_DOCUMENT_BYTES}"),
        ));
    }
    if depth(document) > MAX_DEPTH {
        return Err(ApiError::invalid(
            "document",
            format!("document nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    if !numbers_in_range(document) {
        return Err(ApiError::invalid(
            "document",
            format!("document holds a number beyond ±{MAX_NUMBER:e}; the add-in's settings never need one"),
        ));
    }
    check_settings(settings).map_err(|(field, message)| ApiError::invalid(field, message))
}

/// The most fields one object shows.
const MAX_FIELDS: usize = 500;
/// The longest text setting.
const MAX_TEXT: usize = 1000;

/// The add-in's known settings, from the seed's Customization page: the
/// Salesforce objects the sidebar shows (`objects`, by API name: whether it
/// is `visible`, may `create` and `search` records, its `order` and the
/// `fields` it shows) and the add-in's behaviour (`behavior`: named
/// switches, numbers and texts); `schema_version` is 1 when present. Other
/// settings are kept as they are, so a newer add-in's document round-trips.
/// The error names the setting's path (`document.objects.Contact.fields[2]`).
fn check_settings(settings: &serde_json::Map<String, serde_json::Value>) -> Result<(), (String, String)> {
    use serde_json::Value;
    let wrong = |path: String, expected: &str| {
        let message = format!("{path} must be {expected}");
        Err((path, message))
    };
    if let Some(version) = settings.get("schema_version")
        && version.as_u64() != Some(1)
    {
        return wrong("document.schema_version".to_owned(), "1");
    }
    if let Some(objects) = settings.get("objects") {
        let Some(objects) = objects.as_object() else {
            return wrong(
                "document.objects".to_owned(),
                "an object of Salesforce objects by API name",
            );
        };
        for (name, object) in objects {
            let path = format!("document.objects.{name}");
            if !valid_api_name(name) {
                return wrong(
                    path,
                    "named by a Salesforce API name (a letter, then letters, digits or _)",
                );
            }
            let Some(object) = object.as_object() else {
                return wrong(path, "an object of the object's settings");
            };
            for flag in ["visible", "create", "search"] {
                if object.get(flag).is_some_and(|value| !value.is_boolean()) {
                    return wrong(format!("{path}.{flag}"), "true or false");
                }
            }
            if object.get("order").is_some_and(|value| value.as_u64().is_none()) {
                return wrong(format!("{path}.order"), "a whole number from 0");
            }
            if let Some(fields) = object.get("fields") {
                let Some(fields) = fields.as_array().filter(|fields| fields.len() <= MAX_FIELDS) else {
                    return wrong(
                        format!("{path}.fields"),
                        &format!("a list of at most {MAX_FIELDS} field API names"),
                    );
                };
                for (index, field) in fields.iter().enumerate() {
                    if !field.as_str().is_some_and(valid_api_name) {
                        return wrong(format!("{path}.fields[{index}]"), "a field API name");
                    }
                }
            }
        }
    }
    if let Some(behavior) = settings.get("behavior") {
        let Some(behavior) = behavior.as_object() else {
            return wrong("document.behavior".to_owned(), "an object of settings by name");
        };
        for (name, value) in behavior {
            let fits = match value {
                Value::Bool(_) | Value::Number(_) => true,
                Value::String(text) => text.chars().count() <= MAX_TEXT,
                _ => false,
            };
            if !fits {
                return wrong(
                    format!("document.behavior.{name}"),
                    &format!("true, false, a number or a text of at most {MAX_TEXT} characters"),
                );
            }
        }
    }
    Ok(())
}

/// A Salesforce API name: a letter, then letters, digits and underscores
/// (`Contact`, `Region__c`), at most 80 characters.
fn valid_api_name(name: &str) -> bool {
    name.len() <= 80
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads an imported file: at most [`MAX_FILE_BYTES`], JSON, an object, a
/// [`CustomizationFile`] of this format with its document checked; the
/// error names what is wrong.
fn read_file(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    use serde_json::Value;
    const FIELDS: [&str; 6] = [
        "format",
        "format_version",
        "exported_at",
        "user_id",
        "version",
        "document",
    ];
    if body.len() > MAX_FILE_BYTES {
        return Err(ApiError::too_large(format!(
            "the file is {} bytes; a customization file is at most {MAX_FILE_BYTES} bytes",
            body.len()
        )));
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::invalid(
            "body",
            format!(
                "the file is not JSON (line {}, column {}); import a file that export made",
                error.line(),
                error.column()
            ),
        )
    })?;
    let Value::Object(mut file) = value else {
        return Err(ApiError::invalid(
            "body",
            "the file must hold a JSON object (an exported customization)",
        ));
    };
    if let Some(unknown) = file.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!(
                "unknown field {unknown:?}: a customization file has {}",
                FIELDS.join(", ")
            ),
        ));
    }
    if file.get("format").and_then(Value::as_str) != Some(FILE_FORMAT) {
        return Err(ApiError::invalid(
            "format",
            format!("not a customization file: format must be {FILE_FORMAT:?}"),
        ));
    }
    if file.get("format_version").and_then(Value::as_u64) != Some(FILE_FORMAT_VERSION) {
        return Err(ApiError::invalid(
            "format_version",
            format!("format_version must be {FILE_FORMAT_VERSION}, the only version this build reads"),
        ));
    }
    type Check = (&'static str, fn(&Value) -> bool, &'static str);
    let checks: [Check; 3] = [
        (
            "exported_at",
            |value| value.as_str().is_some_and(|text| text.parse::<DateTime<Utc>>().is_ok()),
            "an RFC 3339 date and time",
        ),
        (
            "user_id",
            |value| value.as_str().is_some_and(|text| text.parse::<Uuid>().is_ok()),
            "a UUID",
        ),
        ("version", |value| value.as_u64().is_some(), "a whole number from 0"),
    ];
    for (name, valid, expected) in checks {
        if let Some(value) = file.get(name)
            && !value.is_null()
            && !valid(value)
        {
            return Err(ApiError::invalid(name, format!("{name} must be {expected} or null")));
        }
    }
    let document = file
        .remove("document")
        .ok_or_else(|| ApiError::invalid("document", "the file has no document"))?;
    check_document(&document)?;
    Ok(document)
}

/// The largest magnitude a document's number may have: every integer up to
/// it is exact in a double, so the add-in (JavaScript) and PostgreSQL agree
/// on it and it reads back as it was written.
const MAX_NUMBER: f64 = 9_007_199_254_740_991.0;

/// Whether every number in `value` is within [`MAX_NUMBER`].
fn numbers_in_range(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(number) => number.as_f64().is_some_and(|number| number.abs() <= MAX_NUMBER),
        serde_json::Value::Object(map) => map.values().all(numbers_in_range),
        serde_json::Value::Array(items) => items.iter().all(numbers_in_range),
        _ => true,
    }
}

/// The organization, when the caller may see it (404 otherwise).
async fn organization(tx: &mut Transaction<'_, Postgres>, principal: &Principal, id: Uuid) -> Result<(), ApiError> {
    let exists = crate::store::organizations::find_for(tx, id, false).await?;
    if exists && (principal.role == Role::Admin || principal.organization_id == Some(id)) {
        Ok(())
    } else {
        Err(ApiError::not_found("organization"))
    }
}

/// The user's organization, when the caller may read their customization:
/// whoever may act on them, and their colleagues (M15).
async fn reader_of(tx: &mut Transaction<'_, Postgres>, principal: &Principal, id: Uuid) -> Result<Uuid, ApiError> {
    crate::store::users::organization_of(tx, id)
        .await?
        .filter(|organization| {
            principal.may_act_on_user(id, *organization)
                || (principal.role == Role::User && principal.organization_id == Some(*organization))
        })
        .ok_or_else(|| ApiError::not_found("user"))
}

/// The organization's default customization.
#[utoipa::path(get, path = "/v1/organizations/{id}/default-customization", tag = "customization", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 200, body = DefaultCustomizationView)))]
pub async fn get_default(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<DefaultCustomizationView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id).await?;
    let view = store::default_of(&mut tx, id)
        .await?
        .unwrap_or_else(|| DefaultCustomizationView {
            organization_id: id,
            version: 0,
            document: serde_json::json!({}),
            updated_by: None,
            updated_at: None,
        });
    Ok(Json(view))
}

/// Sets the organization's default customization (admins, or its
/// organization admin), which resetting a user copies (M16).
#[utoipa::path(put, path = "/v1/organizations/{id}/default-customization", tag = "customization", params(("id" = Uuid, Path, description = "The organization.")), request_body = DefaultBody, responses((status = 200, body = DefaultCustomizationView)))]
pub async fn put_default(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(change): ApiJson<DefaultBody>,
) -> Result<Json<DefaultCustomizationView>, ApiError> {
    check_document(&change.document)?;
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id).await?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can set the default customization",
        ));
    }
    let view = store::set_default(&mut tx, id, &change.document, &principal.label).await?;
    record_activity(
        &mut tx,
        id,
        None,
        &principal.label,
        "default_customization_updated",
        format!("default customization saved (version {})", view.version),
    )
    .await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(view))
}

/// A user's customization: their own, a colleague's (M15), or one of the
/// users the caller manages; before their first save, their organization's
/// default (version 0).
#[utoipa::path(get, path = "/v1/users/{id}/customization", tag = "customization", params(("id" = Uuid, Path, description = "The user.")), responses((status = 200, body = CustomizationView)))]
pub async fn get_customization(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<CustomizationView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let organization_id = reader_of(&mut tx, &principal, id).await?;
    Ok(Json(current(&mut tx, id, organization_id).await?))
}

/// A user's customization as it reads: their saved one, or before their
/// first save their organization's default (version 0, or `{}` without one).
async fn current(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    organization_id: Uuid,
) -> Result<CustomizationView, ApiError> {
    let view = store::of_user(tx, id).await?;
    Ok(match view {
        Some(view) => view,
        None => CustomizationView {
            user_id: id,
            version: 0,
            source: "default".to_owned(),
            document: store::default_document(tx, organization_id)
                .await?
                .unwrap_or_else(|| serde_json::json!({})),
            saved_at: None,
        },
    })
}

/// Exports a user's customization as a `.json` file (M13) to whoever may
/// read it: an attachment named after the user and the version.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/customization.json",
    tag = "customization",
    params(("id" = Uuid, Path, description = "The user.")),
    responses((
        status = 200,
        body = CustomizationFile,
        content_type = "application/json",
        description = "The file, as an attachment.",
        headers(("content-disposition" = String, description = "attachment; filename=\"customization-<user>-v<version>.json\""))
    ))
)]
pub async fn export_customization(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let mut tx = state.pool.begin().await?;
    let organization_id = reader_of(&mut tx, &principal, id).await?;
    let view = current(&mut tx, id, organization_id).await?;
    let file = CustomizationFile {
        format: FILE_FORMAT.to_owned(),
        format_version: FILE_FORMAT_VERSION,
        exported_at: Some(Utc::now()),
        user_id: Some(id),
        version: Some(view.version),
        document: view.document,
    };
    // A struct of plain fields and a JSON value always serializes.
    let body = serde_json::to_vec_pretty(&file).unwrap_or_default();
    let disposition = format!("attachment; filename=\"customization-{id}-v{}.json\"", view.version);
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Imports a customization from a file export made (M13), as the user's
/// next version with source `imported`. The raw file is the body: it must be
/// JSON, a [`CustomizationFile`] of this format, at most 272 KiB, its
/// document valid (see the document's description); any fault answers 400
/// (413 when too large) naming what is wrong, and nothing is saved.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/customization/import",
    tag = "customization",
    params(("id" = Uuid, Path, description = "The user.")),
    request_body(content = CustomizationFile, content_type = "application/json", description = "The exported file, as it is."),
    responses((status = 200, body = CustomizationView))
)]
pub async fn import_customization(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    PathId(id): PathId,
    body: Bytes,
) -> Result<Json<CustomizationView>, ApiError> {
    let document = read_file(&body)?;
    let mut tx = state.pool.begin().await?;
    idempotency.claim(&mut tx).await?;
    let user = users::view(&mut tx, &principal, id, true).await?;
    let view = save(&mut tx, id, &document, "imported").await?;
    record_activity(
        &mut tx,
        user.organization_id,
        Some(id),
        &principal.label,
        "customization_saved",
        format!("customization imported from a file (version {})", view.version),
    )
    .await?;
    idempotency.answer(&mut tx, StatusCode::OK, &view).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(view))
}

/// Retrieves a colleague's saved customization (M15): a one-off copy saved
/// as the user's next version with source `retrieved`; the colleague's
/// later changes do not follow. The colleague must be of the same
/// organization (404 naming `from_user_id` otherwise) and have saved one
/// (409 `no_saved_customization`).
#[utoipa::path(
    post,
    path = "/v1/users/{id}/customization/retrieve",
    tag = "customization",
    params(("id" = Uuid, Path, description = "The user who receives the copy.")),
    request_body = RetrieveBody,
    responses((status = 200, body = CustomizationView))
)]
pub async fn retrieve_customization(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Idempotency,
    PathId(id): PathId,
    ApiJson(request): ApiJson<RetrieveBody>,
) -> Result<Json<CustomizationView>, ApiError> {
    let from = parse_id("from_user_id", &request.from_user_id)?;
    let mut tx = state.pool.begin().await?;
    idempotency.claim(&mut tx).await?;
    let user = users::view(&mut tx, &principal, id, true).await?;
    if from == id {
        return Err(ApiError::invalid(
            "from_user_id",
            "from_user_id names the user themself; retrieve a colleague's customization",
        ));
    }
    let colleague = store::colleague(&mut tx, from, user.organization_id)
        .await?
        .map(|colleague| (colleague.email, colleague.version, colleague.document));
    let Some((email, version, document)) = colleague else {
        return Err(ApiError::not_found("user").on_field("from_user_id"));
    };
    let (Some(version), Some(document)) = (version, document) else {
        return Err(ApiError::conflict(
            "no_saved_customization",
            format!("{email} has not saved a customization yet; there is nothing to retrieve"),
        )
        .on_field("from_user_id"));
    };
    let view = save(&mut tx, id, &document, "retrieved").await?;
    record_activity(
        &mut tx,
        user.organization_id,
        Some(id),
        &principal.label,
        "customization_retrieved",
        format!(
            "customization retrieved from {email} (their version {version}) as version {}",
            view.version
        ),
    )
    .await?;
    idempotency.answer(&mut tx, StatusCode::OK, &view).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(view))
}

/// Saves a user's customization (M13): their own, or one of the users the
/// caller manages; the version grows by one.
#[utoipa::path(put, path = "/v1/users/{id}/customization", tag = "customization", params(("id" = Uuid, Path, description = "The user.")), request_body = CustomizationBody, responses((status = 200, body = CustomizationView)))]
pub async fn put_customization(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(change): ApiJson<CustomizationBody>,
) -> Result<Json<CustomizationView>, ApiError> {
    let source = change.source.as_deref().unwrap_or("saved");
    if !matches!(source, "saved" | "imported") {
        return Err(ApiError::invalid("source", "source is saved or imported"));
    }
    check_document(&change.document)?;
    let mut tx = state.pool.begin().await?;
    let user = users::view(&mut tx, &principal, id, true).await?;
    let view = save(&mut tx, id, &change.document, source).await?;
    record_activity(
        &mut tx,
        user.organization_id,
        Some(id),
        &principal.label,
        "customization_saved",
        format!("customization {source} (version {})", view.version),
    )
    .await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(view))
}

/// Stores a user's customization as its next version.
async fn save(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    document: &serde_json::Value,
    source: &str,
) -> Result<CustomizationView, ApiError> {
    Ok(store::save(tx, user_id, document, source).await?)
}

/// Resets a user's customization to their organization's default (M8
/// "Reset sidebar customization", M16): the default is copied as the next
/// version with source `default`; 409 `no_default_customization` when the
/// organization has none. Unchanged (no version, no activity) when the user
/// already has that default.
pub async fn reset(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
) -> Result<ActionResult, ApiError> {
    let user = users::view(tx, principal, id, true).await?;
    let default = store::default_document(tx, user.organization_id)
        .await?
    .ok_or_else(|| {
        ApiError::conflict(
            "no_default_customization",
            "the user's organization has no default customization: set it with PUT /v1/organizations/{id}/default-customization",
        )
    })?;
    let current = store::of_user(tx, id)
        .await?
        .map(|saved| (saved.document, saved.source));
    let changed = current.is_none_or(|(document, source)| document != default || source != "default");
    if changed {
        let view = save(tx, id, &default, "default").await?;
        record_activity(
            tx,
            user.organization_id,
            Some(id),
            &principal.label,
            "customization_reset",
            format!(
                "customization reset to the organization's default (version {})",
                view.version
            ),
        )
        .await?;
    }
    Ok(ActionResult {
        user_id: id,
        changed,
        user,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_are_objects_of_bounded_size_and_depth() {
        assert!(check_document(&json!({"fields": [{"name": "Phone"}]})).is_ok());
        assert!(check_document(&json!([1, 2])).is_err());
        assert!(check_document(&json!("text")).is_err());
        let mut deep = json!({});
        for _ in 0..19 {
            deep = json!({ "a": deep });
        }
        assert_eq!(depth(&deep), 20);
        assert!(check_document(&deep).is_ok());
        assert!(check_document(&json!({ "a": deep })).is_err());
        let big = json!({ "blob": "x".repeat(MAX_DOCUMENT_BYTES) });
        assert!(check_document(&big).is_err());
    }

    #[test]
    fn known_settings_have_their_types_and_others_are_kept() {
        let field = |document: serde_json::Value| {
            check_settings(document.as_object().unwrap())
                .err()
                .map(|(path, _)| path)
        };
        assert_eq!(
            field(
                json!({"objects": {"Contact": {"visible": true, "fields": ["Name"], "order": 0, "extra": [1]}},
                         "behavior": {"open": false, "limit": 5, "label": "x"}, "theme": {"any": ["thing"]}})
            ),
            None
        );
        assert_eq!(
            field(json!({"objects": {"Region__c": {"order": -1}}})),
            Some("document.objects.Region__c.order".to_owned())
        );
        assert_eq!(
            field(json!({"objects": {"9lives": {}}})),
            Some("document.objects.9lives".to_owned())
        );
        assert_eq!(
            field(json!({"behavior": {"label": "x".repeat(1001)}})),
            Some("document.behavior.label".to_owned())
        );
        assert_eq!(
            field(json!({"schema_version": "1"})),
            Some("document.schema_version".to_owned())
        );
    }
}
