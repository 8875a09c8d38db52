//! The Gmail simulator over HTTP, as the connector sees it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncfleet_simulators::gmail::{Endpoint, Fault, GmailConfig, GmailSimulator, LocalGmail, MessageSeed};
use tokio_util::sync::CancellationToken;

use crate::support::{Served, header, send};

struct Harness {
    simulator: GmailSimulator,
    served: Served,
    email: String,
    refresh_token: String,
}

impl Harness {
    async fn start(config: GmailConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalGmail {
            simulator,
            server,
            email,
            refresh_token,
        } = GmailSimulator::start_local(config, shutdown.clone()).await.unwrap();
        Self {
            simulator,
            served: Served::new(server, shutdown),
            email,
            refresh_token,
        }
    }

    async fn default() -> Self {
        Self::start(GmailConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        self.served.url(path)
    }

    /// Calls the control API: the status and the JSON answer.
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.served.json(method, &format!("/_control/gmail{path}"), body).await
    }

    async fn refresh_with(&self, refresh_token: &str, client_id: &str) -> (StatusCode, Value) {
        self.served
            .post_form(
                "/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                    ("client_id", client_id),
                    ("client_secret", "secret"),
                ],
            )
            .await
    }

    async fn token_for(&self, refresh_token: &str, client_id: &str) -> String {
        let (status, body) = self.refresh_with(refresh_token, client_id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn token(&self) -> String {
        self.token_for(&self.refresh_token, "client").await
    }

    /// A call with `token`: the status, `Retry-After` and JSON body (null when empty).
    async fn call_with(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let request = self.served.http.request(method, self.url(path)).bearer_auth(token);
        let (status, headers, body) = send(request, body).await;
        (status, header(&headers, "retry-after"), body)
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call_with(token, Method::GET, path, None).await;
        (status, body)
    }

    fn add(&self, subject: &str, sent_at: DateTime<Utc>) -> String {
        self.simulator
            .add_message(
                &self.email,
                MessageSeed {
                    from: "Ann <ann@example.test>".to_owned(),
                    to: vec!["owner@gmail.simulated".to_owned()],
                    cc: Vec::new(),
                    subject: subject.to_owned(),
                    sent_at,
                    snippet: "Fish & chips".to_owned(),
                    sent: false,
                    message_id: None,
                },
            )
            .unwrap()
    }

    async fn batch(&self, token: &str, parts: &[String]) -> reqwest::Response {
        let mut body = String::new();
        for (index, target) in parts.iter().enumerate() {
            body.push_str(&format!(
                "--b0undary\r\nContent-Type: application/http\r\nContent-ID: <q{index}>\r\n\r\nGET {target} HTTP/1.1\r\n\r\n"
            ));
        }
        body.push_str("--b0undary--\r\n");
        self.served
            .http
            .post(self.url("/batch/gmail/v1"))
            .bearer_auth(token)
            .header("content-type", "multipart/mixed; boundary=b0undary")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

fn hours_ago(hours: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::hours(hours)
}

fn reason(body: &Value) -> &str {
    body["error"]["errors"][0]["reason"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_token_endpoint_refreshes_and_refuses_revoked_or_unknown_tokens() {
    let gmail = Harness::default().await;
    let (status, body) = gmail.refresh_with(&gmail.refresh_token, "client").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29."));
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "Google does not rotate by default");

    gmail.simulator.revoke_refresh_token(&gmail.refresh_token);
    for token in [gmail.refresh_token.as_str(), "never-issued"] {
        let (status, body) = gmail.refresh_with(token, "client").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        );
    }
    let counters = gmail.simulator.counters(&gmail.email).unwrap();
    assert_eq!(counters.calls_to(Endpoint::Token), 1);
    assert_eq!(gmail.simulator.unattributed_counters().calls_to(Endpoint::Token), 2);

    let (status, body) = gmail.get("ya29.unknown", "/gmail/v1/users/me/profile").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reason(&body), "authError");
}

#[tokio::test]
async fn an_access_token_reads_only_its_own_mailbox() {
    let gmail = Harness::default().await;
    let other = gmail.simulator.create_mailbox("other@gmail.simulated");
    let token = gmail.token().await;
    let (status, body) = gmail.get(&token, "/gmail/v1/users/me/profile").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["emailAddress"], gmail.email);
    assert!(body["historyId"].as_str().unwrap().parse::<u64>().is_ok());
    let (status, _) = gmail
        .get(&token, &format!("/gmail/v1/users/{}/profile", gmail.email))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = gmail.get(&token, "/gmail/v1/users/other@gmail.simulated/profile").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&body), "forbidden");
    let other_token = gmail.token_for(&other, "client").await;
    let (_, body) = gmail.get(&other_token, "/gmail/v1/users/me/profile").await;
    assert_eq!(body["emailAddress"], "other@gmail.simulated");
}

#[tokio::test]
async fn messages_list_pages_newest_first_and_filters_with_after() {
    let gmail = Harness::default().await;
    let ids: Vec<String> = (1..=5).map(|hours| gmail.add("Recent", hours_ago(hours))).collect();
    gmail.add("Old", hours_ago(24 * 30));
    let token = gmail.token().await;
    let after = hours_ago(24).timestamp();

    let mut listed = Vec::new();
    let mut page_token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/gmail/v1/users/me/messages?q=after%3A{after}&maxResults=2");
        if let Some(token) = &page_token {
            path.push_str(&format!("&pageToken={token}"));
        }
        let (status, body) = gmail.get(&token, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["resultSizeEstimate"], 5);
        pages += 1;
        for message in body["messages"].as_array().unwrap() {
            listed.push(message["id"].as_str().unwrap().to_owned());
        }
        match body["nextPageToken"].as_str() {
            Some(next) => page_token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, ids, "newest first, the old one left out");

    let (status, body) = gmail
        .get(&token, "/gmail/v1/users/me/messages?q=after%3A9999999999")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"resultSizeEstimate": 0}));
    let (status, body) = gmail.get(&token, "/gmail/v1/users/me/messages?q=from%3Aann").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body), "invalidArgument");
    let counters = gmail.simulator.counters(&gmail.email).unwrap();
    assert_eq!(counters.calls_to(Endpoint::MessagesList), 5);
    assert_eq!(counters.units_used, 25);
}

#[tokio::test]
async fn messages_with_the_same_internal_date_list_newest_arrival_first_on_every_page() {
    let gmail = Harness::default().await;
    let instant = hours_ago(2);
    let mut ids: Vec<String> = (0..12)
        .map(|index| gmail.add(&format!("Same {index}"), instant))
        .collect();
    // Gmail's ids grow with arrival, and the list breaks ties by id.
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids grow with arrival");
    ids.reverse();
    let token = gmail.token().await;
    let mut listed = Vec::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut path = "/gmail/v1/users/me/messages?maxResults=5".to_owned();
        if let Some(token) = &page_token {
            path.push_str(&format!("&pageToken={token}"));
        }
        let (status, body) = gmail.get(&token, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        listed.extend(
            body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|message| message["id"].as_str().unwrap().to_owned()),
        );
        match body["nextPageToken"].as_str() {
            Some(next) => page_token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, ids);
}

#[tokio::test]
async fn messages_get_with_metadata_gives_only_the_headers_asked_for() {
    let gmail = Harness::default().await;
    let sent_at = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678Z")
        .unwrap()
        .to_utc();
    let id = gmail.add("Hello", sent_at);
    let token = gmail.token().await;
    let (status, body) = gmail
        .get(
            &token,
            &format!("/gmail/v1/users/me/messages/{id}?format=metadata&metadataHeaders=From&metadataHeaders=subject"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["labelIds"], json!(["INBOX", "UNREAD"]));
    assert_eq!(body["snippet"], "Fish &amp; chips");
    assert_eq!(body["internalDate"], "1704164645678");
    assert_eq!(
        body["payload"]["headers"],
        json!([{"name": "From", "value": "Ann <ann@example.test>"}, {"name": "Subject", "value": "Hello"}])
    );
    let (status, body) = gmail.get(&token, "/gmail/v1/users/me/messages/ffffffffffffffff").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(reason(&body), "notFound");
}

#[tokio::test]
async fn history_lists_additions_and_deletions_in_pages_and_answers_404_once_stale() {
    let gmail = Harness::default().await;
    let token = gmail.token().await;
    let start = gmail.simulator.history_id(&gmail.email).unwrap();
    let first = gmail.add("First", hours_ago(1));
    let second = gmail.add("Second", hours_ago(1));
    gmail.simulator.delete_message(&gmail.email, &first).unwrap();
    gmail
        .simulator
        .add_label_to_message(&gmail.email, &second, "STARRED")
        .unwrap();

    let mut records = Vec::new();
    let mut page_token: Option<String> = None;
    let newest = loop {
        let mut path = format!(
            "/gmail/v1/users/me/history?startHistoryId={start}&historyTypes=messageAdded&historyTypes=messageDeleted&maxResults=2"
        );
        if let Some(token) = &page_token {
            path.push_str(&format!("&pageToken={token}"));
        }
        let (status, body) = gmail.get(&token, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        records.extend(body["history"].as_array().cloned().unwrap_or_default());
        match body["nextPageToken"].as_str() {
            Some(next) => page_token = Some(next.to_owned()),
            None => break body["historyId"].as_str().unwrap().parse::<u64>().unwrap(),
        }
    };
    assert_eq!(newest, gmail.simulator.history_id(&gmail.email).unwrap());
    let summary: Vec<(String, &str)> = records
        .iter()
        .map(|record| {
            if let Some(added) = record.get("messagesAdded") {
                (added[0]["message"]["id"].as_str().unwrap().to_owned(), "added")
            } else {
                (
                    record["messagesDeleted"][0]["message"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    "deleted",
                )
            }
        })
        .collect();
    assert_eq!(
        summary,
        [
            (first.clone(), "added"),
            (second.clone(), "added"),
            (first.clone(), "deleted")
        ],
        "the label change is of another type"
    );

    // Every type when none is asked for.
    let (_, body) = gmail
        .get(&token, &format!("/gmail/v1/users/me/history?startHistoryId={start}"))
        .await;
    assert_eq!(body["history"].as_array().unwrap().len(), 4);
    assert_eq!(body["history"][3]["labelsAdded"][0]["labelIds"], json!(["STARRED"]));

    gmail.simulator.expire_history(&gmail.email).unwrap();
    let (status, body) = gmail
        .get(&token, &format!("/gmail/v1/users/me/history?startHistoryId={start}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(reason(&body), "notFound");
    let (status, body) = gmail
        .get(&token, &format!("/gmail/v1/users/me/history?startHistoryId={newest}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("history").is_none());
}

#[tokio::test]
async fn history_older_than_the_retention_is_stale() {
    let gmail = Harness::start(GmailConfig {
        history_retention: Duration::ZERO,
        ..GmailConfig::default()
    })
    .await;
    let token = gmail.token().await;
    let start = gmail.simulator.history_id(&gmail.email).unwrap();
    gmail.add("Gone soon", hours_ago(1));
    let (status, _) = gmail
        .get(&token, &format!("/gmail/v1/users/me/history?startHistoryId={start}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_batch_answers_each_part_in_order_including_a_404() {
    let gmail = Harness::default().await;
    let a = gmail.add("A", hours_ago(2));
    let b = gmail.add("B", hours_ago(1));
    let token = gmail.token().await;
    let parts = [
        format!("/gmail/v1/users/me/messages/{b}?format=metadata&metadataHeaders=Subject"),
        "/gmail/v1/users/me/messages/0000000000000000?format=metadata".to_owned(),
        format!("https://gmail.googleapis.com/gmail/v1/users/me/messages/{a}?format=minimal"),
    ];
    let response = gmail.batch(&token, &parts).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let boundary = content_type
        .strip_prefix("multipart/mixed; boundary=")
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let sections: Vec<&str> = text
        .split(&format!("--{boundary}"))
        .skip(1)
        .filter(|section| !section.starts_with("--"))
        .collect();
    assert_eq!(sections.len(), 3);
    for (index, (section, status)) in sections.iter().zip(["200 OK", "404 Not Found", "200 OK"]).enumerate() {
        assert!(
            section.contains(&format!("Content-ID: <response-q{index}>")),
            "{section}"
        );
        assert!(section.contains(&format!("HTTP/1.1 {status}")), "{section}");
    }
    assert!(sections[0].contains(&format!("\"id\":\"{b}\"")));
    assert!(sections[0].contains("\"name\":\"Subject\""));
    assert!(sections[2].contains(&format!("\"id\":\"{a}\"")));
    assert!(!sections[2].contains("payload"), "minimal has no payload");
    let counters = gmail.simulator.counters(&gmail.email).unwrap();
    assert_eq!(counters.calls_to(Endpoint::Batch), 1);
    assert_eq!(counters.calls_to(Endpoint::MessagesGet), 3);
    assert_eq!(counters.units_used, 15);
}

#[tokio::test]
async fn a_batch_of_more_parts_than_allowed_or_not_multipart_is_refused() {
    let gmail = Harness::start(GmailConfig {
        max_batch: 3,
        ..GmailConfig::default()
    })
    .await;
    let token = gmail.token().await;
    let parts: Vec<String> = (0..4).map(|_| "/gmail/v1/users/me/profile".to_owned()).collect();
    let response = gmail.batch(&token, &parts).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("at most 3"),
        "{body}"
    );
    let response = gmail.batch(&token, &parts[..3]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = gmail
        .served
        .http
        .post(gmail.url("/batch/gmail/v1"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn quota_units_over_the_user_and_project_limits_answer_403_with_retry_after() {
    let gmail = Harness::start(GmailConfig {
        per_user_units_per_minute: 10,
        per_project_units_per_minute: 12,
        ..GmailConfig::default()
    })
    .await;
    let token = gmail.token().await;
    for _ in 0..2 {
        let (status, _) = gmail.get(&token, "/gmail/v1/users/me/messages").await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, retry_after, body) = gmail
        .call_with(&token, Method::GET, "/gmail/v1/users/me/profile", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&body), "userRateLimitExceeded");
    assert_eq!(body["error"]["errors"][0]["domain"], "usageLimits");
    let seconds: u64 = retry_after.unwrap().parse().unwrap();
    assert!((1..=60).contains(&seconds));

    // Another user of the same project spends the project's last units.
    let other = gmail.simulator.create_mailbox("other@gmail.simulated");
    let other_token = gmail.token_for(&other, "client").await;
    let (status, _) = gmail.get(&other_token, "/gmail/v1/users/me/profile").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gmail.get(&other_token, "/gmail/v1/users/me/profile").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = gmail.get(&other_token, "/gmail/v1/users/me/profile").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&body), "rateLimitExceeded");
    // Another project has its own budget.
    let third_token = gmail.token_for(&other, "another-client").await;
    let (status, _) = gmail.get(&third_token, "/gmail/v1/users/me/profile").await;
    assert_eq!(status, StatusCode::OK);

    let counters = gmail.simulator.counters(&gmail.email).unwrap();
    assert_eq!((counters.units_used, counters.throttled), (10, 1));
    assert_eq!(gmail.simulator.counters("other@gmail.simulated").unwrap().throttled, 1);
    assert_eq!(gmail.simulator.units_in_last_minute(&gmail.email).unwrap(), 10);
}

#[tokio::test]
async fn too_many_concurrent_requests_of_one_user_answer_429() {
    let gmail = Harness::start(GmailConfig {
        max_concurrent_per_user: 1,
        ..GmailConfig::default()
    })
    .await;
    let token = gmail.token().await;
    gmail
        .simulator
        .set_latency(Duration::from_millis(300), Duration::from_millis(50));
    let (first, second) = tokio::join!(
        gmail.call_with(&token, Method::GET, "/gmail/v1/users/me/profile", None),
        gmail.call_with(&token, Method::GET, "/gmail/v1/users/me/profile", None),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    let refused = if first.0 == StatusCode::TOO_MANY_REQUESTS {
        first
    } else {
        second
    };
    assert_eq!(reason(&refused.2), "rateLimitExceeded");
    assert_eq!(gmail.simulator.counters(&gmail.email).unwrap().throttled, 1);

    // Once the first is answered, the place is free again.
    let (status, _) = gmail.get(&token, "/gmail/v1/users/me/profile").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn faults_answer_once_or_by_rate_as_gmail_does() {
    let gmail = Harness::default().await;
    let token = gmail.token().await;
    let profile = "/gmail/v1/users/me/profile";
    let cases = [
        (Fault::RateLimit, StatusCode::FORBIDDEN, "userRateLimitExceeded"),
        (Fault::DailyLimit, StatusCode::FORBIDDEN, "dailyLimitExceeded"),
        (Fault::ServerError, StatusCode::INTERNAL_SERVER_ERROR, "backendError"),
        (Fault::Unauthorized, StatusCode::UNAUTHORIZED, "authError"),
    ];
    for (fault, status, expected) in cases {
        gmail.simulator.inject_fault(&gmail.email, fault, 1).unwrap();
        let (answered, body) = gmail.get(&token, profile).await;
        assert_eq!((answered, reason(&body)), (status, expected), "{fault:?}");
        let (answered, _) = gmail.get(&token, profile).await;
        assert_eq!(answered, StatusCode::OK, "{fault:?} answers once");
    }
    // A stale-history fault waits for a history call.
    gmail
        .simulator
        .inject_fault(&gmail.email, Fault::StaleHistory, 1)
        .unwrap();
    assert_eq!(gmail.get(&token, profile).await.0, StatusCode::OK);
    let history = "/gmail/v1/users/me/history?startHistoryId=1";
    assert_eq!(gmail.get(&token, history).await.0, StatusCode::NOT_FOUND);

    gmail
        .simulator
        .set_fault_rate(&gmail.email, Fault::ServerError, 1.0)
        .unwrap();
    assert_eq!(gmail.get(&token, profile).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(gmail.get(&token, profile).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    gmail.simulator.clear_faults(&gmail.email).unwrap();
    assert_eq!(gmail.get(&token, profile).await.0, StatusCode::OK);
    let counters = gmail.simulator.counters(&gmail.email).unwrap();
    assert_eq!(counters.faults, 7);
    assert_eq!(counters.throttled, 1);
}

#[tokio::test]
async fn labels_are_created_once_by_name_and_deleted_by_id() {
    let gmail = Harness::default().await;
    let token = gmail.token().await;
    let labels = "/gmail/v1/users/me/labels";
    let (status, _, label) = gmail
        .call_with(&token, Method::POST, labels, Some(json!({"name": "Syncfleet"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{label}");
    assert_eq!(label["type"], "user");
    let id = label["id"].as_str().unwrap().to_owned();
    let (status, _, body) = gmail
        .call_with(&token, Method::POST, labels, Some(json!({"name": "SYNCFLEET"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["message"], "Label name exists or conflicts");
    let (_, list) = gmail.get(&token, labels).await;
    let names: Vec<&str> = list["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|label| label["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"INBOX") && names.contains(&"Syncfleet"));

    let path = format!("{labels}/{id}");
    assert_eq!(
        gmail.call_with(&token, Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        gmail.call_with(&token, Method::DELETE, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gmail
            .call_with(&token, Method::DELETE, &format!("{labels}/INBOX"), None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_addin_stand_in_keeps_the_mailbox_state() {
    let gmail = Harness::default().await;
    let token = gmail.token().await;
    let path = "/gmail/v1/users/me/syncfleetAddin";
    assert_eq!(
        gmail.get(&token, path).await.1,
        json!({"installed": false, "addinId": null})
    );
    let (status, _, body) = gmail
        .call_with(&token, Method::PUT, path, Some(json!({"addinId": "addin-1"})))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"installed": true, "addinId": "addin-1"}))
    );
    assert_eq!(gmail.simulator.addin(&gmail.email).unwrap().as_deref(), Some("addin-1"));
    assert_eq!(
        gmail.call_with(&token, Method::PUT, path, Some(json!({}))).await.0,
        StatusCode::BAD_REQUEST
    );
    for _ in 0..2 {
        assert_eq!(
            gmail.call_with(&token, Method::DELETE, path, None).await.0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(gmail.simulator.addin(&gmail.email).unwrap(), None);
}

#[tokio::test]
async fn the_control_api_drives_the_simulator_over_http() {
    let gmail = Harness::default().await;

    let (_, created) = gmail
        .control(
            Method::POST,
            "/mailboxes",
            Some(json!({"email": "ctl@gmail.simulated"})),
        )
        .await;
    let refresh_token = created["refresh_token"].as_str().unwrap().to_owned();
    let mailbox = "/mailboxes/ctl@gmail.simulated";
    let message = json!({
        "from": "ann@example.test",
        "to": ["ctl@gmail.simulated"],
        "subject": "Over HTTP",
        "sent_at": "2024-05-06T07:08:09Z",
        "snippet": "hi",
        "sent": true,
    });
    let (status, created) = gmail
        .control(Method::POST, &format!("{mailbox}/messages"), Some(message))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, ids) = gmail.control(Method::GET, &format!("{mailbox}/messages"), None).await;
    assert_eq!(ids, json!({"ids": [id.clone()]}));
    let (_, labels) = gmail
        .control(Method::GET, &format!("{mailbox}/messages/{id}/labels"), None)
        .await;
    assert_eq!(labels, json!({"label_ids": ["SENT"]}));

    let (status, _) = gmail
        .control(
            Method::POST,
            &format!("{mailbox}/faults"),
            Some(json!({"fault": "daily_limit", "endpoint": "profile", "times": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let token = gmail.token_for(&refresh_token, "client").await;
    let (status, body) = gmail.get(&token, "/gmail/v1/users/me/profile").await;
    assert_eq!((status, reason(&body)), (StatusCode::FORBIDDEN, "dailyLimitExceeded"));

    let (status, _) = gmail
        .control(Method::PUT, &format!("{mailbox}/addin"), Some(json!({"addin_id": "x"})))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, addin) = gmail.control(Method::GET, &format!("{mailbox}/addin"), None).await;
    assert_eq!(addin, json!({"installed": true, "addin_id": "x"}));

    let (_, history) = gmail.control(Method::GET, &format!("{mailbox}/history"), None).await;
    let history_id = history["history_id"].as_str().unwrap().to_owned();
    let (status, _) = gmail
        .control(Method::POST, &format!("{mailbox}/expire-history"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = gmail
        .get(
            &token,
            &format!("/gmail/v1/users/me/history?startHistoryId={history_id}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the current id is never stale");

    let (_, counters) = gmail.control(Method::GET, &format!("{mailbox}/counters"), None).await;
    assert_eq!(counters["calls"]["token"], 1);
    assert_eq!(counters["calls"]["profile"], 1);
    assert_eq!(counters["faults"], 1);
    assert_eq!(
        counters["units_used"], 2,
        "the history call; the refused profile cost nothing"
    );

    let (status, _) = gmail
        .control(
            Method::PUT,
            "/latency",
            Some(json!({"milliseconds": 0, "jitter_milliseconds": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = gmail
        .control(
            Method::POST,
            "/refresh-tokens/revoke",
            Some(json!({"refresh_token": refresh_token})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        gmail.refresh_with(&refresh_token, "client").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, _) = gmail
        .control(Method::GET, "/mailboxes/nobody@gmail.simulated/counters", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
