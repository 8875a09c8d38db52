//! The fleet-wide limits against the simulators configured with the same
//! limits: several workers (gates on separate limiters, as separate processes
//! have) hammering one mailbox get no throttled answer while keeping near the
//! allowed rate, and a Retry-After seen by one worker stops the others.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::SecretString;
use syncfleet_common::ratelimit::{Limit, Limiter};
use syncfleet_connectors::{
    Provider,
    graph::{GraphClient, GraphOptions},
    http::{HttpClient, HttpOptions},
    mailbox::Mailbox,
    oauth::{OAuthApp, OAuthSession},
    ssrf::UrlPolicy,
};
use syncfleet_simulators::graph::{Endpoint, Fault, GraphConfig, GraphSimulator};
use syncfleet_worker::{
    metrics::ProviderLabel,
    sync::{FleetGate, gate::ProviderLimits},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const MAILBOX: &str = "hammered@contoso.example";

struct Graph {
    simulator: GraphSimulator,
    base: String,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn graph(config: GraphConfig) -> Graph {
    let shutdown = CancellationToken::new();
    let simulator = GraphSimulator::new(config);
    let server = simulator
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
        .await
        .unwrap();
    Graph {
        simulator,
        base: server.base_url(),
        _shutdown: shutdown.drop_guard(),
    }
}

/// A worker's gate: its own limiter on the shared Redis, the Graph limits
/// the simulator enforces.
fn gate(prefix: &str, graph: Limit) -> Arc<FleetGate> {
    let redis = std::env::var("SYNCFLEET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let unlimited = Limit {
        rate: None,
        concurrency: None,
    };
    Arc::new(FleetGate::new(
        Limiter::new(SecretString::from(redis), prefix, Duration::from_secs(10), 2),
        ProviderLimits {
            graph,
            ews: unlimited,
            gmail_user: unlimited,
            gmail_project: unlimited,
            salesforce: unlimited,
            salesforce_reserve_percent: 20,
        },
        Duration::from_secs(30),
    ))
}

/// A Graph client of the mailbox passing `gate`.
fn client(graph: &Graph, refresh_token: &str, gate: Arc<FleetGate>) -> GraphClient {
    let http = HttpClient::new(&HttpOptions {
        url_policy: UrlPolicy::LOCAL_TESTS,
        ..HttpOptions::default()
    })
    .unwrap();
    let app = Arc::new(OAuthApp {
        provider: Provider::Graph,
        token_url: format!("{}/organizations/oauth2/v2.0/token", graph.base)
            .parse()
            .unwrap(),
        client_id: "syncfleet-tests".to_owned(),
        client_secret: SecretString::from("secret"),
        scopes: vec!["offline_access".to_owned()],
    });
    let session = OAuthSession::new(http.clone(), app, SecretString::from(refresh_token.to_owned()));
    let options = GraphOptions {
        base_url: graph.base.parse().unwrap(),
        ..GraphOptions::default()
    };
    GraphClient::new(http, options, MAILBOX.to_owned(), session).with_gate(gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_hammering_one_mailbox_get_no_429_and_keep_near_the_allowed_rate() {
    // The simulator's limits, and the fleet configured with the same.
    let (window, per_window) = (Duration::from_secs(2), 60);
    let graph = graph(GraphConfig {
        mailbox_concurrency: 4,
        requests_per_window: per_window,
        window,
        ..GraphConfig::default()
    })
    .await;
    let limit = Limit {
        rate: Some((per_window as u64, window)),
        concurrency: Some(4),
    };
    let prefix = Uuid::new_v4().simple().to_string();
    // Each worker refreshes once: the token endpoint is outside the mailbox's
    // limits, so the run counts the inbox reads only.
    let workers: Vec<GraphClient> = (0..3)
        .map(|_| {
            let token = graph.simulator.create_mailbox(MAILBOX);
            client(&graph, &token, gate(&prefix, limit))
        })
        .collect();
    let workers = Arc::new(workers);
    let started = Instant::now();
    let run = Duration::from_secs(6);
    let mut tasks = Vec::new();
    for index in 0..12 {
        let workers = workers.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            while started.elapsed() < run {
                if workers[index % 3].check().await.is_err() {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let counters = graph.simulator.counters(MAILBOX);
    let reads = counters.calls_to(Endpoint::MailFolders);
    // GCRA admits a small burst, then the sustained rate.
    let allowed = per_window as f64 * elapsed.as_secs_f64() / window.as_secs_f64();
    println!(
        "3 workers x 4 tasks on one mailbox ({per_window} per {window:?}, 4 concurrent): {reads} reads in {elapsed:.1?}, \
         {:.1}% of the allowed {allowed:.0}; throttled answers: {}",
        100.0 * reads as f64 / allowed,
        counters.throttled
    );
    assert_eq!(counters.throttled, 0, "the simulator throttled the fleet");
    assert_eq!(errors, 0);
    assert!(
        reads as f64 >= 0.9 * allowed,
        "only {reads} reads of {allowed:.0} allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_seen_by_one_worker_stops_the_others_for_that_mailbox() {
    let graph = graph(GraphConfig::default()).await;
    let limit = Limit {
        rate: Some((10_000, Duration::from_secs(600))),
        concurrency: Some(4),
    };
    let prefix = Uuid::new_v4().simple().to_string();
    let (first_gate, second_gate) = (gate(&prefix, limit), gate(&prefix, limit));
    let first = client(&graph, &graph.simulator.create_mailbox(MAILBOX), first_gate.clone());
    let second = client(&graph, &graph.simulator.create_mailbox(MAILBOX), second_gate.clone());
    first.check().await.unwrap();
    second.check().await.unwrap();
    graph
        .simulator
        .inject_fault(
            MAILBOX,
            Fault::Throttled {
                retry_after: Some(Duration::from_secs(2)),
            },
            1,
        )
        .unwrap();
    let error = first.check().await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2)), "{error}");
    let before = graph.simulator.counters(MAILBOX).calls_to(Endpoint::MailFolders);
    let asked = Instant::now();
    second.check().await.unwrap();
    let waited = asked.elapsed();
    println!("the other worker waited {waited:?} after a Retry-After of 2 s");
    assert!(
        waited >= Duration::from_millis(1900),
        "the other worker called after {waited:?}"
    );
    assert_eq!(
        graph.simulator.counters(MAILBOX).calls_to(Endpoint::MailFolders),
        before + 1,
        "one call, made after the cooldown"
    );
    let graph_label = ProviderLabel { provider: "graph" };
    assert_eq!(first_gate.metrics().throttled.get_or_create(&graph_label).get(), 1);
    assert_eq!(second_gate.metrics().throttled.get_or_create(&graph_label).get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_whose_crm_is_spent_does_not_hold_the_others_back() {
    use chrono::Utc;
    use syncfleet_common::domain::{AccessType, SyncStatus};
    use syncfleet_testkit::{Providers, TestEnv, organization, session_count, users, wait_until};

    use super::sync_worker;
    use crate::support::force_sync;

    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    // The big organization's Salesforce org is at its reserve line; the small
    // one's is untouched.
    let spent_org = providers.salesforce.create_org();
    let max = providers.salesforce.api_usage(&spent_org).unwrap().max;
    providers.salesforce.set_api_usage(&spent_org, max * 80 / 100);
    let big = organization(&env.pool, AccessType::Office365, true).await;
    let small = organization(&env.pool, AccessType::Office365, true).await;
    let big_users = users(&env.pool, big, 100, SyncStatus::Enabled, Utc::now(), false).await;
    let small_users = users(&env.pool, small, 2, SyncStatus::Enabled, Utc::now(), false).await;
    for user in &big_users {
        providers.connect_office365(&env.pool, *user).await;
        providers.connect_crm_to(&env.pool, *user, &spent_org).await;
    }
    for user in &small_users {
        providers.connect_office365(&env.pool, *user).await;
    }
    // A small worker: 4 slots, so waiting jobs holding slots would show.
    let worker = sync_worker(
        &env,
        &providers,
        &[
            ("SYNCFLEET_WORKER_PRIORITY_CONCURRENCY", "4"),
            ("SYNCFLEET_RETRY_BASE_DELAY", "1s"),
        ],
    );
    for user in &big_users {
        force_sync(&env, *user).await;
    }
    for user in &small_users {
        force_sync(&env, *user).await;
    }
    let limit = Duration::from_secs(60);
    wait_until(limit, "the small organization's sessions", || async {
        let mut done = 0;
        for user in &small_users {
            done += session_count(&env.pool, *user, "succeeded").await;
        }
        done == 2
    })
    .await;
    let deferred: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_sessions s JOIN users u ON u.id = s.user_id \
         WHERE u.organization_id = $1 AND s.status = 'failed' AND s.error_category = 'throttled'",
    )
    .bind(big)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let (lag_small,): (f64,) = sqlx::query_as(
        "SELECT max(extract(epoch FROM s.started_at - s.scheduled_at))::float8 FROM sync_sessions s \
         JOIN users u ON u.id = s.user_id WHERE u.organization_id = $1",
    )
    .bind(small)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    println!(
        "100 users of a spent organization, 2 of another: {deferred} sessions deferred, the other's lag at most {lag_small:.2} s"
    );
    assert!(deferred > 0, "the spent organization's jobs were deferred");
    let failures: Vec<(i32,)> = sqlx::query_as(
        "SELECT r.consecutive_failures FROM users u JOIN user_runs r ON r.user_id = u.id WHERE u.organization_id = $1",
    )
    .bind(big)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert!(
        failures.iter().all(|(count,)| *count == 0),
        "deferrals count no failure"
    );
    // The first session to see the org at its line stops every other one
    // before it calls: the reserve is touched by at most the one call that
    // read the usage (and the calls already in flight with it).
    let used = providers.salesforce.api_usage(&spent_org).unwrap().used;
    println!("the spent org's usage went from {} to {used}", max * 80 / 100);
    assert!(
        used <= max * 80 / 100 + 4,
        "the fleet ate into the reserve: {used} of {max}"
    );
    worker.stop().await;
    env.cleanup().await;
}

/// A Redis of the test's own on a free port, killed on drop.
struct PrivateRedis {
    process: std::process::Child,
    url: String,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = syncfleet_testkit::free_port();
        let process = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        syncfleet_testkit::wait_until(Duration::from_secs(10), "redis-server to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self {
            process,
            url: format!("redis://127.0.0.1:{port}/0"),
        }
    }

    fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One admitted call, as the mixed-load test records it.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    provider: syncfleet_connectors::Provider,
    at: Duration,
    cost: u32,
    /// Admitted after Redis was killed.
    outage: bool,
}

/// The most units any window of `length` holds among `calls` (sorted by time).
fn busiest_window(calls: &[Admitted], length: Duration) -> u32 {
    calls
        .iter()
        .enumerate()
        .map(|(first, start)| {
            calls[first..]
                .iter()
                .take_while(|call| call.at < start.at + length)
                .map(|call| call.cost)
                .sum::<u32>()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_killed_under_mixed_load_every_provider_gets_calls_through_within_its_limits() {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    };
    use syncfleet_connectors::gate::{Account, CallGate};

    let mut redis = PrivateRedis::start().await;
    let prefix = Uuid::new_v4().simple().to_string();
    let window = Duration::from_secs(1);
    // Gmail's rate-only limits in quota units take the credit path on Redis;
    // Graph has a rate and a concurrency; EWS only a concurrency.
    let limits = ProviderLimits {
        graph: Limit {
            rate: Some((100, window)),
            concurrency: Some(4),
        },
        ews: Limit {
            rate: None,
            concurrency: Some(6),
        },
        gmail_user: Limit {
            rate: Some((1_000, window)),
            concurrency: None,
        },
        gmail_project: Limit {
            rate: Some((5_000, window)),
            concurrency: None,
        },
        salesforce: Limit {
            rate: None,
            concurrency: None,
        },
        salesforce_reserve_percent: 20,
    };
    // Two workers, each its own limiter; without Redis each takes half.
    let gates: Vec<Arc<FleetGate>> = (0..2)
        .map(|_| {
            Arc::new(FleetGate::new(
                Limiter::new(
                    SecretString::from(redis.url.clone()),
                    &prefix,
                    Duration::from_secs(10),
                    2,
                ),
                limits,
                Duration::from_secs(3),
            ))
        })
        .collect();
    let accounts = [
        (
            Provider::Graph,
            "graph-mailbox@contoso.example",
            vec![1],
            Duration::from_millis(5),
        ),
        (
            Provider::Ews,
            "service-account@fabrikam.example",
            vec![1],
            Duration::from_millis(20),
        ),
        // history.list, messages.get, a batch envelope, getProfile.
        (
            Provider::Gmail,
            "gmail-user@example.com",
            vec![2, 5, 0, 1, 5],
            Duration::from_millis(2),
        ),
    ];

    let started = Instant::now();
    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Vec::<Admitted>::new()));
    let deferrals = Arc::new(Mutex::new(Vec::<Provider>::new()));
    // Calls in flight admitted during the outage, and their peak, per provider.
    let in_flight: Arc<[AtomicU32; 3]> = Arc::new(Default::default());
    let peaks: Arc<[AtomicU32; 3]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for gate in &gates {
        for (index, (provider, name, costs, hold)) in accounts.iter().enumerate() {
            for task in 0..4 {
                let (gate, costs, hold) = (gate.clone(), costs.clone(), *hold);
                let (outage, stop, calls, deferrals) = (outage.clone(), stop.clone(), calls.clone(), deferrals.clone());
                let (in_flight, peaks) = (in_flight.clone(), peaks.clone());
                let account = Account {
                    provider: *provider,
                    name: (*name).to_owned(),
                    allocation: None,
                };
                tasks.push(tokio::spawn(async move {
                    let mut turn = task;
                    while !stop.load(Ordering::SeqCst) {
                        let cost = costs[turn % costs.len()];
                        turn += 1;
                        match gate.admit(&account, cost).await {
                            Ok(permit) => {
                                let during_outage = outage.load(Ordering::SeqCst);
                                calls.lock().unwrap().push(Admitted {
                                    provider: account.provider,
                                    at: started.elapsed(),
                                    cost,
                                    outage: during_outage,
                                });
                                if during_outage {
                                    let now = in_flight[index].fetch_add(1, Ordering::SeqCst) + 1;
                                    peaks[index].fetch_max(now, Ordering::SeqCst);
                                }
                                tokio::time::sleep(hold).await;
                                if during_outage {
                                    in_flight[index].fetch_sub(1, Ordering::SeqCst);
                                }
                                drop(permit);
                            }
                            Err(_) => {
                                deferrals.lock().unwrap().push(account.provider);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.kill();
    // The calls in flight through Redis end within their hold; from here on
    // every admission is the local share's.
    tokio::time::sleep(Duration::from_millis(50)).await;
    outage.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let mut calls = calls.lock().unwrap().clone();
    calls.sort_by_key(|call| call.at);
    let deferrals = deferrals.lock().unwrap().clone();
    // A call's stamp is taken just after its admission, so a window of the
    // stamps a little shorter than the limit's lies inside a true window.
    let measured = window - Duration::from_millis(100);
    let mut outage_calls = Vec::new();
    for (index, (provider, _, _, _)) in accounts.iter().enumerate() {
        let during: Vec<Admitted> = calls
            .iter()
            .filter(|call| call.outage && call.provider == *provider)
            .copied()
            .collect();
        let units: u32 = during.iter().map(|call| call.cost).sum();
        let busiest = busiest_window(&during, measured);
        let peak = peaks[index].load(Ordering::SeqCst);
        println!(
            "{provider:?} during 3 s without Redis: {} calls, {units} units, busiest window {busiest}, peak in flight {peak}",
            during.len()
        );
        outage_calls.push((*provider, during.len(), units, busiest, peak));
    }
    println!("deferrals: {deferrals:?}");
    assert!(deferrals.is_empty(), "calls were deferred: {deferrals:?}");
    for (provider, count, units, busiest, peak) in outage_calls {
        match provider {
            Provider::Graph => {
                // Two halves of 100 per second for 3 s, and 4 in flight.
                assert!(count >= 150, "Graph got {count} calls through");
                assert!(busiest <= 100, "a Graph window held {busiest} calls");
                assert!(peak <= 4, "{peak} Graph calls in flight");
            }
            Provider::Ews => {
                assert!(count >= 100, "EWS got {count} calls through");
                assert!(peak <= 6, "{peak} EWS calls in flight");
            }
            _ => {
                // Two halves of 1,000 units per second for 3 s.
                assert!(units >= 1_500, "Gmail got {units} units through ({count} calls)");
                assert!(busiest <= 1_000, "a Gmail window held {busiest} units");
            }
        }
    }
}
