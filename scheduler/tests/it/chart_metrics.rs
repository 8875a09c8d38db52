//! The Helm chart's alerts and dashboard read series the fleet exports: every
//! metric name they use (`helm/checks/metrics-used.txt`, which
//! `scripts/chart-check.sh` keeps equal to what PromQL parses out of the
//! rendered chart) is in the `/metrics` of a running scheduler or worker.
//!
//! A family of labelled series shows in the exposition only once one of its
//! label sets exists, so the fleet is driven through the events that create
//! them: sessions, a throttled answer, a deferral by the fleet-wide limits and
//! dead letters.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use syncfleet_simulators::graph::Fault;
use syncfleet_testkit::{Providers, TestEnv, free_port, gauge, probe, wait_until};
use syncfleet_worker::{
    WorkerConfig, config,
    sync::{FleetGate, MailboxSync, ProviderConfig},
};
use tokio_util::sync::CancellationToken;

use crate::support::scheduler;

/// The fleet's metric names the chart uses; the names another exporter
/// provides (a second word on their line, e.g. `kube-state-metrics`) are left
/// out.
fn names_the_chart_uses() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/checks/metrics-used.txt");
    let listing = std::fs::read_to_string(path).unwrap();
    let mut names = Vec::new();
    for line in listing.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap().to_owned();
        match words.next() {
            Some(_) => assert!(
                !name.starts_with("syncfleet_"),
                "{name} is the fleet's own series, yet metrics-used.txt names another exporter for it"
            ),
            None => names.push(name),
        }
    }
    assert!(!names.is_empty(), "{path} lists no metric name of the fleet");
    names
}

/// What OpenMetrics expositions hold: each family's type (its `# TYPE`
/// line, which prometheus-client writes only once the family has a series)
/// and the names of its samples.
#[derive(Default)]
struct Exposition {
    families: HashMap<String, String>,
    samples: HashSet<String>,
}

impl Exposition {
    fn add(&mut self, body: &str) {
        for line in body.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let mut words = declared.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    self.families.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                self.samples.insert(line[..end].to_owned());
            }
        }
    }

    /// Whether Prometheus has a series named `name` from this exposition:
    /// a sample of that name, a gauge family of that name, or a counter's
    /// `_total`, a histogram's `_bucket`, `_sum` or `_count` whose family is
    /// declared.
    fn exports(&self, name: &str) -> bool {
        if self.samples.contains(name) {
            return true;
        }
        if matches!(self.families.get(name).map(String::as_str), Some("gauge" | "unknown")) {
            return true;
        }
        let family = |suffix: &str, kinds: &[&str]| {
            name.strip_suffix(suffix)
                .and_then(|base| self.families.get(base))
                .is_some_and(|kind| kinds.contains(&kind.as_str()))
        };
        family("_total", &["counter"])
            || family("_bucket", &["histogram"])
            || family("_sum", &["histogram", "summary"])
            || family("_count", &["histogram", "summary"])
    }
}

// The simulators run on this runtime beside the services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_chart_alerts_and_dashboard_read_is_exported() {
    let names = names_the_chart_uses();
    let env = TestEnv::new().await;
    let providers = Providers::start().await;
    // Two connected users, due now: the leader publishes their cadence jobs.
    // The first one's mailbox answers 429 with Retry-After (a throttled
    // answer); the second one's sync meets the mailbox's limit of one Graph
    // call per window on its second call (a deferral). With one attempt
    // allowed, both jobs are dead-lettered.
    let users = providers.office365_users(&env.pool, 2).await;
    let throttled: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(users[0])
        .fetch_one(&env.pool)
        .await
        .unwrap();
    providers
        .graph
        .inject_fault(
            &throttled,
            Fault::Throttled {
                retry_after: Some(Duration::from_secs(1)),
            },
            100,
        )
        .unwrap();

    let (scheduler_port, worker_port) = (free_port(), free_port());
    let scheduler_ops = format!("127.0.0.1:{scheduler_port}");
    let leader = scheduler(
        &env,
        &[
            ("SYNCFLEET_OPS_LISTEN", &scheduler_ops),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
        ],
    );
    // The worker as its binary builds it, with the limits gate's series.
    let worker_ops = format!("127.0.0.1:{worker_port}");
    let mut settings: Vec<(String, String)> = providers.env();
    settings.extend(
        [
            ("SYNCFLEET_OPS_LISTEN", worker_ops.as_str()),
            ("SYNCFLEET_RETRY_MAX_ATTEMPTS", "1"),
            ("SYNCFLEET_LIMIT_GRAPH_REQUESTS", "1"),
            ("SYNCFLEET_LIMIT_MAX_WAIT", "100ms"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let source = env.source(&settings);
    let worker_config = WorkerConfig::from_source(&source).unwrap();
    let gate = FleetGate::from_source(&source, env.common().redis_url, &env.prefix, Duration::from_secs(30)).unwrap();
    let gate_metrics = gate.metrics().clone();
    let sync = MailboxSync::new(
        ProviderConfig::from_source(&source).unwrap(),
        config::budget(&source).unwrap(),
        Arc::new(gate),
    )
    .unwrap()
    .with_gate_metrics(gate_metrics);
    let stop_worker = CancellationToken::new();
    let worker = tokio::spawn(syncfleet_worker::run(
        worker_config,
        Arc::new(sync),
        stop_worker.clone(),
    ));

    // The leader's gauges are the ones a standby may leave out.
    wait_until(Duration::from_secs(30), "the scheduler to lead", || async {
        gauge(scheduler_port, "syncfleet_scheduler_leader").await == Some(1)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let mut exposition = Exposition::default();
        for port in [scheduler_port, worker_port] {
            if let Some((200, body)) = probe(port, "/metrics").await {
                exposition.add(&body);
            }
        }
        let missing: Vec<&String> = names.iter().filter(|name| !exposition.exports(name)).collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    stop_worker.cancel();
    worker.await.unwrap().unwrap();
    leader.stop().await;
    env.cleanup().await;
    assert!(
        missing.is_empty(),
        "the chart's alerts or dashboard read series that no scheduler or worker exports: {missing:?} \
         (helm/checks/metrics-used.txt; a name matches a gauge, a counter's _total, or a histogram's \
         _bucket, _sum or _count)"
    );
}
