//! A force sync is one trace: the api's request, the queue, the worker; and
//! the api's requests join the trace a caller's `traceparent` names.

use std::time::Duration;

use syncfleet_api::auth::create_token;
use syncfleet_testkit::{OtlpReceiver, Providers, TestEnv, free_port, http, stop_gracefully, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_sync_is_one_trace_from_the_api_through_the_queue_into_the_worker() {
    let receiver = OtlpReceiver::start().await;
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let token = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let telemetry = [
        ("SYNCFLEET_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("SYNCFLEET_API_DRAIN_DELAY", "100ms"),
    ];
    let listen = address.to_string();
    let mut api_settings = telemetry.to_vec();
    api_settings.push(("SYNCFLEET_API_LISTEN", &listen));
    let api = env.spawn("syncfleet-api", &api_settings);
    let worker = env.spawn_with("syncfleet-worker", &providers, &telemetry);
    wait_until(Duration::from_secs(30), "the api to listen", || async {
        tokio::net::TcpStream::connect(address).await.is_ok()
    })
    .await;

    let response = http(
        address,
        "POST",
        &format!("/v1/users/{user}/actions/force-sync?wait=30"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    stop_gracefully(api);
    stop_gracefully(worker);

    let seen = receiver.spans();
    let request = seen
        .iter()
        .find(|span| span.service == "syncfleet-api" && span.name == "user_action")
        .unwrap_or_else(|| panic!("no user_action span in {seen:?}"));
    let job = seen
        .iter()
        .find(|span| span.service == "syncfleet-worker" && span.name == "job")
        .unwrap_or_else(|| panic!("no job span in {seen:?}"));
    assert_eq!(job.trace_id, request.trace_id, "one trace across the queue");
    assert_eq!(
        job.parent_span_id, request.span_id,
        "the worker's job continues the api's request"
    );
    let http = seen
        .iter()
        .find(|span| span.service == "syncfleet-api" && span.span_id == request.parent_span_id)
        .unwrap_or_else(|| panic!("no parent of the user_action span in {seen:?}"));
    assert_eq!(
        http.name, "POST /v1/users/{id}/actions/{action}",
        "the request's span is named by its route template"
    );
    assert!(
        seen.iter()
            .any(|span| span.name == "sync_session" && span.trace_id == request.trace_id)
    );
    env.cleanup().await;
}

/// The caller's trace and its span, as a W3C `traceparent` carries them.
const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_traceparent_is_a_span_of_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let env = TestEnv::new().await;
    let token = create_token(&env.pool, "admin", None, None, "").await.unwrap();
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = address.to_string();
    let api = env.spawn(
        "syncfleet-api",
        &[
            ("SYNCFLEET_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("SYNCFLEET_API_DRAIN_DELAY", "100ms"),
            ("SYNCFLEET_API_LISTEN", &listen),
        ],
    );
    wait_until(Duration::from_secs(30), "the api to listen", || async {
        tokio::net::TcpStream::connect(address).await.is_ok()
    })
    .await;

    syncfleet_common::telemetry::install_tls_provider();
    let response = reqwest::Client::new()
        .get(format!("http://{address}/v1/organizations"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    stop_gracefully(api);

    let seen = receiver.spans();
    let request = seen
        .iter()
        .find(|span| span.service == "syncfleet-api" && span.name == "GET /v1/organizations")
        .unwrap_or_else(|| panic!("no span of the request in {seen:?}"));
    assert_eq!(hex(&request.trace_id), CALLER_TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&request.parent_span_id),
        CALLER_SPAN_ID,
        "a child of the caller's span"
    );
    env.cleanup().await;
}
