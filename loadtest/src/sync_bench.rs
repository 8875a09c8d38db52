//! The sync benchmark: real sync sessions ([`MailboxSync`]) through the whole
//! fleet against the Graph and Salesforce simulators served in this process,
//! with a chosen latency added to every provider call.
//!
//! On a fresh database and queue prefix it connects N Office 365 users of one
//! organization (a Graph mailbox with a few messages, both refresh tokens
//! sealed under a benchmark key ring), starts W in-process workers, then
//! publishes one cadence job per user directly with the `Publisher`, each user
//! marked queued first as the scheduler does. The scheduler is left out on
//! purpose: its publish rate is the pipeline benchmark's subject, and this one
//! measures how fast the workers turn a backlog into finished sessions. The
//! scheduling lag reported is therefore the time a job waited in that backlog.
//!
//! Every user's mailbox is already initialized (the steady state: incremental
//! sessions) and holds five messages within the baseline: three exchanged
//! with Contacts of their Salesforce org (two received, one sent), one from an
//! unknown company and one from a free-mail address. Each session refreshes
//! both tokens, checks the mailbox and the CRM's limits, reads the delta of
//! Inbox and Sent Items, matches participants (SOQL), upserts three Tasks and
//! queries the CRM's changed Events and Contacts of the user (none: the
//! Contacts belong to another Salesforce user). So exactly three Tasks per user
//! must exist at the end, which the report verifies.
//!
//! The users share Salesforce orgs [`USERS_PER_SALESFORCE_ORG`] at a time
//! rather than all one org: the simulator copies an org's records under its
//! global lock on every sObject Collections call (for the all-or-none
//! rollback), so one org holding every benchmark Task makes that copy, not the
//! fleet, the bottleneck (measured at 2,000 users in one org: 21 sessions/s
//! and database pool timeouts, the runtime's threads blocked on that lock).

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use chrono::Utc;
use secrecy::SecretString;
use sqlx::PgPool;
use syncfleet_common::{
    config::Source,
    db,
    domain::Trigger,
    queue::{JobEnvelope, Publisher, Route, Topology},
    secrets::{self, CredentialKind, KeyRing, Owner},
};
use syncfleet_simulators::{
    Server,
    graph::{FolderMessage, GraphConfig, GraphSimulator},
    salesforce::{OrgId, SalesforceConfig, SalesforceSimulator},
};
use syncfleet_worker::{
    WorkerConfig, config,
    sync::{FleetGate, MailboxSync, ProviderConfig, TASK_EXTERNAL_ID_FIELD},
};
use tokio::time::Instant;

use crate::{
    fleet::seed::{self, CONTACTS_PER_ORG, TASKS_PER_USER, USERS_PER_SALESFORCE_ORG},
    scratch::{count, rounded},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The benchmark's own key ring (32 bytes of 0x22): its credentials live
/// only in the benchmark's throwaway database.
const BENCH_ENCRYPTION_KEYS: &str = "1:IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=";

/// The database the benchmark creates and drops (not the pipeline's).
const DATABASE: &str = "syncfleet_sync_bench";

/// Each Salesforce org's daily API allocation: high, so that the run measures
/// the fleet rather than Salesforce's throttling.
const DAILY_API_MAX: u64 = 10_000_000;

/// How long the benchmark waits without any job finishing before it reports
/// what it has.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// The benchmark's flags.
#[derive(clap::Args)]
pub struct Options {
    /// Connected Office 365 users, each with Salesforce.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = count)]
    users: usize,
    /// Workers running the sessions.
    #[arg(long, value_name = "W", default_value_t = 2, value_parser = count)]
    workers: usize,
    /// Milliseconds the simulators add to every call.
    #[arg(long, value_name = "MS", default_value = "0", value_parser = milliseconds)]
    latency: Duration,
    /// Cadence jobs in flight per worker.
    #[arg(long, value_name = "C", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
}

/// The value parser of `--latency`: whole milliseconds, zero included.
fn milliseconds(value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| "takes a whole number of milliseconds".to_owned())
}

/// The simulators of the run; they stop when the token is cancelled.
struct Simulators {
    graph: GraphSimulator,
    salesforce: SalesforceSimulator,
    graph_server: Server,
    salesforce_server: Server,
    shutdown: CancellationToken,
}

impl Simulators {
    async fn start(latency: Duration) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        // Graph keeps its real per-mailbox limits (4 concurrent requests,
        // 10,000 per 10 minutes): one session stays far below them. The orgs'
        // daily allocation is raised so that the run measures the fleet, not
        // Salesforce's throttling.
        let graph = GraphSimulator::new(GraphConfig::default());
        let graph_server = graph.serve(loopback, shutdown.clone()).await?;
        let salesforce = SalesforceSimulator::new(SalesforceConfig {
            daily_api_max: DAILY_API_MAX,
            ..SalesforceConfig::default()
        });
        let salesforce_server = salesforce.serve(loopback, shutdown.clone()).await?;
        // Graph's latency varies by ±20% around the mean; Salesforce's is fixed.
        graph.set_latency(latency * 4 / 5, latency * 2 / 5);
        salesforce.set_latency(latency, Duration::ZERO);
        Ok(Self {
            graph,
            salesforce,
            graph_server,
            salesforce_server,
            shutdown,
        })
    }

    /// The settings pointing a worker at the simulators.
    fn settings(&self) -> Vec<(&'static str, String)> {
        crate::scratch::simulator_settings(&self.graph_server.base_url(), "bench")
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.graph_server.stopped().await?;
        self.salesforce_server.stopped().await?;
        Ok(())
    }
}

/// A new Salesforce org and its Contacts' addresses, owned by a Salesforce
/// user none of the fleet's users authorizes as.
fn seed_org(simulators: &Simulators, number: usize) -> anyhow::Result<(OrgId, Vec<String>)> {
    let org = simulators.salesforce.create_org();
    let owner = simulators.salesforce.create_user(&org)?;
    let contacts = (0..CONTACTS_PER_ORG)
        .map(|index| {
            let email = format!("contact{index}@customer{}-{number}.example", index % 5);
            simulators.salesforce.insert_record(
                &org,
                "Contact",
                serde_json::json!({
                    "Email": email,
                    "FirstName": format!("Buyer{index}"),
                    "LastName": "Benchmark",
                    "OwnerId": owner,
                }),
            )?;
            Ok(email)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((org, contacts))
}

/// N enabled users of one Office 365 organization, each connected to both
/// simulators with sealed refresh tokens and an initialized mailbox holding
/// its five messages; answers the organization, the users and the Salesforce
/// orgs.
async fn seed_users(
    pool: &PgPool,
    simulators: &Simulators,
    ring: &KeyRing,
    count: usize,
) -> anyhow::Result<(Uuid, Vec<Uuid>, Vec<OrgId>)> {
    let orgs = (0..count.div_ceil(USERS_PER_SALESFORCE_ORG))
        .map(|number| seed_org(simulators, number))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let organization = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled) \
         VALUES ($1, $2, 'Sync benchmark', 'office365', true)",
    )
    .bind(organization)
    .bind(format!("sync-bench-{}", organization.simple()))
    .execute(pool)
    .await?;
    let users: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    let emails: Vec<String> = (0..count)
        .map(|index| format!("user{index}@fleet-bench.example"))
        .collect();
    let mut seeding = pool.begin().await?;
    sqlx::query(
        "INSERT INTO users (id, organization_id, name, email, sync_status, mailbox_status, salesforce_instance_url) \
         SELECT id, $3, 'Bench ' || email, email, 'enabled', 'initialized', $4 \
         FROM UNNEST($1::uuid[], $2::text[]) AS u(id, email)",
    )
    .bind(&users)
    .bind(&emails)
    .bind(organization)
    .bind(simulators.salesforce_server.base_url())
    .execute(&mut *seeding)
    .await?;
    sqlx::query("UPDATE user_runs SET next_sync_at = now() + interval '1 day' WHERE user_id = ANY($1)")
        .bind(&users)
        .execute(&mut *seeding)
        .await?;
    seeding.commit().await?;
    let mut tx = pool.begin().await?;
    let now = Utc::now();
    for (index, (user, email)) in users.iter().zip(&emails).enumerate() {
        let mailbox_token = simulators.graph.create_mailbox(email);
        let (org, contacts) = &orgs[index / USERS_PER_SALESFORCE_ORG];
        let crm_token = simulators.salesforce.issue_refresh_token(org);
        for (kind, token) in [
            (CredentialKind::MailboxRefreshToken, mailbox_token),
            (CredentialKind::CrmRefreshToken, crm_token),
        ] {
            secrets::store(&mut *tx, ring, Owner::User(*user), kind, &SecretString::from(token)).await?;
        }
        let contact = |offset: usize| contacts[(index * TASKS_PER_USER + offset) % contacts.len()].clone();
        // The fleet load test's five messages, through the simulator's own
        // reading of the control API's JSON.
        for message in seed::messages(email, [contact(0), contact(1), contact(2)], now) {
            let message: FolderMessage = serde_json::from_value(message)?;
            simulators.graph.add_message(email, message.folder, message.seed)?;
        }
    }
    tx.commit().await?;
    Ok((organization, users, orgs.into_iter().map(|(org, _)| org).collect()))
}

type Handle = (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>);

fn spawn_workers(source: &Source, config: &WorkerConfig, count: usize) -> anyhow::Result<Vec<Handle>> {
    (0..count)
        .map(|index| {
            let mut config = config.clone();
            config.worker_id = format!("sync-bench-worker-{index}");
            // Each worker has its own sync (HTTP client and gate), built as
            // the worker's binary builds it, as separate processes would.
            let providers = ProviderConfig::from_source(source)?;
            let lease = providers.call_timeout + Duration::from_secs(5);
            let gate = FleetGate::from_source(
                source,
                config.common.redis_url.clone(),
                &config.common.queue_prefix,
                lease,
            )?;
            let metrics = gate.metrics().clone();
            let sync = MailboxSync::new(providers, config::budget(source)?, Arc::new(gate))?.with_gate_metrics(metrics);
            let token = CancellationToken::new();
            let handle = tokio::spawn(syncfleet_worker::run(config, Arc::new(sync), token.clone()));
            Ok((token, handle))
        })
        .collect()
}

/// Marks every user queued with a fresh cadence job, then publishes the jobs;
/// answers when the last publish was confirmed.
async fn publish(pool: &PgPool, publisher: &Publisher, users: &[Uuid]) -> anyhow::Result<()> {
    let scheduled_at = Utc::now();
    let jobs: Vec<JobEnvelope> = users
        .iter()
        .map(|user| JobEnvelope::sync(*user, Trigger::Cadence, scheduled_at))
        .collect();
    let ids: Vec<Uuid> = jobs.iter().map(|job| job.job_id).collect();
    sqlx::query(
        "UPDATE user_runs r SET queued_job_id = d.job, queued_at = now() \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS d(id, job) WHERE r.user_id = d.id",
    )
    .bind(users)
    .bind(&ids)
    .execute(pool)
    .await?;
    for chunk in jobs.chunks(500) {
        publisher.publish(Route::Cadence, chunk).await?;
    }
    Ok(())
}

/// Waits until no user of the organization has a job pending (finished, or
/// dead-lettered); answers false if nothing finished for [`STALL_LIMIT`].
async fn wait_for_jobs(pool: &PgPool, organization: Uuid) -> anyhow::Result<bool> {
    let mut last = (i64::MAX, Instant::now());
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM users u JOIN user_runs r ON r.user_id = u.id WHERE u.organization_id = $1 AND r.queued_job_id IS NOT NULL")
                .bind(organization)
                .fetch_one(pool)
                .await?;
        if pending == 0 {
            return Ok(true);
        }
        if pending < last.0 {
            last = (pending, Instant::now());
        } else if last.1.elapsed() > STALL_LIMIT {
            eprintln!("{pending} jobs still pending, none finished for {STALL_LIMIT:?}; reporting what there is");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the database says about the sessions.
#[derive(sqlx::FromRow)]
struct SessionFigures {
    succeeded: i64,
    with_issues: i64,
    failed: i64,
    other: i64,
    items_to_crm: i64,
    graph_calls: f64,
    salesforce_calls: f64,
    duration_ms: Vec<f64>,
    lag_ms: Vec<f64>,
    busy_seconds: f64,
}

async fn session_figures(pool: &PgPool) -> anyhow::Result<SessionFigures> {
    Ok(sqlx::query_as::<_, SessionFigures>(
        "SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded, \
                count(*) FILTER (WHERE status = 'succeeded_with_issues') AS with_issues, \
                count(*) FILTER (WHERE status = 'failed') AS failed, \
                count(*) FILTER (WHERE status NOT IN ('succeeded', 'succeeded_with_issues', 'failed')) AS other, \
                COALESCE(sum(items_to_crm), 0)::int8 AS items_to_crm, \
                COALESCE(avg(COALESCE((calls->>'graph')::float8, 0)), 0) AS graph_calls, \
                COALESCE(avg(COALESCE((calls->>'salesforce')::float8, 0)), 0) AS salesforce_calls, \
                COALESCE(percentile_cont(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP \
                    (ORDER BY EXTRACT(EPOCH FROM ended_at - started_at)::float8 * 1000), ARRAY[0, 0]::float8[]) \
                    AS duration_ms, \
                COALESCE(percentile_cont(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP \
                    (ORDER BY EXTRACT(EPOCH FROM started_at - scheduled_at)::float8 * 1000), ARRAY[0, 0]::float8[]) \
                    AS lag_ms, \
                COALESCE(sum(EXTRACT(EPOCH FROM ended_at - started_at)::float8), 0) AS busy_seconds \
         FROM sync_sessions WHERE ended_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await?)
}

/// The failed sessions' causes, the most frequent first.
async fn failure_causes(pool: &PgPool) -> anyhow::Result<Vec<serde_json::Value>> {
    let rows: Vec<(Option<String>, Option<String>, i64)> = sqlx::query_as(
        "SELECT error_category, left(error_message, 200), count(*) FROM sync_sessions \
         WHERE status = 'failed' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(category, message, count)| serde_json::json!({ "category": category, "message": message, "count": count }))
        .collect())
}

/// Runs the benchmark on a fresh database and queue prefix, prints its JSON
/// report, then removes both.
pub async fn run(source: &Source, options: &Options) -> anyhow::Result<()> {
    let scratch = crate::scratch::Scratch::create(DATABASE, "syncbench").await?;
    let concurrency = options.concurrency.to_string();
    let daily_api_max = DAILY_API_MAX.to_string();
    let simulators = Simulators::start(options.latency).await?;
    let provider_settings = simulators.settings();
    let mut settings = source.clone();
    settings.extend([
        ("SYNCFLEET_DATABASE_URL", scratch.database_url.as_str()),
        ("SYNCFLEET_QUEUE_PREFIX", scratch.prefix.as_str()),
        ("SYNCFLEET_ENCRYPTION_KEYS", BENCH_ENCRYPTION_KEYS),
        ("SYNCFLEET_OPS_LISTEN", "127.0.0.1:0"),
        ("SYNCFLEET_WORKER_CONCURRENCY", concurrency.as_str()),
        // The fleet's own view of each org's allocation matches the simulator's.
        ("SYNCFLEET_LIMIT_SALESFORCE_DAILY_REQUESTS", daily_api_max.as_str()),
    ]);
    settings.extend(provider_settings.iter().map(|(name, value)| (*name, value.as_str())));
    let worker_config = WorkerConfig::from_source(&settings)?;
    let ring = KeyRing::parse(&SecretString::from(BENCH_ENCRYPTION_KEYS.to_owned()))?;
    let pool = db::connect(&worker_config.common).await?;
    db::migrate(&pool).await?;

    let seeding = Instant::now();
    let (organization, users, orgs) = seed_users(&pool, &simulators, &ring, options.users).await?;
    let seeding_seconds = seeding.elapsed().as_secs_f64();
    eprintln!("seeded {} connected users in {seeding_seconds:.1}s", options.users);

    let topology = Topology::new(scratch.prefix.clone(), worker_config.common.delivery_limit);
    let publisher = Publisher::connect(worker_config.common.amqp_url.clone(), "sync benchmark", topology).await?;
    let workers = spawn_workers(&settings, &worker_config, options.workers)?;
    let started = Instant::now();
    publish(&pool, &publisher, &users).await?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let complete = wait_for_jobs(&pool, organization).await?;
    let elapsed = started.elapsed().as_secs_f64();
    for (token, handle) in workers {
        token.cancel();
        handle.await??;
    }

    let figures = session_figures(&pool).await?;
    let failures = failure_causes(&pool).await?;
    let tasks: Vec<_> = orgs
        .iter()
        .flat_map(|org| simulators.salesforce.records(org, "Task"))
        .collect();
    let distinct: BTreeSet<String> = tasks
        .iter()
        .filter_map(|task| {
            task.get(TASK_EXTERNAL_ID_FIELD)
                .and_then(|id| id.as_str())
                .map(str::to_owned)
        })
        .collect();
    let expected_tasks = options.users * TASKS_PER_USER;
    let (mut graph_calls, mut graph_throttled) = (0u64, 0u64);
    for index in 0..options.users {
        let counters = simulators.graph.counters(&format!("user{index}@fleet-bench.example"));
        graph_calls += counters.total_calls();
        graph_throttled += counters.throttled;
    }
    let (mut salesforce_calls, mut salesforce_throttled) = (0u64, 0u64);
    for org in &orgs {
        let counters = simulators.salesforce.counters(org);
        salesforce_calls += counters.total_calls();
        salesforce_throttled += counters.throttled;
    }
    let completed = figures.succeeded + figures.with_issues;
    let ended = completed + figures.failed + figures.other;
    let per_ended = |total: u64| rounded(total as f64 / ended.max(1) as f64, 2);
    let report = serde_json::json!({
        "users": options.users,
        "salesforce_orgs": orgs.len(),
        "workers": options.workers,
        "concurrency": options.concurrency,
        "max_sessions_in_flight": options.workers * usize::from(options.concurrency),
        "latency_ms": options.latency.as_millis(),
        "database_max_connections_per_worker": worker_config.common.database_max_connections,
        "complete": complete,
        "sessions": {
            "succeeded": figures.succeeded,
            "with_issues": figures.with_issues,
            "failed": figures.failed,
            "other": figures.other,
            "failure_causes": failures,
        },
        "elapsed_s": rounded(elapsed, 2),
        "publish_s": rounded(publish_seconds, 2),
        "sessions_per_s": rounded(completed as f64 / elapsed, 1),
        "mean_sessions_in_flight": rounded(figures.busy_seconds / elapsed, 1),
        "calls_per_session": {
            "graph": rounded(figures.graph_calls, 2),
            "salesforce": rounded(figures.salesforce_calls, 2),
            "total": rounded(figures.graph_calls + figures.salesforce_calls, 2),
        },
        "simulator_calls_per_session": {
            "graph": per_ended(graph_calls),
            "salesforce": per_ended(salesforce_calls),
        },
        "throttled": { "graph": graph_throttled, "salesforce": salesforce_throttled },
        "session_duration_ms": {
            "p50": rounded(figures.duration_ms.first().copied().unwrap_or_default(), 1),
            "p99": rounded(figures.duration_ms.get(1).copied().unwrap_or_default(), 1),
        },
        "scheduling_lag_ms": {
            "p50": rounded(figures.lag_ms.first().copied().unwrap_or_default(), 1),
            "p99": rounded(figures.lag_ms.get(1).copied().unwrap_or_default(), 1),
        },
        "tasks": {
            "expected": expected_tasks,
            "created": tasks.len(),
            "distinct_external_ids": distinct.len(),
            "items_to_crm": figures.items_to_crm,
            "ok": tasks.len() == expected_tasks && distinct.len() == expected_tasks,
        },
        "seeding_s": rounded(seeding_seconds, 1),
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Err(error) = cleanup(pool, scratch, &worker_config, simulators).await {
        eprintln!("cleanup incomplete: {error:#}");
    }
    Ok(())
}

async fn cleanup(
    pool: PgPool,
    scratch: crate::scratch::Scratch,
    config: &WorkerConfig,
    simulators: Simulators,
) -> anyhow::Result<()> {
    pool.close().await;
    simulators.stop().await?;
    scratch.remove(&config.common).await
}
