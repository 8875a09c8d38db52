//! The Graph simulator over HTTP, as the connector sees it.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncfleet_simulators::{
    BulkError,
    graph::{
        BulkMailbox, Endpoint, Fault, Folder, GraphConfig, GraphSimulator, LocalGraph, MAX_BULK_MAILBOXES, MessageSeed,
        Recipient,
    },
};
use tokio_util::sync::CancellationToken;

use crate::support::{Served, send};

const TOKEN_PATH: &str = "/organizations/oauth2/v2.0/token";
const IMMUTABLE: &str = "IdType=\"ImmutableId\"";

struct Harness {
    simulator: GraphSimulator,
    served: Served,
    mailbox: String,
    refresh_token: String,
}

impl Harness {
    async fn start(config: GraphConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalGraph {
            simulator,
            server,
            mailbox,
            refresh_token,
        } = GraphSimulator::start_local(config, shutdown.clone()).await.unwrap();
        Self {
            simulator,
            served: Served::new(server, shutdown),
            mailbox,
            refresh_token,
        }
    }

    fn url(&self, path: &str) -> String {
        self.served.url(path)
    }

    /// Calls the control API: the status and the JSON answer.
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.served.json(method, &format!("/_control/graph{path}"), body).await
    }

    fn users(&self, rest: &str) -> String {
        self.url(&format!("/v1.0/users/{}{rest}", self.mailbox))
    }

    async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.served
            .post_form(
                TOKEN_PATH,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", "client"),
                    ("client_secret", "secret"),
                    ("refresh_token", refresh_token),
                    ("scope", "https://graph.microsoft.com/.default offline_access"),
                ],
            )
            .await
    }

    /// A fresh access token, from a fresh refresh token (rotation leaves the
    /// harness's own one alone).
    async fn access_token(&self) -> String {
        let refresh_token = self.simulator.issue_refresh_token(&self.mailbox).unwrap();
        let (status, body) = self.refresh(&refresh_token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        url: &str,
        prefer: &[&str],
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.served.http.request(method, url).bearer_auth(token);
        for preference in prefer {
            request = request.header("Prefer", *preference);
        }
        send(request, body).await
    }

    fn seed(&self, folder: Folder, subject: &str, day: u32) -> String {
        self.simulator
            .add_message(
                &self.mailbox,
                folder,
                MessageSeed {
                    from: Recipient::named("Megan Bowen", "megan@contoso.example"),
                    to: vec![Recipient::new(self.mailbox.clone())],
                    cc: Vec::new(),
                    subject: subject.to_owned(),
                    sent_at: Utc.with_ymd_and_hms(2024, 3, day, 9, 0, 0).unwrap(),
                    body: format!("Body of {subject}"),
                },
            )
            .unwrap()
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_refresh_answers_a_new_refresh_token_and_the_old_one_stays_valid_as_microsoft_documents() {
    let harness = Harness::start(GraphConfig::default()).await;
    let (status, body) = harness.control(Method::GET, "/refresh-token-rotation", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"revoke_rotated_refresh_tokens": false}));
    let mut rotated = Vec::new();
    for _ in 0..2 {
        let (status, body) = harness.refresh(&harness.refresh_token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        rotated.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_ne!(rotated[0], rotated[1]);
    assert!(!rotated.contains(&harness.refresh_token));
    // Each token handed out works, the superseded ones too.
    for token in &rotated {
        assert_eq!(harness.refresh(token).await.0, StatusCode::OK);
    }

    // The strict mode, switched on over the control API, revokes what it rotates.
    let (status, body) = harness
        .control(
            Method::PUT,
            "/refresh-token-rotation",
            Some(json!({"revoke_rotated_refresh_tokens": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(harness.simulator.revokes_rotated_refresh_tokens());
    let (status, body) = harness.refresh(&rotated[0]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = harness.refresh(&rotated[0]).await;
    assert_eq!(
        (status, &body["error_codes"]),
        (StatusCode::BAD_REQUEST, &json!([50173]))
    );
    let (status, body) = harness
        .control(Method::PUT, "/refresh-token-rotation", Some(json!({"revoke": true})))
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(body.to_string().contains("revoke_rotated_refresh_tokens"), "{body}");
    harness.stop().await;
}

#[tokio::test]
async fn in_strict_mode_a_refresh_rotates_the_refresh_token_and_the_old_one_is_then_refused_as_revoked() {
    let harness = Harness::start(GraphConfig {
        revoke_rotated_refresh_tokens: true,
        ..GraphConfig::default()
    })
    .await;
    let (status, body) = harness.refresh(&harness.refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let rotated = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, harness.refresh_token);

    let (status, body) = harness.refresh(&harness.refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"], json!([50173]));
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with("AADSTS50173:"), "{description}");
    assert!(!description.contains(&harness.refresh_token));

    let (status, body) = harness.refresh("never-issued").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_codes"], json!([70008]));
    assert_eq!(harness.refresh(&rotated).await.0, StatusCode::OK);
    assert_eq!(
        harness.simulator.counters(&harness.mailbox).calls_to(Endpoint::Token),
        3,
        "the revoked one counts too"
    );

    let response = harness
        .served
        .http
        .post(harness.url(TOKEN_PATH))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "client"),
            ("refresh_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_client");
    harness.stop().await;
}

#[tokio::test]
async fn an_access_token_opens_only_its_own_mailbox_and_only_while_it_lives() {
    let harness = Harness::start(GraphConfig::default()).await;
    let other = "lidia.holloway@contoso.example";
    harness.simulator.create_mailbox(other);
    let token = harness.access_token().await;
    let inbox = harness.users("/mailFolders/inbox?$select=id");

    let (status, _, body) = harness.call(&token, Method::GET, &inbox, &[], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["id"]);

    let by_id = harness.url(&format!(
        "/v1.0/users/{}/mailFolders/Inbox",
        harness.simulator.mailbox_id(&harness.mailbox).unwrap()
    ));
    assert_eq!(
        harness.call(&token, Method::GET, &by_id, &[], None).await.0,
        StatusCode::OK
    );

    let elsewhere = harness.url(&format!("/v1.0/users/{other}/mailFolders/inbox"));
    let (status, _, body) = harness.call(&token, Method::GET, &elsewhere, &[], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");

    let (status, _, body) = harness.call("garbage", Method::GET, &inbox, &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

    harness.simulator.expire_sessions(&harness.mailbox).unwrap();
    assert_eq!(
        harness.call(&token, Method::GET, &inbox, &[], None).await.0,
        StatusCode::UNAUTHORIZED
    );
    harness.stop().await;

    let short = Harness::start(GraphConfig {
        access_token_lifetime: Duration::ZERO,
        ..GraphConfig::default()
    })
    .await;
    let token = short.access_token().await;
    let (status, _, body) = short
        .call(&token, Method::GET, &short.users("/mailFolders/inbox"), &[], None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
    short.stop().await;
}

#[tokio::test]
async fn delta_pages_through_skip_tokens_then_a_delta_token_answers_only_the_changes() {
    let harness = Harness::start(GraphConfig::default()).await;
    let old = harness.seed(Folder::Inbox, "Too old", 1);
    let mut seeded: Vec<String> = (0..5)
        .map(|day| harness.seed(Folder::Inbox, "Recent", 10 + day))
        .collect();
    harness.seed(Folder::SentItems, "Sent", 12);
    let token = harness.access_token().await;

    let first = harness.users(
        "/mailFolders/inbox/messages/delta?$select=subject,receivedDateTime&$filter=receivedDateTime%20ge%202024-03-05T00:00:00Z",
    );
    let (status, headers, page) = harness
        .call(&token, Method::GET, &first, &["odata.maxpagesize=2", IMMUTABLE], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(headers["preference-applied"], "odata.maxpagesize=2");
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    let entry = page["value"][0].as_object().unwrap();
    let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["@odata.etag", "@odata.type", "id", "receivedDateTime", "subject"]
    );

    let mut received = ids(&page);
    let mut next = page["@odata.nextLink"].as_str().unwrap().to_owned();
    assert!(next.contains("$skiptoken="), "{next}");
    let delta_link = loop {
        let (status, _, page) = harness
            .call(&token, Method::GET, &next, &["odata.maxpagesize=2", IMMUTABLE], None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        received.extend(ids(&page));
        if let Some(link) = page["@odata.nextLink"].as_str() {
            next = link.to_owned();
        } else {
            break page["@odata.deltaLink"].as_str().unwrap().to_owned();
        }
    };
    received.sort();
    seeded.sort();
    assert_eq!(
        received, seeded,
        "the filter leaves the old message out; Sent Items are another stream"
    );

    let (_, _, page) = harness.call(&token, Method::GET, &delta_link, &[IMMUTABLE], None).await;
    assert_eq!(ids(&page), Vec::<String>::new());
    assert!(page["@odata.deltaLink"].is_string());

    let new = harness.seed(Folder::Inbox, "New", 20);
    harness
        .simulator
        .update_message(&harness.mailbox, &seeded[0], "Renamed")
        .unwrap();
    harness.simulator.delete_message(&harness.mailbox, &seeded[1]).unwrap();
    harness.simulator.delete_message(&harness.mailbox, &old).unwrap();
    let (_, _, page) = harness.call(&token, Method::GET, &delta_link, &[IMMUTABLE], None).await;
    let entries = page["value"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{page}");
    let changed = entries.iter().find(|entry| entry["id"] == seeded[0].as_str()).unwrap();
    assert_eq!(changed["subject"], "Renamed");
    assert!(entries.iter().any(|entry| entry["id"] == new.as_str()));
    for removed in [&seeded[1], &old] {
        let entry = entries.iter().find(|entry| entry["id"] == removed.as_str()).unwrap();
        assert_eq!(entry["@removed"]["reason"], "deleted");
    }

    // Without the immutable id preference the ids differ (they name the folder).
    let (_, _, page) = harness
        .call(
            &token,
            Method::GET,
            &harness.users("/mailFolders/inbox/messages/delta"),
            &[],
            None,
        )
        .await;
    assert!(ids(&page).iter().all(|id| !seeded.contains(id)));
    harness.stop().await;
}

#[tokio::test]
async fn expired_delta_tokens_answer_gone_with_where_to_restart() {
    let harness = Harness::start(GraphConfig::default()).await;
    harness.seed(Folder::SentItems, "Sent", 3);
    let token = harness.access_token().await;
    let start = harness.users("/mailFolders/sentitems/messages/delta");
    let (_, _, page) = harness.call(&token, Method::GET, &start, &[], None).await;
    let delta_link = page["@odata.deltaLink"].as_str().unwrap().to_owned();

    harness.simulator.expire_delta_tokens(&harness.mailbox).unwrap();
    let (status, headers, body) = harness.call(&token, Method::GET, &delta_link, &[], None).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["error"]["code"], "syncStateNotFound");
    assert_eq!(headers["location"], start.as_str());

    let (status, _, body) = harness
        .call(
            &token,
            Method::GET,
            &format!("{start}?$filter=subject%20eq%20'x'"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorInvalidUrlQueryFilter");
    harness.stop().await;
}

#[tokio::test]
async fn requests_past_the_mailbox_concurrency_are_throttled_and_counted() {
    let harness = Harness::start(GraphConfig::default()).await;
    harness
        .simulator
        .set_latency(Duration::from_millis(300), Duration::ZERO);
    let token = harness.access_token().await;
    let url = harness.users("/mailFolders/inbox");
    let calls = (0..6).map(|_| harness.call(&token, Method::GET, &url, &[], None));
    let answers = futures_join(calls).await;
    let throttled: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(throttled.len(), 2, "{answers:?}");
    for (_, headers, body) in &throttled {
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(body["error"]["code"], "ApplicationThrottled");
        assert_eq!(
            body["error"]["message"],
            "Application is over its MailboxConcurrency limit."
        );
    }
    let counters = harness.simulator.counters(&harness.mailbox);
    assert_eq!(counters.throttled, 2);
    assert_eq!(counters.calls_to(Endpoint::MailFolders), 6);
    harness.stop().await;
}

/// Runs the futures concurrently on this task and returns their outputs in order.
async fn futures_join<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none()
                && let std::task::Poll::Ready(value) = future.as_mut().poll(context)
            {
                *output = Some(value);
            }
        }
        if outputs.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn a_full_window_answers_429_with_the_seconds_until_a_slot_frees() {
    let harness = Harness::start(GraphConfig {
        requests_per_window: 2,
        window: Duration::from_secs(60),
        ..GraphConfig::default()
    })
    .await;
    let token = harness.access_token().await;
    let url = harness.users("/outlook/masterCategories");
    for _ in 0..2 {
        assert_eq!(
            harness.call(&token, Method::GET, &url, &[], None).await.0,
            StatusCode::OK
        );
    }
    let (status, headers, body) = harness.call(&token, Method::GET, &url, &[], None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "ApplicationThrottled");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    harness.stop().await;
}

fn event(subject: &str) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2024-05-01T11:00:00", "timeZone": "UTC"},
    })
}

fn inner_post(id: usize, path: &str, body: Value, depends_on: Option<usize>) -> Value {
    let mut request = json!({
        "id": id.to_string(),
        "method": "POST",
        "url": path,
        "headers": {"Content-Type": "application/json"},
        "body": body,
    });
    if let Some(previous) = depends_on {
        request["dependsOn"] = json!([previous.to_string()]);
    }
    request
}

#[tokio::test]
async fn a_batch_runs_inner_requests_throttled_one_by_one_and_answers_in_any_order() {
    let harness = Harness::start(GraphConfig::default()).await;
    harness
        .simulator
        .set_latency(Duration::from_millis(100), Duration::ZERO);
    let token = harness.access_token().await;
    let path = format!("/users/{}/events", harness.mailbox);
    let batch = harness.url("/v1.0/$batch");

    // Twenty independent requests run at once: past the mailbox's four, 429.
    let requests: Vec<Value> = (0..20)
        .map(|id| inner_post(id, &path, event("Parallel"), None))
        .collect();
    let (status, _, body) = harness
        .call(&token, Method::POST, &batch, &[], Some(json!({"requests": requests})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let responses = body["responses"].as_array().unwrap();
    let created = responses.iter().filter(|response| response["status"] == 201).count();
    let throttled: Vec<&Value> = responses.iter().filter(|response| response["status"] == 429).collect();
    assert_eq!((created, throttled.len()), (4, 16));
    assert_eq!(throttled[0]["headers"]["Retry-After"], "1");
    assert_eq!(throttled[0]["body"]["error"]["code"], "ApplicationThrottled");
    let order: Vec<&str> = responses
        .iter()
        .map(|response| response["id"].as_str().unwrap())
        .collect();
    let sorted: Vec<String> = (0..20).map(|id| id.to_string()).collect();
    assert_ne!(order, sorted, "answers come back shuffled");

    // A serial chain never has more than one in flight; a failure fails
    // what depends on it.
    let mut requests: Vec<Value> = (0..5)
        .map(|id| inner_post(id, &path, event("Serial"), id.checked_sub(1)))
        .collect();
    requests[2]["body"] = json!({"subjet": "typo"});
    let (_, _, body) = harness
        .call(&token, Method::POST, &batch, &[], Some(json!({"requests": requests})))
        .await;
    let status_of = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|response| response["id"] == id)
            .unwrap()["status"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(["0", "1", "2", "3", "4"].map(status_of), [201, 201, 400, 424, 424]);
    assert_eq!(harness.simulator.events(&harness.mailbox).len(), 4 + 2);
    let counters = harness.simulator.counters(&harness.mailbox);
    assert_eq!(counters.calls_to(Endpoint::Batch), 2);
    assert_eq!(counters.calls_to(Endpoint::Events), 20 + 3);
    assert_eq!(counters.throttled, 16);

    let too_many: Vec<Value> = (0..21).map(|id| inner_post(id, &path, event("x"), None)).collect();
    let (status, _, body) = harness
        .call(&token, Method::POST, &batch, &[], Some(json!({"requests": too_many})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    harness.stop().await;
}

#[tokio::test]
async fn armed_faults_answer_as_graph_does() {
    let harness = Harness::start(GraphConfig::default()).await;
    let token = harness.access_token().await;
    let url = harness.users("/contacts");
    harness
        .simulator
        .inject_fault(
            &harness.mailbox,
            Fault::Throttled {
                retry_after: Some(Duration::from_secs(7)),
            },
            1,
        )
        .unwrap();
    let (status, headers, body) = harness.call(&token, Method::GET, &url, &[], None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(body["error"]["code"], "TooManyRequests");

    harness
        .simulator
        .inject_fault_on(&harness.mailbox, Endpoint::Events, Fault::ServerError, 1)
        .unwrap();
    assert_eq!(
        harness.call(&token, Method::GET, &url, &[], None).await.0,
        StatusCode::OK
    );
    let events = harness.users("/events");
    assert_eq!(
        harness.call(&token, Method::GET, &events, &[], None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    harness
        .simulator
        .set_fault_rate(&harness.mailbox, Fault::GatewayTimeout, 1.0)
        .unwrap();
    assert_eq!(
        harness.call(&token, Method::GET, &url, &[], None).await.0,
        StatusCode::GATEWAY_TIMEOUT
    );
    harness.simulator.clear_faults(&harness.mailbox).unwrap();

    harness
        .simulator
        .inject_fault(&harness.mailbox, Fault::Unauthorized, 1)
        .unwrap();
    assert_eq!(
        harness.call(&token, Method::GET, &url, &[], None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The session is over, not only that call.
    assert_eq!(
        harness.call(&token, Method::GET, &url, &[], None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(harness.simulator.counters(&harness.mailbox).faults, 4);
    harness.stop().await;
}

#[tokio::test]
async fn categories_folders_items_and_the_addin_behave_like_outlook() {
    let harness = Harness::start(GraphConfig::default()).await;
    let token = harness.access_token().await;
    let categories = harness.users("/outlook/masterCategories");
    let category = json!({"displayName": "Syncfleet", "color": "preset9"});
    let (status, _, created) = harness
        .call(&token, Method::POST, &categories, &[], Some(category.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = harness
        .call(&token, Method::POST, &categories, &[], Some(category))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let one = format!("{categories}/{}", created["id"].as_str().unwrap());
    assert_eq!(
        harness.call(&token, Method::DELETE, &one, &[], None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        harness.call(&token, Method::DELETE, &one, &[], None).await.0,
        StatusCode::NOT_FOUND
    );

    let folders = harness.users("/mailFolders");
    let folder = json!({"displayName": "Syncfleet"});
    assert_eq!(
        harness
            .call(&token, Method::POST, &folders, &[], Some(folder.clone()))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, _, body) = harness.call(&token, Method::POST, &folders, &[], Some(folder)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ErrorFolderExists"))
    );
    let (_, _, found) = harness
        .call(
            &token,
            Method::GET,
            &format!("{folders}?$filter=displayName%20eq%20'syncfleet'"),
            &[],
            None,
        )
        .await;
    assert_eq!(found["value"].as_array().unwrap().len(), 1);
    assert_eq!(harness.simulator.folders(&harness.mailbox)[0].display_name, "Syncfleet");

    let (status, _, body) = harness
        .call(
            &token,
            Method::POST,
            &harness.users("/events"),
            &[],
            Some(json!({"subjet": "typo"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "ErrorInvalidProperty");
    let (_, _, created) = harness
        .call(
            &token,
            Method::POST,
            &harness.users("/contacts"),
            &[],
            Some(json!({"givenName": "Ada"})),
        )
        .await;
    let contact = harness.users(&format!("/contacts/{}", created["id"].as_str().unwrap()));
    let (status, _, patched) = harness
        .call(
            &token,
            Method::PATCH,
            &contact,
            &[],
            Some(json!({"surname": "Lovelace"})),
        )
        .await;
    assert_eq!(
        (status, patched["surname"].as_str()),
        (StatusCode::OK, Some("Lovelace"))
    );
    harness
        .simulator
        .delete_contact(&harness.mailbox, created["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        harness
            .call(&token, Method::PATCH, &contact, &[], Some(json!({"surname": "x"})))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let addin = harness.users("/syncfleetAddin");
    let (_, _, status) = harness.call(&token, Method::GET, &addin, &[], None).await;
    assert_eq!(status["status"], "notInstalled");
    let manifest = json!({"manifestId": "6d3c1e9a-5b1f-4c3e-9a7e-3f1d2c4b5a69"});
    assert_eq!(
        harness
            .call(&token, Method::POST, &addin, &[], Some(manifest.clone()))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        harness.call(&token, Method::POST, &addin, &[], Some(manifest)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        harness.simulator.addin(&harness.mailbox).as_deref(),
        Some("6d3c1e9a-5b1f-4c3e-9a7e-3f1d2c4b5a69")
    );
    assert_eq!(
        harness.call(&token, Method::DELETE, &addin, &[], None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        harness.call(&token, Method::DELETE, &addin, &[], None).await.0,
        StatusCode::NOT_FOUND
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_control_api_does_over_http_what_the_handle_does() {
    let harness = Harness::start(GraphConfig::default()).await;
    let upn = json!({"upn": "nestor@contoso.example"});
    let (_, created) = harness.control(Method::POST, "/mailboxes", Some(upn)).await;
    let refresh_token = created["refresh_token"].as_str().unwrap();
    assert_eq!(
        harness.simulator.mailbox_id("NESTOR@contoso.example").as_deref(),
        created["id"].as_str()
    );

    let message = json!({
        "folder": "sent_items",
        "from": {"address": "nestor@contoso.example"},
        "to": [{"address": "client@example.test", "name": "Client"}],
        "subject": "Quote",
        "sent_at": "2024-03-01T10:00:00Z",
        "body": "Please find the quote.",
    });
    let (status, _) = harness
        .control(
            Method::POST,
            "/mailboxes/nestor@contoso.example/messages",
            Some(message),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let fault = json!({"fault": {"kind": "throttled", "retry_after": 2}, "endpoint": "messages_delta", "times": 1});
    let (status, _) = harness
        .control(Method::POST, "/mailboxes/nestor@contoso.example/faults", Some(fault))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, body) = harness.refresh(refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let delta = harness.url("/v1.0/users/nestor@contoso.example/mailFolders/sentitems/messages/delta");
    assert_eq!(
        harness.call(token, Method::GET, &delta, &[], None).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let (_, _, page) = harness.call(token, Method::GET, &delta, &[], None).await;
    assert_eq!(page["value"][0]["subject"], "Quote");
    assert_eq!(page["value"][0]["toRecipients"][0]["emailAddress"]["name"], "Client");

    let (_, counters) = harness
        .control(Method::GET, "/mailboxes/nestor@contoso.example/counters", None)
        .await;
    assert_eq!(counters["calls"]["messages_delta"], 2);
    assert_eq!(counters["calls"]["token"], 1);
    assert_eq!(counters["faults"], 1);

    let latency = json!({"base_ms": 0, "jitter_ms": 5});
    let (status, _) = harness.control(Method::PUT, "/latency", Some(latency)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = harness
        .control(Method::GET, "/mailboxes/nobody@contoso.example/counters", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    harness.stop().await;
}

/// A message as the control API's add-message route takes it.
fn bulk_message(folder: &str, subject: &str, body: &str) -> Value {
    json!({
        "folder": folder,
        "from": {"address": "megan@contoso.example", "name": "Megan Bowen"},
        "to": [{"address": "client@example.test"}],
        "subject": subject,
        "sent_at": "2024-03-01T10:00:00Z",
        "body": body,
    })
}

fn subjects(page: &Value) -> Vec<&str> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["subject"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn mailboxes_created_in_bulk_answer_in_order_and_refresh_and_list_their_messages() {
    let harness = Harness::start(GraphConfig::default()).await;
    let mailboxes: Vec<Value> = (0..3)
        .map(|index| {
            json!({"upn": format!("bulk{index}@contoso.example"), "messages": [
                bulk_message("inbox", &format!("In {index}"), "a"),
                bulk_message("sent_items", &format!("Out {index}"), "b"),
                bulk_message("inbox", &format!("In again {index}"), "c"),
            ]})
        })
        .collect();
    let (status, body) = harness
        .control(Method::POST, "/mailboxes/bulk", Some(json!({"mailboxes": mailboxes})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created = body["mailboxes"].as_array().unwrap();
    assert_eq!(created.len(), 3);
    for (index, mailbox) in created.iter().enumerate() {
        let upn = format!("bulk{index}@contoso.example");
        assert_eq!(mailbox["upn"], upn);
        assert_eq!(harness.simulator.mailbox_id(&upn).as_deref(), mailbox["id"].as_str());
    }

    let (status, token) = harness.refresh(created[1]["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    let token = token["access_token"].as_str().unwrap();
    let inbox = harness.url("/v1.0/users/bulk1@contoso.example/mailFolders/inbox/messages/delta");
    let (status, _, page) = harness.call(token, Method::GET, &inbox, &[], None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(subjects(&page), ["In 1", "In again 1"]);
    let sent = harness.url("/v1.0/users/bulk1@contoso.example/mailFolders/sentitems/messages/delta");
    let (_, _, page) = harness.call(token, Method::GET, &sent, &[], None).await;
    assert_eq!(subjects(&page), ["Out 1"]);
    assert_eq!(page["value"][0]["from"]["emailAddress"]["name"], "Megan Bowen");
    harness.stop().await;
}

#[tokio::test]
async fn mailboxes_created_connected_answer_a_live_access_token_and_delta_links_past_their_mail() {
    let harness = Harness::start(GraphConfig::default()).await;
    let batch = json!({
        "mailboxes": [
            {"upn": "steady0@contoso.example", "messages": [bulk_message("inbox", "Old", "a")]},
            {"upn": "steady1@contoso.example"},
        ],
        "connected": {"delta_query": "$select=id,subject&$filter=receivedDateTime ge 2024-01-01T00:00:00Z"},
    });
    let (status, body) = harness.control(Method::POST, "/mailboxes/bulk", Some(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created = &body["mailboxes"][0];
    let connected = &created["connected"];
    assert_eq!(connected["expires_in"], 3600);
    let token = connected["access_token"].as_str().unwrap();
    let inbox = connected["delta_links"]["inbox"].as_str().unwrap();
    assert!(
        inbox.starts_with(
            &harness.url("/v1.0/users/steady0@contoso.example/mailFolders/inbox/messages/delta?$deltatoken=")
        ),
        "{inbox}"
    );
    assert!(connected["delta_links"]["sentitems"].is_string());

    // The mail already there is behind the link; what arrives later is not,
    // answered with the query's options.
    let (status, _, page) = harness.call(token, Method::GET, inbox, &[], None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(subjects(&page), Vec::<&str>::new());
    let (status, _) = harness
        .control(
            Method::POST,
            "/mailboxes/steady0@contoso.example/messages",
            Some(bulk_message("inbox", "New", "b")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let next = page["@odata.deltaLink"].as_str().unwrap();
    let (_, _, page) = harness.call(token, Method::GET, next, &[], None).await;
    assert_eq!(subjects(&page), ["New"]);
    assert!(page["value"][0].get("body").is_none(), "{page}");
    // The token opens only its own mailbox.
    let other = harness.url("/v1.0/users/steady1@contoso.example/mailFolders/inbox/messages/delta");
    let (status, _, _) = harness.call(token, Method::GET, &other, &[], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let refused = json!({
        "mailboxes": [{"upn": "steady2@contoso.example"}],
        "connected": {"delta_query": "$filter=subject eq 'x'"},
    });
    let (status, body) = harness.control(Method::POST, "/mailboxes/bulk", Some(refused)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("connected.delta_query: "),
        "{body}"
    );
    assert_eq!(harness.simulator.mailbox_id("steady2@contoso.example"), None);
    harness.stop().await;
}

#[tokio::test]
async fn messages_received_in_the_same_instant_list_in_the_order_they_arrived() {
    let harness = Harness::start(GraphConfig::default()).await;
    let older = harness.seed(Folder::Inbox, "Older", 1);
    let same: Vec<String> = (0..12)
        .map(|index| harness.seed(Folder::Inbox, &format!("Same {index}"), 2))
        .collect();
    let token = harness.access_token().await;
    let url = harness.users("/mailFolders/inbox/messages/delta");
    let (status, _, page) = harness
        .call(&token, Method::GET, &url, &[IMMUTABLE, "odata.maxpagesize=50"], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut expected = same;
    expected.push(older);
    assert_eq!(ids(&page), expected, "newest first, ties in arrival order");
    harness.stop().await;
}

#[tokio::test]
async fn a_bulk_batch_with_a_bad_entry_names_it_and_creates_nothing() {
    let harness = Harness::start(GraphConfig::default()).await;
    let valid = json!({"upn": "first@contoso.example", "messages": [bulk_message("inbox", "Hi", "")]});
    let cases = [
        (
            json!({"upn": harness.mailbox.to_uppercase()}),
            "mailboxes[1].upn: already exists",
        ),
        (
            json!({"upn": "FIRST@contoso.example"}),
            "mailboxes[1].upn: also given at mailboxes[0]",
        ),
        (json!({"upn": "  "}), "mailboxes[1].upn: must not be empty"),
        (
            json!({"upn": "second@contoso.example", "messages": [bulk_message("inbox", "Hi", ""), bulk_message("drafts", "Hi", "")]}),
            "mailboxes[1].messages[1].folder: unknown variant `drafts`",
        ),
        (
            json!({"upn": "second@contoso.example", "messages": [{"folder": "inbox", "sent_at": "2024-03-01T10:00:00Z"}]}),
            "mailboxes[1].messages[0]: missing field `from`",
        ),
        (
            json!({"upn": "second@contoso.example", "messages": [{"folder": "inbox", "from": {"address": "a@b.test"}, "sent_at": "yesterday"}]}),
            "mailboxes[1].messages[0].sent_at: ",
        ),
        (json!({"messages": []}), "mailboxes[1]: missing field `upn`"),
    ];
    for (bad, expected) in cases {
        let (status, body) = harness
            .control(
                Method::POST,
                "/mailboxes/bulk",
                Some(json!({"mailboxes": [valid.clone(), bad]})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(expected), "{error} lacks {expected}");
        assert_eq!(
            harness.simulator.mailbox_id("first@contoso.example"),
            None,
            "{expected}"
        );
        assert_eq!(
            harness.simulator.mailbox_id("second@contoso.example"),
            None,
            "{expected}"
        );
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_bulk_batch_over_the_cap_is_refused_and_one_over_axum_s_default_body_limit_is_taken() {
    let harness = Harness::start(GraphConfig::default()).await;
    let over: Vec<BulkMailbox> = (0..=MAX_BULK_MAILBOXES)
        .map(|index| BulkMailbox {
            upn: format!("u{index}@contoso.example"),
            messages: Vec::new(),
        })
        .collect();
    assert_eq!(
        harness.simulator.create_mailboxes(&over),
        Err(BulkError::TooMany {
            what: "mailboxes",
            max: MAX_BULK_MAILBOXES,
            given: MAX_BULK_MAILBOXES + 1
        })
    );
    let over = json!({"mailboxes": over.iter().map(|mailbox| json!({"upn": mailbox.upn})).collect::<Vec<_>>()});
    let (status, body) = harness.control(Method::POST, "/mailboxes/bulk", Some(over)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "mailboxes: at most 10000 per call, got 10001");
    assert_eq!(harness.simulator.mailbox_id("u0@contoso.example"), None);

    // Five messages each, a few MB: more than axum's 2 MB default.
    let text = "x".repeat(200);
    let mailboxes: Vec<Value> = (0..2_000)
        .map(|index| {
            let messages: Vec<Value> = (0..5).map(|_| bulk_message("inbox", "Hello", &text)).collect();
            json!({"upn": format!("many{index}@contoso.example"), "messages": messages})
        })
        .collect();
    let batch = json!({"mailboxes": mailboxes});
    assert!(batch.to_string().len() > 3 * 1024 * 1024);
    let (status, body) = harness.control(Method::POST, "/mailboxes/bulk", Some(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["mailboxes"].as_array().unwrap().len(), 2_000);
    assert_eq!(body["mailboxes"][1_999]["upn"], "many1999@contoso.example");
    harness.stop().await;
}

/// An inner `GET` of a batch with the delta's preferences.
fn inner_delta(id: &str, url: &str) -> Value {
    json!({
        "id": id,
        "method": "GET",
        "url": url,
        "headers": {"Prefer": "odata.maxpagesize=2, IdType=\"ImmutableId\""},
    })
}

/// The batch's answers by id.
fn by_id(body: &Value) -> std::collections::HashMap<String, Value> {
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|response| (response["id"].as_str().unwrap().to_owned(), response.clone()))
        .collect()
}

#[tokio::test]
async fn a_batch_carries_both_message_deltas_under_me_with_the_direct_routes_paging_and_links() {
    let harness = Harness::start(GraphConfig::default()).await;
    let inbox: Vec<String> = (1..=3)
        .map(|day| harness.seed(Folder::Inbox, &format!("In {day}"), day))
        .collect();
    let sent = harness.seed(Folder::SentItems, "Out", 4);
    let token = harness.access_token().await;
    let prefer = [IMMUTABLE, "odata.maxpagesize=2"];
    let inbox_url = "/me/mailFolders/inbox/messages/delta";
    let sent_url = "/me/mailFolders/sentitems/messages/delta";

    // The direct route under /me: the same pages as under /users/{upn}.
    let (status, _, direct) = harness
        .call(
            &token,
            Method::GET,
            &harness.url(&format!("/v1.0{inbox_url}")),
            &prefer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{direct}");
    assert_eq!(ids(&direct), [inbox[2].clone(), inbox[1].clone()]);
    let base = harness.url("/v1.0");
    let next = direct["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&format!("{base}{inbox_url}?$skiptoken=")), "{next}");

    let batch = harness.url("/v1.0/$batch");
    let before = harness.simulator.counters(&harness.mailbox);
    let requests = json!({"requests": [inner_delta("inbox", inbox_url), inner_delta("sent", sent_url)]});
    let (status, _, body) = harness.call(&token, Method::POST, &batch, &[], Some(requests)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers = by_id(&body);
    assert_eq!(answers["inbox"]["status"], 200, "{body}");
    assert_eq!(ids(&answers["inbox"]["body"]), ids(&direct));
    assert_eq!(answers["inbox"]["headers"]["Preference-Applied"], "odata.maxpagesize=2");
    let inbox_next = answers["inbox"]["body"]["@odata.nextLink"].as_str().unwrap().to_owned();
    assert!(
        inbox_next.starts_with(&format!("{base}{inbox_url}?$skiptoken=")),
        "{inbox_next}"
    );
    assert_eq!(ids(&answers["sent"]["body"]), [sent]);
    let sent_delta = answers["sent"]["body"]["@odata.deltaLink"].as_str().unwrap().to_owned();
    assert!(
        sent_delta.starts_with(&format!("{base}{sent_url}?$deltatoken=")),
        "{sent_delta}"
    );
    let after = harness.simulator.counters(&harness.mailbox);
    assert_eq!(after.calls_to(Endpoint::Batch), before.calls_to(Endpoint::Batch) + 1);
    assert_eq!(
        after.calls_to(Endpoint::MessagesDelta),
        before.calls_to(Endpoint::MessagesDelta) + 2,
        "each inner request counts and is throttled as a call of its own"
    );

    // The links, made relative to /v1.0, continue the rounds in the next batch.
    let relative = |link: &str| link.strip_prefix(&base).unwrap().to_owned();
    let requests = json!({"requests": [
        inner_delta("inbox", &relative(&inbox_next)),
        inner_delta("sent", &relative(&sent_delta)),
    ]});
    let (_, _, body) = harness.call(&token, Method::POST, &batch, &[], Some(requests)).await;
    let answers = by_id(&body);
    assert_eq!(ids(&answers["inbox"]["body"]), [inbox[0].clone()]);
    let inbox_delta = answers["inbox"]["body"]["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ids(&answers["sent"]["body"]).is_empty(), "{body}");
    let sent_delta = answers["sent"]["body"]["@odata.deltaLink"].as_str().unwrap().to_owned();

    // A new message shows in the next round; a throttled inner request
    // answers 429 with its Retry-After while the other is served.
    let new = harness.seed(Folder::Inbox, "New", 5);
    harness
        .simulator
        .inject_fault_on(
            &harness.mailbox,
            Endpoint::MessagesDelta,
            Fault::Throttled {
                retry_after: Some(Duration::from_secs(3)),
            },
            1,
        )
        .unwrap();
    let requests = json!({"requests": [
        inner_delta("inbox", &relative(&inbox_delta)),
        {"id": "sent", "method": "GET", "url": relative(&sent_delta), "dependsOn": ["inbox"]},
    ]});
    let (_, _, body) = harness
        .call(&token, Method::POST, &batch, &[], Some(requests.clone()))
        .await;
    let answers = by_id(&body);
    assert_eq!(answers["inbox"]["status"], 429, "{body}");
    assert_eq!(answers["inbox"]["headers"]["Retry-After"], "3");
    assert_eq!(answers["sent"]["status"], 424, "a dependant of a failed request");
    let (_, _, body) = harness.call(&token, Method::POST, &batch, &[], Some(requests)).await;
    let answers = by_id(&body);
    assert_eq!(ids(&answers["inbox"]["body"]), [new]);
    assert_eq!(answers["sent"]["status"], 200);

    // An invalidated token answers 410 with the /me restart URL, as directly.
    harness.simulator.expire_delta_tokens(&harness.mailbox).unwrap();
    let requests = json!({"requests": [inner_delta("inbox", &relative(&inbox_delta))]});
    let (_, _, body) = harness.call(&token, Method::POST, &batch, &[], Some(requests)).await;
    let answers = by_id(&body);
    assert_eq!(answers["inbox"]["status"], 410);
    assert_eq!(answers["inbox"]["body"]["error"]["code"], "syncStateNotFound");
    assert_eq!(answers["inbox"]["headers"]["Location"], format!("{base}{inbox_url}"));
    harness.stop().await;
}

/// A notification receiver on a loopback port: it answers Graph's validation
/// (echoing the token, or a wrong one when told) and keeps what it is posted.
struct Receiver {
    base: String,
    posted: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    validations: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    shutdown: CancellationToken,
}

#[derive(Clone)]
struct ReceiverState {
    posted: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    validations: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    echo: bool,
}

impl Receiver {
    async fn start(echo: bool) -> Self {
        use axum::{
            extract::{Path, Query, State},
            routing::post,
        };
        async fn receive(
            State(state): State<ReceiverState>,
            Path(kind): Path<String>,
            Query(query): Query<std::collections::HashMap<String, String>>,
            body: axum::body::Bytes,
        ) -> (StatusCode, String) {
            if let Some(token) = query.get("validationToken") {
                state.validations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = if state.echo {
                    token.clone()
                } else {
                    "not the token".to_owned()
                };
                return (StatusCode::OK, answer);
            }
            let body: Value = serde_json::from_slice(&body).unwrap();
            state.posted.lock().unwrap().push((kind, body));
            (StatusCode::ACCEPTED, String::new())
        }
        let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let validations = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let router = axum::Router::new()
            .route("/{kind}", post(receive))
            .with_state(ReceiverState {
                posted: posted.clone(),
                validations: validations.clone(),
                echo,
            });
        let shutdown = CancellationToken::new();
        let server = syncfleet_simulators::Server::start("127.0.0.1:0".parse().unwrap(), router, shutdown.clone())
            .await
            .unwrap();
        Self {
            base: server.base_url(),
            posted,
            validations,
            shutdown,
        }
    }

    /// What was posted to `/{kind}` so far.
    fn posted(&self, kind: &str) -> Vec<Value> {
        let posted = self.posted.lock().unwrap();
        posted
            .iter()
            .filter(|(to, _)| to == kind)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Waits (at most 10 s) until `/{kind}` received `count` posts.
    async fn wait_for(&self, kind: &str, count: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let posted = self.posted(kind);
            if posted.len() >= count || std::time::Instant::now() > deadline {
                return posted;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn subscription_request(receiver: &Receiver, resource: &str, minutes: i64) -> Value {
    json!({
        "changeType": "created,updated",
        "notificationUrl": format!("{}/notify", receiver.base),
        "lifecycleNotificationUrl": format!("{}/lifecycle", receiver.base),
        "resource": resource,
        "expirationDateTime": (Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339(),
        "clientState": "sealed-secret-of-the-fleet",
    })
}

/// Creates a subscription with `body` as the harness's mailbox.
async fn subscribe(harness: &Harness, token: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, answer) = harness
        .call(
            token,
            Method::POST,
            &harness.url("/v1.0/subscriptions"),
            &[],
            Some(body),
        )
        .await;
    (status, answer)
}

#[tokio::test]
async fn a_validated_subscription_notifies_its_folders_new_mail_with_its_client_state_and_no_content() {
    let harness = Harness::start(GraphConfig::default()).await;
    let receiver = Receiver::start(true).await;
    let token = harness.access_token().await;
    let subscriptions = harness.url("/v1.0/subscriptions");
    let (status, created) = subscribe(
        &harness,
        &token,
        subscription_request(&receiver, "me/mailFolders('Inbox')/messages", 60),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        receiver.validations.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "both URLs validated"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["changeType"], "created,updated");
    assert_eq!(harness.simulator.subscriptions().len(), 1);

    let message = harness.seed(Folder::Inbox, "Quarterly figures", 4);
    harness.seed(Folder::SentItems, "Not watched", 4);
    let posted = receiver.wait_for("notify", 1).await;
    assert_eq!(posted.len(), 1, "{posted:?}");
    let notification = &posted[0]["value"][0];
    assert_eq!(notification["subscriptionId"], id.as_str());
    assert_eq!(notification["clientState"], "sealed-secret-of-the-fleet");
    assert_eq!(notification["changeType"], "created");
    assert_eq!(notification["resourceData"]["id"], message.as_str());
    assert_eq!(notification["tenantId"], syncfleet_simulators::graph::TENANT_ID);
    assert!(
        !posted[0].to_string().contains("Quarterly figures"),
        "a notification carries no content"
    );

    // A change to the message is `updated`; one in Sent Items is not watched.
    harness
        .simulator
        .update_message(&harness.mailbox, &message, "Renamed")
        .unwrap();
    let posted = receiver.wait_for("notify", 2).await;
    assert_eq!(posted[1]["value"][0]["changeType"], "updated");
    assert_eq!(harness.simulator.notification_counters().changes, 2);

    // Listed, read and deleted through the API; gone, it notifies no more.
    let (status, _, listed) = harness.call(&token, Method::GET, &subscriptions, &[], None).await;
    assert_eq!((status, listed["value"].as_array().unwrap().len()), (StatusCode::OK, 1));
    let one = format!("{subscriptions}/{id}");
    let (status, _, _) = harness.call(&token, Method::DELETE, &one, &[], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = harness.call(&token, Method::GET, &one, &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    harness.seed(Folder::Inbox, "After the deletion", 5);
    assert_eq!(harness.simulator.notification_counters().changes, 2);
    assert_eq!(
        harness
            .simulator
            .counters(&harness.mailbox)
            .calls_to(Endpoint::Subscriptions),
        4,
        "create, list, delete, read"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_subscription_is_refused_when_its_endpoint_fails_validation_or_its_request_is_wrong() {
    let harness = Harness::start(GraphConfig::default()).await;
    let token = harness.access_token().await;
    let silent = Receiver::start(false).await;
    let (status, refused) = subscribe(
        &harness,
        &token,
        subscription_request(&silent, "me/mailFolders('Inbox')/messages", 60),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["code"], "ValidationError");
    assert!(harness.simulator.subscriptions().is_empty());

    let receiver = Receiver::start(true).await;
    for (change, expected) in [
        (
            json!({"expirationDateTime": (Utc::now() + chrono::Duration::minutes(10_071)).to_rfc3339()}),
            "10070 minutes",
        ),
        (
            json!({"expirationDateTime": (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339()}),
            "in the future",
        ),
        (json!({"changeType": "created,moved"}), "'moved'"),
        (json!({"resource": "me/events"}), "is not supported"),
        (json!({"clientState": "x".repeat(129)}), "128 characters"),
        (json!({"notificationUrl": "ftp://example"}), "notificationUrl"),
    ] {
        let mut request = subscription_request(&receiver, "me/mailFolders('Inbox')/messages", 60);
        for (name, value) in change.as_object().unwrap() {
            request[name] = value.clone();
        }
        let (status, refused) = subscribe(&harness, &token, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change}: {refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{change}: {message}");
    }
    // Another mailbox's folder is not the caller's to watch.
    harness.simulator.create_mailbox("someone.else@contoso.example");
    let (status, _) = subscribe(
        &harness,
        &token,
        subscription_request(
            &receiver,
            "users/someone.else@contoso.example/mailFolders('inbox')/messages",
            60,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(harness.simulator.subscriptions().is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn a_subscription_is_renewed_before_it_expires_and_an_expired_one_notifies_no_more() {
    let harness = Harness::start(GraphConfig::default()).await;
    let receiver = Receiver::start(true).await;
    let token = harness.access_token().await;
    let subscriptions = harness.url("/v1.0/subscriptions");
    let (_, created) = subscribe(
        &harness,
        &token,
        subscription_request(
            &receiver,
            &format!("users/{}/mailFolders/sentitems/messages", harness.mailbox),
            5,
        ),
    )
    .await;
    let one = format!("{subscriptions}/{}", created["id"].as_str().unwrap());
    let renewed_to = Utc::now() + chrono::Duration::minutes(4_000);
    let (status, _, renewed) = harness
        .call(
            &token,
            Method::PATCH,
            &one,
            &[],
            Some(json!({"expirationDateTime": renewed_to.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let listed = harness.simulator.subscriptions();
    assert!(
        (listed[0].expires_at - renewed_to).num_seconds().abs() <= 1,
        "{listed:?}"
    );
    let (status, _, _) = harness
        .call(
            &token,
            Method::PATCH,
            &one,
            &[],
            Some(json!({"expirationDateTime": (Utc::now() + chrono::Duration::minutes(20_000)).to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a renewal is bounded too");
    let (status, _, _) = harness
        .call(&token, Method::POST, &format!("{one}/reauthorize"), &[], None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    harness.seed(Folder::SentItems, "Sent before expiry", 4);
    assert_eq!(receiver.wait_for("notify", 1).await.len(), 1);
    let (status, _) = harness
        .control(Method::POST, &format!("/subscriptions/{}/expire", listed[0].id), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    harness.seed(Folder::SentItems, "Sent after expiry", 5);
    assert_eq!(harness.simulator.notification_counters().changes, 1);
    let (status, _, _) = harness
        .call(
            &token,
            Method::PATCH,
            &one,
            &[],
            Some(json!({"expirationDateTime": renewed_to.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an expired subscription is gone");
    harness.stop().await;
}

#[tokio::test]
async fn delivery_can_lose_duplicate_and_delay_notifications_and_lifecycle_events_reach_their_url() {
    let harness = Harness::start(GraphConfig::default()).await;
    let receiver = Receiver::start(true).await;
    let token = harness.access_token().await;
    let (status, created) = subscribe(
        &harness,
        &token,
        subscription_request(&receiver, "/me/mailfolders('inbox')/messages", 60),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, refused) = harness
        .control(Method::PUT, "/notifications", Some(json!({"loss": 1.5})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = harness
        .control(
            Method::PUT,
            "/notifications",
            Some(json!({"duplication": 1.0, "min_delay_ms": 50, "max_delay_ms": 100})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    harness.seed(Folder::Inbox, "Twice", 4);
    let posted = receiver.wait_for("notify", 2).await;
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0], posted[1], "a duplicate is the same notification");

    harness
        .simulator
        .set_notification_delivery(syncfleet_simulators::graph::Delivery {
            loss: 1.0,
            ..Default::default()
        });
    harness.seed(Folder::Inbox, "Lost", 5);
    let (status, state) = harness.control(Method::GET, "/notifications", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["counters"]["changes"], 2);
    assert_eq!(state["counters"]["lost"], 1);
    assert_eq!(state["counters"]["duplicated"], 1);
    assert_eq!(state["counters"]["delivered"], 2);

    for (event, expected) in [("missed", "missed"), ("subscription_removed", "subscriptionRemoved")] {
        let (status, _) = harness
            .control(
                Method::POST,
                &format!("/subscriptions/{id}/lifecycle"),
                Some(json!({"event": event})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{event}");
        let last = receiver.wait_for("lifecycle", 1 + usize::from(event != "missed")).await;
        let notification = &last.last().unwrap()["value"][0];
        assert_eq!(notification["lifecycleEvent"], expected);
        assert_eq!(notification["clientState"], "sealed-secret-of-the-fleet");
    }
    assert!(
        harness.simulator.subscriptions().is_empty(),
        "a removed subscription is gone"
    );
    let (status, _) = harness
        .control(
            Method::POST,
            &format!("/subscriptions/{id}/lifecycle"),
            Some(json!({"event": "missed"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    harness.stop().await;
}
