//! The operator console's API (`/v1/ops/`) through the real services: a
//! poison job dead-lettered, found, inspected and replayed once its fault is
//! cleared; bulk discard; heartbeats of a worker killed -9 and of one
//! stopped; a cooldown after a 429; and nobody but an admin sees any of it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use serde_json::{Value, json};
use syncfleet_api::auth::create_token;
use syncfleet_common::{
    domain::{AccessType, SyncStatus, Trigger},
    queue::{JobEnvelope, Route},
};
use syncfleet_testkit::{Providers, TestEnv, http, organization, session_count, users, wait_until};
use syncfleet_worker::{
    WorkerConfig,
    sync::{SessionContext, SettingsCheck, SyncFailure, SyncWork},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Api, send};

const LIMIT: Duration = Duration::from_secs(90);

/// Panics for one user while the fault is on, as a bug would.
struct PoisonWhile {
    user: Uuid,
    fault: Arc<AtomicBool>,
}

impl SyncWork for PoisonWhile {
    async fn run(&self, session: &mut SessionContext) -> Result<(), SyncFailure> {
        if session.user_id == self.user && self.fault.load(Ordering::SeqCst) {
            panic!("poison job for this user");
        }
        SettingsCheck.run(session).await
    }
}

async fn get(api: &Api, path: &str, token: &str) -> Value {
    let response = http(api.address, "GET", path, Some(token)).await;
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    response.json()
}

async fn admin(env: &TestEnv) -> String {
    create_token(&env.pool, "admin", None, None, "operator@example.test")
        .await
        .unwrap()
}

async fn dead_count(env: &TestEnv, job_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dead_jobs WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_is_dead_lettered_listed_inspected_and_replayed_once_its_fault_is_cleared() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let token = admin(&env).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let fault = Arc::new(AtomicBool::new(true));
    let shutdown = CancellationToken::new();
    let config = WorkerConfig::from_source(&env.source(&[
        ("SYNCFLEET_USER_LEASE", "2s"),
        ("SYNCFLEET_SHUTDOWN_GRACE", "5s"),
        ("SYNCFLEET_HEARTBEAT_INTERVAL", "200ms"),
    ]))
    .unwrap();
    let worker = tokio::spawn(syncfleet_worker::run(
        config,
        Arc::new(PoisonWhile {
            user,
            fault: fault.clone(),
        }),
        shutdown.clone(),
    ));

    let poison = JobEnvelope::sync(user, Trigger::Force, Utc::now());
    env.publisher()
        .await
        .publish(Route::Priority, std::slice::from_ref(&poison))
        .await
        .unwrap();
    wait_until(LIMIT, "the poison job to be dead-lettered", || async {
        dead_count(&env, poison.job_id).await == 1
    })
    .await;

    // Listed with its user and organization, filtered by kind and reason.
    let listed = get(&api, "/v1/ops/dead-jobs?kind=sync&reason=delivery_limit", &token).await;
    assert_eq!(listed["total"], 1, "{listed}");
    let dead = &listed["items"][0];
    assert_eq!(dead["job_id"], poison.job_id.to_string());
    assert_eq!(dead["kind"], "sync");
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["user_id"], user.to_string());
    assert_eq!(dead["organization_id"], org.to_string());
    assert!(dead["user_email"].is_string(), "{dead}");
    let id = dead["id"].as_str().unwrap().to_owned();
    assert_eq!(get(&api, "/v1/ops/dead-jobs?kind=push", &token).await["total"], 0);

    // Inspected: the envelope as queued and every attempt, each abandoned.
    let detail = get(&api, &format!("/v1/ops/dead-jobs/{id}"), &token).await;
    assert_eq!(detail["envelope"]["job_id"], poison.job_id.to_string());
    let attempts = detail["attempts"].as_array().unwrap();
    assert!(!attempts.is_empty(), "{detail}");
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt["status"] == "abandoned" && attempt["error"].is_string()),
        "{detail}"
    );
    let overview = get(&api, "/v1/ops/overview", &token).await;
    assert_eq!(overview["dead_jobs"]["waiting"], 1, "{overview}");

    // Replayed once the fault is cleared: one new job, synced once.
    fault.store(false, Ordering::SeqCst);
    let replayed = send(
        &api,
        "POST",
        &format!("/v1/ops/dead-jobs/{id}/replay"),
        &token,
        &json!({}),
    )
    .await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    let replayed = replayed.json();
    assert_eq!(replayed["status"], "replayed");
    assert_eq!(replayed["resolved_by"], "operator@example.test");
    let replay_job: Uuid = replayed["replay_job_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(replay_job, poison.job_id);
    // Replaying it again publishes nothing and answers the same.
    let again = send(
        &api,
        "POST",
        &format!("/v1/ops/dead-jobs/{id}/replay"),
        &token,
        &json!({}),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["replay_job_id"], replayed["replay_job_id"]);
    wait_until(LIMIT, "the replayed job to sync", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;
    // Give a second copy time to run, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sessions: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT job_id, status FROM sync_sessions WHERE user_id = $1 AND status <> 'abandoned'")
            .bind(user)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(sessions, vec![(replay_job, "succeeded".to_owned())]);
    let discard = http(api.address, "DELETE", &format!("/v1/ops/dead-jobs/{id}"), Some(&token)).await;
    assert_eq!(discard.status, 409, "a replayed job is not discarded: {}", discard.body);
    assert_eq!(get(&api, "/v1/ops/dead-jobs", &token).await["total"], 0);
    assert_eq!(get(&api, "/v1/ops/dead-jobs?status=replayed", &token).await["total"], 1);

    // The worker's heartbeat counted the session for the overview.
    wait_until(LIMIT, "the heartbeat to count the session", || async {
        let overview = get(&api, "/v1/ops/overview", &token).await;
        overview["sessions_per_minute"]
            .as_array()
            .unwrap()
            .iter()
            .any(|minute| minute["status"] == "succeeded" && minute["count"].as_i64() >= Some(1))
    })
    .await;
    // The broker's management API, which samples every few seconds.
    wait_until(LIMIT, "the management API to show the worker consuming", || async {
        let overview = get(&api, "/v1/ops/overview", &token).await;
        assert_eq!(overview["broker"]["source"], "management", "{overview}");
        let priority = overview["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|queue| queue["role"] == "priority")
            .unwrap()
            .clone();
        assert!(priority["unacknowledged"].is_i64(), "{priority}");
        priority["consumers"] == 1
    })
    .await;

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_are_discarded_in_bulk_by_filter_each_with_its_outcome() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let people = users(&env.pool, org, 4, SyncStatus::Enabled, Utc::now(), true).await;
    let token = admin(&env).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let shutdown = CancellationToken::new();
    let config = WorkerConfig::from_source(&env.source(&[])).unwrap();
    let worker = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), shutdown.clone()));
    // Four jobs dead-lettered through the broker, three of them for one reason.
    let publisher = env.publisher().await;
    let mut jobs = Vec::new();
    for (index, user) in people.iter().enumerate() {
        let job = JobEnvelope::sync(*user, Trigger::Force, Utc::now());
        let reason = if index < 3 { "bulk_test" } else { "other_test" };
        publisher
            .publish_dead(Route::Priority, &job.encode(), reason)
            .await
            .unwrap();
        jobs.push(job);
    }
    wait_until(LIMIT, "the dead letters to be recorded", || async {
        let mut all = true;
        for job in &jobs {
            all &= dead_count(&env, job.job_id).await == 1;
        }
        all
    })
    .await;

    let response = send(
        &api,
        "POST",
        "/v1/ops/dead-jobs/actions/discard",
        &token,
        &json!({"filter": {"reason": "bulk_test"}}),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let results = response.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(
        results.iter().all(|result| result["outcome"] == "discarded"),
        "{results:?}"
    );
    let listed = get(&api, "/v1/ops/dead-jobs", &token).await;
    assert_eq!(listed["total"], 1, "only the other reason's job waits");
    assert_eq!(
        get(&api, "/v1/ops/dead-jobs?status=discarded", &token).await["total"],
        3
    );

    // A selection: the discarded ones again (already), the waiting one, an unknown id.
    let mut ids: Vec<Value> = results.iter().map(|result| result["id"].clone()).collect();
    let waiting = listed["items"][0]["id"].clone();
    ids.push(waiting.clone());
    ids.push(json!(Uuid::now_v7()));
    let response = send(
        &api,
        "POST",
        "/v1/ops/dead-jobs/actions/replay",
        &token,
        &json!({ "ids": ids }),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let outcomes: Vec<String> = response.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["conflict", "conflict", "conflict", "replayed", "not_found"]);
    let user = people[3];
    wait_until(LIMIT, "the replayed job to sync", || async {
        session_count(&env.pool, user, "succeeded").await == 1
    })
    .await;

    // Bad input names its field.
    for (body, field) in [
        (json!({}), "ids"),
        (json!({"ids": []}), "ids"),
        (json!({"ids": [waiting], "filter": {}}), "filter"),
        (json!({"filter": {"kind": "nope"}}), "filter.kind"),
        (json!({"ids": ["not-a-uuid"]}), "ids[0]"),
    ] {
        let response = send(&api, "POST", "/v1/ops/dead-jobs/actions/discard", &token, &body).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        assert_eq!(response.json()["error"]["field"], field, "{body}: {}", response.body);
    }
    let unknown = send(
        &api,
        "POST",
        "/v1/ops/dead-jobs/actions/purge",
        &token,
        &json!({"ids": [waiting]}),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let bad = http(api.address, "GET", "/v1/ops/dead-jobs?kind=nope", Some(&token)).await;
    assert_eq!((bad.status, bad.json()["error"]["field"].clone()), (400, json!("kind")));

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    api.stop().await;
    env.cleanup().await;
}

async fn worker_state(api: &Api, token: &str, host_id: &str) -> Option<String> {
    get(api, "/v1/ops/workers", token).await["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|worker| worker["id"] == host_id)
        .map(|worker| worker["state"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_9_goes_silent_and_one_stopped_says_so() {
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let token = admin(&env).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let settings = |id: &'static str| [("SYNCFLEET_WORKER_ID", id), ("SYNCFLEET_HEARTBEAT_INTERVAL", "300ms")];
    let mut killed = env.spawn_with("syncfleet-worker", &providers, &settings("worker-killed"));
    let mut stopped = env.spawn_with("syncfleet-worker", &providers, &settings("worker-stopped"));
    for id in ["worker-killed", "worker-stopped"] {
        wait_until(LIMIT, "the worker to beat", || async {
            worker_state(&api, &token, id).await.as_deref() == Some("live")
        })
        .await;
    }
    let workers = get(&api, "/v1/ops/workers", &token).await;
    let live = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|worker| worker["id"] == "worker-killed")
        .unwrap()
        .clone();
    assert_eq!(live["in_flight"], json!({"priority": 0, "cadence": 0, "push": 0}));
    assert_eq!(live["version"], env!("CARGO_PKG_VERSION"));

    killed.kill().unwrap();
    killed.wait().unwrap();
    // SIGTERM: the worker drains, then records its stop.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &stopped.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stopped.wait().unwrap();
    assert_eq!(
        worker_state(&api, &token, "worker-stopped").await.as_deref(),
        Some("stopped")
    );
    wait_until(LIMIT, "the killed worker to go silent", || async {
        worker_state(&api, &token, "worker-killed").await.as_deref() == Some("silent")
    })
    .await;
    assert_eq!(get(&api, "/v1/ops/workers", &token).await["silent_after_seconds"], 0.9);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_shows_as_a_cooldown_with_its_reason() {
    use syncfleet_simulators::graph::Fault;

    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    let user = providers.office365_users(&env.pool, 1).await[0];
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let token = admin(&env).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    providers
        .graph
        .inject_fault(
            &email,
            Fault::Throttled {
                retry_after: Some(Duration::from_secs(120)),
            },
            1,
        )
        .unwrap();
    let mut worker = env.spawn_with(
        "syncfleet-worker",
        &providers,
        &[("SYNCFLEET_HEARTBEAT_INTERVAL", "300ms")],
    );
    let job = JobEnvelope::sync(user, Trigger::Force, Utc::now());
    env.publisher()
        .await
        .publish(Route::Priority, std::slice::from_ref(&job))
        .await
        .unwrap();
    wait_until(LIMIT, "the cooldown and its count to show", || async {
        let limits = get(&api, "/v1/ops/limits", &token).await;
        let cooling = limits["cooldowns"].as_array().unwrap().iter().any(|cooldown| {
            cooldown["provider"] == "graph"
                && cooldown["reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains("asked to wait 120000 ms"))
        });
        let counted = limits["throttled_last_hour"]
            .as_array()
            .unwrap()
            .iter()
            .any(|count| count["provider"] == "graph" && count["count"].as_i64() >= Some(1));
        cooling && counted
    })
    .await;
    let limits = get(&api, "/v1/ops/limits", &token).await;
    assert_eq!(limits["cooldowns_error"], Value::Null);
    let cooldown = limits["cooldowns"][0].clone();
    let until: chrono::DateTime<Utc> = cooldown["until"].as_str().unwrap().parse().unwrap();
    let left = until - Utc::now();
    assert!(
        left > chrono::Duration::seconds(60) && left <= chrono::Duration::seconds(121),
        "{cooldown}"
    );

    worker.kill().unwrap();
    worker.wait().unwrap();
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn nobody_but_an_admin_finds_the_console() {
    let env = TestEnv::new().await;
    let org = organization(&env.pool, AccessType::Office365, true).await;
    let user = users(&env.pool, org, 1, SyncStatus::Enabled, Utc::now(), true).await[0];
    let org_admin = create_token(&env.pool, "org_admin", Some(org), None, "org-admin@example.test")
        .await
        .unwrap();
    let user_token = create_token(&env.pool, "user", Some(org), Some(user), "user@example.test")
        .await
        .unwrap();
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let dead = Uuid::now_v7();
    for token in [&org_admin, &user_token] {
        for (method, path) in [
            ("GET", "/v1/ops/overview".to_owned()),
            ("GET", "/v1/ops/workers".to_owned()),
            ("GET", "/v1/ops/dead-jobs".to_owned()),
            ("GET", format!("/v1/ops/dead-jobs/{dead}")),
            ("DELETE", format!("/v1/ops/dead-jobs/{dead}")),
            ("POST", format!("/v1/ops/dead-jobs/{dead}/replay")),
            ("POST", "/v1/ops/dead-jobs/actions/replay".to_owned()),
            ("POST", "/v1/ops/dead-jobs/actions/discard".to_owned()),
            ("GET", "/v1/ops/limits".to_owned()),
            ("GET", "/v1/ops/suspended".to_owned()),
        ] {
            let response = send(&api, method, &path, token, &json!({"ids": [dead]})).await;
            assert_eq!(response.status, 404, "{method} {path}: {}", response.body);
        }
    }
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn suspended_users_are_grouped_by_class_and_organization_with_their_error() {
    let env = TestEnv::new().await;
    let (first, second) = (
        organization(&env.pool, AccessType::Office365, true).await,
        organization(&env.pool, AccessType::Office365, true).await,
    );
    let auth = users(&env.pool, first, 3, SyncStatus::Enabled, Utc::now(), true).await;
    let throttled = users(&env.pool, second, 1, SyncStatus::Enabled, Utc::now(), true).await;
    users(&env.pool, second, 2, SyncStatus::Enabled, Utc::now(), true).await;
    for (ids, status, reason) in [
        (&auth, "disabled_auth_error", "Salesforce refused the refresh token"),
        (&throttled, "disabled_throttling_error", "Graph kept answering 429"),
    ] {
        sqlx::query("UPDATE users SET sync_status = $2, disabled_reason = $3 WHERE id = ANY($1)")
            .bind(ids)
            .bind(status)
            .bind(reason)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let token = admin(&env).await;
    let api = Api::start(&env, env.pool.clone(), Duration::ZERO).await;
    let all = get(&api, "/v1/ops/suspended", &token).await;
    assert_eq!(all["total"], 4, "{all}");
    let groups: Vec<(String, String, i64)> = all["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            (
                group["class"].as_str().unwrap().to_owned(),
                group["organization_id"].as_str().unwrap().to_owned(),
                group["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("auth".to_owned(), first.to_string(), 3),
            ("throttling".to_owned(), second.to_string(), 1)
        ]
    );
    let page = get(&api, "/v1/ops/suspended?class=auth&page_size=2", &token).await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["last_error"], "Salesforce refused the refresh token");
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get(
        &api,
        &format!("/v1/ops/suspended?class=auth&page_size=2&cursor={cursor}"),
        &token,
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let bad = http(api.address, "GET", "/v1/ops/suspended?class=sleepy", Some(&token)).await;
    assert_eq!(
        (bad.status, bad.json()["error"]["field"].clone()),
        (400, json!("class"))
    );
    api.stop().await;
    env.cleanup().await;
}
