//! The Salesforce client against the simulator.

use std::{collections::HashSet, net::SocketAddr};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use syncfleet_connectors::{
    ConnectorError, ErrorKind,
    salesforce::{
        ApiUsage, PersonKind, SObject, SalesforceClient, SalesforceCredentials, SalesforceOptions, parse_datetime,
    },
    ssrf::UrlPolicy,
};
use syncfleet_simulators::salesforce::{Endpoint, Fault, SalesforceConfig};

use crate::support::{Salesforce, http, recording_sink};

const KEY: &str = "Syncfleet_Id__c";

fn task(key: &str, subject: Option<&str>) -> Map<String, Value> {
    let mut record = json!({KEY: key, "Status": "Completed", "TaskSubtype": "Email"});
    if let Some(subject) = subject {
        record["Subject"] = json!(subject);
    }
    let Value::Object(record) = record else { unreachable!() };
    record
}

fn tasks(count: usize) -> Vec<Map<String, Value>> {
    (0..count)
        .map(|index| task(&format!("message-{index}"), Some(&format!("Email {index}"))))
        .collect()
}

#[tokio::test]
async fn a_refresh_returns_the_rotated_refresh_token_which_the_client_then_uses() {
    let salesforce = Salesforce::start(SalesforceConfig {
        rotate_refresh_tokens: true,
        ..SalesforceConfig::default()
    })
    .await;
    let sink = recording_sink();
    let client = salesforce.client().with_token_sink(sink.clone());

    let grant = client.refresh().await.unwrap();
    let rotated = grant
        .refresh_token
        .expect("a rotated refresh token")
        .expose_secret()
        .to_owned();
    assert_ne!(rotated, salesforce.refresh_token);
    assert_eq!(grant.instance_url, salesforce.url());
    assert_eq!(sink.refresh_tokens.lock().unwrap().as_slice(), [Some(rotated.clone())]);

    // The old token is revoked by the rotation: refreshing again works only
    // because the client moved to the rotated one.
    let again = client.refresh().await.unwrap();
    assert!(again.refresh_token.is_some());
    assert_eq!(sink.refresh_tokens.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_revoked_refresh_token_is_an_authorization_error() {
    let salesforce = Salesforce::default().await;
    salesforce.simulator.revoke_refresh_token(&salesforce.refresh_token);
    let error = salesforce.client().limits().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    assert!(error.to_string().contains("invalid_grant"), "{error}");
}

#[tokio::test]
async fn limits_reports_the_daily_allocation_and_every_answer_updates_the_usage() {
    let salesforce = Salesforce::default().await;
    salesforce.simulator.set_daily_api_max(&salesforce.org, 500);
    let client = salesforce.client();
    assert_eq!(client.api_usage(), None);
    let limits = client.limits().await.unwrap();
    assert_eq!((limits.max, limits.remaining), (500, 499));
    assert_eq!(client.api_usage(), Some(ApiUsage { used: 1, max: 500 }));
    client.find_people(&["nobody@example.test".to_owned()]).await.unwrap();
    // One query for Contacts, one for Leads.
    assert_eq!(client.api_usage(), Some(ApiUsage { used: 3, max: 500 }));
}

#[tokio::test]
async fn people_are_found_across_batches_and_pages_with_contacts_before_leads() {
    let salesforce = Salesforce::start(SalesforceConfig {
        page_size: 3,
        ..SalesforceConfig::default()
    })
    .await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    let mut contacts = Vec::new();
    for index in 0..10 {
        let email = format!("contact{index}@example.test");
        contacts.push((email.clone(), simulator.insert_contact(org, &email).unwrap()));
    }
    let quoted = "o'neil@example.test";
    let quoted_id = simulator.insert_contact(org, quoted).unwrap();
    // A Lead with a Contact's address loses to the Contact.
    simulator.insert_lead(org, "contact3@example.test").unwrap();
    let lead_a = simulator.insert_lead(org, "lead.a@example.test").unwrap();
    let lead_b = simulator.insert_lead(org, "lead.b@example.test").unwrap();

    let mut wanted: Vec<String> = contacts.iter().map(|(email, _)| email.to_uppercase()).collect();
    wanted.extend(
        [
            quoted,
            "lead.a@example.test",
            "Lead.B@Example.test",
            "stranger@example.test",
        ]
        .map(str::to_owned),
    );
    wanted.push("contact0@example.test".to_owned());

    let client = salesforce.client_with(SalesforceOptions {
        lookup_batch_size: 4,
        ..SalesforceOptions::default()
    });
    let found = client.find_people(&wanted).await.unwrap();

    assert_eq!(found.len(), 13);
    for (email, id) in &contacts {
        assert_eq!(found[email].id, *id, "{email}");
        assert_eq!(found[email].kind, PersonKind::Contact);
    }
    assert_eq!(found[quoted].id, quoted_id);
    assert_eq!(found["lead.a@example.test"].id, lead_a);
    assert_eq!(found["lead.b@example.test"].id, lead_b);
    assert_eq!(found["lead.b@example.test"].kind, PersonKind::Lead);
    assert!(!found.contains_key("stranger@example.test"));

    let counters = simulator.counters(org);
    // 14 distinct addresses in batches of 4 for Contacts; the 3 left in one for Leads.
    assert_eq!(counters.calls_to(Endpoint::Query), 4 + 1);
    assert!(counters.calls_to(Endpoint::QueryMore) >= 1, "{counters:?}");
}

#[tokio::test]
async fn an_upsert_creates_then_a_replay_updates_and_creates_nothing_new() {
    let salesforce = Salesforce::default().await;
    let client = salesforce.client();

    let first = client.upsert(SObject::Task, KEY, tasks(250)).await.unwrap();
    assert_eq!(first.len(), 250);
    assert!(
        first
            .iter()
            .all(|outcome| outcome.as_ref().is_ok_and(|upserted| upserted.created))
    );
    let ids: HashSet<&str> = first
        .iter()
        .map(|outcome| outcome.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids.len(), 250);

    let replay = client.upsert(SObject::Task, KEY, tasks(250)).await.unwrap();
    for (before, after) in first.iter().zip(&replay) {
        let (before, after) = (before.as_ref().unwrap(), after.as_ref().unwrap());
        assert_eq!(after.id, before.id);
        assert!(!after.created);
    }
    assert_eq!(salesforce.simulator.records(&salesforce.org, "Task").len(), 250);
    // 200 records a call: two calls each time.
    let counters = salesforce.simulator.counters(&salesforce.org);
    assert_eq!(counters.calls_to(Endpoint::CompositeUpsert), 4);
}

#[tokio::test]
async fn events_are_upserted_by_their_external_id_too() {
    let salesforce = Salesforce::default().await;
    let contact = salesforce
        .simulator
        .insert_contact(&salesforce.org, "guest@example.test")
        .unwrap();
    let Value::Object(event) = json!({
        KEY: "event-1",
        "Subject": "Meeting",
        "StartDateTime": "2025-01-06T10:00:00Z",
        "EndDateTime": "2025-01-06T11:00:00Z",
        "WhoId": contact,
    }) else {
        unreachable!()
    };
    let outcome = salesforce
        .client()
        .upsert(SObject::Event, KEY, vec![event])
        .await
        .unwrap();
    assert!(outcome[0].as_ref().unwrap().created);
    let events = salesforce.simulator.records(&salesforce.org, "Event");
    assert_eq!(events[0]["WhoId"], json!(contact));
}

#[tokio::test]
async fn a_record_refused_by_validation_does_not_fail_the_others() {
    let salesforce = Salesforce::default().await;
    let records = vec![task("a", Some("first")), task("b", None), task("c", Some("third"))];
    let outcomes = salesforce.client().upsert(SObject::Task, KEY, records).await.unwrap();
    assert!(outcomes[0].is_ok());
    assert!(outcomes[2].is_ok());
    match &outcomes[1] {
        Err(ConnectorError::Validation { code, fields, .. }) => {
            assert_eq!(code, "REQUIRED_FIELD_MISSING");
            assert_eq!(fields, &["Subject"]);
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert_eq!(salesforce.simulator.records(&salesforce.org, "Task").len(), 2);
}

#[tokio::test]
async fn a_locked_row_is_lock_contention_for_each_record() {
    let salesforce = Salesforce::default().await;
    salesforce
        .simulator
        .inject_fault(&salesforce.org, Fault::UnableToLockRow, 1);
    let outcomes = salesforce.client().upsert(SObject::Task, KEY, tasks(3)).await.unwrap();
    for outcome in &outcomes {
        let error = outcome.as_ref().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::LockContention, "{error}");
        assert!(error.is_retryable());
    }
}

#[tokio::test]
async fn a_duplicate_value_on_the_external_id_counts_as_done_with_the_existing_id() {
    let salesforce = Salesforce::default().await;
    salesforce
        .simulator
        .inject_fault(&salesforce.org, Fault::DuplicateOnCreate, 1);
    let outcomes = salesforce.client().upsert(SObject::Task, KEY, tasks(2)).await.unwrap();
    let stored = salesforce.simulator.records(&salesforce.org, "Task");
    assert_eq!(stored.len(), 2);
    for (outcome, record) in outcomes.iter().zip(&stored) {
        let upserted = outcome.as_ref().unwrap();
        assert!(!upserted.created);
        assert_eq!(json!(upserted.id), record["Id"]);
    }
}

#[tokio::test]
async fn an_exhausted_daily_allocation_is_quota_exhausted_and_the_usage_is_read() {
    let salesforce = Salesforce::default().await;
    salesforce.simulator.set_daily_api_max(&salesforce.org, 100);
    let client = salesforce.client();
    client.limits().await.unwrap();
    salesforce.simulator.set_api_usage(&salesforce.org, 100);

    let error = client.upsert(SObject::Task, KEY, tasks(1)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::QuotaExhausted, "{error}");
    assert_eq!(client.api_usage(), Some(ApiUsage { used: 100, max: 100 }));
    assert_eq!(client.api_usage().unwrap().remaining(), 0);
    assert_eq!(salesforce.simulator.counters(&salesforce.org).throttled, 1);
}

#[tokio::test]
async fn the_concurrent_request_limit_is_throttling_not_quota() {
    let salesforce = Salesforce::default().await;
    salesforce
        .simulator
        .inject_fault(&salesforce.org, Fault::ConcurrentRequestLimit, 1);
    let error = salesforce.client().limits().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Throttled, "{error}");
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_and_retried() {
    let salesforce = Salesforce::default().await;
    let sink = recording_sink();
    let client = salesforce.client().with_token_sink(sink.clone());
    client.limits().await.unwrap();
    salesforce.simulator.expire_sessions(&salesforce.org);

    client.limits().await.unwrap();

    let counters = salesforce.simulator.counters(&salesforce.org);
    assert_eq!(counters.calls_to(Endpoint::Token), 2);
    // The first call and the retry; the refused call in between carried a
    // token no org owns any more.
    assert_eq!(counters.calls_to(Endpoint::Limits), 2);
    let refused = salesforce.simulator.unattributed_counters();
    assert_eq!(refused.calls_to(Endpoint::Limits), 1);
    assert_eq!(sink.refresh_tokens.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_kept_session_is_used_without_a_refresh_until_it_is_refused() {
    let salesforce = Salesforce::default().await;
    let first = salesforce.client().refresh().await.unwrap();
    let client = SalesforceClient::new(
        http(UrlPolicy::LOCAL_TESTS),
        salesforce.app(),
        SalesforceCredentials {
            refresh_token: SecretString::from(salesforce.refresh_token.clone()),
            session: Some((first.access_token, first.instance_url)),
        },
        SalesforceOptions::default(),
    )
    .unwrap();
    client.limits().await.unwrap();
    assert_eq!(
        salesforce.simulator.counters(&salesforce.org).calls_to(Endpoint::Token),
        1
    );
}

#[tokio::test]
async fn a_session_refused_again_after_its_refresh_is_an_authorization_error() {
    let salesforce = Salesforce::default().await;
    salesforce
        .simulator
        .inject_fault(&salesforce.org, Fault::InvalidSession, 2);
    let error = salesforce.client().limits().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authorization, "{error}");
    // The first refresh (no session yet) and the one retry: never a loop.
    let counters = salesforce.simulator.counters(&salesforce.org);
    assert_eq!(counters.calls_to(Endpoint::Token), 2);
    assert_eq!(counters.calls_to(Endpoint::Limits), 2);
}

#[tokio::test]
async fn an_unavailable_server_is_transient() {
    let salesforce = Salesforce::default().await;
    salesforce
        .simulator
        .inject_fault(&salesforce.org, Fault::ServiceUnavailable, 1);
    let client = salesforce.client();
    let error = client.limits().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    client.limits().await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // A port nobody listens on any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    let salesforce = Salesforce::default().await;
    let mut app = salesforce.app();
    app.login_url = format!("http://{address}").parse().unwrap();
    let client = SalesforceClient::new(
        http(UrlPolicy::LOCAL_TESTS),
        app,
        SalesforceCredentials {
            refresh_token: SecretString::from("unused"),
            session: None,
        },
        SalesforceOptions::default(),
    )
    .unwrap();
    let error = client.limits().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
}

/// A client acting as the user whose refresh token is `refresh_token`.
fn client_for(salesforce: &Salesforce, refresh_token: String) -> SalesforceClient {
    SalesforceClient::new(
        http(UrlPolicy::LOCAL_TESTS),
        salesforce.app(),
        SalesforceCredentials {
            refresh_token: SecretString::from(refresh_token),
            session: None,
        },
        SalesforceOptions::default(),
    )
    .unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// An Event of `owner` last modified at `modified` (RFC 3339).
fn event(subject: &str, owner: &str, modified: &str) -> Value {
    json!({
        "Subject": subject,
        "StartDateTime": "2020-01-12T09:00:00Z",
        "EndDateTime": "2020-01-12T10:00:00Z",
        "OwnerId": owner,
        "LastModifiedDate": modified,
    })
}

fn subjects(records: &[Map<String, Value>]) -> Vec<&str> {
    records
        .iter()
        .map(|record| record["Subject"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_refresh_names_the_user_and_the_org_from_the_identity_url() {
    let salesforce = Salesforce::default().await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    let client = salesforce.client();
    assert_eq!(client.user_id(), None, "no user is known before a refresh");

    let grant = client.refresh().await.unwrap();
    let default_user = simulator.default_user(org).unwrap();
    assert!(default_user.starts_with("005"), "{default_user}");
    assert_eq!(grant.user_id.as_deref(), Some(default_user.as_str()));
    assert_eq!(grant.org_id.as_deref(), Some(org.0.as_str()));
    assert_eq!(client.user_id(), Some(default_user.clone()));
    assert_eq!(client.org_id(), Some(org.0.clone()));

    // Another user of the same org is told apart by its own token.
    let colleague = simulator.create_user(org).unwrap();
    let token = simulator.issue_refresh_token_for(org, &colleague).unwrap();
    let other = client_for(&salesforce, token);
    assert_eq!(other.resolve_user_id().await.unwrap(), colleague);
    assert_ne!(colleague, default_user);
    // Known now: no second refresh.
    other.resolve_user_id().await.unwrap();
    assert_eq!(simulator.counters(org).calls_to(Endpoint::Token), 2);
}

#[tokio::test]
async fn records_created_through_the_api_belong_to_the_calling_user() {
    let salesforce = Salesforce::default().await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    let colleague = simulator.create_user(org).unwrap();
    let client = client_for(&salesforce, simulator.issue_refresh_token_for(org, &colleague).unwrap());
    client.upsert(SObject::Task, KEY, tasks(1)).await.unwrap();
    let stored = &simulator.records(org, "Task")[0];
    assert_eq!(stored["OwnerId"], json!(colleague));
    assert!(
        parse_datetime(stored["CreatedDate"].as_str().unwrap()).is_some(),
        "{stored:?}"
    );
}

#[tokio::test]
async fn owned_changed_events_are_read_across_pages_filtered_by_owner_and_date_oldest_first() {
    let salesforce = Salesforce::start(SalesforceConfig {
        page_size: 2,
        ..SalesforceConfig::default()
    })
    .await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    let owner = simulator.default_user(org).unwrap();
    let colleague = simulator.create_user(org).unwrap();
    for (subject, user, modified) in [
        ("before", &owner, "2020-01-10T11:59:59Z"),
        ("later", &owner, "2020-01-10T13:00:00Z"),
        ("someone else's", &colleague, "2020-01-10T13:00:00Z"),
        ("on the second", &owner, "2020-01-10T12:00:00Z"),
        ("between", &owner, "2020-01-10T12:30:00Z"),
    ] {
        simulator
            .insert_record(org, "Event", event(subject, user, modified))
            .unwrap();
    }
    let contact = simulator.insert_contact(org, "guest@example.test").unwrap();
    simulator
        .insert_record(
            org,
            "Event",
            json!({"Subject": "just now", "StartDateTime": "2020-01-12T09:00:00Z",
                   "EndDateTime": "2020-01-12T09:30:00Z", "WhoId": contact, "Location": "Room 1"}),
        )
        .unwrap();

    let client = salesforce.client();
    let since = at("2020-01-10T12:00:00.400Z");
    let events = client
        .changed_owned_records(
            SObject::Event,
            &owner,
            since,
            &[
                "Subject",
                "Location",
                "WhoId",
                "OwnerId",
                "StartDateTime",
                "IsAllDayEvent",
            ],
        )
        .await
        .unwrap();

    // `since` is rounded down to its second: the event of that second counts.
    assert_eq!(subjects(&events), ["on the second", "between", "later", "just now"]);
    for event in &events {
        assert_eq!(event["OwnerId"], json!(owner));
        assert!(event["Id"].as_str().unwrap().starts_with("00U"));
        let modified = parse_datetime(event["LastModifiedDate"].as_str().unwrap()).unwrap();
        assert!(modified >= at("2020-01-10T12:00:00Z"), "{modified}");
    }
    assert_eq!(events[3]["WhoId"], json!(contact));
    assert_eq!(events[3]["Location"], "Room 1");
    let counters = simulator.counters(org);
    assert_eq!(counters.calls_to(Endpoint::Query), 1);
    assert_eq!(counters.calls_to(Endpoint::QueryMore), 1, "four events, two a page");

    let contacts = client
        .changed_owned_records(SObject::Contact, &colleague, since, &["Email"])
        .await
        .unwrap();
    assert!(contacts.is_empty(), "{contacts:?}");
}

#[tokio::test]
async fn an_updated_record_comes_back_after_the_watermark() {
    let salesforce = Salesforce::default().await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    let owner = simulator.default_user(org).unwrap();
    let event_id = simulator
        .insert_record(org, "Event", event("Planning", &owner, "2020-01-10T12:00:00Z"))
        .unwrap();
    simulator
        .insert_record(
            org,
            "Contact",
            json!({"LastName": "Guest", "Email": "guest@example.test", KEY: "guest",
                   "LastModifiedDate": "2020-01-10T12:00:00Z"}),
        )
        .unwrap();
    let client = salesforce.client();
    let fields = ["Subject", "Description"];

    let first = client
        .changed_owned_records(SObject::Event, &owner, at("2020-01-01T00:00:00Z"), &fields)
        .await
        .unwrap();
    assert_eq!(subjects(&first), ["Planning"]);
    let watermark = parse_datetime(first[0]["LastModifiedDate"].as_str().unwrap()).unwrap();
    let is_new =
        |record: &Map<String, Value>| parse_datetime(record["LastModifiedDate"].as_str().unwrap()).unwrap() > watermark;
    let unchanged = client
        .changed_owned_records(SObject::Event, &owner, watermark, &fields)
        .await
        .unwrap();
    assert!(!unchanged.iter().any(is_new), "{unchanged:?}");

    simulator
        .update_record(org, "Event", &event_id, json!({"Description": "Moved to Friday"}))
        .unwrap();
    let changed = client
        .changed_owned_records(SObject::Event, &owner, watermark, &fields)
        .await
        .unwrap();
    let fresh: Vec<_> = changed.iter().filter(|record| is_new(record)).collect();
    assert_eq!(fresh.len(), 1, "{changed:?}");
    assert_eq!(fresh[0]["Id"], json!(event_id));
    assert_eq!(fresh[0]["Description"], "Moved to Friday");

    // An update through the API moves the stamp too.
    let Value::Object(update) = json!({KEY: "guest", "LastName": "Guest", "Title": "CTO"}) else {
        unreachable!()
    };
    let outcome = client.upsert(SObject::Contact, KEY, vec![update]).await.unwrap();
    assert!(!outcome[0].as_ref().unwrap().created);
    let contacts = client
        .changed_owned_records(
            SObject::Contact,
            &owner,
            watermark,
            &["FirstName", "LastName", "Email", "Phone", "Title"],
        )
        .await
        .unwrap();
    let fresh: Vec<_> = contacts.iter().filter(|record| is_new(record)).collect();
    assert_eq!(fresh.len(), 1, "{contacts:?}");
    assert_eq!(fresh[0]["Title"], "CTO");
    assert_eq!(fresh[0]["Email"], "guest@example.test");
}

fn email_query(object: &str, emails: &[&str]) -> String {
    let list: Vec<String> = emails.iter().map(|email| format!("'{email}'")).collect();
    format!("SELECT Id, Email FROM {object} WHERE Email IN ({})", list.join(", "))
}

fn ids(records: &[Map<String, Value>]) -> Vec<&str> {
    records.iter().map(|record| record["Id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn query_many_runs_two_queries_in_one_composite_call_with_the_direct_results() {
    let salesforce = Salesforce::start(SalesforceConfig {
        page_size: 2,
        ..SalesforceConfig::default()
    })
    .await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    let contacts = ["ann@example.test", "bob@example.test", "cid@example.test"];
    for email in contacts {
        simulator.insert_contact(org, email).unwrap();
    }
    simulator.insert_lead(org, "dee@example.test").unwrap();
    let client = salesforce.client();
    let direct_contacts = client
        .select_in("Contact", &["Id", "Email"], "Email", &contacts.map(str::to_owned))
        .await
        .unwrap();
    let direct_leads = client
        .select_in("Lead", &["Id", "Email"], "Email", &["dee@example.test".to_owned()])
        .await
        .unwrap();

    // Two queries whose first pages fit: exactly one call, one of the allocation.
    let used = simulator.api_usage(org).unwrap().used;
    let (calls, composites) = (client.calls(), simulator.counters(org).calls_to(Endpoint::Composite));
    let queries = [
        email_query("Contact", &contacts[..2]),
        email_query("Lead", &["dee@example.test"]),
    ];
    let results = client.query_many(&queries).await.unwrap();
    assert_eq!(client.calls(), calls + 1);
    assert_eq!(simulator.api_usage(org).unwrap().used, used + 1);
    let usage = simulator.api_usage(org).unwrap();
    assert_eq!(
        client.api_usage(),
        Some(ApiUsage {
            used: usage.used,
            max: usage.max
        }),
        "Sforce-Limit-Info of the composite"
    );
    assert_eq!(simulator.counters(org).calls_to(Endpoint::Composite), composites + 1);
    let [contacts_found, leads_found] = <[_; 2]>::try_from(results).unwrap();
    assert_eq!(ids(&contacts_found.unwrap()), ids(&direct_contacts[..2]));
    assert_eq!(emails(&direct_contacts), contacts);
    assert_eq!(ids(&leads_found.unwrap()), ids(&direct_leads));

    // A query with more than one page follows its nextRecordsUrl directly.
    let calls = client.calls();
    let results = client.query_many(&[email_query("Contact", &contacts)]).await.unwrap();
    assert_eq!(ids(results[0].as_ref().unwrap()), ids(&direct_contacts));
    assert_eq!(client.calls(), calls + 2, "the composite, then the second page");
}

fn emails(records: &[Map<String, Value>]) -> Vec<&str> {
    records.iter().map(|record| record["Email"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn query_many_answers_each_subrequest_error_in_the_taxonomy_and_sends_five_queries_per_call() {
    let salesforce = Salesforce::default().await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    simulator.insert_contact(org, "ann@example.test").unwrap();
    let client = salesforce.client();
    client.limits().await.unwrap();
    simulator.inject_fault_on(org, Endpoint::Query, Fault::UnableToLockRow, 1);
    let good = email_query("Contact", &["ann@example.test"]);
    let mut queries = vec![good.clone(), "SELECT Id FROM".to_owned(), good.clone()];
    queries.extend((0..4).map(|_| good.clone()));
    let used = simulator.api_usage(org).unwrap().used;
    let calls = client.calls();

    let results = client.query_many(&queries).await.unwrap();
    assert_eq!(results.len(), 7);
    // Seven queries: two composites of at most five.
    assert_eq!(client.calls(), calls + 2);
    assert_eq!(simulator.api_usage(org).unwrap().used, used + 2);
    let locked = results[0].as_ref().unwrap_err();
    assert_eq!(locked.kind(), ErrorKind::LockContention, "{locked}");
    let malformed = results[1].as_ref().unwrap_err();
    assert_eq!(malformed.kind(), ErrorKind::Permanent, "{malformed}");
    assert!(malformed.to_string().contains("MALFORMED_QUERY"), "{malformed}");
    for result in &results[2..] {
        assert_eq!(result.as_ref().unwrap().len(), 1);
    }
    assert_eq!(client.query_many(&[]).await.unwrap().len(), 0);
    assert_eq!(client.calls(), calls + 2, "no query, no call");
}

#[tokio::test]
async fn query_many_refreshes_an_expired_session_once_and_a_spent_allocation_fails_the_call() {
    let salesforce = Salesforce::default().await;
    let (simulator, org) = (&salesforce.simulator, &salesforce.org);
    simulator.insert_contact(org, "ann@example.test").unwrap();
    let client = salesforce.client();
    let query = [email_query("Contact", &["ann@example.test"])];
    client.query_many(&query).await.unwrap();
    simulator.expire_sessions(org);
    let tokens = simulator.counters(org).calls_to(Endpoint::Token);
    let results = client.query_many(&query).await.unwrap();
    assert_eq!(results[0].as_ref().unwrap().len(), 1);
    assert_eq!(simulator.counters(org).calls_to(Endpoint::Token), tokens + 1);

    let max = simulator.api_usage(org).unwrap().max;
    simulator.set_api_usage(org, max);
    let error = client.query_many(&query).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::QuotaExhausted, "{error}");
}
