//! The EWS simulator over HTTP, as a SOAP client sees it: raw envelopes in,
//! raw envelopes out.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use syncfleet_simulators::ews::{
    Address, EWS_PATH, EwsConfig, EwsSimulator, Fault, LocalEws, MessageFolder, MessageSeed, Operation,
};
use tokio_util::sync::CancellationToken;

use crate::support::Served;

struct Harness {
    simulator: EwsSimulator,
    served: Served,
    local: Account,
}

/// The account [`EwsSimulator::start_local`] creates, and its own mailbox.
struct Account {
    account: String,
    password: String,
    smtp: String,
}

const SYNC_INBOX: &str = r#"<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:SyncFolderId><t:DistinguishedFolderId Id="inbox"/></m:SyncFolderId>{state}<m:MaxChangesReturned>{max}</m:MaxChangesReturned></m:SyncFolderItems>"#;

fn sync_inbox(state: Option<&str>, max: u32) -> String {
    let state = state
        .map(|state| format!("<m:SyncState>{state}</m:SyncState>"))
        .unwrap_or_default();
    SYNC_INBOX.replace("{state}", &state).replace("{max}", &max.to_string())
}

const GET_INBOX: &str = r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>"#;

fn impersonating(smtp: &str) -> String {
    format!(
        "<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{smtp}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
    )
}

/// The text between `<{tag}>` (any prefix) and its end tag.
fn text_of<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!(":{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find("</")? + start;
    Some(&xml[start..end])
}

/// An item id (base64) as a path segment of the control API.
fn segment(id: &str) -> String {
    id.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

fn seed(subject: &str) -> MessageSeed {
    let now: DateTime<Utc> = Utc::now();
    MessageSeed {
        subject: subject.to_owned(),
        from: Some(Address::new("sender@example.test", "Sender")),
        to: vec![Address::new("alice@contoso.test", "Alice")],
        body: "Hello".to_owned(),
        sent: now,
        received: now,
        ..MessageSeed::default()
    }
}

impl Harness {
    async fn start(config: EwsConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalEws {
            simulator,
            server,
            account,
            password,
            smtp,
        } = EwsSimulator::start_local(config, shutdown.clone()).await.unwrap();
        Self {
            simulator,
            served: Served::new(server, shutdown),
            local: Account {
                account,
                password,
                smtp,
            },
        }
    }

    /// Calls the control API: the status and the JSON answer.
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.served.json(method, &format!("/_control/ews{path}"), body).await
    }

    async fn soap_as(
        &self,
        account: &str,
        password: &str,
        anchor: Option<&str>,
        header: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let envelope = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><soap:Header><t:RequestServerVersion Version="Exchange2013_SP1"/>{header}</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#
        );
        let mut request = self
            .served
            .http
            .post(self.served.url(EWS_PATH))
            .basic_auth(account, Some(password))
            .header("content-type", "text/xml; charset=utf-8")
            .body(envelope);
        if let Some(anchor) = anchor {
            request = request.header("X-AnchorMailbox", anchor);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn soap(&self, body: &str) -> (StatusCode, String) {
        self.soap_as(&self.local.account, &self.local.password, None, "", body)
            .await
    }
}

#[tokio::test]
async fn a_wrong_password_answers_401_with_an_empty_body() {
    let harness = Harness::start(EwsConfig::default()).await;
    let (status, body) = harness
        .soap_as(&harness.local.account, "wrong", None, "", GET_INBOX)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.is_empty());
    let (status, body) = harness.soap(GET_INBOX).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#"ResponseClass="Success""#), "{body}");
    assert!(body.contains("<t:DisplayName>Inbox</t:DisplayName>"), "{body}");
    let counters = harness.simulator.counters(&harness.local.account);
    assert_eq!(counters.calls_to(Operation::GetFolder), 2);
}

#[tokio::test]
async fn sync_states_page_through_the_folder_and_then_yield_only_new_changes() {
    let harness = Harness::start(EwsConfig::default()).await;
    let smtp = &harness.local.smtp;
    let ids: Vec<String> = (0..3)
        .map(|index| {
            harness
                .simulator
                .add_message(smtp, MessageFolder::Inbox, seed(&format!("m{index}")))
                .unwrap()
        })
        .collect();
    harness
        .simulator
        .add_message(smtp, MessageFolder::SentItems, seed("sent"))
        .unwrap();

    let (_, first) = harness.soap(&sync_inbox(None, 2)).await;
    assert_eq!(text_of(&first, "IncludesLastItemInRange"), Some("false"), "{first}");
    assert_eq!(first.matches("<t:Create>").count(), 2);
    let state = text_of(&first, "SyncState").unwrap().to_owned();
    let (_, second) = harness.soap(&sync_inbox(Some(&state), 2)).await;
    assert_eq!(text_of(&second, "IncludesLastItemInRange"), Some("true"));
    assert_eq!(second.matches("<t:Create>").count(), 1);
    assert!(second.contains(&ids[2]));
    let caught_up = text_of(&second, "SyncState").unwrap().to_owned();

    harness.simulator.delete_message(smtp, &ids[0]).unwrap();
    harness.simulator.update_message(smtp, &ids[1], seed("edited")).unwrap();
    harness.simulator.set_read(smtp, &ids[2], true).unwrap();
    let (_, changes) = harness.soap(&sync_inbox(Some(&caught_up), 10)).await;
    assert_eq!(changes.matches("<t:Delete>").count(), 1, "{changes}");
    assert_eq!(changes.matches("<t:Update>").count(), 1);
    assert_eq!(changes.matches("<t:ReadFlagChange>").count(), 1);
    assert_eq!(changes.matches("<t:Create>").count(), 0);

    // The same state can be replayed until it is invalidated.
    let (_, replay) = harness.soap(&sync_inbox(Some(&caught_up), 10)).await;
    assert_eq!(replay.matches("<t:Delete>").count(), 1);
    harness.simulator.invalidate_sync_states(smtp);
    let (status, refused) = harness.soap(&sync_inbox(Some(&caught_up), 10)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(refused.contains(r#"ResponseClass="Error""#), "{refused}");
    assert_eq!(text_of(&refused, "ResponseCode"), Some("ErrorInvalidSyncStateData"));

    let (status, fault) = harness.soap(&sync_inbox(None, 513)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(fault.contains("ErrorSchemaValidation"), "{fault}");
}

#[tokio::test]
async fn get_item_answers_the_asked_properties_escaped_and_a_missing_item_alone() {
    let harness = Harness::start(EwsConfig::default()).await;
    let mut message = seed(r#"Q&A <now> "x" 'y'"#);
    message.internet_message_id = Some("<id@example.test>".to_owned());
    let id = harness
        .simulator
        .add_message(&harness.local.smtp, MessageFolder::Inbox, message)
        .unwrap();
    let body = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:BodyType>Text</t:BodyType><t:AdditionalProperties><t:FieldURI FieldURI="item:Subject"/><t:FieldURI FieldURI="message:InternetMessageId"/></t:AdditionalProperties></m:ItemShape><m:ItemIds><t:ItemId Id="{id}"/><t:ItemId Id="AAMkAgone"/></m:ItemIds></m:GetItem>"#
    );
    let (status, answer) = harness.soap(&body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer.contains("<t:Subject>Q&amp;A &lt;now&gt; &quot;x&quot; &apos;y&apos;</t:Subject>"),
        "{answer}"
    );
    assert!(answer.contains("<t:InternetMessageId>&lt;id@example.test&gt;</t:InternetMessageId>"));
    assert!(!answer.contains("<t:Body"), "only what was asked: {answer}");
    assert!(answer.contains("ErrorItemNotFound"));
}

#[tokio::test]
async fn impersonation_needs_the_role_the_anchor_header_and_an_existing_mailbox() {
    let harness = Harness::start(EwsConfig::default()).await;
    let simulator = &harness.simulator;
    simulator
        .create_service_account("svc@contoso.test", "svc-pw", true)
        .unwrap();
    simulator
        .create_service_account("norole@contoso.test", "pw", false)
        .unwrap();
    let target = harness.local.smtp.clone();
    let header = impersonating(&target);

    let (status, answer) = harness
        .soap_as("svc@contoso.test", "svc-pw", Some(&target), &header, GET_INBOX)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.contains("NoError"));

    let (status, answer) = harness
        .soap_as("svc@contoso.test", "svc-pw", None, &header, GET_INBOX)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.contains("X-AnchorMailbox"), "{answer}");

    let (status, answer) = harness
        .soap_as("norole@contoso.test", "pw", Some(&target), &header, GET_INBOX)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.contains("a:ErrorImpersonateUserDenied"), "{answer}");

    let nobody = impersonating("nobody@contoso.test");
    let (_, answer) = harness
        .soap_as(
            "svc@contoso.test",
            "svc-pw",
            Some("nobody@contoso.test"),
            &nobody,
            GET_INBOX,
        )
        .await;
    assert!(answer.contains("ErrorNonExistentMailbox"), "{answer}");

    // A service account without a mailbox of its own cannot log on directly.
    let (_, answer) = harness.soap_as("svc@contoso.test", "svc-pw", None, "", GET_INBOX).await;
    assert!(answer.contains("ErrorNonExistentMailbox"), "{answer}");

    assert_eq!(simulator.counters("svc@contoso.test").calls_to(Operation::GetFolder), 4);
    assert_eq!(simulator.counters(&harness.local.account).total_calls(), 0);
}

#[tokio::test]
async fn concurrency_is_counted_per_authenticated_account() {
    let harness = Harness::start(EwsConfig {
        max_concurrency: 1,
        ..EwsConfig::default()
    })
    .await;
    let simulator = &harness.simulator;
    simulator
        .create_service_account("svc@contoso.test", "svc-pw", true)
        .unwrap();
    simulator.set_latency(Duration::from_millis(300), Duration::ZERO);
    let target = harness.local.smtp.clone();
    let header = impersonating(&target);
    let (own, impersonated, second_own) = tokio::join!(
        harness.soap(GET_INBOX),
        harness.soap_as("svc@contoso.test", "svc-pw", Some(&target), &header, GET_INBOX),
        async {
            // Sent once the first call is in flight (counted, then waiting).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while simulator.counters(&harness.local.account).total_calls() == 0 {
                assert!(tokio::time::Instant::now() < deadline, "the first call never came");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            harness.soap(GET_INBOX).await
        },
    );
    assert_eq!(own.0, StatusCode::OK, "{}", own.1);
    assert_eq!(impersonated.0, StatusCode::OK, "{}", impersonated.1);
    assert_eq!(second_own.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        second_own.1.contains("a:ErrorExceededConnectionCount"),
        "{}",
        second_own.1
    );
    assert_eq!(simulator.counters(&harness.local.account).throttled, 1);
    assert_eq!(simulator.counters("svc@contoso.test").throttled, 0);
}

#[tokio::test]
async fn a_spent_request_budget_answers_server_busy_with_the_back_off() {
    let harness = Harness::start(EwsConfig {
        requests_per_minute: 2,
        busy_backoff_ms: 4321,
        ..EwsConfig::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(harness.soap(GET_INBOX).await.0, StatusCode::OK);
    }
    let (status, answer) = harness.soap(GET_INBOX).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.contains("<faultcode"), "{answer}");
    assert!(answer.contains("a:ErrorServerBusy"));
    assert!(
        answer.contains(r#"<t:Value Name="BackOffMilliseconds">4321</t:Value>"#),
        "{answer}"
    );
    assert_eq!(harness.simulator.counters(&harness.local.account).throttled, 1);
}

#[tokio::test]
async fn armed_faults_answer_as_exchange_does_then_stop() {
    let harness = Harness::start(EwsConfig::default()).await;
    let (simulator, account) = (&harness.simulator, &harness.local.account);
    simulator.inject_fault(account, Fault::Http503, 1);
    simulator.inject_fault(account, Fault::ServerBusy { backoff_ms: 0 }, 1);
    simulator.inject_fault(account, Fault::Unauthorized, 1);
    let (status, _) = harness.soap(GET_INBOX).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, answer) = harness.soap(GET_INBOX).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.contains("ErrorServerBusy") && !answer.contains("BackOffMilliseconds"));
    assert_eq!(harness.soap(GET_INBOX).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(harness.soap(GET_INBOX).await.0, StatusCode::OK);

    // A rate of 1 answers every call until it is set back to 0.
    simulator.set_fault_rate(&harness.local.smtp, Fault::ConnectionCount, 1.0);
    assert!(harness.soap(GET_INBOX).await.1.contains("ErrorExceededConnectionCount"));
    simulator.set_fault_rate(&harness.local.smtp, Fault::ConnectionCount, 0.0);
    assert_eq!(harness.soap(GET_INBOX).await.0, StatusCode::OK);

    // InvalidSyncState waits for a SyncFolderItems.
    simulator.inject_fault(account, Fault::InvalidSyncState, 1);
    assert_eq!(harness.soap(GET_INBOX).await.0, StatusCode::OK);
    let (_, answer) = harness.soap(&sync_inbox(None, 10)).await;
    assert!(answer.contains("ErrorInvalidSyncStateData"), "{answer}");
    assert_eq!(simulator.counters(account).faults, 5);
}

#[tokio::test]
async fn an_unknown_operation_is_a_soap_fault() {
    let harness = Harness::start(EwsConfig::default()).await;
    let (status, answer) = harness
        .soap("<m:ResolveNames><m:UnresolvedEntry>x</m:UnresolvedEntry></m:ResolveNames>")
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.contains("a:ErrorInvalidRequest"), "{answer}");
    assert_eq!(
        harness
            .simulator
            .counters(&harness.local.account)
            .calls_to(Operation::Unknown),
        1
    );
}

#[tokio::test]
async fn calendar_items_need_send_meeting_invitations_and_an_end_after_the_start() {
    let harness = Harness::start(EwsConfig::default()).await;
    let item = |start: &str, end: &str| {
        format!(
            "<t:CalendarItem><t:Subject>Call</t:Subject><t:Start>{start}</t:Start><t:End>{end}</t:End></t:CalendarItem>"
        )
    };
    let good = item("2025-01-01T10:00:00Z", "2025-01-01T11:00:00Z");
    let bad = item("2025-01-01T10:00:00Z", "2025-01-01T09:00:00Z");
    let (_, answer) = harness
        .soap(&format!("<m:CreateItem><m:Items>{good}</m:Items></m:CreateItem>"))
        .await;
    assert!(answer.contains("ErrorSendMeetingInvitationsRequired"), "{answer}");
    let (_, answer) = harness
        .soap(&format!(
            r#"<m:CreateItem SendMeetingInvitations="SendToNone"><m:Items>{good}{bad}</m:Items></m:CreateItem>"#
        ))
        .await;
    assert_eq!(answer.matches(r#"ResponseClass="Success""#).count(), 1, "{answer}");
    assert!(answer.contains("ErrorCalendarEndDateIsEarlierThanStartDate"));
    let events = harness.simulator.events(&harness.local.smtp);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].subject, "Call");
}

#[tokio::test]
async fn the_control_api_shapes_and_reads_the_simulator() {
    let harness = Harness::start(EwsConfig::default()).await;
    let account = json!({"account": "bob@contoso.test", "password": "pw"});
    let mailbox = json!({"smtp": "bob@contoso.test", "owner": "bob@contoso.test"});
    assert_eq!(
        harness.control(Method::POST, "/accounts", Some(account)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        harness
            .control(Method::POST, "/mailboxes", Some(mailbox.clone()))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        harness.control(Method::POST, "/mailboxes", Some(mailbox)).await.0,
        StatusCode::CONFLICT
    );
    let (_, created) = harness
        .control(
            Method::POST,
            "/mailboxes/bob@contoso.test/messages",
            Some(json!({
                "folder": "inbox",
                "subject": "Hi",
                "sent": "2025-01-01T10:00:00Z",
                "received": "2025-01-01T10:00:05Z",
            })),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("AAMkA"));
    let (_, folders) = harness
        .control(Method::GET, "/mailboxes/bob@contoso.test/folders", None)
        .await;
    assert!(
        folders
            .as_array()
            .unwrap()
            .iter()
            .any(|folder| folder["distinguished"] == "inbox")
    );
    let (_, categories) = harness
        .control(Method::GET, "/mailboxes/bob@contoso.test/categories", None)
        .await;
    assert_eq!(categories[0], "Red category");
    assert_eq!(
        harness
            .control(
                Method::POST,
                "/faults/bob@contoso.test",
                Some(json!({"fault": {"type": "server_busy", "backoff_ms": 10}, "times": 1}))
            )
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (status_code, answer) = harness.soap_as("bob@contoso.test", "pw", None, "", GET_INBOX).await;
    assert_eq!(status_code, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.contains(r#"Name="BackOffMilliseconds">10<"#), "{answer}");
    let (_, counters) = harness
        .control(Method::GET, "/accounts/bob@contoso.test/counters", None)
        .await;
    assert_eq!(counters["calls"]["GetFolder"], 1);
    assert_eq!(counters["faults"], 1);
    let item = format!("/mailboxes/bob@contoso.test/items/{}", segment(id));
    assert_eq!(
        harness.control(Method::DELETE, &item, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        harness.control(Method::DELETE, &item, None).await.0,
        StatusCode::NOT_FOUND
    );
    let latency = json!({"base_ms": 1, "jitter_ms": 2});
    assert_eq!(
        harness.control(Method::PUT, "/latency", Some(latency)).await.0,
        StatusCode::NO_CONTENT
    );
    let manifest = STANDARD
        .encode(r#"<OfficeApp xmlns="http://schemas.microsoft.com/office/appforoffice/1.1"><Id>ABC</Id></OfficeApp>"#);
    let (_, answer) = harness
        .soap_as(
            "bob@contoso.test",
            "pw",
            None,
            "",
            &format!("<m:InstallApp><m:Manifest>{manifest}</m:Manifest></m:InstallApp>"),
        )
        .await;
    assert!(
        answer.contains(r#"<m:InstallAppResponse"#) && answer.contains("NoError"),
        "{answer}"
    );
    let (_, apps) = harness
        .control(Method::GET, "/mailboxes/bob@contoso.test/apps", None)
        .await;
    assert_eq!(apps, json!(["abc"]));
}
