//! Events and contacts: the properties Graph takes on a write, checked as
//! Graph checks them (an unknown property is `ErrorInvalidProperty`, a value
//! of the wrong shape `UnableToDeserializePostBody`), and the items kept as
//! JSON objects in creation order.

use chrono::{NaiveDateTime, Timelike, Utc};
use serde_json::{Map, Value, json};

/// The kind of item a collection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Event,
    Contact,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Kind::Event => "Microsoft.OutlookServices.Event",
            Kind::Contact => "Microsoft.OutlookServices.Contact",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Event => "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A",
            Kind::Contact => "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0B",
        }
    }

    fn properties(self) -> &'static [&'static str] {
        match self {
            Kind::Event => &[
                "subject",
                "body",
                "start",
                "end",
                "location",
                "categories",
                "singleValueExtendedProperties",
                "isAllDay",
                "isReminderOn",
                "showAs",
                "importance",
                "sensitivity",
            ],
            Kind::Contact => &[
                "givenName",
                "surname",
                "middleName",
                "displayName",
                "nickName",
                "companyName",
                "jobTitle",
                "department",
                "emailAddresses",
                "businessPhones",
                "homePhones",
                "mobilePhone",
                "categories",
                "personalNotes",
                "fileAs",
                "singleValueExtendedProperties",
            ],
        }
    }
}

/// Why a write is refused: Graph's error code and message (always 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn shape(property: &str) -> Self {
        Self::new(
            "UnableToDeserializePostBody",
            format!("were unable to deserialize the value of '{property}'"),
        )
    }
}

/// The time zones the simulator takes in `start` and `end`.
const TIME_ZONES: &[&str] = &[
    "UTC",
    "Etc/GMT",
    "GMT Standard Time",
    "W. Europe Standard Time",
    "Eastern Standard Time",
    "Pacific Standard Time",
    "Europe/London",
    "Europe/Paris",
    "America/New_York",
    "America/Los_Angeles",
];

fn string_property(object: &Map<String, Value>, name: &str) -> Result<(), Invalid> {
    match object.get(name) {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(_) => Err(Invalid::shape(name)),
    }
}

fn string_list(value: &Value, name: &str) -> Result<(), Invalid> {
    match value {
        Value::Array(values) if values.iter().all(Value::is_string) => Ok(()),
        _ => Err(Invalid::shape(name)),
    }
}

/// A `dateTimeTimeZone`, normalized to Graph's seven fractional digits.
fn date_time_time_zone(value: &Value, name: &str) -> Result<(Value, NaiveDateTime), Invalid> {
    let Some(object) = value.as_object() else {
        return Err(Invalid::shape(name));
    };
    let (Some(date_time), Some(time_zone)) = (
        object.get("dateTime").and_then(Value::as_str),
        object.get("timeZone").and_then(Value::as_str),
    ) else {
        return Err(Invalid::shape(name));
    };
    if !TIME_ZONES.contains(&time_zone) {
        return Err(Invalid::new(
            "TimeZoneNotSupportedException",
            format!(
                "A valid TimeZone value must be specified. The following TimeZone value is not supported: '{time_zone}'."
            ),
        ));
    }
    let parsed =
        NaiveDateTime::parse_from_str(date_time.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| {
            Invalid::new(
                "ErrorInvalidRequest",
                format!("Cannot convert the literal '{date_time}' to a dateTime."),
            )
        })?;
    let normalized = format!(
        "{}.{:07}",
        parsed.format("%Y-%m-%dT%H:%M:%S"),
        parsed.nanosecond() / 100
    );
    Ok((json!({"dateTime": normalized, "timeZone": time_zone}), parsed))
}

fn extended_properties(value: &Value) -> Result<(), Invalid> {
    let name = "singleValueExtendedProperties";
    let Some(properties) = value.as_array() else {
        return Err(Invalid::shape(name));
    };
    for property in properties {
        let (Some(id), Some(Value::String(_))) = (property.get("id").and_then(Value::as_str), property.get("value"))
        else {
            return Err(Invalid::shape(name));
        };
        if !valid_extended_property_id(id) {
            return Err(Invalid::new(
                "ErrorInvalidProperty",
                format!("The extended property id '{id}' is not valid."),
            ));
        }
    }
    Ok(())
}

/// `String {guid} Name X` or `String 0xHHHH`, the forms of a named or tagged
/// string property.
fn valid_extended_property_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("String ") else {
        return false;
    };
    if let Some(tag) = rest.strip_prefix("0x") {
        return !tag.is_empty() && tag.chars().all(|c| c.is_ascii_hexdigit());
    }
    let Some((guid, name)) = rest.split_once(" Name ") else {
        return false;
    };
    let guid = guid.trim_start_matches('{').trim_end_matches('}');
    uuid::Uuid::parse_str(guid).is_ok() && !name.trim().is_empty()
}

/// Checks a write's body; on success the properties to store (normalized).
pub(crate) fn check(kind: Kind, body: Option<&Value>, creating: bool) -> Result<Map<String, Value>, Invalid> {
    let Some(Value::Object(object)) = body else {
        return Err(Invalid::new("BadRequest", "Empty Payload. JSON content expected."));
    };
    if let Some(unknown) = object.keys().find(|key| !kind.properties().contains(&key.as_str())) {
        return Err(Invalid::new(
            "ErrorInvalidProperty",
            format!(
                "Could not find a property named '{unknown}' on type '{}'.",
                kind.type_name()
            ),
        ));
    }
    let mut stored = object.clone();
    if let Some(value) = object.get("singleValueExtendedProperties") {
        extended_properties(value)?;
    }
    if let Some(value) = object.get("categories") {
        string_list(value, "categories")?;
    }
    match kind {
        Kind::Event => check_event(object, &mut stored, creating)?,
        Kind::Contact => check_contact(object)?,
    }
    Ok(stored)
}

fn check_event(object: &Map<String, Value>, stored: &mut Map<String, Value>, creating: bool) -> Result<(), Invalid> {
    string_property(object, "subject")?;
    if let Some(body) = object.get("body") {
        let content_type = body.get("contentType").and_then(Value::as_str).unwrap_or("text");
        let content_ok = matches!(body.get("content"), None | Some(Value::String(_) | Value::Null));
        if !content_ok || !(content_type.eq_ignore_ascii_case("text") || content_type.eq_ignore_ascii_case("html")) {
            return Err(Invalid::shape("body"));
        }
    }
    if let Some(location) = object.get("location")
        && !location.is_object()
    {
        return Err(Invalid::shape("location"));
    }
    let mut times = Vec::new();
    for name in ["start", "end"] {
        if let Some(value) = object.get(name) {
            let (normalized, parsed) = date_time_time_zone(value, name)?;
            stored.insert(name.to_owned(), normalized);
            times.push(parsed);
        }
    }
    if creating && times.len() < 2 {
        return Err(Invalid::new(
            "ErrorPropertyValidationFailure",
            "At least one property failed validation: an event needs a start and an end.",
        ));
    }
    if let [start, end] = times.as_slice()
        && end < start
    {
        return Err(Invalid::new(
            "ErrorPropertyValidationFailure",
            "At least one property failed validation: the end is before the start.",
        ));
    }
    Ok(())
}

fn check_contact(object: &Map<String, Value>) -> Result<(), Invalid> {
    for name in [
        "givenName",
        "surname",
        "middleName",
        "displayName",
        "nickName",
        "companyName",
        "jobTitle",
        "department",
        "mobilePhone",
        "personalNotes",
        "fileAs",
    ] {
        string_property(object, name)?;
    }
    for name in ["businessPhones", "homePhones"] {
        if let Some(value) = object.get(name) {
            string_list(value, name)?;
        }
    }
    if let Some(addresses) = object.get("emailAddresses") {
        let valid = addresses.as_array().is_some_and(|addresses| {
            addresses
                .iter()
                .all(|address| address.get("address").is_some_and(Value::is_string))
        });
        if !valid {
            return Err(Invalid::shape("emailAddresses"));
        }
    }
    Ok(())
}

/// The items of one kind in a mailbox, in creation order.
#[derive(Debug)]
pub(crate) struct Items {
    kind: Kind,
    entries: Vec<Map<String, Value>>,
}

impl Items {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            entries: Vec::new(),
        }
    }

    /// Every item with every stored property (extended ones included).
    pub(crate) fn all(&self) -> Vec<Value> {
        self.entries.iter().cloned().map(Value::Object).collect()
    }

    /// Every item as Graph lists it.
    pub(crate) fn listed(&self) -> Vec<Value> {
        self.entries.iter().map(answer).collect()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Value> {
        self.entries.iter().find(|item| item_id(item) == Some(id)).map(answer)
    }

    /// Stores a checked item and answers it.
    pub(crate) fn create(&mut self, mut properties: Map<String, Value>) -> Value {
        let id = format!("{}{}AAA=", self.kind.id_prefix(), uuid::Uuid::new_v4().simple());
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if self.kind == Kind::Contact && !properties.contains_key("displayName") {
            properties.insert("displayName".to_owned(), json!(contact_display_name(&properties)));
        }
        properties.insert("id".to_owned(), json!(id));
        properties.insert("createdDateTime".to_owned(), json!(now));
        properties.insert("lastModifiedDateTime".to_owned(), json!(now));
        let answered = answer(&properties);
        self.entries.push(properties);
        answered
    }

    /// Applies checked properties to an item; `None` when there is no such item.
    pub(crate) fn update(&mut self, id: &str, properties: Map<String, Value>) -> Option<Value> {
        let item = self.entries.iter_mut().find(|item| item_id(item) == Some(id))?;
        for (name, value) in properties {
            if name == "singleValueExtendedProperties" {
                merge_extended(item, value);
            } else {
                item.insert(name, value);
            }
        }
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        item.insert("lastModifiedDateTime".to_owned(), json!(now));
        Some(answer(item))
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<()> {
        let index = self.entries.iter().position(|item| item_id(item) == Some(id))?;
        self.entries.remove(index);
        Some(())
    }
}

fn item_id(item: &Map<String, Value>) -> Option<&str> {
    item.get("id").and_then(Value::as_str)
}

fn contact_display_name(properties: &Map<String, Value>) -> String {
    let part = |name: &str| properties.get(name).and_then(Value::as_str).unwrap_or_default();
    format!("{} {}", part("givenName"), part("surname")).trim().to_owned()
}

/// Sets each extended property by id, keeping the others.
fn merge_extended(item: &mut Map<String, Value>, incoming: Value) {
    let Value::Array(incoming) = incoming else {
        return;
    };
    let mut merged = item
        .get("singleValueExtendedProperties")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for property in incoming {
        let id = property.get("id").cloned();
        match merged.iter_mut().find(|existing| existing.get("id") == id.as_ref()) {
            Some(existing) => *existing = property,
            None => merged.push(property),
        }
    }
    item.insert("singleValueExtendedProperties".to_owned(), Value::Array(merged));
}

/// An item as Graph answers it: extended properties only when expanded,
/// which the simulator does not support.
fn answer(item: &Map<String, Value>) -> Value {
    let mut answered = item.clone();
    answered.remove("singleValueExtendedProperties");
    Value::Object(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_needs_known_properties_a_start_and_an_end() {
        let good = json!({
            "subject": "Call",
            "body": {"contentType": "text", "content": "Agenda"},
            "start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2024-05-01T11:00:00.0000000", "timeZone": "UTC"},
            "singleValueExtendedProperties": [
                {"id": "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmId", "value": "00U1"}
            ],
        });
        let stored = check(Kind::Event, Some(&good), true).unwrap();
        assert_eq!(stored["start"]["dateTime"], "2024-05-01T10:00:00.0000000");

        let unknown = json!({"subjet": "typo"});
        let refused = check(Kind::Event, Some(&unknown), false).unwrap_err();
        assert_eq!(refused.code, "ErrorInvalidProperty");
        assert!(refused.message.contains("'subjet'"), "{}", refused.message);

        let no_end = json!({"start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "UTC"}});
        assert_eq!(
            check(Kind::Event, Some(&no_end), true).unwrap_err().code,
            "ErrorPropertyValidationFailure"
        );
        assert!(check(Kind::Event, Some(&no_end), false).is_ok());

        let zone = json!({"start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "Mars/Olympus"}});
        assert_eq!(
            check(Kind::Event, Some(&zone), false).unwrap_err().code,
            "TimeZoneNotSupportedException"
        );

        let bad_property = json!({"singleValueExtendedProperties": [{"id": "CrmId", "value": "x"}]});
        assert_eq!(
            check(Kind::Event, Some(&bad_property), false).unwrap_err().code,
            "ErrorInvalidProperty"
        );
    }

    #[test]
    fn an_update_merges_extended_properties_by_id() {
        let mut items = Items::new(Kind::Contact);
        let property = |value: &str| json!({"id": "String 0x1234", "value": value});
        let created = items.create(
            check(
                Kind::Contact,
                Some(&json!({"givenName": "Ada", "surname": "Lovelace", "singleValueExtendedProperties": [property("a")]})),
                true,
            )
            .unwrap(),
        );
        assert_eq!(created["displayName"], "Ada Lovelace");
        assert!(created.get("singleValueExtendedProperties").is_none());
        let id = created["id"].as_str().unwrap();
        let update = check(
            Kind::Contact,
            Some(&json!({"singleValueExtendedProperties": [property("b")]})),
            false,
        )
        .unwrap();
        items.update(id, update).unwrap();
        assert_eq!(items.all()[0]["singleValueExtendedProperties"], json!([property("b")]));
        assert_eq!(items.update("missing", Map::new()), None);
    }
}
