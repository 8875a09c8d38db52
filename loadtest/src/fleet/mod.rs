//! The fleet load test: the whole fleet as a deployment runs it, on this
//! machine, measured against the machine's own ceilings (P1-P5 of the brief).
//!
//! On a fresh database and queue prefix:
//! 1. the simulators start as a process, with a per-call latency drawn
//!    uniformly from `--latency-ms` to `--latency-ms + --jitter-ms` and the
//!    providers' limits; N users are seeded in bulk (see [`seed`]);
//! 2. the ceilings (P5) are measured on the same PostgreSQL and RabbitMQ
//!    while nothing else runs (see [`ceilings`]);
//! 3. the api, a scheduler and W workers start as processes;
//! 4. P1: `--p1-users` users (the first seeded) are made due at once;
//!    sessions per second from that moment to the last session's end, every
//!    session checked, and the CPU each process spent per session;
//! 5. P2: the cadence is compressed by `--compression` (30 min / K) and the
//!    number of users on it grows by half from `--step-start` until the
//!    scheduling lag's p99 passes 5 s or a cycle leaves users unsynced; the
//!    largest N that held, and N x K: the users a 30-minute cadence holds at
//!    that rate;
//! 6. P3: every user is made due at once again (the cadence backlog) and
//!    force syncs are requested through the api while it waits; request to
//!    session start, p50 and p99, with the backlog at each request;
//! 7. P4, all along: each worker's resident memory at its most deliveries in
//!    flight (`--concurrency` per worker).
//!
//! With `--p2-real-users N`, P2 runs instead on the real 30-minute cadence
//! with N users seeded in their steady state, and nothing else (see [`real`]).
//!
//! The report (every figure, the configuration, the versions, the machine)
//! goes to `<out>/report.json` and stdout, the chart to `<out>/report.html`.
//! The run fails on errors (a process exiting, a failed session, a missing
//! Task), never on speed.

pub mod ceilings;
pub mod chart;
mod cost;
pub(crate) mod processes;
mod real;
mod sampler;
pub mod seed;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::builder::TypedValueParser;
use secrecy::SecretString;
use sqlx::PgPool;
use syncfleet_common::{
    config::{CommonConfig, Source},
    db,
    queue::{Publisher, Route, Topology},
    secrets::KeyRing,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    demo::ControlApi,
    scratch::{Scratch, at_least, count, rounded, simulator_settings},
};
use processes::{Process, free_port};

/// The run's own key ring (32 bytes of 0x33): its credentials live only in
/// its throwaway database.
const ENCRYPTION_KEYS: &str = "1:MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=";
/// Each simulated Salesforce org's daily allocation, and the fleet's view of it.
const DAILY_API_MAX: &str = "100000000";
/// The brief's cadence, which `--compression` divides.
const CADENCE: Duration = Duration::from_secs(30 * 60);
/// P2's limit on the scheduling lag's p99.
const LAG_LIMIT_MS: f64 = 5_000.0;
/// How long a phase may go without progress before the run fails.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Runs one of the load test's own bulk updates of `users` again when
/// PostgreSQL chose it as a deadlock's victim: it locks many rows in no set
/// order while the workers' group commit locks many too.
async fn again_on_deadlock<T, F, Fut>(mut run: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    for _ in 0..10 {
        match run().await {
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("40P01") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    run().await
}

/// Takes every user off the cadence (next slot in ten years), a few thousand
/// run rows at a time in key order, passing over the rows a session's close
/// holds and coming back for them. One statement over every row used to
/// deadlock with the workers' close batches, which lock their rows in their
/// own order, again and again after a P2 step the fleet could not hold.
async fn park_everyone(pool: &PgPool) -> Result<(), sqlx::Error> {
    loop {
        let parked = sqlx::query(
            "WITH chunk AS (SELECT user_id FROM user_runs WHERE next_sync_at < now() + interval '5 years' \
             ORDER BY user_id LIMIT 5000 FOR UPDATE SKIP LOCKED) \
             UPDATE user_runs r SET next_sync_at = now() + interval '10 years' FROM chunk WHERE r.user_id = chunk.user_id",
        )
        .execute(pool)
        .await?
        .rows_affected();
        if parked == 0 {
            let left: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM user_runs WHERE next_sync_at < now() + interval '5 years')",
            )
            .fetch_one(pool)
            .await?;
            if !left {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The run's flags.
#[derive(clap::Args)]
pub struct Options {
    /// Users seeded.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = count)]
    users: usize,
    /// Users made due at once for P1, the first seeded (at most --users).
    #[arg(long, value_name = "P", default_value_t = 20_000, value_parser = count)]
    p1_users: usize,
    /// Organizations the users are spread over.
    #[arg(long, value_name = "O", default_value_t = 20, value_parser = count)]
    organizations: usize,
    /// Worker processes.
    #[arg(long, value_name = "W", default_value_t = 2, value_parser = count)]
    workers: usize,
    /// Deliveries in flight per worker.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u16).range(1..).map(usize::from)
    )]
    concurrency: usize,
    /// The least latency in milliseconds the simulators add to a call.
    #[arg(long, value_name = "L", default_value_t = 50, value_parser = count)]
    latency_ms: usize,
    /// The most milliseconds drawn on top of --latency-ms.
    #[arg(long, value_name = "J", default_value_t = 250, value_parser = count)]
    jitter_ms: usize,
    /// P2 divides the 30-minute cadence by K.
    #[arg(long, value_name = "K", default_value_t = 60, value_parser = count)]
    compression: usize,
    /// P2's first number of users on the cadence.
    #[arg(long, value_name = "S", default_value_t = 2_000, value_parser = count)]
    step_start: usize,
    /// Cycles per P2 step, at least 2: one to settle, then the measured ones.
    #[arg(long, value_name = "Y", default_value_t = 3, value_parser = at_least(2))]
    step_cycles: usize,
    /// P3's force syncs; fewer than --users (the others make the backlog).
    #[arg(long, value_name = "F", default_value_t = 40, value_parser = count)]
    force_syncs: usize,
    /// Messages of P5's RabbitMQ ceiling.
    #[arg(long, value_name = "M", default_value_t = 50_000, value_parser = count)]
    ceiling_messages: usize,
    /// Rows of P5's PostgreSQL ceiling.
    #[arg(long, value_name = "R", default_value_t = 50_000, value_parser = count)]
    ceiling_rows: usize,
    /// The folder of the report, the chart and the logs.
    #[arg(long, value_name = "DIR", default_value = "loadtest-report")]
    out: PathBuf,
    /// P2 on the real cadence, instead of P1-P5.
    #[command(flatten)]
    real: real::RealOptions,
}

impl Options {
    /// What clap cannot check alone: flags that bound one another.
    pub fn check(&self) -> Result<(), &'static str> {
        match self.force_syncs < self.users {
            true => Ok(()),
            false => Err("--force-syncs must be fewer than --users (the others make the backlog)"),
        }
    }

    /// P1's users: `--p1-users`, at most every user.
    fn p1_users(&self) -> usize {
        self.p1_users.min(self.users)
    }

    fn interval(&self) -> Duration {
        CADENCE / u32::try_from(self.compression).unwrap_or(u32::MAX)
    }

    /// The report's configuration: the fleet's, the providers' and the
    /// build's, with the mode's own `settings` (a JSON object).
    fn configuration(&self, seeded: &seed::Seeded, settings: serde_json::Value) -> serde_json::Value {
        let mut configuration = serde_json::json!({
            "organizations": seeded.organizations,
            "salesforce_orgs": seeded.salesforce_orgs,
            "workers": self.workers,
            "concurrency_per_worker": self.concurrency,
            "provider_latency_ms": { "min": self.latency_ms, "max": self.latency_ms + self.jitter_ms,
                                     "distribution": "uniform" },
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        });
        if let (Some(fields), serde_json::Value::Object(settings)) = (configuration.as_object_mut(), settings) {
            fields.extend(settings);
        }
        configuration
    }
}

/// The fleet's processes and what they share.
struct Fleet {
    settings: Vec<(String, String)>,
    logs: PathBuf,
    http: reqwest::Client,
    simulators: Process,
    api: Option<Process>,
    scheduler: Option<Process>,
    workers: Vec<Process>,
    api_base: String,
    admin_token: String,
}

impl Fleet {
    /// Starts the simulators (the other processes come after seeding).
    async fn start_simulators(scratch: &Scratch, options: &Options, logs: PathBuf) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let simulators_listen = free_port()?;
        let simulators_url = format!("http://{simulators_listen}");
        let admin_token = format!("loadtest-admin-{}", Uuid::new_v4().simple());
        let settings: Vec<(String, String)> = [
            ("SYNCFLEET_DATABASE_URL", scratch.database_url.clone()),
            ("SYNCFLEET_QUEUE_PREFIX", scratch.prefix.clone()),
            ("SYNCFLEET_ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
            ("SYNCFLEET_LOG_FORMAT", "json".to_owned()),
            ("SYNCFLEET_LEADER_LEASE", "3s".to_owned()),
            ("SYNCFLEET_SIMULATOR_LISTEN", simulators_listen.to_string()),
            ("SYNCFLEET_SIMULATOR_SMTP_LISTEN", free_port()?.to_string()),
            ("SYNCFLEET_SIMULATOR_LATENCY", format!("{}ms", options.latency_ms)),
            ("SYNCFLEET_SIMULATOR_LATENCY_JITTER", format!("{}ms", options.jitter_ms)),
            ("SYNCFLEET_SIMULATOR_SALESFORCE_DAILY_API_MAX", DAILY_API_MAX.to_owned()),
            ("SYNCFLEET_LIMIT_SALESFORCE_DAILY_REQUESTS", DAILY_API_MAX.to_owned()),
            ("SYNCFLEET_WORKER_CONCURRENCY", options.concurrency.to_string()),
            ("SYNCFLEET_BOOTSTRAP_ADMIN_TOKEN", admin_token.clone()),
        ]
        .into_iter()
        .chain(simulator_settings(&simulators_url, "loadtest"))
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let simulators = start_simulators(simulators_listen, &settings, &logs, &http).await?;
        Ok(Self {
            settings,
            logs,
            http,
            simulators,
            api: None,
            scheduler: None,
            workers: Vec::new(),
            api_base: String::new(),
            admin_token,
        })
    }

    fn simulators_url(&self) -> String {
        format!("http://{}", self.simulators.ops)
    }

    fn with(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut settings = self.settings.clone();
        settings.extend(extra.iter().map(|(name, value)| ((*name).to_owned(), value.clone())));
        settings
    }

    async fn start_api(&mut self) -> anyhow::Result<()> {
        let listen = free_port()?;
        let settings = self.with(&[("SYNCFLEET_API_LISTEN", listen.to_string())]);
        let mut api = Process::start("syncfleet-api", "api", listen, &settings, &self.logs)?;
        api.ready(&self.http, "/readyz", Duration::from_secs(60)).await?;
        self.api_base = format!("http://{listen}");
        self.api = Some(api);
        Ok(())
    }

    async fn start_workers(&mut self, count: usize) -> anyhow::Result<()> {
        for index in 0..count {
            let ops = free_port()?;
            let name = format!("worker-{}", index + 1);
            let settings = self.with(&[
                ("SYNCFLEET_OPS_LISTEN", ops.to_string()),
                ("SYNCFLEET_WORKER_ID", format!("loadtest-{name}")),
            ]);
            let mut worker = Process::start("syncfleet-worker", &name, ops, &settings, &self.logs)?;
            worker.ready(&self.http, "/readyz", Duration::from_secs(60)).await?;
            self.workers.push(worker);
        }
        Ok(())
    }

    /// (Re)starts the scheduler with cadence `interval`; a deployment's
    /// setting change is a restart too.
    async fn restart_scheduler(&mut self, interval: Duration, generation: usize) -> anyhow::Result<()> {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.stop(Duration::from_secs(30)).await?;
        }
        let ops = free_port()?;
        let settings = self.with(&[
            ("SYNCFLEET_OPS_LISTEN", ops.to_string()),
            ("SYNCFLEET_SYNC_INTERVAL", format!("{}ms", interval.as_millis())),
        ]);
        let mut scheduler = Process::start(
            "syncfleet-scheduler",
            &format!("scheduler-{generation}"),
            ops,
            &settings,
            &self.logs,
        )?;
        scheduler.ready(&self.http, "/readyz", Duration::from_secs(60)).await?;
        self.scheduler = Some(scheduler);
        Ok(())
    }

    /// CPU seconds used so far by the workers, the simulators, the api and
    /// scheduler, and the machine (busy, total).
    fn cpu(&self) -> Cpu {
        let of = |process: &Process| process.pid().and_then(processes::cpu_seconds).unwrap_or(0.0);
        let (machine_busy, machine_total) = processes::machine_cpu_seconds().unwrap_or((0.0, 0.0));
        Cpu {
            workers: self.workers.iter().map(of).sum(),
            simulators: of(&self.simulators),
            api_and_scheduler: self.api.iter().chain(self.scheduler.iter()).map(of).sum(),
            machine_busy,
            machine_total,
        }
    }

    /// The workers as the sampler watches them.
    fn watched(&self) -> Vec<sampler::Watched> {
        self.workers
            .iter()
            .map(|worker| sampler::Watched {
                name: worker.name.clone(),
                ops: worker.ops,
                pid: worker.pid().unwrap_or_default(),
            })
            .collect()
    }

    /// CPU seconds used so far by each of the fleet's kinds of process.
    fn cpu_by_process(&self) -> std::collections::BTreeMap<&'static str, f64> {
        let of = |process: &Process| process.pid().and_then(processes::cpu_seconds).unwrap_or(0.0);
        std::collections::BTreeMap::from([
            ("workers", self.workers.iter().map(of).sum()),
            ("simulators", of(&self.simulators)),
            ("api", self.api.iter().map(of).sum()),
            ("scheduler", self.scheduler.iter().map(of).sum()),
        ])
    }

    /// The cost counters now (see [`cost`]).
    async fn snapshot(&self, pool: &PgPool, common: &CommonConfig) -> anyhow::Result<cost::Snapshot> {
        cost::Snapshot::take(pool, &common.redis_url, self.cpu_by_process()).await
    }

    /// Fails if any process has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        self.simulators.check_running()?;
        for process in self
            .api
            .iter_mut()
            .chain(self.scheduler.iter_mut())
            .chain(&mut self.workers)
        {
            process.check_running()?;
        }
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        let patience = Duration::from_secs(30);
        if let Some(scheduler) = self.scheduler {
            scheduler.stop(patience).await?;
        }
        for worker in self.workers {
            worker.stop(patience).await?;
        }
        if let Some(api) = self.api {
            api.stop(patience).await?;
        }
        self.simulators.stop(patience).await
    }
}

/// Cumulative CPU seconds; see [`Fleet::cpu`].
#[derive(Debug, Clone, Copy)]
struct Cpu {
    workers: f64,
    simulators: f64,
    api_and_scheduler: f64,
    machine_busy: f64,
    machine_total: f64,
}

impl Cpu {
    /// Where the CPU went between `self` and `later`, per session.
    fn per_session(self, later: Cpu, sessions: i64) -> serde_json::Value {
        let per = |before: f64, after: f64| rounded((after - before) * 1000.0 / sessions.max(1) as f64, 2);
        let ours = (later.workers - self.workers)
            + (later.simulators - self.simulators)
            + (later.api_and_scheduler - self.api_and_scheduler);
        let busy = later.machine_busy - self.machine_busy;
        serde_json::json!({
            "workers_ms": per(self.workers, later.workers),
            "simulators_ms": per(self.simulators, later.simulators),
            "api_and_scheduler_ms": per(self.api_and_scheduler, later.api_and_scheduler),
            "rest_of_machine_ms": rounded((busy - ours).max(0.0) * 1000.0 / sessions.max(1) as f64, 2),
            "machine_busy_percent": self.busy_percent_until(later),
            "note": "rest_of_machine is PostgreSQL, RabbitMQ, Redis, the load test itself and anything else running",
        })
    }
}

impl Cpu {
    /// How busy the machine's cores were between `self` and `later`, in percent.
    fn busy_percent_until(self, later: Cpu) -> f64 {
        let busy = later.machine_busy - self.machine_busy;
        rounded(100.0 * busy / (later.machine_total - self.machine_total).max(0.001), 1)
    }
}

/// Starts the simulators on `listen` and waits until they listen.
pub(crate) async fn start_simulators(
    listen: std::net::SocketAddr,
    settings: &[(String, String)],
    logs: &std::path::Path,
    http: &reqwest::Client,
) -> anyhow::Result<Process> {
    let mut simulators = Process::start("syncfleet-simulators", "simulators", listen, settings, logs)?;
    wait_listening(&mut simulators, http).await?;
    Ok(simulators)
}

/// Waits until the simulators listen (they answer any path, 404 for `/`).
async fn wait_listening(process: &mut Process, http: &reqwest::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        process.check_running()?;
        if http.get(format!("http://{}/", process.ops)).send().await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the simulators did not listen within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the whole load test; see the module's docs.
pub async fn run(source: &Source, options: &Options) -> anyhow::Result<()> {
    // A database of its own per mode: a quick compressed run started
    // meanwhile must not drop the long real-cadence run's.
    let scratch = match options.real.p2_real_users {
        Some(_) => Scratch::create("syncfleet_fleet_real_bench", "fleet-real").await?,
        None => Scratch::create("syncfleet_fleet_bench", "fleet").await?,
    };
    let logs = options.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut settings = source.clone();
    settings.extend([
        ("SYNCFLEET_DATABASE_URL", scratch.database_url.as_str()),
        ("SYNCFLEET_QUEUE_PREFIX", scratch.prefix.as_str()),
    ]);
    let common = CommonConfig::from_source(&settings)?;
    let pool = db::connect(&common).await?;
    db::migrate(&pool).await?;
    let mut fleet = Fleet::start_simulators(&scratch, options, logs).await?;
    let outcome = match options.real.p2_real_users {
        Some(users) => real::measure(&mut fleet, &pool, &common, &scratch, options, users).await,
        None => measure(&mut fleet, &pool, &common, &scratch, options).await,
    };
    let stopped = fleet.stop().await;
    pool.close().await;
    if let Err(error) = scratch.remove(&common).await {
        eprintln!("cleanup incomplete: {error:#}");
    }
    let report = outcome?;
    stopped?;
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(errors == 0, "the run had {errors} error(s): {}", report["errors"]);
    Ok(())
}

/// Seeds, measures every figure, writes the report; answers it.
async fn measure(
    fleet: &mut Fleet,
    pool: &PgPool,
    common: &CommonConfig,
    scratch: &Scratch,
    options: &Options,
) -> anyhow::Result<serde_json::Value> {
    let ring = KeyRing::parse(&SecretString::from(ENCRYPTION_KEYS.to_owned()))?;
    let control = ControlApi::new(&fleet.simulators_url())?;
    let seeding = Instant::now();
    let seeded = seed::seed(
        pool,
        &control,
        &ring,
        options.users,
        options.organizations,
        seed::Standing::FirstSession,
    )
    .await?;
    let seeding_s = seeding.elapsed().as_secs_f64();
    eprintln!("seeded {} users in {seeding_s:.1}s", options.users);

    let pairs: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT id, organization_id FROM users")
        .fetch_all(pool)
        .await?;
    let prefetch = u16::try_from(options.concurrency)?;
    let ceilings = ceilings::measure(
        common,
        pool,
        &scratch.prefix,
        &pairs,
        options.ceiling_messages,
        options.ceiling_rows,
        prefetch,
    )
    .await?;
    eprintln!("ceilings: {ceilings:?}");

    fleet.start_api().await?;
    fleet.start_workers(options.workers).await?;
    let long = Duration::from_secs(24 * 3600);
    fleet.restart_scheduler(long, 1).await?;
    let topology = Topology::new(scratch.prefix.clone(), common.delivery_limit);
    let publisher = Arc::new(Publisher::connect(common.amqp_url.clone(), "loadtest observer", topology).await?);

    let origin = Instant::now();
    let stop_sampling = CancellationToken::new();
    let sampling = tokio::spawn(sampler::run(
        fleet.watched(),
        publisher.clone(),
        origin,
        stop_sampling.clone(),
    ));
    let mut phases = Vec::new();
    let mut errors: Vec<String> = Vec::new();

    // P1: everyone due at once.
    let p1 = phase_p1(
        fleet,
        pool,
        common,
        &seeded,
        options.p1_users(),
        origin,
        &mut phases,
        &mut errors,
    )
    .await?;
    eprintln!("P1: {p1}");
    // P2: stepping N on the compressed cadence.
    fleet.restart_scheduler(options.interval(), 2).await?;
    let p2 = phase_p2(fleet, pool, common, &seeded, options, origin, &mut phases, &mut errors).await?;
    eprintln!("P2: {}", p2["largest_on_cadence"]);
    // P3: force syncs under the cadence backlog.
    fleet.restart_scheduler(long, 3).await?;
    let p3 = phase_p3(fleet, pool, &publisher, &seeded, options, origin, &mut phases).await?;
    eprintln!("P3: {}", p3["force_sync_to_session_start"]);

    stop_sampling.cancel();
    let sampled = sampling.await?;
    fleet.check()?;
    let p4 = p4(&sampled.workers, options.concurrency);

    let sessions_per_s = p1["sessions_per_s"].as_f64().unwrap_or(0.0);
    let sustained = p2["largest_on_cadence"]["sessions_per_s"].as_f64().unwrap_or(0.0);
    let ratio = |figure: f64, ceiling: f64| rounded(figure / ceiling.max(f64::MIN_POSITIVE), 3);
    let report = serde_json::json!({
        "configuration": options.configuration(&seeded, serde_json::json!({
            "users": options.users,
            "p1_users": options.p1_users(),
            "compression": options.compression,
            "compressed_cadence_s": options.interval().as_secs_f64(),
            "step_start": options.step_start,
            "step_cycles": options.step_cycles,
            "force_syncs": options.force_syncs,
        })),
        "seeding_s": rounded(seeding_s, 1),
        "p1_end_to_end": p1,
        "p2_on_cadence": p2,
        "p3_force_sync": p3,
        "p4_worker_memory": p4,
        "p5_ceilings": ceilings.json(options.ceiling_messages, options.ceiling_rows),
        "ratios": {
            "p1_to_rabbitmq": ratio(sessions_per_s, ceilings.rabbitmq_per_s),
            "p1_to_postgres_single": ratio(sessions_per_s, ceilings.postgres_single_per_s),
            "p1_to_postgres_batched": ratio(sessions_per_s, ceilings.postgres_batched_per_s),
            "p2_to_rabbitmq": ratio(sustained, ceilings.rabbitmq_per_s),
            "p2_to_postgres_single": ratio(sustained, ceilings.postgres_single_per_s),
        },
        "targets": targets(&p1, &p2, &p3, &p4, &ceilings, options),
        "environment": environment(pool).await,
        "errors": errors,
        "phases": phases.iter().map(|phase| serde_json::json!({
            "name": phase.name, "start_s": rounded(phase.start, 1), "end_s": rounded(phase.end, 1),
        })).collect::<Vec<_>>(),
        "timeline": timeline(&sampled.samples),
    });
    write_report(&options.out, &report, &page(&report, &sampled.samples, &phases, &p3))?;
    Ok(report)
}

/// The chart's timeline, one row a second: t, sessions/s, cadence lag p99
/// (ms, from the workers' histogram buckets), in flight, queue depth, largest
/// worker RSS (MB).
fn timeline(samples: &[chart::Sample]) -> serde_json::Value {
    samples
        .iter()
        .map(|sample| {
            serde_json::json!([
                rounded(sample.t, 1),
                sample.sessions_per_s,
                rounded(sample.lag_p99_ms, 1),
                sample.in_flight,
                sample.queue_depth,
                rounded(sample.worker_rss_mb, 1),
            ])
        })
        .collect()
}

fn since(origin: Instant) -> f64 {
    origin.elapsed().as_secs_f64()
}

/// Waits until `query` (a count) reaches zero; fails if it stops going down
/// for [`STALL_LIMIT`] or a process exits.
async fn wait_until_zero(fleet: &mut Fleet, pool: &PgPool, query: &str, what: &str) -> anyhow::Result<()> {
    let mut best = (i64::MAX, Instant::now());
    loop {
        let left: i64 = sqlx::query_scalar(query).fetch_one(pool).await?;
        if left == 0 {
            return Ok(());
        }
        if left < best.0 {
            best = (left, Instant::now());
        }
        anyhow::ensure!(
            best.1.elapsed() < STALL_LIMIT,
            "{what}: {left} left, none done for {STALL_LIMIT:?}"
        );
        fleet.check()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sessions of a time window, from the database.
#[derive(sqlx::FromRow)]
struct Window {
    sessions: i64,
    users: i64,
    failed: i64,
    items_to_crm: i64,
    lag_ms: Vec<f64>,
    duration_ms: Vec<f64>,
    last_ended: Option<DateTime<Utc>>,
}

async fn window(pool: &PgPool, trigger: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> anyhow::Result<Window> {
    Ok(sqlx::query_as(
        "SELECT count(*) AS sessions, count(DISTINCT user_id) AS users, count(*) FILTER (WHERE status IN ('failed', 'abandoned', 'skipped')) \
                    AS failed, \
                COALESCE(sum(items_to_crm), 0)::int8 AS items_to_crm, \
                COALESCE(percentile_cont(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP \
                    (ORDER BY EXTRACT(EPOCH FROM started_at - scheduled_at)::float8 * 1000), ARRAY[0, 0]::float8[]) \
                    AS lag_ms, \
                COALESCE(percentile_cont(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP \
                    (ORDER BY EXTRACT(EPOCH FROM ended_at - started_at)::float8 * 1000), ARRAY[0, 0]::float8[]) \
                    AS duration_ms, \
                max(ended_at) AS last_ended \
         FROM sync_sessions WHERE trigger = $1 AND scheduled_at >= $2 AND scheduled_at < $3",
    )
    .bind(trigger)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?)
}

fn quantiles(values: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "p50": rounded(values.first().copied().unwrap_or_default(), 1),
        "p99": rounded(values.get(1).copied().unwrap_or_default(), 1),
    })
}

/// The failed sessions' causes, the most frequent first.
async fn failure_causes(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(String, Option<String>, Option<String>, i64)> = sqlx::query_as(
        "SELECT status, error_category, left(error_message, 200), count(*) FROM sync_sessions \
         WHERE status NOT IN ('succeeded', 'succeeded_with_issues', 'running') GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 5",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(status, category, message, count)| {
            format!(
                "{count} session(s) {status}: {} {}",
                category.unwrap_or_default(),
                message.unwrap_or_default()
            )
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
async fn phase_p1(
    fleet: &mut Fleet,
    pool: &PgPool,
    common: &CommonConfig,
    seeded: &seed::Seeded,
    p1_users: usize,
    origin: Instant,
    phases: &mut Vec<chart::Phase>,
    errors: &mut Vec<String>,
) -> anyhow::Result<serde_json::Value> {
    let start = since(origin);
    let cpu = fleet.cpu();
    let before = fleet.snapshot(pool, common).await?;
    let chosen = &seeded.users[..p1_users];
    let made_due: DateTime<Utc> = again_on_deadlock(|| {
        sqlx::query_scalar("UPDATE user_runs SET next_sync_at = now() WHERE user_id = ANY($1) RETURNING now()")
            .bind(chosen)
            .fetch_optional(pool)
    })
    .await?
    .context("no users to make due")?;
    wait_until_zero(
        fleet,
        pool,
        "SELECT count(*) FROM user_runs WHERE queued_job_id IS NOT NULL OR next_sync_at <= now()",
        "P1 (every user due at once)",
    )
    .await?;
    let cpu = cpu.per_session(fleet.cpu(), chosen.len() as i64);
    let after = fleet.snapshot(pool, common).await?;
    let (sessions, calls) = cost::session_calls(pool, made_due - chrono::Duration::seconds(1), Utc::now()).await?;
    let per_session = before.per_session(&after, sessions, &calls);
    // Nobody is due until a phase says so.
    park_everyone(pool).await?;
    phases.push(chart::Phase {
        name: "P1 all due".to_owned(),
        start,
        end: since(origin),
    });
    let figures = window(pool, "cadence", made_due - chrono::Duration::seconds(1), Utc::now()).await?;
    let users = chosen.len() as i64;
    let elapsed = figures
        .last_ended
        .map_or(0.0, |ended| (ended - made_due).num_milliseconds() as f64 / 1000.0);
    let expected_tasks = users * seed::TASKS_PER_USER as i64;
    // A user whose slot on the long cadence falls within the phase has a
    // second session: every user must have one, none may be missing.
    if figures.users != users {
        errors.push(format!("P1: {} of {users} users had a session", figures.users));
    }
    if figures.failed > 0 {
        errors.push(format!("P1: {} sessions did not succeed", figures.failed));
        errors.extend(failure_causes(pool).await?);
    }
    if figures.items_to_crm != expected_tasks {
        errors.push(format!(
            "P1: {} emails logged to the CRM, {expected_tasks} expected",
            figures.items_to_crm
        ));
    }
    Ok(serde_json::json!({
        "users": users,
        "sessions": figures.sessions,
        "users_synced": figures.users,
        "failed": figures.failed,
        "tasks_logged": figures.items_to_crm,
        "tasks_expected": expected_tasks,
        "elapsed_s": rounded(elapsed, 2),
        "sessions_per_s": rounded(figures.sessions as f64 / elapsed.max(0.001), 1),
        "scheduling_lag_ms": quantiles(&figures.lag_ms),
        "session_duration_ms": quantiles(&figures.duration_ms),
        "cpu_per_session": cpu,
        "per_session": per_session,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn phase_p2(
    fleet: &mut Fleet,
    pool: &PgPool,
    common: &CommonConfig,
    seeded: &seed::Seeded,
    options: &Options,
    origin: Instant,
    phases: &mut Vec<chart::Phase>,
    errors: &mut Vec<String>,
) -> anyhow::Result<serde_json::Value> {
    let interval = options.interval();
    let interval_ms = interval.as_millis() as f64;
    let mut steps = Vec::new();
    let mut largest: Option<serde_json::Value> = None;
    let mut active = 0;
    let mut n = options.step_start.min(seeded.users.len());
    loop {
        let start = since(origin);
        // The step's new users join on their own slots, the ones the
        // scheduler gives them from then on (spread over the cycle by id).
        let joining = &seeded.users[active..n];
        let now = Utc::now();
        let slots: Vec<DateTime<Utc>> = joining
            .iter()
            .map(|user| syncfleet_common::cadence::next_slot(*user, interval, now))
            .collect();
        again_on_deadlock(|| {
            sqlx::query(
                "UPDATE user_runs r SET next_sync_at = s.slot FROM UNNEST($1::uuid[], $2::timestamptz[]) AS s(id, slot) \
                 WHERE r.user_id = s.id",
            )
            .bind(joining)
            .bind(&slots)
            .execute(pool)
        })
        .await?;
        active = n;
        let settle_until = now + chrono::Duration::milliseconds(interval_ms as i64);
        let window_end =
            settle_until + chrono::Duration::milliseconds((interval_ms as i64) * (options.step_cycles as i64 - 1));
        // The cost of the window's sessions (every user past its first
        // session: the steady state).
        sleep_checking(fleet, settle_until - Utc::now()).await?;
        let before = fleet.snapshot(pool, common).await?;
        sleep_checking(fleet, window_end - Utc::now()).await?;
        let after = fleet.snapshot(pool, common).await?;
        let (sessions, calls) = cost::session_calls(pool, settle_until, window_end).await?;
        let per_session = before.per_session(&after, sessions, &calls);
        // Let the window's last slots be taken before reading it.
        sleep_checking(fleet, chrono::Duration::seconds(6)).await?;
        let figures = window(pool, "cadence", settle_until, window_end).await?;
        let due = slots_due(n, settle_until, window_end, interval);
        let lag_p99 = figures.lag_ms.get(1).copied().unwrap_or_default();
        // A slot whose session has not started by now waited over 5 s too.
        let complete = figures.sessions * 100 >= due * 99;
        let held = complete && lag_p99 < LAG_LIMIT_MS && figures.failed == 0;
        let window_s = (window_end - settle_until).num_milliseconds() as f64 / 1000.0;
        let step = serde_json::json!({
            "users": n,
            "equivalent_users_at_30_min": n * options.compression,
            "sessions": figures.sessions,
            "slots_due": due,
            "failed": figures.failed,
            "sessions_per_s": rounded(figures.sessions as f64 / window_s.max(0.001), 1),
            "scheduling_lag_ms": quantiles(&figures.lag_ms),
            "session_duration_ms": quantiles(&figures.duration_ms),
            "held": held,
            "per_session": per_session,
        });
        eprintln!("P2 step: {step}");
        phases.push(chart::Phase {
            name: format!("P2 N={n}"),
            start,
            end: since(origin),
        });
        if figures.failed > 0 {
            errors.push(format!("P2 N={n}: {} sessions did not succeed", figures.failed));
            errors.extend(failure_causes(pool).await?);
        }
        steps.push(step.clone());
        if !held {
            break;
        }
        largest = Some(step);
        if n == seeded.users.len() {
            break;
        }
        // Steps of half again: doubling overshoots by too much to say where the limit is.
        n = (n * 3 / 2).max(n + 1).min(seeded.users.len());
    }
    // Off the cadence again; the jobs still queued finish before P3.
    park_everyone(pool).await?;
    wait_until_zero(
        fleet,
        pool,
        "SELECT count(*) FROM user_runs WHERE queued_job_id IS NOT NULL",
        "P2's last jobs",
    )
    .await?;
    Ok(serde_json::json!({
        "limit_lag_p99_ms": LAG_LIMIT_MS,
        "compressed_cadence_s": interval.as_secs_f64(),
        "largest_on_cadence": largest,
        "reached_every_seeded_user": largest.as_ref().is_some_and(|step| step["users"] == seeded.users.len()),
        "steps": steps,
    }))
}

/// The slots `users` users have in `[from, to)`: one per interval each, once
/// they are on their slots (the window starts after a settling cycle).
fn slots_due(users: usize, from: DateTime<Utc>, to: DateTime<Utc>, interval: Duration) -> i64 {
    let cycles = ((to - from).num_milliseconds() as f64 / interval.as_millis() as f64).round() as i64;
    users as i64 * cycles
}

async fn sleep_checking(fleet: &mut Fleet, duration: chrono::Duration) -> anyhow::Result<()> {
    let until = Instant::now() + duration.to_std().unwrap_or_default();
    while Instant::now() < until {
        fleet.check()?;
        tokio::time::sleep(Duration::from_millis(500).min(until - Instant::now())).await;
    }
    Ok(())
}

async fn phase_p3(
    fleet: &mut Fleet,
    pool: &PgPool,
    publisher: &Publisher,
    seeded: &seed::Seeded,
    options: &Options,
    origin: Instant,
    phases: &mut Vec<chart::Phase>,
) -> anyhow::Result<serde_json::Value> {
    let start = since(origin);
    let (targets, backlog_users) = seeded.users.split_at(options.force_syncs);
    again_on_deadlock(|| {
        sqlx::query("UPDATE user_runs SET next_sync_at = now() WHERE user_id = ANY($1)")
            .bind(backlog_users)
            .execute(pool)
    })
    .await?;
    // The backlog is whole once the scheduler has published every due user.
    wait_until_zero(
        fleet,
        pool,
        "SELECT count(*) FROM user_runs WHERE queued_job_id IS NULL AND next_sync_at <= now()",
        "P3 (publishing the backlog)",
    )
    .await?;
    let mut latencies = Vec::with_capacity(targets.len());
    let mut backlog = Vec::with_capacity(targets.len());
    for user in targets {
        backlog.push(publisher.ready_count(Route::Cadence).await?);
        let requested = Utc::now();
        let response = fleet
            .http
            .post(format!("{}/v1/users/{user}/actions/force-sync", fleet.api_base))
            .bearer_auth(&fleet.admin_token)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "force sync answered {status}: {body}");
        let job: Uuid = body["job"]["id"]
            .as_str()
            .context("the force sync's answer names its job")?
            .parse()?;
        let deadline = Instant::now() + STALL_LIMIT;
        let started = loop {
            let started: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT started_at FROM admin_jobs WHERE id = $1")
                .bind(job)
                .fetch_optional(pool)
                .await?
                .flatten();
            if let Some(started) = started {
                break started;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "force sync {job} did not start within {STALL_LIMIT:?}"
            );
            fleet.check()?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        latencies.push((started - requested).to_std().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phases.push(chart::Phase {
        name: "P3 force syncs".to_owned(),
        start,
        end: since(origin),
    });
    Ok(serde_json::json!({
        "force_sync_to_session_start": crate::scratch::latency_summary(&latencies),
        "latencies_ms": latencies.iter().map(|latency| rounded(latency.as_secs_f64() * 1000.0, 1)).collect::<Vec<_>>(),
        "cadence_backlog_at_request": {
            "min": backlog.iter().min(),
            "max": backlog.iter().max(),
        },
    }))
}

fn p4(workers: &[sampler::WorkerPeak], concurrency: usize) -> serde_json::Value {
    let mb = |bytes: u64| rounded(bytes as f64 / (1024.0 * 1024.0), 1);
    serde_json::json!({
        "concurrency_per_worker": concurrency,
        "workers": workers.iter().map(|worker| serde_json::json!({
            "name": worker.name,
            "max_in_flight": worker.max_in_flight,
            "rss_mb_at_max_in_flight": mb(worker.rss_at_max_in_flight),
            "max_rss_mb": mb(worker.max_rss),
            "peak_rss_mb": mb(worker.peak_rss),
        })).collect::<Vec<_>>(),
        "max_in_flight": workers.iter().map(|worker| worker.max_in_flight).fold(0.0, f64::max),
        "max_rss_mb": mb(workers.iter().map(|worker| worker.peak_rss.max(worker.max_rss)).max().unwrap_or(0)),
    })
}

fn targets(
    p1: &serde_json::Value,
    p2: &serde_json::Value,
    p3: &serde_json::Value,
    p4: &serde_json::Value,
    ceilings: &ceilings::Ceilings,
    options: &Options,
) -> serde_json::Value {
    let p1_rate = p1["sessions_per_s"].as_f64().unwrap_or(0.0);
    let equivalent = p2["largest_on_cadence"]["equivalent_users_at_30_min"]
        .as_u64()
        .unwrap_or(0);
    let force_p99 = p3["force_sync_to_session_start"]["p99_ms"].as_f64().unwrap_or(f64::MAX);
    let backlog = p3["cadence_backlog_at_request"]["min"].as_u64().unwrap_or(0);
    let in_flight = p4["max_in_flight"].as_f64().unwrap_or(0.0);
    let rss = p4["max_rss_mb"].as_f64().unwrap_or(f64::MAX);
    serde_json::json!({
        "end_to_end_at_least_half_rabbitmq": {
            "met": p1_rate >= ceilings.rabbitmq_per_s / 2.0,
            "figure": p1_rate, "needed": rounded(ceilings.rabbitmq_per_s / 2.0, 1),
        },
        "one_million_users_on_30_min_cadence": {
            "met": equivalent >= 1_000_000 && options.latency_ms >= 50,
            "figure": equivalent, "needed": 1_000_000,
            "latency_ms": [options.latency_ms, options.latency_ms + options.jitter_ms],
        },
        "force_sync_p99_under_250ms_with_100k_backlog": {
            "met": force_p99 < 250.0 && backlog >= 100_000,
            "figure_ms": force_p99, "smallest_backlog": backlog,
        },
        "worker_rss_at_most_128mb_at_1000_in_flight": {
            "met": rss <= 128.0 && in_flight >= 1_000.0,
            "figure_mb": rss, "max_in_flight_per_worker": in_flight,
        },
    })
}

/// Versions of the services and what the machine is.
async fn environment(pool: &PgPool) -> serde_json::Value {
    let postgres: Option<String> = sqlx::query_scalar("SHOW server_version").fetch_one(pool).await.ok();
    let command = |program: &str, arguments: &[&str]| {
        std::process::Command::new(program)
            .args(arguments)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let proc_line = |file: &str, key: &str| {
        std::fs::read_to_string(file).ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
    };
    serde_json::json!({
        "syncfleet": env!("CARGO_PKG_VERSION"),
        "postgresql": postgres,
        "rabbitmq": command("rabbitmqctl", &["-q", "version"]),
        "redis": command("redis-server", &["--version"]),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|text| text.trim().to_owned()),
        "cpu": proc_line("/proc/cpuinfo", "model name"),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": proc_line("/proc/meminfo", "MemTotal"),
    })
}

/// Writes `report` to `<out>/report.json` and `page` to `<out>/report.html`,
/// and prints the report's figures (the timeline stays in the file).
fn write_report(out: &std::path::Path, report: &serde_json::Value, page: &str) -> anyhow::Result<()> {
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report)?)?;
    std::fs::write(out.join("report.html"), page)?;
    eprintln!(
        "report: {} and {}",
        out.join("report.json").display(),
        out.join("report.html").display()
    );
    let mut figures = report.clone();
    if let Some(fields) = figures.as_object_mut() {
        fields.remove("timeline");
    }
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}

/// The chart of P1-P5, with their headline figures.
fn page(
    report: &serde_json::Value,
    samples: &[chart::Sample],
    phases: &[chart::Phase],
    p3: &serde_json::Value,
) -> String {
    let figure = |path: &[&str]| path.iter().fold(report, |value, key| &value[*key]).to_string();
    let headline: Vec<(String, String)> = [
        ("P1 sessions/s end to end", figure(&["p1_end_to_end", "sessions_per_s"])),
        (
            "P2 users on the compressed cadence (lag p99 < 5 s)",
            figure(&["p2_on_cadence", "largest_on_cadence", "users"]),
        ),
        (
            "P2 equivalent users on a 30-minute cadence",
            figure(&["p2_on_cadence", "largest_on_cadence", "equivalent_users_at_30_min"]),
        ),
        (
            "P3 force sync p50 ms",
            figure(&["p3_force_sync", "force_sync_to_session_start", "p50_ms"]),
        ),
        (
            "P3 force sync p99 ms",
            figure(&["p3_force_sync", "force_sync_to_session_start", "p99_ms"]),
        ),
        ("P4 worker RSS MB (max)", figure(&["p4_worker_memory", "max_rss_mb"])),
        (
            "P4 in flight per worker (max)",
            figure(&["p4_worker_memory", "max_in_flight"]),
        ),
        (
            "P5 RabbitMQ publish+consume /s",
            figure(&["p5_ceilings", "rabbitmq_publish_consume_per_s"]),
        ),
        (
            "P5 PostgreSQL session inserts /s (single)",
            figure(&["p5_ceilings", "postgres_session_inserts_single_per_s"]),
        ),
        (
            "P5 PostgreSQL session inserts /s (batched)",
            figure(&["p5_ceilings", "postgres_session_inserts_batched_per_s"]),
        ),
        ("P1 / RabbitMQ ceiling", figure(&["ratios", "p1_to_rabbitmq"])),
    ]
    .into_iter()
    .map(|(label, value)| (label.to_owned(), value))
    .collect();
    let distributions = vec![chart::Distribution {
        name: "P3 force sync, request to session start".to_owned(),
        values_ms: p3["latencies_ms"]
            .as_array()
            .map(|values| values.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default(),
    }];
    chart::html("Syncfleet fleet load test", &headline, samples, phases, &distributions)
}
