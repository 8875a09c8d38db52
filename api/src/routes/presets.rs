//! Synchronization settings presets (M12): for an organization, a group of
//! its users, or one user, each setting adjustable by the user or locked.
//!
//! The known settings are the ones the worker reads (`worker/src/sync/
//! participants.rs`, `FilterSettings`), under the same names:
//! `skip_free_mail`, `baseline_days`, `blocked_domains`, `blocked_addresses`.
//! The organization's preset is also written to `organizations.settings`,
//! where the worker reads it; a user's preset is the `sync_settings_presets`
//! row the worker reads their blocklists from.
//!
//! The effective settings merge organization < group < user: a narrower scope
//! overrides a wider one's value, except that the blocklists add up (a user
//! cannot unblock what their organization blocks, as in the worker). Once a
//! scope locks a setting, the narrower scopes' values for it are ignored and
//! they may not set it: writing it answers 409 `setting_locked` naming the
//! setting. A user writes their own preset, never its locked settings nor the
//! lock list (an admin's); admins and organization admins write every scope
//! of the organizations they manage.

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::extract::{ApiJson, PathId};
use crate::store::presets::{self as store, GroupPreset};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::ApiError,
    routes::{record_activity, users},
};

/// The worker's default for `baseline_days` (`DEFAULT_BASELINE_DAYS`; a test
/// checks they agree).
const DEFAULT_BASELINE_DAYS: u64 = 6;
/// The most entries a blocklist holds.
const MAX_BLOCKLIST: usize = 1000;

/// What a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `true` or `false`.
    Flag,
    /// Whole days, 1 to 365.
    Days,
    /// Domain names (lower-cased, no leading `@`).
    Domains,
    /// Email addresses (lower-cased).
    Addresses,
}

impl Kind {
    fn is_list(self) -> bool {
        matches!(self, Self::Domains | Self::Addresses)
    }
}

/// The known settings, in the order answers list them.
const SETTINGS: &[(&str, Kind)] = &[
    ("skip_free_mail", Kind::Flag),
    ("baseline_days", Kind::Days),
    ("blocked_domains", Kind::Domains),
    ("blocked_addresses", Kind::Addresses),
];

fn known(name: &str) -> Option<Kind> {
    SETTINGS.iter().find(|(known, _)| *known == name).map(|(_, kind)| *kind)
}

fn known_names() -> String {
    SETTINGS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// What the worker does when no scope sets it.
fn default_value(kind: Kind) -> Value {
    match kind {
        Kind::Flag => Value::Bool(true),
        Kind::Days => Value::from(DEFAULT_BASELINE_DAYS),
        Kind::Domains | Kind::Addresses => Value::Array(Vec::new()),
    }
}

/// The synchronization settings a preset sets (each optional).
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Skip participants at free-mail domains (gmail.com, outlook.com...)
    /// when matching mail to the CRM (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_free_mail: Option<bool>,
    /// Days of mail taken on a first sync or a full resync, 1 to 365 (default 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 365)]
    pub baseline_days: Option<u64>,
    /// Domains never logged to the CRM (`example.com` covers its subdomains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_domains: Option<Vec<String>>,
    /// Addresses never logged to the CRM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_addresses: Option<Vec<String>>,
}

impl SyncSettings {
    /// The known settings of a stored document; anything else (or a value of
    /// the wrong shape, written outside the API) is left out.
    fn from_stored(values: &Map<String, Value>) -> Self {
        let list = |name: &str| {
            values
                .get(name)
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        };
        Self {
            skip_free_mail: values.get("skip_free_mail").and_then(Value::as_bool),
            baseline_days: values
                .get("baseline_days")
                .and_then(Value::as_u64)
                .filter(|days| (1..=365).contains(days)),
            blocked_domains: list("blocked_domains"),
            blocked_addresses: list("blocked_addresses"),
        }
    }
}

/// The known settings of a stored document, as a map.
fn known_values(stored: &Value) -> Map<String, Value> {
    stored
        .as_object()
        .map(|values| {
            values
                .iter()
                .filter(|(name, _)| known(name).is_some())
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn valid_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Checks one setting's value and answers it normalized (lists lower-cased,
/// without repeats).
fn check_value(name: &str, kind: Kind, value: &Value) -> Result<Value, ApiError> {
    let field = format!("settings.{name}");
    match kind {
        Kind::Flag => value
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| ApiError::invalid(field, format!("{name} must be true or false"))),
        Kind::Days => value
            .as_u64()
            .filter(|days| (1..=365).contains(days))
            .map(Value::from)
            .ok_or_else(|| ApiError::invalid(field, format!("{name} must be whole days from 1 to 365"))),
        Kind::Domains | Kind::Addresses => {
            let items = value
                .as_array()
                .ok_or_else(|| ApiError::invalid(field.clone(), format!("{name} must be a list of strings")))?;
            if items.len() > MAX_BLOCKLIST {
                return Err(ApiError::invalid(
                    field,
                    format!("{name} holds at most {MAX_BLOCKLIST} entries"),
                ));
            }
            let mut seen = BTreeSet::new();
            let mut normalized = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let entry = item
                    .as_str()
                    .map(|text| text.trim().trim_start_matches('@').to_lowercase())
                    .filter(|entry| {
                        if kind == Kind::Domains {
                            valid_domain(entry)
                        } else {
                            crate::routes::valid_email(entry)
                        }
                    })
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("{field}[{index}]"),
                            if kind == Kind::Domains {
                                format!("{name} entries are domain names such as example.com")
                            } else {
                                format!("{name} entries are email addresses")
                            },
                        )
                    })?;
                if seen.insert(entry.clone()) {
                    normalized.push(Value::String(entry));
                }
            }
            Ok(Value::Array(normalized))
        }
    }
}

/// Checks a body's `settings`: an object of known settings with valid values.
fn check_settings(settings: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    let Some(settings) = settings else {
        return Ok(Map::new());
    };
    let settings = settings
        .as_object()
        .ok_or_else(|| ApiError::invalid("settings", "settings must be an object of setting names and values"))?;
    let mut checked = Map::new();
    for (name, value) in settings {
        let kind = known(name).ok_or_else(|| {
            ApiError::invalid(
                format!("settings.{name}"),
                format!("unknown setting {name:?}; the settings are {}", known_names()),
            )
        })?;
        // `null` is the same as leaving the setting out (not set here).
        if !value.is_null() {
            checked.insert(name.clone(), check_value(name, kind, value)?);
        }
    }
    Ok(checked)
}

/// Checks a body's `locked`: a list of known settings; answers it in the
/// settings' order, without repeats.
fn check_locked(locked: Option<&Value>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(locked) = locked else {
        return Ok(None);
    };
    let items = locked
        .as_array()
        .ok_or_else(|| ApiError::invalid("locked", "locked must be a list of setting names"))?;
    let mut names = BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        let name = item.as_str().filter(|name| known(name).is_some()).ok_or_else(|| {
            ApiError::invalid(
                format!("locked[{index}]"),
                format!("locked names known settings: {}", known_names()),
            )
        })?;
        names.insert(name);
    }
    Ok(Some(ordered(&names)))
}

/// Setting names in the settings' order.
fn ordered(names: &BTreeSet<&str>) -> Vec<String> {
    SETTINGS
        .iter()
        .filter(|(name, _)| names.contains(name))
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// A preset's body.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresetBody {
    /// Replaces the settings this scope sets; one left out is not set here.
    #[serde(default)]
    #[schema(value_type = Option<SyncSettings>)]
    settings: Option<Value>,
    /// Replaces the settings this scope locks (narrower scopes and the user
    /// may not change them); left out: none (for a user writing their own
    /// preset: unchanged, which is all they may send).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    locked: Option<Value>,
}

/// A group preset's body.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPresetBody {
    /// As for the organization's preset.
    #[serde(default)]
    #[schema(value_type = Option<SyncSettings>)]
    settings: Option<Value>,
    /// As for the organization's preset.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    locked: Option<Value>,
    /// Replaces the group's members (users of the organization, each in at
    /// most one group); left out: unchanged.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Uuid>>)]
    user_ids: Option<Value>,
}

/// A preset as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresetView {
    /// `organization`, `group` or `user`.
    pub scope: String,
    pub organization_id: Uuid,
    /// The group's name (group presets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// The user (user presets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// What this scope sets.
    pub settings: SyncSettings,
    /// What this scope locks.
    pub locked: Vec<String>,
    /// The group's members (group presets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<Uuid>>,
    /// When it was last saved; null when nothing was saved at this scope.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The settings and locks of one scope.
#[derive(Debug, Clone, Default, PartialEq)]
struct Layer {
    values: Map<String, Value>,
    locked: Vec<String>,
}

impl Layer {
    fn new(values: &Value, locked: Vec<String>) -> Self {
        Self {
            values: known_values(values),
            locked,
        }
    }

    fn locks(&self, name: &str) -> bool {
        self.locked.iter().any(|locked| locked == name)
    }
}

/// The preset routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_organization_preset, put_organization_preset))
        .routes(routes!(list_group_presets))
        .routes(routes!(get_group_preset, put_group_preset, delete_group_preset))
        .routes(routes!(get_user_preset, put_user_preset, delete_user_preset))
        .routes(routes!(get_effective))
}

/// Checks that the caller may see the organization (404 otherwise) and, to
/// write, manage it (403 for a user).
async fn organization(
    tx: &mut Transaction<'_, Postgres>,
    principal: &Principal,
    id: Uuid,
    write: bool,
) -> Result<(), ApiError> {
    let exists = crate::store::organizations::find_for(tx, id, write).await?;
    if !exists || !(principal.role == Role::Admin || principal.organization_id == Some(id)) {
        return Err(ApiError::not_found("organization"));
    }
    if write && principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can write the organization's presets",
        ));
    }
    Ok(())
}

/// The organization's layer: its values from `organizations.settings` (what
/// the worker reads), its locks from its preset; and when it was saved.
async fn organization_layer(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
) -> Result<(Layer, Option<DateTime<Utc>>), ApiError> {
    let preset = store::of_organization(tx, id).await?;
    Ok((
        Layer::new(&preset.settings, preset.locked.unwrap_or_default()),
        preset.updated_at,
    ))
}

/// Refuses the settings of `values` that a wider layer locks.
fn refuse_locked(values: &Map<String, Value>, wider: &[(&str, &Layer)]) -> Result<(), ApiError> {
    for name in values.keys() {
        if let Some((scope, _)) = wider.iter().find(|(_, layer)| layer.locks(name)) {
            return Err(
                ApiError::conflict("setting_locked", format!("{name} is locked by the {scope}'s preset"))
                    .on_field(format!("settings.{name}")),
            );
        }
    }
    Ok(())
}

/// The organization's preset.
#[utoipa::path(get, path = "/v1/organizations/{id}/sync-settings", tag = "sync settings", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 200, body = PresetView)))]
pub async fn get_organization_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<PresetView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id, false).await?;
    let (layer, updated_at) = organization_layer(&mut tx, id).await?;
    Ok(Json(organization_view(id, &layer, updated_at)))
}

fn organization_view(id: Uuid, layer: &Layer, updated_at: Option<DateTime<Utc>>) -> PresetView {
    PresetView {
        scope: "organization".to_owned(),
        organization_id: id,
        group_name: None,
        user_id: None,
        settings: SyncSettings::from_stored(&layer.values),
        locked: layer.locked.clone(),
        user_ids: None,
        updated_at,
    }
}

/// Replaces the organization's preset (admins, or its organization admin);
/// its values become the organization's settings the worker reads.
#[utoipa::path(put, path = "/v1/organizations/{id}/sync-settings", tag = "sync settings", params(("id" = Uuid, Path, description = "The organization.")), request_body = PresetBody, responses((status = 200, body = PresetView)))]
pub async fn put_organization_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(body): ApiJson<PresetBody>,
) -> Result<Json<PresetView>, ApiError> {
    let layer = Layer {
        values: check_settings(body.settings.as_ref())?,
        locked: check_locked(body.locked.as_ref())?.unwrap_or_default(),
    };
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id, true).await?;
    store::lock_organization_settings(&mut tx, id).await?;
    let (current, _) = organization_layer(&mut tx, id).await?;
    if current != layer {
        let names: Vec<String> = SETTINGS.iter().map(|(name, _)| (*name).to_owned()).collect();
        let values = Value::Object(layer.values.clone());
        store::save_organization(&mut tx, id, &names, &values, &layer.locked).await?;
        record_activity(
            &mut tx,
            id,
            None,
            &principal.label,
            "sync_settings_changed",
            describe("organization preset saved", &layer),
        )
        .await?;
    }
    let (layer, updated_at) = organization_layer(&mut tx, id).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(organization_view(id, &layer, updated_at)))
}

fn describe(what: &str, layer: &Layer) -> String {
    let set: Vec<&str> = layer.values.keys().map(String::as_str).collect();
    format!(
        "{what}: sets {}; locks {}",
        if set.is_empty() {
            "nothing".to_owned()
        } else {
            set.join(", ")
        },
        if layer.locked.is_empty() {
            "nothing".to_owned()
        } else {
            layer.locked.join(", ")
        }
    )
}

/// Checks a group's name (the path's last segment).
fn group_name(raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() || raw.chars().count() > 100 || raw.trim() != raw || raw.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "a group's name is 1 to 100 characters, without surrounding spaces",
        ));
    }
    Ok(raw.to_owned())
}

fn group_view(organization_id: Uuid, name: &str, row: &GroupPreset, members: Vec<Uuid>) -> PresetView {
    PresetView {
        scope: "group".to_owned(),
        organization_id,
        group_name: Some(name.to_owned()),
        user_id: None,
        settings: SyncSettings::from_stored(&known_values(&row.settings)),
        locked: row.locked.clone(),
        user_ids: Some(members),
        updated_at: Some(row.updated_at),
    }
}

/// The organization's group presets, by name.
#[utoipa::path(get, path = "/v1/organizations/{id}/sync-settings/groups", tag = "sync settings", params(("id" = Uuid, Path, description = "The organization.")), responses((status = 200, body = Vec<PresetView>)))]
pub async fn list_group_presets(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<Vec<PresetView>>, ApiError> {
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id, false).await?;
    let names = store::group_names(&mut tx, id).await?;
    let mut views = Vec::with_capacity(names.len());
    for name in names {
        if let Some((row, members)) = store::group(&mut tx, id, &name).await? {
            views.push(group_view(id, &name, &row, members));
        }
    }
    Ok(Json(views))
}

fn no_group() -> ApiError {
    ApiError::not_found("settings group")
}

/// One group preset.
#[utoipa::path(get, path = "/v1/organizations/{id}/sync-settings/groups/{name}", tag = "sync settings", params(("id" = Uuid, Path, description = "The organization."), ("name" = String, Path, description = "The group.")), responses((status = 200, body = PresetView)))]
pub async fn get_group_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Path((_, name)): Path<(String, String)>,
) -> Result<Json<PresetView>, ApiError> {
    let name = group_name(&name)?;
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id, false).await?;
    let (row, members) = store::group(&mut tx, id, &name).await?.ok_or_else(no_group)?;
    Ok(Json(group_view(id, &name, &row, members)))
}

/// Checks a group body's `user_ids`: UUIDs, no repeats.
fn check_members(user_ids: Option<&Value>) -> Result<Option<Vec<Uuid>>, ApiError> {
    let Some(user_ids) = user_ids else {
        return Ok(None);
    };
    let items = user_ids
        .as_array()
        .ok_or_else(|| ApiError::invalid("user_ids", "user_ids must be a list of user ids"))?;
    if items.len() > 10_000 {
        return Err(ApiError::invalid("user_ids", "a group holds at most 10000 users"));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let field = || format!("user_ids[{index}]");
        let id: Uuid = item
            .as_str()
            .and_then(|raw| raw.parse().ok())
            .ok_or_else(|| ApiError::invalid(field(), "a user id is a UUID"))?;
        if ids.contains(&id) {
            return Err(ApiError::invalid(field(), format!("{id} is listed twice")));
        }
        ids.push(id);
    }
    Ok(Some(ids))
}

/// Creates or replaces a group preset (admins, or the organization's admin):
/// its settings, locks and, when given, members. A setting the organization
/// locks cannot be set (409 `setting_locked`); a user of another organization
/// is not found (404 on `user_ids[i]`); a user already in another group
/// answers 409 `user_in_other_group`.
#[utoipa::path(put, path = "/v1/organizations/{id}/sync-settings/groups/{name}", tag = "sync settings", params(("id" = Uuid, Path, description = "The organization."), ("name" = String, Path, description = "The group.")), request_body = GroupPresetBody, responses((status = 200, body = PresetView)))]
pub async fn put_group_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Path((_, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<GroupPresetBody>,
) -> Result<Json<PresetView>, ApiError> {
    let name = group_name(&name)?;
    let layer = Layer {
        values: check_settings(body.settings.as_ref())?,
        locked: check_locked(body.locked.as_ref())?.unwrap_or_default(),
    };
    let members = check_members(body.user_ids.as_ref())?;
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id, true).await?;
    store::lock_organization_settings(&mut tx, id).await?;
    let (organization_layer, _) = organization_layer(&mut tx, id).await?;
    refuse_locked(&layer.values, &[("organization", &organization_layer)])?;
    let current = store::group(&mut tx, id, &name).await?;
    if let Some(members) = &members {
        let places = store::lock_memberships(&mut tx, members).await?;
        for (index, member) in members.iter().enumerate() {
            let place = places
                .iter()
                .find(|place| place.user_id == *member && place.organization_id == id)
                .map(|place| place.group_name.as_ref());
            match place {
                None => return Err(ApiError::not_found("user").on_field(format!("user_ids[{index}]"))),
                Some(Some(other)) if *other != name => {
                    return Err(ApiError::conflict(
                        "user_in_other_group",
                        format!("user {member} is in the settings group {other:?}; take them out of it first"),
                    )
                    .on_field(format!("user_ids[{index}]")));
                }
                Some(_) => {}
            }
        }
    }
    let unchanged = current.as_ref().is_some_and(|(row, current_members)| {
        Layer::new(&row.settings, row.locked.clone()) == layer
            && members.as_ref().is_none_or(|members| {
                let mut members = members.clone();
                members.sort();
                members == *current_members
            })
    });
    if !unchanged {
        let values = Value::Object(layer.values.clone());
        let preset = store::save_group(&mut tx, id, &name, &values, &layer.locked).await?;
        if let Some(members) = &members {
            store::replace_members(&mut tx, preset, members).await?;
        }
        let mut details = describe(&format!("settings group {name:?} saved"), &layer);
        if let Some(members) = &members {
            details.push_str(&format!("; {} member(s)", members.len()));
        }
        record_activity(&mut tx, id, None, &principal.label, "sync_settings_changed", details).await?;
    }
    let (row, members) = store::group(&mut tx, id, &name).await?.ok_or_else(no_group)?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(group_view(id, &name, &row, members)))
}

/// Removes a group preset; its members keep the organization's settings and
/// their own.
#[utoipa::path(delete, path = "/v1/organizations/{id}/sync-settings/groups/{name}", tag = "sync settings", params(("id" = Uuid, Path, description = "The organization."), ("name" = String, Path, description = "The group.")), responses((status = 204, description = "Removed.")))]
pub async fn delete_group_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    Path((_, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = group_name(&name)?;
    let mut tx = state.pool.begin().await?;
    organization(&mut tx, &principal, id, true).await?;
    if !store::delete_group(&mut tx, id, &name).await? {
        return Err(no_group());
    }
    record_activity(
        &mut tx,
        id,
        None,
        &principal.label,
        "sync_settings_changed",
        format!("settings group {name:?} removed"),
    )
    .await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every layer that applies to a user.
struct Layers {
    organization_id: Uuid,
    organization: Layer,
    group: Option<(String, Layer)>,
    user: Option<(Layer, DateTime<Utc>)>,
}

async fn layers(tx: &mut Transaction<'_, Postgres>, user_id: Uuid) -> Result<Layers, ApiError> {
    let row = store::of_user(tx, user_id).await?;
    Ok(Layers {
        organization_id: row.organization_id,
        organization: Layer::new(&row.organization_settings, row.organization_locked.unwrap_or_default()),
        group: match (row.group_name, row.group_settings) {
            (Some(name), Some(settings)) => Some((name, Layer::new(&settings, row.group_locked.unwrap_or_default()))),
            _ => None,
        },
        user: match (row.user_settings, row.user_updated_at) {
            (Some(settings), Some(at)) => Some((Layer::new(&settings, row.user_locked.unwrap_or_default()), at)),
            _ => None,
        },
    })
}

fn user_view(user_id: Uuid, layers: &Layers) -> PresetView {
    let (layer, updated_at) = match &layers.user {
        Some((layer, at)) => (layer.clone(), Some(*at)),
        None => (Layer::default(), None),
    };
    PresetView {
        scope: "user".to_owned(),
        organization_id: layers.organization_id,
        group_name: None,
        user_id: Some(user_id),
        settings: SyncSettings::from_stored(&layer.values),
        locked: layer.locked,
        user_ids: None,
        updated_at,
    }
}

/// A user's own preset (empty when nothing was saved for them).
#[utoipa::path(get, path = "/v1/users/{id}/sync-settings", tag = "sync settings", params(("id" = Uuid, Path, description = "The user.")), responses((status = 200, body = PresetView)))]
pub async fn get_user_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<PresetView>, ApiError> {
    let mut tx = state.pool.begin().await?;
    users::view(&mut tx, &principal, id, false).await?;
    let layers = layers(&mut tx, id).await?;
    Ok(Json(user_view(id, &layers)))
}

/// Replaces a user's preset. Settings their organization or group locks
/// cannot be set (409 `setting_locked`). A user writing their own preset
/// may not change `locked` (403) nor set a setting locked for them (409);
/// those keep their values.
#[utoipa::path(put, path = "/v1/users/{id}/sync-settings", tag = "sync settings", params(("id" = Uuid, Path, description = "The user.")), request_body = PresetBody, responses((status = 200, body = PresetView)))]
pub async fn put_user_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    ApiJson(body): ApiJson<PresetBody>,
) -> Result<Json<PresetView>, ApiError> {
    let values = check_settings(body.settings.as_ref())?;
    let locked = check_locked(body.locked.as_ref())?;
    let mut tx = state.pool.begin().await?;
    let user = users::view(&mut tx, &principal, id, true).await?;
    let current = layers(&mut tx, id).await?;
    let mut wider = vec![("organization", &current.organization)];
    if let Some((_, group)) = &current.group {
        wider.push(("group", group));
    }
    refuse_locked(&values, &wider)?;
    let own = current
        .user
        .as_ref()
        .map(|(layer, _)| layer.clone())
        .unwrap_or_default();
    let layer = if principal.role == Role::User {
        if locked.as_ref().is_some_and(|locked| *locked != own.locked) {
            return Err(
                ApiError::forbidden("only an admin or an organization admin can lock settings").on_field("locked"),
            );
        }
        if let Some(name) = values.keys().find(|name| own.locks(name)) {
            return Err(
                ApiError::conflict("setting_locked", format!("{name} is locked for you by an admin"))
                    .on_field(format!("settings.{name}")),
            );
        }
        let mut values = values;
        for name in &own.locked {
            if let Some(value) = own.values.get(name) {
                values.insert(name.clone(), value.clone());
            }
        }
        Layer {
            values,
            locked: own.locked.clone(),
        }
    } else {
        Layer {
            values,
            locked: locked.unwrap_or_default(),
        }
    };
    if layer != own {
        let values = Value::Object(layer.values.clone());
        store::save_user(&mut tx, user.organization_id, id, &values, &layer.locked).await?;
        record_activity(
            &mut tx,
            user.organization_id,
            Some(id),
            &principal.label,
            "sync_settings_changed",
            describe("user preset saved", &layer),
        )
        .await?;
    }
    let layers = layers(&mut tx, id).await?;
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(Json(user_view(id, &layers)))
}

/// Removes a user's preset (admins and organization admins: it may hold
/// what they locked for the user).
#[utoipa::path(delete, path = "/v1/users/{id}/sync-settings", tag = "sync settings", params(("id" = Uuid, Path, description = "The user.")), responses((status = 204, description = "Removed (or there was none).")))]
pub async fn delete_user_preset(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.pool.begin().await?;
    let user = users::view(&mut tx, &principal, id, true).await?;
    if principal.role == Role::User {
        return Err(ApiError::forbidden(
            "only an admin or an organization admin can remove a user's preset",
        ));
    }
    if store::delete_user(&mut tx, id).await? {
        record_activity(
            &mut tx,
            user.organization_id,
            Some(id),
            &principal.label,
            "sync_settings_changed",
            "user preset removed".to_owned(),
        )
        .await?;
    }
    tx.commit().await.map_err(ApiError::at_commit)?;
    Ok(StatusCode::NO_CONTENT)
}

/// One setting as it applies to a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectiveSetting {
    /// The value the user's synchronization uses (its type is the setting's).
    pub value: Value,
    /// Where it comes from: `default`, `organization`, `group` or `user` (for
    /// a blocklist, the narrowest scope that added entries).
    pub source: String,
    /// The scope that locked it, if any.
    pub locked_by: Option<String>,
    /// Whether the user may change it (no scope locks it).
    pub adjustable: bool,
}

/// Every known setting as it applies to the user.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectiveValues {
    pub skip_free_mail: EffectiveSetting,
    pub baseline_days: EffectiveSetting,
    pub blocked_domains: EffectiveSetting,
    pub blocked_addresses: EffectiveSetting,
}

/// The merged settings of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectiveSettings {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    /// The user's settings group, if any.
    pub group_name: Option<String>,
    pub settings: EffectiveValues,
}

/// Merges one setting: organization < group < user; a locked setting keeps
/// the value it had where it was locked; blocklists add up.
fn merge(name: &str, kind: Kind, scopes: &[(&str, &Layer)]) -> EffectiveSetting {
    let mut value = default_value(kind);
    let mut source = "default";
    let mut locked_by = None;
    for (scope, layer) in scopes {
        if let Some(set) = layer.values.get(name) {
            value = match (kind.is_list(), value, set) {
                (true, Value::Array(mut entries), Value::Array(more)) => {
                    for entry in more {
                        if !entries.contains(entry) {
                            entries.push(entry.clone());
                        }
                    }
                    entries.into()
                }
                _ => set.clone(),
            };
            source = scope;
        }
        if layer.locks(name) {
            locked_by = Some((*scope).to_owned());
            break;
        }
    }
    EffectiveSetting {
        value,
        source: source.to_owned(),
        adjustable: locked_by.is_none(),
        locked_by,
    }
}

/// A user's effective settings: every known setting with its value, the
/// scope it comes from and the scope that locked it.
#[utoipa::path(get, path = "/v1/users/{id}/sync-settings/effective", tag = "sync settings", params(("id" = Uuid, Path, description = "The user.")), responses((status = 200, body = EffectiveSettings)))]
pub async fn get_effective(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
) -> Result<Json<EffectiveSettings>, ApiError> {
    let mut tx = state.pool.begin().await?;
    users::view(&mut tx, &principal, id, false).await?;
    let layers = layers(&mut tx, id).await?;
    let mut scopes = vec![("organization", &layers.organization)];
    if let Some((_, group)) = &layers.group {
        scopes.push(("group", group));
    }
    if let Some((user, _)) = &layers.user {
        scopes.push(("user", user));
    }
    let setting = |name: &str| merge(name, known(name).unwrap_or(Kind::Flag), &scopes);
    Ok(Json(EffectiveSettings {
        user_id: id,
        organization_id: layers.organization_id,
        group_name: layers.group.as_ref().map(|(name, _)| name.clone()),
        settings: EffectiveValues {
            skip_free_mail: setting("skip_free_mail"),
            baseline_days: setting("baseline_days"),
            blocked_domains: setting("blocked_domains"),
            blocked_addresses: setting("blocked_addresses"),
        },
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn layer(values: Value, locked: &[&str]) -> Layer {
        Layer::new(&values, locked.iter().map(|name| (*name).to_owned()).collect())
    }

    #[test]
    fn settings_are_checked_by_name_and_normalized() {
        let checked = check_settings(Some(&json!({
            "blocked_domains": [" @Example.COM", "example.com", "sub.acme.io"],
            "baseline_days": 30,
        })))
        .unwrap();
        assert_eq!(checked["blocked_domains"], json!(["example.com", "sub.acme.io"]));
        for (settings, field) in [
            (json!({"colour": "red"}), "settings.colour"),
            (json!({"baseline_days": 0}), "settings.baseline_days"),
            (json!({"skip_free_mail": "yes"}), "settings.skip_free_mail"),
            (
                json!({"blocked_addresses": ["ok@acme.io", "nope"]}),
                "settings.blocked_addresses[1]",
            ),
            (json!([1]), "settings"),
        ] {
            let error = check_settings(Some(&settings)).unwrap_err();
            assert!(
                format!("{error:?}").contains(&format!("field: Some({field:?})")),
                "{error:?}"
            );
        }
        assert!(
            check_settings(Some(&json!({"baseline_days": null})))
                .unwrap()
                .is_empty()
        );
        assert!(check_locked(Some(&json!(["baseline_days", "nothing"]))).is_err());
        assert_eq!(
            check_locked(Some(&json!(["blocked_domains", "skip_free_mail", "skip_free_mail"]))).unwrap(),
            Some(vec!["skip_free_mail".to_owned(), "blocked_domains".to_owned()])
        );
    }

    #[test]
    fn narrower_scopes_override_blocklists_add_up_and_a_lock_stops_the_merge() {
        let organization = layer(
            json!({"baseline_days": 10, "skip_free_mail": false, "blocked_domains": ["a.com"]}),
            &["skip_free_mail"],
        );
        let group = layer(
            json!({"baseline_days": 20, "blocked_domains": ["b.com"]}),
            &["baseline_days"],
        );
        let user = layer(
            json!({"baseline_days": 30, "skip_free_mail": true, "blocked_domains": ["c.com"]}),
            &[],
        );
        let scopes = [("organization", &organization), ("group", &group), ("user", &user)];
        let days = merge("baseline_days", Kind::Days, &scopes);
        assert_eq!((days.value, days.source.as_str()), (json!(20), "group"));
        assert_eq!(days.locked_by.as_deref(), Some("group"));
        let free = merge("skip_free_mail", Kind::Flag, &scopes);
        assert_eq!(
            (free.value, free.locked_by.as_deref()),
            (json!(false), Some("organization"))
        );
        let domains = merge("blocked_domains", Kind::Domains, &scopes);
        assert_eq!(domains.value, json!(["a.com", "b.com", "c.com"]));
        assert!(domains.adjustable);
        let addresses = merge("blocked_addresses", Kind::Addresses, &scopes);
        assert_eq!((addresses.value, addresses.source.as_str()), (json!([]), "default"));
    }
}
