//! The Salesforce simulator over HTTP, as the connector sees it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncfleet_simulators::{
    BulkError,
    salesforce::{
        BulkOrg, Endpoint, Fault, LocalSalesforce, MAX_BULK_ORGS, OrgId, SalesforceConfig, SalesforceSimulator,
    },
};
use tokio_util::sync::CancellationToken;

use crate::support::{Served, header, send};

const API: &str = "/services/data/v62.0";

struct Harness {
    simulator: SalesforceSimulator,
    served: Served,
    org: OrgId,
    refresh_token: String,
}

impl Harness {
    async fn start(config: SalesforceConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalSalesforce {
            simulator,
            server,
            org,
            refresh_token,
        } = SalesforceSimulator::start_local(config, shutdown.clone())
            .await
            .unwrap();
        Self {
            simulator,
            served: Served::new(server, shutdown),
            org,
            refresh_token,
        }
    }

    fn url(&self, path: &str) -> String {
        self.served.url(path)
    }

    /// Calls the control API: the status and the JSON answer.
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.served
            .json(method, &format!("/_control/salesforce{path}"), body)
            .await
    }

    async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.served
            .post_form(
                "/services/oauth2/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                    ("client_id", "client"),
                ],
            )
            .await
    }

    async fn access_token(&self) -> String {
        let (status, body) = self.refresh(&self.refresh_token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let token = self.access_token().await;
        self.call_with(&token, method, path, body).await
    }

    async fn call_with(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let request = self.served.http.request(method, self.url(path)).bearer_auth(token);
        let (status, headers, body) = send(request, body).await;
        (status, header(&headers, "Sforce-Limit-Info"), body)
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

fn task(key: &str, subject: Option<&str>) -> Value {
    let mut record = json!({"attributes": {"type": "Task"}, "Key__c": key, "Status": "Completed"});
    if let Some(subject) = subject {
        record["Subject"] = json!(subject);
    }
    record
}

#[tokio::test]
async fn a_refresh_answers_an_access_token_and_the_instance_url_and_a_revoked_token_is_an_invalid_grant() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let (status, body) = harness.refresh(&harness.refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["instance_url"], harness.served.base_url());
    assert!(body.get("refresh_token").is_none(), "no rotation unless configured");

    harness.simulator.revoke_refresh_token(&harness.refresh_token);
    let (status, body) = harness.refresh(&harness.refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    harness.stop().await;
}

#[tokio::test]
async fn with_rotation_a_refresh_answers_a_new_refresh_token_and_revokes_the_old_one() {
    let harness = Harness::start(SalesforceConfig {
        rotate_refresh_tokens: true,
        ..SalesforceConfig::default()
    })
    .await;
    let (_, body) = harness.refresh(&harness.refresh_token).await;
    let rotated = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(harness.refresh(&harness.refresh_token).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(harness.refresh(&rotated).await.0, StatusCode::OK);
    assert_eq!(harness.simulator.counters(&harness.org).calls_to(Endpoint::Token), 2);
    harness.stop().await;
}

#[tokio::test]
async fn rotation_is_set_per_org_over_the_control_api_and_invalidates_the_previous_token_at_once() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let other = harness.simulator.create_org();
    let other_token = harness.simulator.issue_refresh_token(&other);
    let path = format!("/orgs/{}/refresh-token-rotation", harness.org);
    assert_eq!(
        harness.control(Method::GET, &path, None).await,
        (StatusCode::OK, json!({"rotate_refresh_tokens": false}))
    );
    let (status, body) = harness
        .control(Method::PUT, &path, Some(json!({"rotate_refresh_tokens": true})))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let mut current = harness.refresh_token.clone();
    for _ in 0..3 {
        let (status, body) = harness.refresh(&current).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rotated = body["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rotated, current);
        let (status, body) = harness.refresh(&current).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": "expired access/refresh token"})
            )
        );
        current = rotated;
    }
    // The other org keeps Salesforce's default: no rotation.
    let (status, body) = harness.refresh(&other_token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(harness.refresh(&other_token).await.0, StatusCode::OK);

    let (status, _) = harness
        .control(
            Method::PUT,
            "/orgs/00D000000000404/refresh-token-rotation",
            Some(json!({"rotate_refresh_tokens": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = harness
        .control(Method::PUT, &path, Some(json!({"rotate_refresh_tokens": "yes"})))
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(body.to_string().contains("rotate_refresh_tokens"), "{body}");
    harness.stop().await;
}

#[tokio::test]
async fn an_access_token_answers_invalid_session_id_once_the_session_timeout_passed() {
    let harness = Harness::start(SalesforceConfig {
        session_timeout: Duration::from_secs(1),
        ..SalesforceConfig::default()
    })
    .await;
    let token = harness.access_token().await;
    let limits = format!("{API}/limits");
    let (status, _, body) = harness.call_with(&token, Method::GET, &limits, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, _, body) = harness.call_with(&token, Method::GET, &limits, None).await;
        if status == StatusCode::UNAUTHORIZED {
            break body;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    harness.stop().await;
}

#[tokio::test]
async fn every_api_answer_carries_the_usage_and_past_the_allocation_calls_are_refused() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    harness.simulator.set_daily_api_max(&harness.org, 3);
    let token = harness.access_token().await;
    let (status, limit_info, body) = harness
        .call_with(&token, reqwest::Method::GET, &format!("{API}/limits"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(limit_info.as_deref(), Some("api-usage=1/3"));
    assert_eq!(body["DailyApiRequests"], json!({"Max": 3, "Remaining": 2}));

    let (status, limit_info, body) = harness
        .call_with(&token, reqwest::Method::GET, &format!("{API}/query?q=SELECT"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(limit_info.as_deref(), Some("api-usage=2/3"));
    assert_eq!(body[0]["errorCode"], "MALFORMED_QUERY");

    harness.simulator.set_api_usage(&harness.org, 3);
    let (status, limit_info, body) = harness
        .call_with(&token, reqwest::Method::GET, &format!("{API}/limits"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(limit_info.as_deref(), Some("api-usage=3/3"));
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(harness.simulator.counters(&harness.org).throttled, 1);
    harness.stop().await;
}

#[tokio::test]
async fn an_unknown_or_expired_session_is_answered_invalid_session_id() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let (status, _, body) = harness
        .call_with("nope", reqwest::Method::GET, &format!("{API}/limits"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");

    let token = harness.access_token().await;
    harness.simulator.expire_sessions(&harness.org);
    let (status, _, _) = harness
        .call_with(&token, reqwest::Method::GET, &format!("{API}/limits"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    harness.stop().await;
}

#[tokio::test]
async fn a_query_pages_through_next_records_urls_until_done() {
    let harness = Harness::start(SalesforceConfig {
        page_size: 2,
        ..SalesforceConfig::default()
    })
    .await;
    let emails: Vec<String> = (0..5).map(|index| format!("person{index}@example.test")).collect();
    for email in &emails {
        harness.simulator.insert_contact(&harness.org, email).unwrap();
    }
    harness.simulator.insert_lead(&harness.org, &emails[0]).unwrap();
    let list: Vec<String> = emails
        .iter()
        .map(|email| format!("'{}'", email.to_uppercase()))
        .collect();
    let query = format!("SELECT Id, Email FROM Contact WHERE Email IN ({})", list.join(","));

    let token = harness.access_token().await;
    let mut url = reqwest::Url::parse(&harness.url(&format!("{API}/query"))).unwrap();
    url.query_pairs_mut().append_pair("q", &query);
    let mut path = format!("{}?{}", url.path(), url.query().unwrap());
    let mut seen = Vec::new();
    loop {
        let (status, _, body) = harness.call_with(&token, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["totalSize"], 5);
        for record in body["records"].as_array().unwrap() {
            assert_eq!(record["attributes"]["type"], "Contact");
            seen.push(record["Email"].as_str().unwrap().to_owned());
        }
        if body["done"] == true {
            assert!(body.get("nextRecordsUrl").is_none());
            break;
        }
        path = body["nextRecordsUrl"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen, emails);
    let counters = harness.simulator.counters(&harness.org);
    assert_eq!(counters.calls_to(Endpoint::Query), 1);
    assert_eq!(counters.calls_to(Endpoint::QueryMore), 2);
    harness.stop().await;
}

#[tokio::test]
async fn an_upsert_creates_then_updates_and_reports_each_record_in_input_order() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let path = format!("{API}/composite/sobjects/Task/Key__c");
    let body =
        json!({"allOrNone": false, "records": [task("a", Some("first")), task("b", None), task("c", Some("third"))]});
    let (status, limit_info, answer) = harness.call(reqwest::Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(limit_info.is_some());
    assert_eq!(answer[0]["created"], true);
    assert_eq!(answer[1]["success"], false);
    assert_eq!(answer[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(answer[1]["errors"][0]["fields"], json!(["Subject"]));
    assert_eq!(answer[2]["created"], true);

    let replay = json!({"records": [task("a", Some("first, again")), task("c", Some("third"))]});
    let (_, _, again) = harness.call(reqwest::Method::PATCH, &path, Some(replay)).await;
    assert_eq!(again[0]["created"], false);
    assert_eq!(again[0]["id"], answer[0]["id"]);
    assert_eq!(again[1]["id"], answer[2]["id"]);
    let tasks = harness.simulator.records(&harness.org, "Task");
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["Subject"], "first, again");
    harness.stop().await;
}

#[tokio::test]
async fn a_create_with_all_or_none_writes_nothing_when_one_record_fails() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let path = format!("{API}/composite/sobjects");
    let body = json!({"allOrNone": true, "records": [task("a", Some("ok")), task("b", None)]});
    let (status, _, answer) = harness.call(reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(answer[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert!(harness.simulator.records(&harness.org, "Task").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn a_collection_of_more_than_200_records_is_refused_whole() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let records: Vec<Value> = (0..201).map(|index| task(&index.to_string(), Some("s"))).collect();
    let (status, _, answer) = harness
        .call(
            reqwest::Method::PATCH,
            &format!("{API}/composite/sobjects/Task/Key__c"),
            Some(json!({"records": records})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    assert!(harness.simulator.records(&harness.org, "Task").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn armed_faults_answer_the_next_calls_then_disarm() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let token = harness.access_token().await;
    harness
        .simulator
        .inject_fault_on(&harness.org, Endpoint::Limits, Fault::ServiceUnavailable, 2);
    harness.simulator.inject_fault(&harness.org, Fault::UnableToLockRow, 1);
    let limits = format!("{API}/limits");
    for _ in 0..2 {
        let (status, limit_info, body) = harness.call_with(&token, reqwest::Method::GET, &limits, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(limit_info.is_some());
        assert_eq!(body[0]["errorCode"], "SERVER_UNAVAILABLE");
    }
    let path = format!("{API}/composite/sobjects/Task/Key__c");
    let (status, _, answer) = harness
        .call_with(
            &token,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"records": [task("a", Some("s"))]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer[0]["errors"][0]["statusCode"], "UNABLE_TO_LOCK_ROW");
    let (status, _, _) = harness.call_with(&token, reqwest::Method::GET, &limits, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(harness.simulator.counters(&harness.org).faults, 3);
    harness.stop().await;
}

#[tokio::test]
async fn a_latency_setting_delays_every_answer() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let token = harness.access_token().await;
    harness.simulator.set_latency(Duration::from_millis(50), Duration::ZERO);
    let started = Instant::now();
    let (status, _, _) = harness
        .call_with(&token, reqwest::Method::GET, &format!("{API}/limits"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(50));
    harness.stop().await;
}

#[tokio::test]
async fn the_control_api_seeds_orgs_and_records_arms_faults_and_reads_counters() {
    let harness = Harness::start(SalesforceConfig::default()).await;

    let (_, created) = harness
        .control(Method::POST, "/orgs", Some(json!({"daily_api_max": 50})))
        .await;
    let org = created["org_id"].as_str().unwrap();
    let refresh_token = created["refresh_token"].as_str().unwrap();
    let (status, _) = harness
        .control(
            Method::POST,
            &format!("/orgs/{org}/records/Contact"),
            Some(json!({"Email": "someone@example.test", "LastName": "One"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (refused, _) = harness
        .control(
            Method::POST,
            &format!("/orgs/{org}/records/Lead"),
            Some(json!({"Email": "someone@example.test"})),
        )
        .await;
    assert_eq!(refused, StatusCode::BAD_REQUEST);
    let (status, _) = harness
        .control(
            Method::POST,
            &format!("/orgs/{org}/faults"),
            Some(json!({"fault": "service_unavailable", "endpoint": "limits", "times": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (_, token) = harness.refresh(refresh_token).await;
    let token = token["access_token"].as_str().unwrap();
    let (status, _, _) = harness
        .call_with(token, reqwest::Method::GET, &format!("{API}/limits"), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let (_, counters) = harness
        .control(Method::GET, &format!("/orgs/{org}/counters"), None)
        .await;
    assert_eq!(counters["calls"], json!({"token": 1, "limits": 1}));
    assert_eq!(counters["faults"], 1);
    assert_eq!(counters["api_usage"], json!({"used": 1, "max": 50}));
    let (_, records) = harness
        .control(Method::GET, &format!("/orgs/{org}/records/Contact"), None)
        .await;
    assert_eq!(records[0]["Email"], "someone@example.test");
    let (unknown, _) = harness.control(Method::GET, "/orgs/00Dnope/counters", None).await;
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    harness.stop().await;
}

/// The path of `GET /query` for `soql`.
fn query_path(harness: &Harness, soql: &str) -> String {
    let mut url = reqwest::Url::parse(&harness.url(&format!("{API}/query"))).unwrap();
    url.query_pairs_mut().append_pair("q", soql);
    format!("{}?{}", url.path(), url.query().unwrap())
}

/// Whether `value` reads as Salesforce writes a dateTime: `2026-11-22T10:00:00.000+0000`.
fn is_salesforce_datetime(value: &Value) -> bool {
    let Some(text) = value.as_str() else { return false };
    chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.3f%z").is_ok()
        && text.ends_with("+0000")
        && text.len() == 28
}

fn event(subject: &str, owner: &str, modified: &str) -> Value {
    json!({
        "Subject": subject,
        "StartDateTime": "2020-01-12T09:00:00Z",
        "EndDateTime": "2020-01-12T10:00:00Z",
        "OwnerId": owner,
        "LastModifiedDate": modified,
    })
}

#[tokio::test]
async fn a_refresh_answers_the_identity_url_of_the_token_s_user() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let base = harness.served.base_url();
    let default_user = harness.simulator.default_user(&harness.org).unwrap();
    let (_, body) = harness.refresh(&harness.refresh_token).await;
    assert_eq!(body["id"], format!("{base}/id/{}/{default_user}", harness.org));

    let colleague = harness.simulator.create_user(&harness.org).unwrap();
    assert_eq!(harness.simulator.users(&harness.org), [default_user, colleague.clone()]);
    let token = harness
        .simulator
        .issue_refresh_token_for(&harness.org, &colleague)
        .unwrap();
    let (status, body) = harness.refresh(&token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], format!("{base}/id/{}/{colleague}", harness.org));
    assert!(
        harness
            .simulator
            .issue_refresh_token_for(&harness.org, "005999999999999")
            .is_err()
    );
    harness.stop().await;
}

#[tokio::test]
async fn writes_through_the_api_stamp_the_owner_and_dates_and_may_not_set_system_fields() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let colleague = harness.simulator.create_user(&harness.org).unwrap();
    let token = harness
        .simulator
        .issue_refresh_token_for(&harness.org, &colleague)
        .unwrap();
    let (_, token) = harness.refresh(&token).await;
    let token = token["access_token"].as_str().unwrap();
    let path = format!("{API}/composite/sobjects/Task/Key__c");
    let (status, _, answer) = harness
        .call_with(
            token,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"records": [task("a", Some("first"))]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let created = harness.simulator.records(&harness.org, "Task")[0].clone();
    assert_eq!(created["OwnerId"], json!(colleague));
    for field in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
        assert!(is_salesforce_datetime(&created[field]), "{field}: {}", created[field]);
    }

    let mut stamped = task("a", Some("second"));
    stamped["LastModifiedDate"] = json!("2020-01-01T00:00:00.000+0000");
    let (status, _, answer) = harness
        .call_with(
            token,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"records": [stamped]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
    harness.stop().await;
}

#[tokio::test]
async fn the_changes_of_one_owner_are_queried_in_order_with_a_limit_across_pages() {
    let harness = Harness::start(SalesforceConfig {
        page_size: 2,
        ..SalesforceConfig::default()
    })
    .await;
    let (simulator, org) = (&harness.simulator, &harness.org);
    let owner = simulator.default_user(org).unwrap();
    let colleague = simulator.create_user(org).unwrap();
    for (subject, user, modified) in [
        ("a", &owner, "2020-01-10T12:00:00Z"),
        ("b", &owner, "2020-01-10T14:00:00Z"),
        ("c", &colleague, "2020-01-10T15:00:00Z"),
        ("d", &owner, "2020-01-10T13:00:00Z"),
        ("e", &owner, "2020-01-10T15:00:00Z"),
        ("f", &owner, "2020-01-10T11:00:00Z"),
    ] {
        simulator
            .insert_record(org, "Event", event(subject, user, modified))
            .unwrap();
    }
    let token = harness.access_token().await;
    let read_all = async |soql: &str| {
        let mut path = query_path(&harness, soql);
        let mut seen = Vec::new();
        loop {
            let (status, _, body) = harness.call_with(&token, reqwest::Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            for record in body["records"].as_array().unwrap() {
                assert_eq!(record["attributes"]["type"], "Event");
                assert!(is_salesforce_datetime(&record["LastModifiedDate"]), "{record}");
                seen.push(record["Subject"].as_str().unwrap().to_owned());
            }
            if body["done"] == true {
                return (seen, body["totalSize"].clone());
            }
            path = body["nextRecordsUrl"].as_str().unwrap().to_owned();
        }
    };

    let (seen, total) = read_all(&format!(
        "SELECT Id, Subject, LastModifiedDate FROM Event WHERE OwnerId = '{owner}' \
         AND LastModifiedDate > 2020-01-10T12:00:00Z ORDER BY LastModifiedDate ASC"
    ))
    .await;
    assert_eq!(seen, ["d", "b", "e"]);
    assert_eq!(total, 3);
    let (seen, _) = read_all(&format!(
        "SELECT Id, Subject, LastModifiedDate FROM Event WHERE LastModifiedDate >= 2020-01-10T13:00:00+01:00 \
         AND OwnerId = '{owner}' ORDER BY LastModifiedDate DESC LIMIT 3"
    ))
    .await;
    assert_eq!(seen, ["e", "b", "d"]);
    let counters = simulator.counters(org);
    assert_eq!(counters.calls_to(Endpoint::Query), 2);
    assert_eq!(counters.calls_to(Endpoint::QueryMore), 2);

    for (soql, code) in [
        (
            format!("SELECT Id FROM Event WHERE OwnerId = '{owner}' AND LastModifiedDate > '2020-01-10T12:00:00Z'"),
            "INVALID_FIELD",
        ),
        (
            format!("SELECT Id FROM Event WHERE OwnerId = '{owner}'"),
            "MALFORMED_QUERY",
        ),
        (
            format!("SELECT Id FROM Event WHERE OwnerId = '{owner}' AND Subject > 2020-01-10T12:00:00Z"),
            "MALFORMED_QUERY",
        ),
    ] {
        let (status, _, body) = harness
            .call_with(&token, reqwest::Method::GET, &query_path(&harness, &soql), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{soql}");
        assert_eq!(body[0]["errorCode"], code, "{soql}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn the_control_api_adds_users_and_updates_records() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let org = &harness.org;

    let (_, created) = harness.control(Method::POST, &format!("/orgs/{org}/users"), None).await;
    let user = created["user_id"].as_str().unwrap();
    let (status, token) = harness.refresh(created["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(token["id"].as_str().unwrap().ends_with(&format!("/{user}")));
    let (_, users) = harness.control(Method::GET, &format!("/orgs/{org}/users"), None).await;
    assert_eq!(users.as_array().unwrap().len(), 2);
    let (status, _) = harness
        .control(Method::POST, &format!("/orgs/{org}/users/{user}/refresh-tokens"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let id = harness
        .simulator
        .insert_record(org, "Event", event("Review", user, "2020-01-10T12:00:00Z"))
        .unwrap();
    let (status, _) = harness
        .control(
            Method::PATCH,
            &format!("/orgs/{org}/records/Event/{id}"),
            Some(json!({"Location": "Room 2"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stored = harness.simulator.records(org, "Event")[0].clone();
    assert_eq!(stored["Location"], "Room 2");
    assert_eq!(stored["CreatedDate"], "2020-01-10T12:00:00.000+0000");
    assert!(stored["LastModifiedDate"].as_str().unwrap() > "2021");
    assert_eq!(stored["SystemModstamp"], stored["LastModifiedDate"]);

    let (missing, _) = harness
        .control(
            Method::PATCH,
            &format!("/orgs/{org}/records/Event/00U999999999999"),
            Some(json!({"Location": "Room 3"})),
        )
        .await;
    assert_eq!(missing, StatusCode::NOT_FOUND);
    let (refused, _) = harness
        .control(
            Method::PATCH,
            &format!("/orgs/{org}/records/Event/{id}"),
            Some(json!({"Subject": ""})),
        )
        .await;
    assert_eq!(refused, StatusCode::BAD_REQUEST);
    harness.stop().await;
}

fn contacts(org: usize, count: usize) -> Vec<Value> {
    (0..count)
        .map(|index| json!({"Email": format!("c{index}@org{org}.test"), "LastName": format!("Contact {index}")}))
        .collect()
}

#[tokio::test]
async fn orgs_created_in_bulk_answer_in_order_and_refresh_and_find_their_contacts() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let orgs: Vec<Value> = (0..2)
        .map(|org| json!({"records": {"Contact": contacts(org, 3)}, "refresh_tokens": 2}))
        .collect();
    let (status, body) = harness
        .control(Method::POST, "/orgs/bulk", Some(json!({"orgs": orgs})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created = body["orgs"].as_array().unwrap();
    assert_eq!(created.len(), 2);
    let base = harness.served.base_url();
    for (index, org) in created.iter().enumerate() {
        let (org_id, owner) = (org["org_id"].as_str().unwrap(), org["owner_id"].as_str().unwrap());
        assert_eq!(harness.simulator.users(&OrgId(org_id.to_owned())), [owner]);
        let tokens = org["refresh_tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 2);
        let (status, refreshed) = harness.refresh(tokens[1].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{refreshed}");
        assert_eq!(refreshed["id"], format!("{base}/id/{org_id}/{owner}"));

        let token = refreshed["access_token"].as_str().unwrap();
        let soql = format!(
            "SELECT Id, Email, OwnerId FROM Contact WHERE Email IN ('c0@org{index}.test','C2@ORG{index}.TEST','c0@org9.test')"
        );
        let (status, _, page) = harness
            .call_with(token, Method::GET, &query_path(&harness, &soql), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["totalSize"], 2);
        assert_eq!(page["records"][1]["Email"], format!("c2@org{index}.test"));
        assert_eq!(page["records"][0]["OwnerId"], owner);
    }
    // Without refresh_tokens, one; without access_tokens, none.
    let (status, body) = harness
        .control(Method::POST, "/orgs/bulk", Some(json!({"orgs": [{}]})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["orgs"][0]["refresh_tokens"].as_array().unwrap().len(), 1);
    assert!(body["orgs"][0].get("access_tokens").is_none(), "{body}");

    // Sessions issued with the org call it at once, as the owner.
    let orgs = json!({"orgs": [{"records": {"Contact": contacts(7, 1)}, "access_tokens": 2}]});
    let (status, body) = harness.control(Method::POST, "/orgs/bulk", Some(orgs)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sessions = body["orgs"][0]["access_tokens"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let soql = "SELECT Id, OwnerId FROM Contact WHERE Email IN ('c0@org7.test')";
    let (status, _, page) = harness
        .call_with(
            sessions[1].as_str().unwrap(),
            Method::GET,
            &query_path(&harness, soql),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["records"][0]["OwnerId"], body["orgs"][0]["owner_id"]);
    let over = json!({"orgs": [{"access_tokens": 1001}]});
    let (status, body) = harness.control(Method::POST, "/orgs/bulk", Some(over)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "orgs[0].access_tokens: at most 1000 per org, got 1001");
    harness.stop().await;
}

#[tokio::test]
async fn a_bulk_org_batch_with_a_bad_entry_names_it_and_creates_nothing() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let before = harness.simulator.orgs();
    let valid = json!({"records": {"Contact": contacts(0, 2)}, "refresh_tokens": 1});
    let with_contact = |contact: Value| json!({"records": {"Contact": [contacts(1, 1)[0].clone(), contact]}});
    let cases = [
        (
            with_contact(json!({"Email": "no-name@example.test"})),
            "orgs[1].records.Contact[1]: the record is refused: REQUIRED_FIELD_MISSING",
        ),
        (with_contact(json!({"LastName": "Dup", "Key__c": "k"})), ""),
        (
            with_contact(json!({"LastName": "X", "Bogus": 1})),
            "orgs[1].records.Contact[1]: the record is refused: INVALID_FIELD: No such column 'Bogus'",
        ),
        (
            with_contact(json!({"LastName": "X", "OwnerId": "005999999999999"})),
            "orgs[1].records.Contact[1]: the record is refused: INVALID_CROSS_REFERENCE_KEY",
        ),
        (
            with_contact(json!("not an object")),
            "orgs[1].records.Contact[1]: the record is refused: fields must be a JSON object",
        ),
        (
            json!({"records": {"Widget": [{"Name": "w"}]}}),
            "orgs[1].records.Widget: unknown sObject type Widget",
        ),
        (
            json!({"refresh_tokens": 1001}),
            "orgs[1].refresh_tokens: at most 1000 per org, got 1001",
        ),
        (json!({"refresh_tokens": -1}), "orgs[1].refresh_tokens"),
    ];
    for (bad, expected) in cases {
        // A custom field is unique in the org: the second record with the
        // same value fails only once the first is written.
        let (bad, expected) = if expected.is_empty() {
            let record = json!({"LastName": "Dup", "Key__c": "K"});
            (
                json!({"records": {"Contact": [record.clone(), bad["records"]["Contact"][1].clone()]}}),
                "orgs[1].records.Contact[1]: the record is refused: DUPLICATE_VALUE",
            )
        } else {
            (bad, expected)
        };
        let (status, body) = harness
            .control(Method::POST, "/orgs/bulk", Some(json!({"orgs": [valid.clone(), bad]})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(expected), "{error} lacks {expected}");
        assert_eq!(harness.simulator.orgs(), before, "{expected}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_bulk_org_batch_over_the_cap_is_refused() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let before = harness.simulator.orgs();
    let over = vec![
        BulkOrg {
            records: Default::default(),
            refresh_tokens: 1,
            access_tokens: 0
        };
        MAX_BULK_ORGS + 1
    ];
    let error = harness.simulator.create_orgs(&over).unwrap_err();
    assert_eq!(
        error,
        BulkError::TooMany {
            what: "orgs",
            max: MAX_BULK_ORGS,
            given: MAX_BULK_ORGS + 1
        }
    );
    let over = json!({"orgs": vec![json!({}); MAX_BULK_ORGS + 1]});
    let (status, body) = harness.control(Method::POST, "/orgs/bulk", Some(over)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "orgs: at most 10000 per call, got 10001");
    assert_eq!(harness.simulator.orgs(), before);
    harness.stop().await;
}

#[tokio::test]
async fn the_latency_control_route_sets_a_base_and_a_jitter() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let token = harness.access_token().await;
    let (status, _) = harness
        .control(
            Method::PUT,
            "/latency",
            Some(json!({"milliseconds": 30, "jitter_milliseconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut waits = Vec::new();
    for _ in 0..12 {
        let started = Instant::now();
        let (status, _, _) = harness
            .call_with(&token, reqwest::Method::GET, &format!("{API}/limits"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        waits.push(started.elapsed());
    }
    let (shortest, longest) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    assert!(*shortest >= Duration::from_millis(30), "{waits:?}");
    // Twelve uniform draws over 60 ms all within 5 ms of each other: never.
    assert!(*longest - *shortest > Duration::from_millis(5), "{waits:?}");
    harness.stop().await;
}

fn subrequest(reference_id: &str, method: &str, url: &str, body: Option<Value>) -> Value {
    let mut subrequest = json!({"method": method, "url": url, "referenceId": reference_id});
    if let Some(body) = body {
        subrequest["body"] = body;
    }
    subrequest
}

const CONTACTS: &str = "SELECT Id, Email FROM Contact WHERE Email IN ('ann@example.test', 'bob@example.test')";
const LEADS: &str = "SELECT Id, Email FROM Lead WHERE Email IN ('ann@example.test', 'cat@example.test')";

#[tokio::test]
async fn a_composite_of_queries_counts_as_one_call_and_answers_each_as_the_direct_route() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let (simulator, org) = (&harness.simulator, &harness.org);
    for email in ["ann@example.test", "bob@example.test"] {
        simulator.insert_contact(org, email).unwrap();
    }
    simulator.insert_lead(org, "cat@example.test").unwrap();
    let token = harness.access_token().await;
    let mut direct = Vec::new();
    for soql in [CONTACTS, LEADS] {
        let (status, _, body) = harness
            .call_with(&token, Method::GET, &query_path(&harness, soql), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        direct.push(body);
    }
    let used_before = simulator.api_usage(org).unwrap().used;
    let before = simulator.counters(org);

    let composite = json!({"allOrNone": false, "compositeRequest": [
        subrequest("contacts", "GET", &query_path(&harness, CONTACTS), None),
        subrequest("leads", "GET", &query_path(&harness, LEADS), None),
    ]});
    let (status, limit_info, body) = harness
        .call_with(&token, Method::POST, &format!("{API}/composite"), Some(composite))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let usage = simulator.api_usage(org).unwrap();
    assert_eq!(usage.used, used_before + 1, "the composite is one call");
    assert_eq!(limit_info, Some(usage.header_value()));
    let entries = body["compositeResponse"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (entry, (reference, direct)) in entries.iter().zip([("contacts", &direct[0]), ("leads", &direct[1])]) {
        assert_eq!(entry["referenceId"], reference);
        assert_eq!(entry["httpStatusCode"], 200);
        assert_eq!(entry["httpHeaders"], json!({}));
        assert_eq!(&entry["body"], direct);
    }
    assert_eq!(direct[0]["totalSize"], 2);
    assert_eq!(direct[1]["totalSize"], 1);
    let after = simulator.counters(org);
    assert_eq!(
        after.calls_to(Endpoint::Composite),
        before.calls_to(Endpoint::Composite) + 1
    );
    assert_eq!(after.calls_to(Endpoint::Query), before.calls_to(Endpoint::Query) + 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_composite_over_its_limits_or_malformed_is_refused_whole_and_runs_nothing() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let token = harness.access_token().await;
    let limits = format!("{API}/limits");
    let post = |composite: Value| {
        let token = token.clone();
        let harness = &harness;
        async move {
            harness
                .call_with(&token, Method::POST, &format!("{API}/composite"), Some(composite))
                .await
        }
    };
    let many: Vec<Value> = (0..26)
        .map(|index| subrequest(&format!("r{index}"), "GET", &limits, None))
        .collect();
    let (status, limit_info, body) = post(json!({"compositeRequest": many})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(limit_info.is_some());
    let entry = &body["compositeResponse"][0];
    assert_eq!(entry["body"][0]["errorCode"], "LIMIT_EXCEEDED");
    assert!(entry["body"][0]["message"].as_str().unwrap().contains("25"), "{body}");
    assert_eq!(
        (entry["httpStatusCode"].clone(), entry["referenceId"].clone()),
        (json!(400), Value::Null)
    );

    let queries: Vec<Value> = (0..6)
        .map(|index| subrequest(&format!("q{index}"), "GET", &query_path(&harness, CONTACTS), None))
        .collect();
    let (status, _, body) = post(json!({"compositeRequest": queries})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["compositeResponse"][0]["body"][0]["errorCode"], "LIMIT_EXCEEDED");

    let (status, _, body) = post(json!({"compositeRequest": [{"method": "GET", "url": limits}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body[0]["errorCode"], "JSON_PARSER_ERROR");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("compositeRequest[0].referenceId"),
        "{body}"
    );

    let counters = harness.simulator.counters(&harness.org);
    assert_eq!(counters.calls_to(Endpoint::Composite), 3);
    assert_eq!(counters.calls_to(Endpoint::Limits), 0, "no subrequest ran");
    assert_eq!(counters.calls_to(Endpoint::Query), 0, "no subrequest ran");
    harness.stop().await;
}

#[tokio::test]
async fn all_or_none_rolls_back_the_composite_and_halts_the_other_subrequests() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let token = harness.access_token().await;
    let create = subrequest(
        "tasks",
        "POST",
        &format!("{API}/composite/sobjects"),
        Some(json!({"records": [task("one", Some("One")), task("two", Some("Two"))]})),
    );
    let bad = subrequest("bad", "GET", &query_path(&harness, "SELECT Id FROM"), None);
    let limits = subrequest("limits", "GET", &format!("{API}/limits"), None);
    let composite = |all_or_none: bool| json!({"allOrNone": all_or_none, "compositeRequest": [create.clone(), bad.clone(), limits.clone()]});

    let (status, _, body) = harness
        .call_with(&token, Method::POST, &format!("{API}/composite"), Some(composite(true)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["compositeResponse"].as_array().unwrap();
    let codes: Vec<(&Value, &Value)> = entries
        .iter()
        .map(|entry| (&entry["httpStatusCode"], &entry["body"][0]["errorCode"]))
        .collect();
    assert_eq!(
        codes,
        [
            (&json!(400), &json!("PROCESSING_HALTED")),
            (&json!(400), &json!("MALFORMED_QUERY")),
            (&json!(400), &json!("PROCESSING_HALTED")),
        ]
    );
    assert!(
        harness.simulator.records(&harness.org, "Task").is_empty(),
        "rolled back"
    );
    assert_eq!(
        harness.simulator.counters(&harness.org).calls_to(Endpoint::Limits),
        0,
        "the subrequest after the failure did not run"
    );

    let (status, _, body) = harness
        .call_with(
            &token,
            Method::POST,
            &format!("{API}/composite"),
            Some(composite(false)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["compositeResponse"].as_array().unwrap();
    assert_eq!(entries[0]["httpStatusCode"], 200);
    assert_eq!(entries[0]["body"][1]["success"], true);
    assert_eq!(entries[1]["body"][0]["errorCode"], "MALFORMED_QUERY");
    assert_eq!(entries[2]["httpStatusCode"], 200);
    assert!(entries[2]["body"]["DailyApiRequests"]["Max"].is_number());
    assert_eq!(harness.simulator.records(&harness.org, "Task").len(), 2);

    // A record that fails inside a collection halts an all-or-none composite too.
    let failing = subrequest(
        "tasks",
        "POST",
        &format!("{API}/composite/sobjects"),
        Some(json!({"records": [task("three", Some("Three")), task("four", None)]})),
    );
    let (_, _, body) = harness
        .call_with(
            &token,
            Method::POST,
            &format!("{API}/composite"),
            Some(json!({"allOrNone": true, "compositeRequest": [limits.clone(), failing]})),
        )
        .await;
    let entries = body["compositeResponse"].as_array().unwrap();
    assert_eq!(entries[0]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert_eq!(
        entries[1]["body"][1]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(harness.simulator.records(&harness.org, "Task").len(), 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_fault_armed_on_an_endpoint_answers_in_that_subrequest_only() {
    let harness = Harness::start(SalesforceConfig::default()).await;
    let token = harness.access_token().await;
    harness
        .simulator
        .inject_fault_on(&harness.org, Endpoint::Query, Fault::ServiceUnavailable, 1);
    let composite = json!({"compositeRequest": [
        subrequest("first", "GET", &query_path(&harness, CONTACTS), None),
        subrequest("second", "GET", &query_path(&harness, CONTACTS), None),
        subrequest("unknown", "GET", &format!("{API}/sobjects/Account"), None),
        subrequest("wrong", "POST", &format!("{API}/limits"), Some(json!({}))),
    ]});
    let (status, _, body) = harness
        .call_with(&token, Method::POST, &format!("{API}/composite"), Some(composite))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["compositeResponse"].as_array().unwrap();
    assert_eq!(entries[0]["httpStatusCode"], 503);
    assert_eq!(entries[0]["body"][0]["errorCode"], "SERVER_UNAVAILABLE");
    assert_eq!(entries[1]["httpStatusCode"], 200);
    assert_eq!(entries[1]["body"]["totalSize"], 0);
    assert_eq!(entries[2]["httpStatusCode"], 404);
    assert_eq!(entries[3]["httpStatusCode"], 405);
    assert_eq!(harness.simulator.counters(&harness.org).faults, 1);
    harness.stop().await;
}
