//! One trace per job, from the scheduler through RabbitMQ into the worker,
//! exported over OTLP/HTTP to a receiver in this test.

use std::time::Duration;

use syncfleet_testkit::{OtlpReceiver, Providers, TestEnv, session_count, stop_gracefully, wait_until};

fn spawn(env: &TestEnv, providers: &Providers, name: &str, endpoint: &str) -> std::process::Child {
    env.spawn_with(
        name,
        providers,
        &[
            ("SYNCFLEET_OTLP_ENDPOINT", endpoint),
            ("SYNCFLEET_SYNC_INTERVAL", "1h"),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cadence_job_is_one_trace_from_the_scheduler_through_the_queue_into_the_worker() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint.clone();

    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let scheduler = spawn(&env, &providers, "syncfleet-scheduler", &endpoint);
    let worker = spawn(&env, &providers, "syncfleet-worker", &endpoint);
    wait_until(Duration::from_secs(60), "the session to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    // Stopping flushes what the exporters still buffer.
    stop_gracefully(scheduler);
    stop_gracefully(worker);

    let seen = receiver.spans();
    let scheduled = seen
        .iter()
        .find(|span| span.service == "syncfleet-scheduler" && span.name == "schedule_job")
        .unwrap_or_else(|| panic!("no schedule_job span in {seen:?}"));
    let job = seen
        .iter()
        .find(|span| span.service == "syncfleet-worker" && span.name == "job")
        .unwrap_or_else(|| panic!("no job span in {seen:?}"));
    assert_eq!(job.trace_id, scheduled.trace_id, "one trace across the queue");
    assert_eq!(
        job.parent_span_id, scheduled.span_id,
        "the worker's job continues the scheduler's span"
    );
    for step in [
        "claim",
        "sync_work",
        "sync_session",
        "limits",
        "first_pages",
        "write_session",
    ] {
        assert!(
            seen.iter()
                .any(|span| span.name == step && span.trace_id == job.trace_id),
            "no {step} span in the job's trace: {seen:?}"
        );
    }
    env.cleanup().await;
}
