//! The simulator's state, in memory behind one mutex: orgs with their users,
//! records, allocation, counters and armed faults; refresh and access tokens
//! (each a user's); open query cursors. Write semantics (required fields,
//! unique external ids, upsert, `allOrNone`, the owner and the audit fields
//! Salesforce maintains) live here so the routes only translate HTTP.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{
    Counters, Endpoint, OrgId, SalesforceConfig,
    faults::{Fault, Faults},
    limits::DailyAllocation,
    soql::{Filter, Select},
};
use crate::shared::{Latency, Random};

/// A record: its fields by name, `Id` included.
pub(crate) type Record = Map<String, Value>;

/// What the simulator knows of an sObject type.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ObjectSchema {
    pub name: &'static str,
    pub key_prefix: &'static str,
    /// Standard fields; any custom field (`..__c`) is accepted too and is a
    /// unique, case-insensitive external id.
    pub fields: &'static [&'static str],
    pub required: &'static [&'static str],
}

const SCHEMAS: [ObjectSchema; 4] = [
    ObjectSchema {
        name: "Contact",
        key_prefix: "003",
        fields: &[
            "Id",
            "Email",
            "FirstName",
            "LastName",
            "Phone",
            "Title",
            "AccountId",
            "OwnerId",
        ],
        required: &["LastName"],
    },
    ObjectSchema {
        name: "Lead",
        key_prefix: "00Q",
        fields: &["Id", "Email", "FirstName", "LastName", "Company", "Status", "OwnerId"],
        required: &["LastName", "Company"],
    },
    ObjectSchema {
        name: "Task",
        key_prefix: "00T",
        fields: &[
            "Id",
            "Subject",
            "Status",
            "Priority",
            "TaskSubtype",
            "Type",
            "WhoId",
            "WhatId",
            "ActivityDate",
            "Description",
            "OwnerId",
        ],
        required: &["Subject"],
    },
    ObjectSchema {
        name: "Event",
        key_prefix: "00U",
        fields: &[
            "Id",
            "Subject",
            "StartDateTime",
            "EndDateTime",
            "IsAllDayEvent",
            "Location",
            "WhoId",
            "WhatId",
            "Description",
            "OwnerId",
        ],
        required: &["Subject", "StartDateTime", "EndDateTime"],
    },
];

/// The fields Salesforce maintains on every record; the API never writes them.
pub(crate) const SYSTEM_FIELDS: [&str; 5] = [
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
];

/// The system fields a seed may set, as an org with "Set Audit Fields upon
/// Record Creation" may (`SystemModstamp` follows `LastModifiedDate`).
const AUDIT_FIELDS: [&str; 2] = ["CreatedDate", "LastModifiedDate"];

/// The fields of every type that hold a date and time.
pub(crate) const DATETIME_FIELDS: [&str; 3] = ["CreatedDate", "LastModifiedDate", "SystemModstamp"];

/// `at` as Salesforce writes a dateTime: `2026-11-22T10:00:00.000+0000`.
pub(crate) fn salesforce_datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// A dateTime field's value as Salesforce writes it (or RFC 3339, as a seed
/// may give it).
pub(crate) fn parse_datetime(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(value))
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The schema of `name` (case-insensitive), if the simulator knows the type.
pub(crate) fn schema_of(name: &str) -> Option<&'static ObjectSchema> {
    SCHEMAS.iter().find(|schema| schema.name.eq_ignore_ascii_case(name))
}

fn is_custom(field: &str) -> bool {
    field.len() > 3
        && field[field.len() - 3..].eq_ignore_ascii_case("__c")
        && field.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ObjectSchema {
    /// The canonical spelling of `raw`, if the type has such a field.
    pub(crate) fn canonical_field(&self, raw: &str) -> Option<String> {
        if is_custom(raw) {
            return Some(format!("{}__c", &raw[..raw.len() - 3]));
        }
        self.fields
            .iter()
            .chain(SYSTEM_FIELDS.iter())
            .find(|field| field.eq_ignore_ascii_case(raw))
            .map(|field| (*field).to_owned())
    }
}

/// A field of `record`, its name compared case-insensitively as SOQL does.
pub(crate) fn field<'a>(record: &'a Record, name: &str) -> Option<&'a Value> {
    record.get(name).or_else(|| {
        record
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

pub(crate) fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// A per-record error of a collection call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordError {
    pub status_code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    fn new(status_code: &'static str, message: impl Into<String>, fields: Vec<String>) -> Self {
        Self {
            status_code,
            message: message.into(),
            fields,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({"statusCode": self.status_code, "message": self.message, "fields": self.fields})
    }
}

/// A record written by a collection call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub id: String,
    pub created: bool,
}

/// A record of a collection request, checked against its type's schema.
#[derive(Debug, Clone)]
pub(crate) struct IncomingRecord {
    pub schema: &'static ObjectSchema,
    pub fields: Record,
}

/// A query's remaining pages.
#[derive(Debug)]
pub(crate) struct Cursor {
    pub org: OrgId,
    pub records: Vec<Value>,
}

/// One simulated org.
#[derive(Debug)]
pub(crate) struct Org {
    /// Its users' ids (`005...`), the default user first.
    pub users: Vec<String>,
    /// The org's own validation rules, checked on every write.
    pub rules: Vec<ValidationRule>,
    pub allocation: DailyAllocation,
    pub objects: HashMap<&'static str, Vec<Record>>,
    pub counters: Counters,
    pub faults: Faults,
    /// Refresh token rotation as the control API set it for this org, over
    /// the configuration's.
    pub rotate_refresh_tokens: Option<bool>,
}

/// A validation rule of the org, as customers write them: a record of
/// `object` whose `field` contains `contains` is refused with
/// `FIELD_CUSTOM_VALIDATION_EXCEPTION` and the rule's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationRule {
    /// The sObject type it applies to.
    pub object: String,
    /// The field it looks at.
    pub field: String,
    /// The text that makes it fail.
    pub contains: String,
    /// The error message shown.
    pub message: String,
}

/// Whose a refresh or access token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub org: OrgId,
    /// The user's id (`005...`).
    pub user: String,
}

#[derive(Debug)]
pub(crate) struct AccessToken {
    pub principal: Principal,
    pub issued: Instant,
}

/// Everything the simulator holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub orgs: BTreeMap<OrgId, Org>,
    pub refresh_tokens: HashMap<String, Principal>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub cursors: HashMap<String, Cursor>,
    pub unattributed: Counters,
    pub latency: Latency,
    pub random: Random,
    sequence: u64,
}

impl State {
    /// A fresh id with `prefix`, 15 characters like Salesforce's.
    pub(crate) fn next_id(&mut self, prefix: &str) -> String {
        self.sequence += 1;
        format!("{prefix}{:012}", self.sequence)
    }

    /// Creates an org whose daily allocation is `daily_api_max` calls, with
    /// one user, its default user: their ids.
    pub(crate) fn create_org(&mut self, daily_api_max: u64) -> (OrgId, String) {
        let id = OrgId(self.next_id("00D"));
        let user = self.next_id("005");
        self.orgs.insert(
            id.clone(),
            Org {
                users: vec![user.clone()],
                rules: Vec::new(),
                allocation: DailyAllocation::new(daily_api_max, Instant::now()),
                objects: HashMap::new(),
                counters: Counters::default(),
                faults: Faults::default(),
                rotate_refresh_tokens: None,
            },
        );
        (id, user)
    }

    /// Issues a refresh token of `principal`.
    pub(crate) fn issue_refresh_token(&mut self, principal: Principal) -> String {
        let token = super::new_refresh_token();
        self.refresh_tokens.insert(token.clone(), principal);
        token
    }

    /// Issues an access token of `principal`, a session that starts now.
    pub(crate) fn issue_access_token(&mut self, principal: Principal) -> String {
        let token = format!("{}!{}", principal.org, uuid::Uuid::new_v4().simple());
        self.access_tokens.insert(
            token.clone(),
            AccessToken {
                principal,
                issued: Instant::now(),
            },
        );
        token
    }

    /// The org and user behind a live access token.
    pub(crate) fn session(&self, token: &str, session_timeout: Duration) -> Option<Principal> {
        self.access_tokens
            .get(token)
            .filter(|session| session.issued.elapsed() < session_timeout)
            .map(|session| session.principal.clone())
    }

    pub(crate) fn count(&mut self, org: Option<&OrgId>, endpoint: Endpoint) {
        let counters = match org.and_then(|org| self.orgs.get_mut(org)) {
            Some(org) => &mut org.counters,
            None => &mut self.unattributed,
        };
        *counters.calls.entry(endpoint).or_default() += 1;
    }
}

/// The state behind its lock.
pub(crate) type Store = crate::shared::Store<SalesforceConfig, State>;

/// Why a request's record was refused whole: the error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldRefusal {
    pub code: &'static str,
    pub message: String,
}

/// Checks a record's fields against its schema, refusing the first field the
/// type does not have or the API may not write (Salesforce refuses the whole
/// request then). With `audit`, `CreatedDate` and `LastModifiedDate` may be
/// set (a seed's records).
pub(crate) fn incoming(
    schema: &'static ObjectSchema,
    raw: &Map<String, Value>,
    audit: bool,
) -> Result<IncomingRecord, FieldRefusal> {
    let mut fields = Record::new();
    for (name, value) in raw {
        if name == "attributes" {
            continue;
        }
        match schema.canonical_field(name) {
            Some(canonical) if AUDIT_FIELDS.contains(&canonical.as_str()) && audit => {
                let valid = value.as_str().and_then(parse_datetime);
                let Some(at) = valid else {
                    return Err(FieldRefusal {
                        code: "INVALID_FIELD",
                        message: format!("{canonical}: value not of required type: {value}"),
                    });
                };
                fields.insert(canonical, Value::String(salesforce_datetime(at)));
            }
            Some(canonical) if SYSTEM_FIELDS.contains(&canonical.as_str()) => {
                return Err(FieldRefusal {
                    code: "INVALID_FIELD_FOR_INSERT_UPDATE",
                    message: format!(
                        "Unable to create/update fields: {canonical}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                    ),
                });
            }
            Some(canonical) if canonical != "Id" => {
                fields.insert(canonical, value.clone());
            }
            _ => {
                return Err(FieldRefusal {
                    code: "INVALID_FIELD",
                    message: format!("No such column '{name}' on sobject of type {}", schema.name),
                });
            }
        }
    }
    Ok(IncomingRecord { schema, fields })
}

fn find_by_value<'a>(records: &'a [Record], field_name: &str, value: &str) -> Option<&'a Record> {
    records
        .iter()
        .find(|record| text(field(record, field_name)).is_some_and(|existing| existing.eq_ignore_ascii_case(value)))
}

fn record_id(record: &Record) -> String {
    text(record.get("Id")).unwrap_or_default().to_owned()
}

/// Checks `fields` as the new state of a record (`existing_id` when it updates
/// one): required fields set, `WhoId` naming a Contact or Lead, `OwnerId` a
/// user of the org, custom fields unique.
fn validate(org: &Org, schema: &ObjectSchema, fields: &Record, existing_id: Option<&str>) -> Result<(), RecordError> {
    let objects = &org.objects;
    let missing: Vec<String> = schema
        .required
        .iter()
        .filter(|name| match fields.get(**name) {
            Some(value) => value.is_null() || value.as_str() == Some(""),
            None => existing_id.is_none(),
        })
        .map(|name| (*name).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(RecordError::new(
            "REQUIRED_FIELD_MISSING",
            format!("Required fields are missing: [{}]", missing.join(", ")),
            missing,
        ));
    }
    if let Some(who) = text(fields.get("WhoId")) {
        let known = ["Contact", "Lead"].iter().any(|object| {
            objects
                .get(object)
                .is_some_and(|records| records.iter().any(|record| record_id(record) == who))
        });
        if !known {
            return Err(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                vec!["WhoId".to_owned()],
            ));
        }
    }
    if let Some(owner) = fields.get("OwnerId")
        && !text(Some(owner)).is_some_and(|owner| org.users.iter().any(|user| user == owner))
    {
        return Err(RecordError::new(
            "INVALID_CROSS_REFERENCE_KEY",
            "invalid cross reference id",
            vec!["OwnerId".to_owned()],
        ));
    }
    for rule in org
        .rules
        .iter()
        .filter(|rule| rule.object.eq_ignore_ascii_case(schema.name))
    {
        if text(field(fields, &rule.field)).is_some_and(|value| value.contains(&rule.contains)) {
            return Err(RecordError::new(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                rule.message.clone(),
                vec![rule.field.clone()],
            ));
        }
    }
    let records = objects.get(schema.name).map(Vec::as_slice).unwrap_or_default();
    for (name, value) in fields.iter().filter(|(name, _)| is_custom(name)) {
        let Some(value) = text(Some(value)) else { continue };
        if let Some(other) = find_by_value(records, name, value)
            && Some(record_id(other).as_str()) != existing_id
        {
            return Err(duplicate_value(name, &record_id(other)));
        }
    }
    Ok(())
}

/// Checks `record` as the new state of the existing record `id` of `org`.
pub(crate) fn validate_update(org: &Org, record: &IncomingRecord, id: &str) -> Result<(), RecordError> {
    validate(org, record.schema, &record.fields, Some(id))
}

fn duplicate_value(field_name: &str, existing_id: &str) -> RecordError {
    RecordError::new(
        "DUPLICATE_VALUE",
        format!("duplicate value found: {field_name} duplicates value on record with id: {existing_id}"),
        vec![field_name.to_owned()],
    )
}

fn lock_error(id: Option<&str>) -> RecordError {
    RecordError::new(
        "UNABLE_TO_LOCK_ROW",
        format!(
            "unable to obtain exclusive access to this record or 1 records: {}",
            id.unwrap_or_default()
        ),
        Vec::new(),
    )
}

/// Sets what Salesforce maintains on a record written now by `user`: on
/// creation the owner (unless given), the creator and the creation date
/// (unless a seed gave it); on every write the last modifier, the last
/// modification date (unless a seed gave it) and `SystemModstamp`.
fn stamp(record: &mut Record, user: &str, created: bool, seeded_modification: bool) {
    let now = Value::String(salesforce_datetime(Utc::now()));
    let user = Value::String(user.to_owned());
    if created {
        if text(record.get("OwnerId")).is_none() {
            record.insert("OwnerId".to_owned(), user.clone());
        }
        record.insert("CreatedById".to_owned(), user.clone());
        record.entry("CreatedDate").or_insert_with(|| now.clone());
    }
    if !seeded_modification {
        record.insert("LastModifiedDate".to_owned(), now);
    }
    let modified = record.get("LastModifiedDate").cloned().unwrap_or(Value::Null);
    record.insert("SystemModstamp".to_owned(), modified);
    record.insert("LastModifiedById".to_owned(), user);
}

fn insert(
    state: &mut State,
    org: &OrgId,
    user: &str,
    schema: &'static ObjectSchema,
    fields: &Record,
) -> Option<String> {
    let id = state.next_id(schema.key_prefix);
    let mut record = fields.clone();
    record.insert("Id".to_owned(), Value::String(id.clone()));
    let seeded = record.contains_key("LastModifiedDate");
    if seeded && !record.contains_key("CreatedDate") {
        let modified = record.get("LastModifiedDate").cloned().unwrap_or(Value::Null);
        record.insert("CreatedDate".to_owned(), modified);
    }
    stamp(&mut record, user, true, seeded);
    state
        .orgs
        .get_mut(org)?
        .objects
        .entry(schema.name)
        .or_default()
        .push(record);
    Some(id)
}

/// Writes `fields` over the record `id` of `schema` in `org`, as `user`; false
/// if there is no such record.
pub(crate) fn update(
    state: &mut State,
    org: &OrgId,
    user: &str,
    schema: &'static ObjectSchema,
    id: &str,
    fields: &Record,
) -> bool {
    let stored = state
        .orgs
        .get_mut(org)
        .and_then(|org| org.objects.get_mut(schema.name))
        .and_then(|records| records.iter_mut().find(|stored| record_id(stored) == id));
    let Some(stored) = stored else {
        return false;
    };
    for (name, value) in fields {
        stored.insert(name.clone(), value.clone());
    }
    stamp(stored, user, false, fields.contains_key("LastModifiedDate"));
    true
}

/// Runs the records of a collection call one by one against the org; with
/// `all_or_none`, any failure undoes every write of the call and the records
/// that had succeeded answer `ALL_OR_NONE_OPERATION_ROLLED_BACK`.
fn run_collection(
    state: &mut State,
    org: &OrgId,
    all_or_none: bool,
    count: usize,
    mut write: impl FnMut(&mut State, usize) -> Result<Written, RecordError>,
) -> Vec<Result<Written, RecordError>> {
    // Only an all-or-none call can be undone, so only it pays for a copy.
    let snapshot = if all_or_none {
        state.orgs.get(org).map(|org| org.objects.clone())
    } else {
        None
    };
    let mut results: Vec<_> = (0..count).map(|index| write(state, index)).collect();
    if all_or_none
        && results.iter().any(Result::is_err)
        && let (Some(snapshot), Some(org)) = (snapshot, state.orgs.get_mut(org))
    {
        org.objects = snapshot;
        for result in &mut results {
            if result.is_ok() {
                *result = Err(RecordError::new(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    Vec::new(),
                ));
            }
        }
    }
    results
}

/// `POST /composite/sobjects`: creates each record, in input order.
pub(crate) fn create_records(
    state: &mut State,
    org: &OrgId,
    user: &str,
    records: &[IncomingRecord],
    all_or_none: bool,
    fault: Option<Fault>,
) -> Vec<Result<Written, RecordError>> {
    run_collection(state, org, all_or_none, records.len(), |state, index| {
        let record = &records[index];
        if fault == Some(Fault::UnableToLockRow) {
            return Err(lock_error(None));
        }
        let org_state = state.orgs.get(org).ok_or_else(|| lock_error(None))?;
        validate(org_state, record.schema, &record.fields, None)?;
        let id = insert(state, org, user, record.schema, &record.fields).ok_or_else(|| lock_error(None))?;
        Ok(Written { id, created: true })
    })
}

/// `PATCH /composite/sobjects/{type}/{field}`: upserts each record by its
/// external id, in input order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn upsert_records(
    state: &mut State,
    org: &OrgId,
    user: &str,
    schema: &'static ObjectSchema,
    external_id_field: &str,
    records: &[IncomingRecord],
    all_or_none: bool,
    fault: Option<Fault>,
) -> Vec<Result<Written, RecordError>> {
    run_collection(state, org, all_or_none, records.len(), |state, index| {
        let record = &records[index];
        let Some(key) = text(field(&record.fields, external_id_field)).map(str::to_owned) else {
            return Err(RecordError::new(
                "MISSING_ARGUMENT",
                format!("{external_id_field} not specified"),
                vec![external_id_field.to_owned()],
            ));
        };
        let org_state = state.orgs.get(org).ok_or_else(|| lock_error(None))?;
        let existing = org_state
            .objects
            .get(schema.name)
            .and_then(|records| find_by_value(records, external_id_field, &key))
            .map(record_id);
        if fault == Some(Fault::UnableToLockRow) {
            return Err(lock_error(existing.as_deref()));
        }
        match existing {
            Some(id) => {
                validate(org_state, schema, &record.fields, Some(&id))?;
                update(state, org, user, schema, &id, &record.fields);
                Ok(Written { id, created: false })
            }
            None if fault == Some(Fault::DuplicateOnCreate) => {
                // A concurrent writer created it a moment before this call.
                let id = insert(state, org, user, schema, &record.fields).ok_or_else(|| lock_error(None))?;
                Err(duplicate_value(external_id_field, &id))
            }
            None => {
                validate(org_state, schema, &record.fields, None)?;
                let id = insert(state, org, user, schema, &record.fields).ok_or_else(|| lock_error(None))?;
                Ok(Written { id, created: true })
            }
        }
    })
}

/// The records of `org` a query selects, in its order (creation order
/// without `ORDER BY`), at most its `LIMIT`. `IN` compares text
/// case-insensitively, as SOQL does; `OwnerId` is compared exactly.
pub(crate) fn select<'a>(state: &'a State, org: &OrgId, query: &Select) -> Vec<&'a Record> {
    let records = state
        .orgs
        .get(org)
        .and_then(|org| org.objects.get(query.object.name))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut selected: Vec<&Record> = records
        .iter()
        .filter(|record| match &query.filter {
            Filter::In { field: name, values } => text(field(record, name))
                .is_some_and(|value| values.iter().any(|wanted| wanted.eq_ignore_ascii_case(value))),
            Filter::Changed {
                owner,
                field: name,
                since,
                inclusive,
            } => {
                let owned = text(record.get("OwnerId")) == Some(owner.as_str());
                let changed = text(field(record, name))
                    .and_then(parse_datetime)
                    .is_some_and(|at| if *inclusive { at >= *since } else { at > *since });
                owned && changed
            }
        })
        .collect();
    if let Some((name, descending)) = &query.order_by {
        // Nulls sort first ascending, so last descending.
        selected.sort_by(|a, b| compare(field(a, name), field(b, name)));
        if *descending {
            selected.reverse();
        }
    }
    if let Some(limit) = query.limit {
        selected.truncate(limit);
    }
    selected
}

/// How two values sort: nulls first, then dateTimes by instant, numbers by
/// value and anything else by its text, case-insensitively.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a.filter(|a| !a.is_null()), b.filter(|b| !b.is_null())) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::String(a)), Some(Value::String(b))) => match (parse_datetime(a), parse_datetime(b)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => a.to_lowercase().cmp(&b.to_lowercase()),
        },
        (Some(Value::Number(a)), Some(Value::Number(b))) => {
            a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(a), Some(b)) => a.to_string().cmp(&b.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "005000000000001";
    const OTHER_USER: &str = "005000000000002";

    fn org_state() -> (State, OrgId) {
        let mut state = State::default();
        let org = OrgId("00D000000000001".to_owned());
        state.orgs.insert(
            org.clone(),
            Org {
                users: vec![USER.to_owned(), OTHER_USER.to_owned()],
                rules: Vec::new(),
                allocation: DailyAllocation::new(100, Instant::now()),
                objects: HashMap::new(),
                counters: Counters::default(),
                faults: Faults::default(),
                rotate_refresh_tokens: None,
            },
        );
        (state, org)
    }

    fn task(fields: Value) -> IncomingRecord {
        let Value::Object(fields) = fields else { unreachable!() };
        incoming(schema_of("Task").unwrap(), &fields, false).unwrap()
    }

    #[test]
    fn an_upsert_creates_then_updates_by_external_id() {
        let (mut state, org) = org_state();
        let schema = schema_of("Task").unwrap();
        let first = upsert_records(
            &mut state,
            &org,
            USER,
            schema,
            "Key__c",
            &[task(json!({"Key__c": "k1", "Subject": "a"}))],
            false,
            None,
        );
        let created = first[0].clone().unwrap();
        assert!(created.created);
        let second = upsert_records(
            &mut state,
            &org,
            USER,
            schema,
            "Key__c",
            &[task(json!({"key__C": "K1", "Subject": "b"}))],
            false,
            None,
        );
        assert_eq!(
            second[0],
            Ok(Written {
                id: created.id,
                created: false
            })
        );
        let tasks = &state.orgs[&org].objects["Task"];
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0]["Subject"], "b");
    }

    #[test]
    fn all_or_none_rolls_back_the_records_that_succeeded() {
        let (mut state, org) = org_state();
        let records = [task(json!({"Subject": "ok"})), task(json!({"Status": "Completed"}))];
        let results = create_records(&mut state, &org, USER, &records, true, None);
        assert_eq!(
            results[0].clone().unwrap_err().status_code,
            "ALL_OR_NONE_OPERATION_ROLLED_BACK"
        );
        assert_eq!(results[1].clone().unwrap_err().status_code, "REQUIRED_FIELD_MISSING");
        assert!(state.orgs[&org].objects.get("Task").is_none_or(Vec::is_empty));
    }

    #[test]
    fn creating_a_second_record_with_an_external_id_in_use_is_a_duplicate_value() {
        let (mut state, org) = org_state();
        let records = [task(json!({"Subject": "a", "Key__c": "k"}))];
        let first = create_records(&mut state, &org, USER, &records, false, None)[0]
            .clone()
            .unwrap();
        let error = create_records(&mut state, &org, USER, &records, false, None)[0]
            .clone()
            .unwrap_err();
        assert_eq!(error.status_code, "DUPLICATE_VALUE");
        assert!(error.message.ends_with(&first.id), "{}", error.message);
    }

    #[test]
    fn unknown_standard_fields_are_refused() {
        let Value::Object(fields) = json!({"Subject": "a", "Bogus": 1}) else {
            unreachable!()
        };
        assert!(incoming(schema_of("Task").unwrap(), &fields, false).is_err());
    }

    #[test]
    fn the_api_cannot_write_system_fields_but_a_seed_may_date_a_record() {
        let Value::Object(fields) = json!({"Subject": "a", "LastModifiedDate": "2026-01-02T03:04:05Z"}) else {
            unreachable!()
        };
        let task = schema_of("Task").unwrap();
        let refused = incoming(task, &fields, false).unwrap_err();
        assert_eq!(refused.code, "INVALID_FIELD_FOR_INSERT_UPDATE");
        let seeded = incoming(task, &fields, true).unwrap();
        assert_eq!(seeded.fields["LastModifiedDate"], "2026-01-02T03:04:05.000+0000");
    }

    #[test]
    fn a_created_record_belongs_to_its_creator_and_an_update_moves_its_modification_stamps() {
        let (mut state, org) = org_state();
        let schema = schema_of("Task").unwrap();
        let Value::Object(seed) = json!({"Subject": "a", "Key__c": "k", "LastModifiedDate": "2026-01-02T03:04:05Z"})
        else {
            unreachable!()
        };
        let seed = incoming(schema, &seed, true).unwrap();
        let created = create_records(&mut state, &org, USER, &[seed], false, None)[0]
            .clone()
            .unwrap();
        let stored = state.orgs[&org].objects["Task"][0].clone();
        assert_eq!(stored["OwnerId"], USER);
        assert_eq!(stored["CreatedById"], USER);
        assert_eq!(stored["CreatedDate"], "2026-01-02T03:04:05.000+0000");
        assert_eq!(stored["SystemModstamp"], "2026-01-02T03:04:05.000+0000");

        let before = Utc::now() - chrono::Duration::seconds(1);
        let update = task(json!({"Key__c": "k", "Subject": "b"}));
        upsert_records(&mut state, &org, OTHER_USER, schema, "Key__c", &[update], false, None)[0]
            .clone()
            .unwrap();
        let stored = &state.orgs[&org].objects["Task"][0];
        assert_eq!(stored["Id"], json!(created.id));
        assert_eq!(stored["OwnerId"], USER, "an update keeps the owner");
        assert_eq!(stored["LastModifiedById"], OTHER_USER);
        assert_eq!(stored["CreatedDate"], "2026-01-02T03:04:05.000+0000");
        let modified = parse_datetime(stored["LastModifiedDate"].as_str().unwrap()).unwrap();
        assert!(modified > before, "{modified}");
        assert_eq!(stored["SystemModstamp"], stored["LastModifiedDate"]);
        assert!(stored["LastModifiedDate"].as_str().unwrap().ends_with("+0000"));
    }

    #[test]
    fn an_owner_outside_the_org_is_an_invalid_cross_reference() {
        let (mut state, org) = org_state();
        let records = [task(json!({"Subject": "a", "OwnerId": "005999999999999"}))];
        let error = create_records(&mut state, &org, USER, &records, false, None)[0]
            .clone()
            .unwrap_err();
        assert_eq!(error.status_code, "INVALID_CROSS_REFERENCE_KEY");
        assert_eq!(error.fields, ["OwnerId"]);
    }
}
