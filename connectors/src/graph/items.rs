//! Events and contacts from the CRM as Graph bodies: plain-text body, UTC
//! times, the product's category, and the CRM record's id in a named
//! single-value extended property so the item can be recognised later.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::mailbox::{ContactDraft, EventDraft, PRODUCT_CATEGORY};

/// The named extended property (in the product's property set) that holds
/// the CRM record's id on an event or contact.
pub const CRM_ID_PROPERTY: &str = "String {8c2f6a1e-4b7d-4e39-a5c0-1d9e3f7b6a24} Name SyncfleetCrmId";

/// A UTC instant as Graph's `dateTimeTimeZone.dateTime` (no offset: the
/// time zone is given beside it).
fn graph_date_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn crm_id_property(crm_id: &str) -> Value {
    json!([{"id": CRM_ID_PROPERTY, "value": crm_id}])
}

/// The body of an event's create or update.
pub(crate) fn event_body(event: &EventDraft) -> Value {
    json!({
        "subject": event.subject,
        "body": {"contentType": "text", "content": event.body},
        "start": {"dateTime": graph_date_time(event.start), "timeZone": "UTC"},
        "end": {"dateTime": graph_date_time(event.end), "timeZone": "UTC"},
        "location": {"displayName": event.location},
        "categories": [PRODUCT_CATEGORY],
        "singleValueExtendedProperties": crm_id_property(&event.crm_id),
    })
}

/// The body of a contact's create or update. Every property is sent, so a
/// value cleared in the CRM is cleared in the mailbox too.
pub(crate) fn contact_body(contact: &ContactDraft) -> Value {
    let name = format!("{} {}", contact.first_name, contact.last_name)
        .trim()
        .to_owned();
    let phones: Vec<&str> = [contact.phone.as_str()]
        .into_iter()
        .filter(|phone| !phone.is_empty())
        .collect();
    json!({
        "givenName": contact.first_name,
        "surname": contact.last_name,
        "companyName": contact.company,
        "emailAddresses": [{"address": contact.email, "name": name}],
        "businessPhones": phones,
        "categories": [PRODUCT_CATEGORY],
        "singleValueExtendedProperties": crm_id_property(&contact.crm_id),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn an_event_is_written_in_utc_with_the_category_and_the_crm_id() {
        let body = event_body(&EventDraft {
            crm_id: "00U000000000001".to_owned(),
            subject: "Review".to_owned(),
            body: "Agenda".to_owned(),
            location: "Room 4".to_owned(),
            start: Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 5, 1, 11, 30, 0).unwrap(),
        });
        assert_eq!(
            body["start"],
            json!({"dateTime": "2024-05-01T10:00:00", "timeZone": "UTC"})
        );
        assert_eq!(body["categories"], json!([PRODUCT_CATEGORY]));
        assert_eq!(body["singleValueExtendedProperties"][0]["value"], "00U000000000001");
    }

    #[test]
    fn a_contact_without_a_phone_clears_it() {
        let body = contact_body(&ContactDraft {
            crm_id: "003000000000001".to_owned(),
            email: "ada@example.test".to_owned(),
            first_name: String::new(),
            last_name: "Lovelace".to_owned(),
            company: String::new(),
            phone: String::new(),
        });
        assert_eq!(body["businessPhones"], json!([]));
        assert_eq!(body["emailAddresses"][0]["name"], "Lovelace");
    }
}
