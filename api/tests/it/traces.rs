//! A force sync is one trace: the api's request, the queue, the worker.

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
    assert!(
        seen.iter()
            .any(|span| span.name == "sync_session" && span.trace_id == request.trace_id)
    );
    env.cleanup().await;
}
