//! The fault test: the whole fleet as processes (the simulators, the api, two
//! schedulers, W workers) on a private PostgreSQL cluster, RabbitMQ node and
//! Redis, worked as in production while faults are injected on a schedule
//! drawn from `--seed`; then quiesced and checked.
//!
//! 1. The services start under the run's folder on free ports; the shared
//!    ones of the machine are never touched (without `initdb`, a scratch
//!    database on the shared PostgreSQL, which is then never stopped).
//! 2. `--users` users are seeded across Office 365, Exchange and Gmail, each
//!    with Salesforce, the simulators in their strict rotation modes (Graph
//!    revokes a rotated refresh token, Salesforce rotates), Salesforce
//!    sessions short-lived so sessions refresh and rotate all along.
//! 3. For `--duration` seconds: messages are added to the mailboxes (the
//!    ledger), the api is worked with `Idempotency-Key` (pushes, force
//!    syncs, new users; every answer recorded, see [`client`]), access
//!    tokens are expired now and then, and the faults of [`schedule`] are
//!    injected one after the other.
//! 4. Quiesce: every fault cleared, every process up; the run waits until
//!    every user had a successful session after that and the ledger is in
//!    Salesforce (or a deadline passes), then stops the schedulers and
//!    drains the workers.
//! 5. The checks of [`checks`], each a figure of `<out>/report.json` and a
//!    line of `<out>/summary.txt`; the run fails if any check fails.

mod checks;
mod client;
mod fleet;
mod schedule;
mod services;
mod world;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::builder::TypedValueParser;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_common::{
    config::{CommonConfig, Source},
    db,
    secrets::KeyRing,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    demo::ControlApi,
    fleet::processes::free_port,
    scratch::{at_least, count, simulator_settings},
};
use fleet::{Fleet, Which};
use schedule::{Draws, Fault, Plan};
use services::{Postgres, Rabbit, Redis};
use world::{Access, World};

/// The run's own key ring (32 bytes of 0x46): its credentials live only in
/// its throwaway database.
const ENCRYPTION_KEYS: &str = "1:RkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkY=";
/// The Salesforce allocation of each simulated org, and the fleet's view of it.
const DAILY_API_MAX: &str = "100000000";
/// The run's OAuth clients' label.
const LABEL: &str = "faults";

/// The run's flags.
#[derive(clap::Args)]
pub struct Options {
    /// The seed the fault schedule and the load are drawn from.
    #[arg(long, value_name = "S", default_value_t = 1, value_parser = count.map(|seed| seed as u64))]
    seed: u64,
    /// Seconds of load and faults before the run quiesces.
    #[arg(long, value_name = "SECONDS", default_value = "480", value_parser = seconds)]
    duration: Duration,
    /// Users seeded across Office 365, Exchange and Gmail; at least 10.
    #[arg(long, value_name = "N", default_value_t = 300, value_parser = at_least(10))]
    users: usize,
    /// Workers at the start (one more joins during an outage).
    #[arg(long, value_name = "W", default_value_t = 3, value_parser = count)]
    workers: usize,
    /// Seconds of the fleet's sync cadence (the run's SYNCFLEET_SYNC_INTERVAL).
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = seconds)]
    interval: Duration,
    /// The short version: worker kills, PostgreSQL restarts, Redis kills and
    /// RabbitMQ restarts only, shorter outages.
    #[arg(long)]
    short: bool,
    /// The folder of the report, the summary and the logs.
    #[arg(long, value_name = "DIR", default_value = "faults-report")]
    out: PathBuf,
}

/// The value parser of a flag in whole seconds, at least 1.
fn seconds(value: &str) -> Result<Duration, String> {
    count(value).map(|seconds| Duration::from_secs(seconds as u64))
}

/// What the run's tasks share with the checks.
#[derive(Default)]
pub struct Record {
    /// The faults as injected: name, start, end, details.
    pub faults: Vec<Value>,
    /// Every api request and its answers.
    pub calls: Vec<client::Call>,
    /// Samples of the two schedulers' leader gauges where both said 1.
    pub both_leading: usize,
    pub gauge_samples: usize,
    /// Samples whose reads took longer than [`GAUGE_READ_LIMIT`]: not of one
    /// moment, so not compared.
    pub gauge_samples_slow: usize,
    /// Access tokens expired by the run (to make sessions refresh).
    pub expiries: usize,
    /// Redis outages, for the Gmail figure.
    pub redis_outages: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The record, even if a task panicked while holding it (what it holds is
/// still worth reporting).
fn lock(record: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The private services of the run.
struct Services {
    postgres: Postgres,
    rabbit: Rabbit,
    redis: Redis,
}

/// Runs the fault test; see the module's docs.
pub async fn run(source: &Source, options: &Options) -> anyhow::Result<()> {
    let logs = options.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let base = std::env::temp_dir().join(format!(
        "syncfleet-faults-{}",
        &Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&base)?;
    eprintln!("faults: services under {}", base.display());
    let postgres = Postgres::start(&base)
        .await
        .context("starting the private PostgreSQL")?;
    let services = async {
        let rabbit = Rabbit::start(&base).await.context("starting the private RabbitMQ")?;
        let redis = Redis::start(&logs).await.context("starting the private Redis")?;
        anyhow::Ok((rabbit, redis))
    }
    .await;
    let (rabbit, redis) = match services {
        Ok(started) => started,
        Err(error) => {
            postgres.remove().await;
            return Err(error);
        }
    };
    let mut services = Services {
        postgres,
        rabbit,
        redis,
    };
    let outcome = run_with(source, options, &mut services, logs).await;
    services.rabbit.remove().await;
    let _ = services.redis.kill().await;
    services.postgres.remove().await;
    let _ = std::fs::remove_dir_all(&base);
    let report = outcome?;
    let failed: Vec<&str> = report["checks"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, check)| check["passed"] != json!(true))
        .map(|(name, _)| name.as_str())
        .collect();
    anyhow::ensure!(failed.is_empty(), "faults: failed checks: {}", failed.join(", "));
    eprintln!("faults: every check passed");
    Ok(())
}

async fn run_with(source: &Source, options: &Options, services: &mut Services, logs: PathBuf) -> anyhow::Result<Value> {
    let database_url = services.postgres.url();
    let mut settings = source.clone();
    settings.extend([
        ("SYNCFLEET_DATABASE_URL", database_url.as_str()),
        ("SYNCFLEET_QUEUE_PREFIX", "faults"),
    ]);
    let common = CommonConfig::from_source(&settings)?;
    let pool = db::connect(&common).await?;
    db::migrate(&pool).await?;

    let simulators_listen = free_port()?;
    let simulators_url = format!("http://{simulators_listen}");
    let smtp_listen = free_port()?;
    let admin_token = format!("faults-admin-{}", Uuid::new_v4().simple());
    let interval = options.interval;
    let fleet_settings: Vec<(String, String)> = [
        ("SYNCFLEET_DATABASE_URL", database_url.clone()),
        ("SYNCFLEET_AMQP_URL", services.rabbit.url()),
        ("SYNCFLEET_REDIS_URL", services.redis.url()),
        ("SYNCFLEET_QUEUE_PREFIX", "faults".to_owned()),
        ("SYNCFLEET_ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
        ("SYNCFLEET_LOG_FORMAT", "json".to_owned()),
        ("SYNCFLEET_BOOTSTRAP_ADMIN_TOKEN", admin_token.clone()),
        ("SYNCFLEET_SYNC_INTERVAL", format!("{}s", interval.as_secs())),
        ("SYNCFLEET_LEADER_LEASE", "3s".to_owned()),
        ("SYNCFLEET_SWEEP_INTERVAL", "5s".to_owned()),
        // The compressed cadence's equivalent of 2 hours for 30 minutes.
        ("SYNCFLEET_QUEUED_JOB_TIMEOUT", format!("{}s", interval.as_secs() * 4)),
        ("SYNCFLEET_USER_LEASE", "15s".to_owned()),
        ("SYNCFLEET_RETRY_BASE_DELAY", "2s".to_owned()),
        ("SYNCFLEET_RETRY_MAX_DELAY", "20s".to_owned()),
        // Salesforce sessions kept a minute (6 minutes less the 5-minute
        // margin): most sessions refresh, and rotate, the CRM token.
        ("SYNCFLEET_SALESFORCE_SESSION_LIFETIME", "6m".to_owned()),
        ("SYNCFLEET_SMTP_URL", format!("smtp://{smtp_listen}")),
        ("SYNCFLEET_OUTBOX_POLL", "500ms".to_owned()),
        ("SYNCFLEET_OUTBOX_RETRY_DELAY", "1s".to_owned()),
        ("SYNCFLEET_OUTBOX_MAX_ATTEMPTS", "1000".to_owned()),
        ("SYNCFLEET_SIMULATOR_LISTEN", simulators_listen.to_string()),
        ("SYNCFLEET_SIMULATOR_SMTP_LISTEN", smtp_listen.to_string()),
        ("SYNCFLEET_SIMULATOR_LATENCY", "50ms".to_owned()),
        ("SYNCFLEET_SIMULATOR_LATENCY_JITTER", "150ms".to_owned()),
        ("SYNCFLEET_SIMULATOR_SALESFORCE_DAILY_API_MAX", DAILY_API_MAX.to_owned()),
        ("SYNCFLEET_LIMIT_SALESFORCE_DAILY_REQUESTS", DAILY_API_MAX.to_owned()),
        (
            "SYNCFLEET_SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS",
            "true".to_owned(),
        ),
        (
            "SYNCFLEET_SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS",
            "true".to_owned(),
        ),
        ("SYNCFLEET_GMAIL_URL", simulators_url.clone()),
        ("SYNCFLEET_GOOGLE_TOKEN_URL", format!("{simulators_url}/token")),
        ("SYNCFLEET_GOOGLE_CLIENT_ID", format!("syncfleet-{LABEL}-project")),
        (
            "SYNCFLEET_GOOGLE_CLIENT_SECRET",
            format!("syncfleet-{LABEL}-project-secret"),
        ),
    ]
    .into_iter()
    .chain(simulator_settings(&simulators_url, LABEL))
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let mut fleet = Fleet::start_simulators(fleet_settings, simulators_listen, logs.clone()).await?;
    let outcome = exercise(&mut fleet, services, &pool, options, &admin_token, &simulators_url).await;
    let stopped = fleet.stop().await;
    pool.close().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn exercise(
    fleet: &mut Fleet,
    services: &mut Services,
    pool: &PgPool,
    options: &Options,
    admin_token: &str,
    simulators_url: &str,
) -> anyhow::Result<Value> {
    let ring = KeyRing::parse(&SecretString::from(ENCRYPTION_KEYS.to_owned()))?;
    let control = ControlApi::new(simulators_url)?;
    let seeding = Instant::now();
    let world = World::seed(pool, &control, &ring, options.users, options.interval).await?;
    eprintln!(
        "faults: seeded {} users in {:.1}s",
        world.users.len(),
        seeding.elapsed().as_secs_f64()
    );
    fleet.add_workers(options.workers)?;
    fleet.start_all().await?;
    let client = Arc::new(client::Client::new(fleet.api_url(), admin_token.to_owned())?);
    for (version, admin) in world.users.iter().filter(|user| user.admin).enumerate() {
        client.save_customization(admin.id, version).await?;
    }
    eprintln!("faults: fleet up ({} workers, 2 schedulers, api)", options.workers);

    let record = Arc::new(Mutex::new(Record::default()));
    let stop = CancellationToken::new();
    let started_at = Utc::now();
    let ledger_rate = (options.users / 100).max(1);
    let users_for_traffic = world.users.clone();
    let salesforce_orgs = world.salesforce_orgs.clone();
    let ledger = tokio::spawn(add_ledger(
        world,
        simulators_url.to_owned(),
        ledger_rate,
        options.seed,
        stop.clone(),
    ));
    let traffic: Vec<_> = (0..2)
        .map(|lane| {
            tokio::spawn(work_api(
                client.clone(),
                users_for_traffic.clone(),
                options.seed.wrapping_mul(31).wrapping_add(lane),
                lane,
                record.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let expiry = tokio::spawn(expire_tokens(
        users_for_traffic.clone(),
        simulators_url.to_owned(),
        options.seed.wrapping_add(7),
        record.clone(),
        stop.clone(),
    ));

    let plan = Plan {
        seed: options.seed,
        duration: options.duration,
        workers: options.workers,
        short: options.short,
        private_postgres: services.postgres.is_private(),
    };
    let planned = plan.faults();
    eprintln!("faults: {} faults planned over {:?}", planned.len(), options.duration);
    let origin = Instant::now();
    let mut draws = Draws::new(options.seed ^ 0x5EED);
    let mut injector = Injector {
        fleet,
        services,
        control: &control,
        users: &users_for_traffic,
        salesforce_orgs: &salesforce_orgs,
        workers: options.workers,
        record: record.clone(),
        faulted: Faulted::default(),
    };
    for item in &planned {
        injector.hold_until(origin + item.at).await?;
        let began = Utc::now();
        eprintln!("faults: +{:>4}s {}", origin.elapsed().as_secs(), item.fault.name());
        let details = injector.inject(&item.fault, &mut draws).await?;
        let ended = Utc::now();
        if let Fault::KillRedis { .. } = item.fault {
            lock(&record).redis_outages.push((began, ended));
        }
        lock(&record).faults.push(json!({
            "fault": item.fault.name(), "kind": item.fault.kind(), "planned_at_s": item.at.as_secs(),
            "started": began, "ended": ended, "details": details,
        }));
    }
    injector.hold_until(origin + options.duration).await?;

    // Quiesce: no new work, every fault cleared, every process up.
    eprintln!("faults: quiescing");
    stop.cancel();
    let world = ledger.await??;
    for lane in traffic {
        lane.await?;
    }
    expiry.await?;
    injector.clear_provider_faults().await;
    injector.fleet.start_all().await?;
    let cleared_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let quiesce = checks::quiesce(injector.fleet, pool, &control, &world, cleared_at, options.interval).await?;
    injector.fleet.stop_schedulers().await?;
    injector.fleet.stop_workers().await?;
    let ended_at = Utc::now();

    let record = std::mem::take(&mut *lock(&record));
    let mut secrets = world.secrets.clone();
    secrets.extend([
        admin_token.to_owned(),
        ENCRYPTION_KEYS.to_owned(),
        format!("syncfleet-{LABEL}-secret"),
    ]);
    let checks = checks::run(checks::Inputs {
        pool,
        control: &control,
        world: &world,
        record: &record,
        fleet: injector.fleet,
        cleared_at,
        secrets: &secrets,
    })
    .await?;
    let report = json!({
        "configuration": {
            "seed": options.seed, "duration_s": options.duration.as_secs(), "users": options.users,
            "workers": options.workers, "schedulers": 2, "interval_s": options.interval.as_secs(),
            "short": options.short,
            "postgresql": if injector.services.postgres.is_private() { "private cluster" } else { "scratch database on the shared server" },
            "rabbitmq": "private node", "redis": "private server",
            "strict_rotation": { "graph_revokes_rotated_refresh_tokens": true, "salesforce_rotates_refresh_tokens": true },
            "users_by_access": {
                "office365": world.users.iter().filter(|user| user.access == Access::Graph).count(),
                "exchange": world.users.iter().filter(|user| user.access == Access::Ews).count(),
                "gmail": world.users.iter().filter(|user| user.access == Access::Gmail).count(),
            },
        },
        "started": started_at,
        "faults_cleared": cleared_at,
        "ended": ended_at,
        "quiesce": quiesce,
        "faults": record.faults,
        "work": {
            "ledger_messages": world.ledger.len(),
            "api_requests": record.calls.len(),
            "access_tokens_expired": record.expiries,
        },
        "sessions": checks::sessions(pool, &world, &record.redis_outages).await?,
        "token_refreshes": checks::refreshes(&control, &world).await?,
        "checks": checks,
    });
    checks::write(&options.out, &report)?;
    Ok(report)
}

/// Adds a ledger message to a random mailbox, `rate` a second, until `stop`;
/// answers the world with its ledger.
async fn add_ledger(
    mut world: World,
    simulators_url: String,
    rate: usize,
    seed: u64,
    stop: CancellationToken,
) -> anyhow::Result<World> {
    let control = ControlApi::new(&simulators_url)?;
    let mut draws = Draws::new(seed.wrapping_add(3));
    let pause = Duration::from_millis(1000 / rate as u64);
    while !stop.is_cancelled() {
        let user = draws.below(world.users.len());
        world.add_message(&control, user).await?;
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    Ok(world)
}

/// One lane of api work: pushes, force syncs and new users, one request at
/// a time (with its retries and replay), until `stop`.
async fn work_api(
    client: Arc<client::Client>,
    users: Vec<world::User>,
    seed: u64,
    lane: u64,
    record: Arc<Mutex<Record>>,
    stop: CancellationToken,
) {
    let mut draws = Draws::new(seed);
    let mut made = 0;
    while !stop.is_cancelled() {
        let roll = draws.below(10);
        let call = if roll < 2 {
            let admins: Vec<&world::User> = users.iter().filter(|user| user.admin).collect();
            let admin = admins[draws.below(admins.len())];
            let colleagues: Vec<&world::User> = users
                .iter()
                .filter(|user| user.organization == admin.organization && !user.admin)
                .collect();
            let chosen: std::collections::BTreeSet<Uuid> =
                (0..5).map(|_| colleagues[draws.below(colleagues.len())].id).collect();
            let body = json!({ "from_user_id": admin.id, "user_ids": chosen });
            client.call("push", "/v1/pushes", body, None).await
        } else if roll < 7 {
            let user = &users[draws.below(users.len())];
            let path = format!("/v1/users/{}/actions/force-sync", user.id);
            client.call("force_sync", &path, json!({}), None).await
        } else {
            made += 1;
            let organization = users[draws.below(users.len())].organization;
            let email = format!("faults-new-{lane}-{made}-{}@new.example", Uuid::new_v4().simple());
            let body =
                json!({ "name": format!("New user {lane}-{made}"), "email": email, "organization_id": organization });
            client.call("create_user", "/v1/users", body, Some(email)).await
        };
        lock(&record).calls.push(call);
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(500 + draws.below(1000) as u64)) => {}
        }
    }
}

/// Every 10 s, expires the access tokens of a tenth of the mailboxes: their
/// next sessions refresh, and (strict rotation) rotate.
async fn expire_tokens(
    users: Vec<world::User>,
    simulators_url: String,
    seed: u64,
    record: Arc<Mutex<Record>>,
    stop: CancellationToken,
) {
    let Ok(control) = ControlApi::new(&simulators_url) else {
        return;
    };
    let mut draws = Draws::new(seed);
    // A mailbox's tokens are expired at most once a minute: a provider that
    // refuses a token it has just issued is not what this test is about.
    let mut last: Vec<Option<Instant>> = vec![None; users.len()];
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let mut expired = 0;
        for (user, last) in users.iter().zip(&mut last) {
            if !draws.chance(10) || last.is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
                continue;
            }
            *last = Some(Instant::now());
            let segments: Vec<&str> = match user.access {
                Access::Graph => vec!["_control", "graph", "mailboxes", user.email.as_str(), "expire-sessions"],
                Access::Gmail => vec![
                    "_control",
                    "gmail",
                    "mailboxes",
                    user.email.as_str(),
                    "expire-access-tokens",
                ],
                Access::Ews => continue,
            };
            if control.post(&segments, json!({})).await.is_ok() {
                expired += 1;
            }
        }
        lock(&record).expiries += expired;
    }
}

/// The provider faults armed, to clear at quiesce.
#[derive(Default)]
struct Faulted {
    graph: Vec<String>,
    gmail: Vec<String>,
    ews: Vec<String>,
}

/// Injects faults into the fleet, its services and the simulators.
struct Injector<'a> {
    fleet: &'a mut Fleet,
    services: &'a mut Services,
    control: &'a ControlApi,
    users: &'a [world::User],
    salesforce_orgs: &'a [String],
    /// The workers of `--workers` (one more joins during an outage).
    workers: usize,
    record: Arc<Mutex<Record>>,
    faulted: Faulted,
}

/// The longest a sample of the leader gauges may take to be compared: a
/// scheduler's gauge falls a quarter of the lease (750 ms of the run's 3 s)
/// before another can take the lease, so two readings this close that both
/// say 1 are two leaders at once; two readings farther apart (a scheduler
/// slow to answer on the loaded machine) are of different moments.
const GAUGE_READ_LIMIT: Duration = Duration::from_millis(250);

/// How long the fleet is left alone after PostgreSQL is back: the rotated
/// tokens whose store waited for it are stored by then. A worker killed -9
/// before that keeps its rotated tokens in its spool and stores them when it
/// starts again (worker's `lifecycle` tests), but a session of another worker
/// that takes the user over first meets the revoked token and fails once: a
/// failed session this run would count, not a lost authorization.
const POSTGRES_SETTLE: Duration = Duration::from_secs(15);

impl Injector<'_> {
    /// Waits until `until`, watching the processes and sampling the
    /// schedulers' leader gauges twice a second.
    async fn hold_until(&mut self, until: Instant) -> anyhow::Result<()> {
        loop {
            self.fleet.check()?;
            let (gauges, took) = self.fleet.leader_gauges().await;
            {
                let mut record = lock(&self.record);
                record.gauge_samples += 1;
                if took > GAUGE_READ_LIMIT {
                    record.gauge_samples_slow += 1;
                } else if gauges.iter().filter(|gauge| **gauge == Some(1.0)).count() > 1 {
                    record.both_leading += 1;
                }
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(500))).await;
        }
    }

    async fn hold(&mut self, duration: Duration) -> anyhow::Result<()> {
        self.hold_until(Instant::now() + duration).await
    }

    /// Injects `fault`, holds it, clears it; answers what it did.
    async fn inject(&mut self, fault: &Fault, draws: &mut Draws) -> anyhow::Result<Value> {
        let details = match fault {
            Fault::KillWorker { slot, down } => {
                // Killed with sessions in flight when it has any within 5 s.
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut in_flight = self.fleet.in_flight(*slot).await;
                while in_flight.unwrap_or(0.0) < 1.0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    in_flight = self.fleet.in_flight(*slot).await;
                }
                self.fleet.kill(Which::Worker(*slot)).await?;
                self.hold(*down).await?;
                self.fleet.restart(Which::Worker(*slot))?;
                json!({ "in_flight_at_kill": in_flight })
            }
            Fault::KillLeader { down } => {
                let (gauges, _) = self.fleet.leader_gauges().await;
                let leader = gauges.iter().position(|gauge| *gauge == Some(1.0)).unwrap_or(0);
                self.fleet.kill(Which::Scheduler(leader)).await?;
                self.hold(*down).await?;
                self.fleet.restart(Which::Scheduler(leader))?;
                json!({ "killed": format!("scheduler-{}", leader + 1), "gauges_before": gauges })
            }
            Fault::KillBothSchedulers { down } => {
                for index in 0..2 {
                    self.fleet.kill(Which::Scheduler(index)).await?;
                }
                self.hold(*down).await?;
                for index in 0..2 {
                    self.fleet.restart(Which::Scheduler(index))?;
                }
                json!({})
            }
            Fault::KillApi { down } => {
                self.fleet.kill(Which::Api).await?;
                self.hold(*down).await?;
                self.fleet.restart(Which::Api)?;
                json!({})
            }
            Fault::StopRabbit { down } => {
                self.services.rabbit.stop().await?;
                // The api and a worker start again while the broker is down.
                let slot = draws.below(self.workers);
                self.fleet.kill(Which::Api).await?;
                self.fleet.restart(Which::Api)?;
                self.fleet.kill(Which::Worker(slot)).await?;
                self.fleet.restart(Which::Worker(slot))?;
                self.hold(*down).await?;
                self.services.rabbit.boot().await?;
                json!({ "restarted_while_down": ["api", format!("worker-{}", slot + 1)] })
            }
            Fault::KillRabbit { down } => {
                self.services.rabbit.kill().await?;
                self.hold(*down).await?;
                self.services.rabbit.boot().await?;
                json!({})
            }
            Fault::KillRedis { down } => {
                self.services.redis.kill().await?;
                self.hold(*down).await?;
                self.services.redis.boot().await?;
                json!({})
            }
            Fault::StopPostgres { mode, down } => {
                self.services.postgres.stop(*mode).await?;
                // The api and a scheduler start again while PostgreSQL is
                // down, and the first time a new worker joins the fleet: they
                // must wait for it. (No worker is killed meanwhile: see
                // `POSTGRES_SETTLE`.)
                let scheduler = draws.below(2);
                self.fleet.kill(Which::Api).await?;
                self.fleet.restart(Which::Api)?;
                self.fleet.kill(Which::Scheduler(scheduler)).await?;
                self.fleet.restart(Which::Scheduler(scheduler))?;
                let joined = if self.fleet.worker_count() == self.workers {
                    self.fleet.add_workers(1)?;
                    let slot = self.fleet.worker_count() - 1;
                    self.fleet.restart(Which::Worker(slot))?;
                    Some(format!("worker-{}", slot + 1))
                } else {
                    None
                };
                self.hold(*down).await?;
                self.services.postgres.boot().await?;
                // The grant stores held up by the outage land once the
                // workers' pools reconnect: no worker is killed before then
                // either (the next fault waits).
                self.hold(POSTGRES_SETTLE).await?;
                json!({
                    "restarted_while_down": ["api", format!("scheduler-{}", scheduler + 1)],
                    "worker_started_while_down": joined,
                })
            }
            Fault::SmtpDown { down } => {
                self.control
                    .put(&["_control", "smtp", "down"], json!({ "down": true }))
                    .await?;
                self.hold(*down).await?;
                self.control
                    .put(&["_control", "smtp", "down"], json!({ "down": false }))
                    .await?;
                json!({})
            }
            Fault::Smtp451 { times } => {
                self.control
                    .post(&["_control", "smtp", "faults"], json!({ "code": 451, "times": times }))
                    .await?;
                json!({})
            }
            Fault::ProviderErrors { down } => {
                let affected = self.provider_errors(draws).await?;
                self.hold(*down).await?;
                self.clear_provider_faults().await;
                json!({ "accounts": affected })
            }
            Fault::LockFaults { times } => {
                let mut orgs = 0;
                for org in self.salesforce_orgs {
                    if draws.chance(30) {
                        self.control
                            .post(
                                &["_control", "salesforce", "orgs", org, "faults"],
                                json!({ "fault": "unable_to_lock_row", "times": times }),
                            )
                            .await?;
                        orgs += 1;
                    }
                }
                json!({ "salesforce_orgs": orgs })
            }
        };
        Ok(details)
    }

    /// 5xx on a share of the calls of a fifth of the mailboxes, and a few
    /// 503s from a fifth of the Salesforce orgs; answers the accounts.
    async fn provider_errors(&mut self, draws: &mut Draws) -> anyhow::Result<usize> {
        let mut affected = 0;
        for user in self.users {
            if !draws.chance(20) {
                continue;
            }
            affected += 1;
            match user.access {
                Access::Graph => {
                    self.control
                        .put(
                            &["_control", "graph", "mailboxes", user.email.as_str(), "fault-rate"],
                            json!({ "fault": { "kind": "server_error" }, "probability": 0.3 }),
                        )
                        .await?;
                    self.faulted.graph.push(user.email.clone());
                }
                Access::Gmail => {
                    self.control
                        .put(
                            &["_control", "gmail", "mailboxes", user.email.as_str(), "fault-rates"],
                            json!({ "fault": "server_error", "probability": 0.3 }),
                        )
                        .await?;
                    self.faulted.gmail.push(user.email.clone());
                }
                Access::Ews => {
                    self.control
                        .put(
                            &["_control", "ews", "fault-rates", &user.email],
                            json!({ "fault": { "type": "server_busy", "backoff_ms": 500 }, "probability": 0.3 }),
                        )
                        .await?;
                    self.faulted.ews.push(user.email.clone());
                }
            }
        }
        for org in self.salesforce_orgs {
            if draws.chance(20) {
                self.control
                    .post(
                        &["_control", "salesforce", "orgs", org, "faults"],
                        json!({ "fault": "service_unavailable", "times": 3 }),
                    )
                    .await?;
                affected += 1;
            }
        }
        Ok(affected)
    }

    /// Disarms every provider and SMTP fault the run armed.
    async fn clear_provider_faults(&mut self) {
        let faulted = std::mem::take(&mut self.faulted);
        for email in &faulted.graph {
            let _ = self
                .control
                .delete(&["_control", "graph", "mailboxes", email, "faults"])
                .await;
        }
        for email in &faulted.gmail {
            let _ = self
                .control
                .delete(&["_control", "gmail", "mailboxes", email, "faults"])
                .await;
        }
        for email in &faulted.ews {
            let _ = self.control.delete(&["_control", "ews", "faults", email]).await;
        }
        let _ = self.control.delete(&["_control", "smtp", "faults"]).await;
        let _ = self
            .control
            .put(&["_control", "smtp", "down"], json!({ "down": false }))
            .await;
        for org in self.salesforce_orgs {
            let _ = self
                .control
                .delete(&["_control", "salesforce", "orgs", org, "faults"])
                .await;
        }
    }
}
