//! The simulator's state, in memory behind one mutex: orgs with their records,
//! allocation, counters and armed faults; refresh and access tokens; open query
//! cursors. Write semantics (required fields, unique external ids, upsert,
//! `allOrNone`) live here so the routes only translate HTTP.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};

use super::{
    Counters, Endpoint, OrgId, SalesforceConfig,
    faults::{Fault, Faults},
    limits::DailyAllocation,
};

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
        fields: &["Id", "Email", "FirstName", "LastName", "Phone", "AccountId", "OwnerId"],
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

fn text(value: Option<&Value>) -> Option<&str> {
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
    pub allocation: DailyAllocation,
    pub objects: HashMap<&'static str, Vec<Record>>,
    pub counters: Counters,
    pub faults: Faults,
}

#[derive(Debug)]
pub(crate) struct AccessToken {
    pub org: OrgId,
    pub issued: Instant,
}

/// Everything the simulator holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub orgs: BTreeMap<OrgId, Org>,
    pub refresh_tokens: HashMap<String, OrgId>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub cursors: HashMap<String, Cursor>,
    pub unattributed: Counters,
    pub latency: Duration,
    sequence: u64,
}

impl State {
    /// A fresh id with `prefix`, 15 characters like Salesforce's.
    pub(crate) fn next_id(&mut self, prefix: &str) -> String {
        self.sequence += 1;
        format!("{prefix}{:012}", self.sequence)
    }

    /// The org behind a live access token.
    pub(crate) fn session_org(&self, token: &str, session_timeout: Duration) -> Option<OrgId> {
        self.access_tokens
            .get(token)
            .filter(|session| session.issued.elapsed() < session_timeout)
            .map(|session| session.org.clone())
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
#[derive(Debug)]
pub(crate) struct Store {
    pub config: SalesforceConfig,
    state: Mutex<State>,
}

impl Store {
    pub(crate) fn new(config: SalesforceConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// Runs `f` on the state. The lock is never held across an await.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic in another request cannot leave the state half-written in a
        // way worth refusing every later request for.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }
}

/// Checks a record's fields against its schema, refusing the first field the
/// type does not have (Salesforce refuses the whole request then).
pub(crate) fn incoming(schema: &'static ObjectSchema, raw: &Map<String, Value>) -> Result<IncomingRecord, String> {
    let mut fields = Record::new();
    for (name, value) in raw {
        if name == "attributes" {
            continue;
        }
        match schema.canonical_field(name) {
            Some(canonical) if canonical != "Id" => {
                fields.insert(canonical, value.clone());
            }
            _ => {
                return Err(format!("No such column '{name}' on sobject of type {}", schema.name));
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
/// one): required fields set, `WhoId` naming a Contact or Lead, custom fields
/// unique.
fn validate(
    objects: &HashMap<&'static str, Vec<Record>>,
    schema: &ObjectSchema,
    fields: &Record,
    existing_id: Option<&str>,
) -> Result<(), RecordError> {
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

fn insert(state: &mut State, org: &OrgId, schema: &'static ObjectSchema, fields: &Record) -> Option<String> {
    let id = state.next_id(schema.key_prefix);
    let mut record = fields.clone();
    record.insert("Id".to_owned(), Value::String(id.clone()));
    state
        .orgs
        .get_mut(org)?
        .objects
        .entry(schema.name)
        .or_default()
        .push(record);
    Some(id)
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
    let snapshot = state.orgs.get(org).map(|org| org.objects.clone());
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
    records: &[IncomingRecord],
    all_or_none: bool,
    fault: Option<Fault>,
) -> Vec<Result<Written, RecordError>> {
    run_collection(state, org, all_or_none, records.len(), |state, index| {
        let record = &records[index];
        if fault == Some(Fault::UnableToLockRow) {
            return Err(lock_error(None));
        }
        let objects = &state.orgs.get(org).ok_or_else(|| lock_error(None))?.objects;
        validate(objects, record.schema, &record.fields, None)?;
        let id = insert(state, org, record.schema, &record.fields).ok_or_else(|| lock_error(None))?;
        Ok(Written { id, created: true })
    })
}

/// `PATCH /composite/sobjects/{type}/{field}`: upserts each record by its
/// external id, in input order.
pub(crate) fn upsert_records(
    state: &mut State,
    org: &OrgId,
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
        let objects = &state.orgs.get(org).ok_or_else(|| lock_error(None))?.objects;
        let existing = objects
            .get(schema.name)
            .and_then(|records| find_by_value(records, external_id_field, &key))
            .map(record_id);
        if fault == Some(Fault::UnableToLockRow) {
            return Err(lock_error(existing.as_deref()));
        }
        match existing {
            Some(id) => {
                validate(objects, schema, &record.fields, Some(&id))?;
                let stored = state
                    .orgs
                    .get_mut(org)
                    .and_then(|org| org.objects.get_mut(schema.name))
                    .and_then(|records| records.iter_mut().find(|stored| record_id(stored) == id));
                if let Some(stored) = stored {
                    for (name, value) in &record.fields {
                        stored.insert(name.clone(), value.clone());
                    }
                }
                Ok(Written { id, created: false })
            }
            None if fault == Some(Fault::DuplicateOnCreate) => {
                // A concurrent writer created it a moment before this call.
                let id = insert(state, org, schema, &record.fields).ok_or_else(|| lock_error(None))?;
                Err(duplicate_value(external_id_field, &id))
            }
            None => {
                validate(objects, schema, &record.fields, None)?;
                let id = insert(state, org, schema, &record.fields).ok_or_else(|| lock_error(None))?;
                Ok(Written { id, created: true })
            }
        }
    })
}

/// The records of `org`'s `object` whose `field` equals one of `values`
/// (case-insensitive, as SOQL compares text), in creation order.
pub(crate) fn select<'a>(
    state: &'a State,
    org: &OrgId,
    object: &str,
    field_name: &str,
    values: &[String],
) -> Vec<&'a Record> {
    state
        .orgs
        .get(org)
        .and_then(|org| org.objects.get(object))
        .map(|records| {
            records
                .iter()
                .filter(|record| {
                    text(field(record, field_name))
                        .is_some_and(|value| values.iter().any(|wanted| wanted.eq_ignore_ascii_case(value)))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org_state() -> (State, OrgId) {
        let mut state = State::default();
        let org = OrgId("00D000000000001".to_owned());
        state.orgs.insert(
            org.clone(),
            Org {
                allocation: DailyAllocation::new(100, Instant::now()),
                objects: HashMap::new(),
                counters: Counters::default(),
                faults: Faults::default(),
            },
        );
        (state, org)
    }

    fn task(fields: Value) -> IncomingRecord {
        let Value::Object(fields) = fields else { unreachable!() };
        incoming(schema_of("Task").unwrap(), &fields).unwrap()
    }

    #[test]
    fn an_upsert_creates_then_updates_by_external_id() {
        let (mut state, org) = org_state();
        let schema = schema_of("Task").unwrap();
        let first = upsert_records(
            &mut state,
            &org,
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
        let results = create_records(&mut state, &org, &records, true, None);
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
        let first = create_records(&mut state, &org, &records, false, None)[0]
            .clone()
            .unwrap();
        let error = create_records(&mut state, &org, &records, false, None)[0]
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
        assert!(incoming(schema_of("Task").unwrap(), &fields).is_err());
    }
}
