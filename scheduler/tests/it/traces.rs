//! One trace per job, from the scheduler through RabbitMQ into the worker,
//! exported over OTLP/HTTP to a receiver in this test.

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use chrono::Utc;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value,
};
use prost::Message;
use syncfleet_common::domain::{AccessType, SyncStatus};
use syncfleet_testkit::{TestEnv, binary, organization, session_count, users, wait_until};

/// A span as the receiver saw it.
#[derive(Debug, Clone)]
struct SpanSeen {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

type Spans = Arc<Mutex<Vec<SpanSeen>>>;

async fn receive(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut seen = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| resource.attributes.iter())
            .find(|attribute| attribute.key == "service.name")
            .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                seen.push(SpanSeen {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn spawn(env: &TestEnv, name: &str, endpoint: &str) -> Child {
    Command::new(binary(name))
        .envs(env.env_vars(&[
            ("SYNCFLEET_OTLP_ENDPOINT", endpoint),
            ("SYNCFLEET_SYNC_INTERVAL", "1h"),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cadence_job_is_one_trace_from_the_scheduler_through_the_queue_into_the_worker() {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let scheduler = spawn(&env, "syncfleet-scheduler", &endpoint);
    let worker = spawn(&env, "syncfleet-worker", &endpoint);
    wait_until(Duration::from_secs(60), "the session to succeed", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    // Stopping flushes what the exporters still buffer.
    stop(scheduler);
    stop(worker);

    let seen = spans.lock().unwrap().clone();
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
    for step in ["claim", "sync_work", "check_settings", "write_session"] {
        assert!(
            seen.iter()
                .any(|span| span.name == step && span.trace_id == job.trace_id),
            "no {step} span in the job's trace: {seen:?}"
        );
    }
    env.cleanup().await;
}
