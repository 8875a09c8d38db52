//! The api benchmark, on a fresh database and queue prefix:
//! 1. list latency: the api (in process, over real HTTP) answers the list
//!    endpoints over N users (spread over organizations, with an activity
//!    each): first pages under several sorts, filters and searches, and deep
//!    pages reached by following cursors; p50 and p99 per endpoint;
//! 2. force sync under a cadence backlog: every user is made due, the
//!    scheduler publishes them all while W workers drain the cadence queue,
//!    and force syncs of other users are requested through the api; the
//!    figure is request to session start (the session row's `started_at`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use sqlx::PgPool;
use syncfleet_api::AppState;
use syncfleet_common::{config::Source, db, queue::Publisher};
use syncfleet_scheduler::SchedulerConfig;
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::scratch::{Scratch, count, latency_summary};

/// The benchmark's flags.
#[derive(clap::Args)]
pub struct Options {
    /// Users seeded, spread over the organizations, an activity each.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = count)]
    users: usize,
    /// Requests per list endpoint.
    #[arg(long, value_name = "R", default_value_t = 200, value_parser = count)]
    requests: usize,
    /// List requests in flight at once.
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = count)]
    concurrency: usize,
    /// Force syncs requested while the cadence backlog waits.
    #[arg(long, value_name = "F", default_value_t = 40, value_parser = count)]
    force_syncs: usize,
    /// Workers draining the cadence queue.
    #[arg(long, value_name = "W", default_value_t = 2, value_parser = count)]
    workers: usize,
}

/// How many organizations the users are spread over.
const ORGANIZATIONS: usize = 20;

pub async fn run(source: &Source, options: &Options) -> anyhow::Result<()> {
    let scratch = Scratch::create("syncfleet_api_bench", "bench").await?;
    let mut settings = source.clone();
    settings.extend([
        ("SYNCFLEET_DATABASE_URL", scratch.database_url.as_str()),
        ("SYNCFLEET_QUEUE_PREFIX", scratch.prefix.as_str()),
        ("SYNCFLEET_SYNC_INTERVAL", "24h"),
        ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
        ("SYNCFLEET_DATABASE_MAX_CONNECTIONS", "20"),
    ]);
    let scheduler_config = SchedulerConfig::from_source(&settings)?;
    let pool = db::connect(&scheduler_config.common).await?;
    db::migrate(&pool).await?;

    let seeding = Instant::now();
    let organizations = seed(&pool, options.users).await?;
    eprintln!(
        "seeded {} users in {} organizations in {:.1}s",
        options.users,
        ORGANIZATIONS,
        seeding.elapsed().as_secs_f64()
    );
    let admin_token = syncfleet_api::auth::create_token(&pool, "admin", None, None, "bench admin").await?;
    let org_admin_token =
        syncfleet_api::auth::create_token(&pool, "org_admin", Some(organizations[0]), None, "bench org admin").await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let topology = syncfleet_common::queue::Topology::new(
        scheduler_config.common.queue_prefix.clone(),
        scheduler_config.common.delivery_limit,
    );
    let state = AppState {
        pool: pool.clone(),
        publisher: Arc::new(Publisher::lazy(
            scheduler_config.common.amqp_url.clone(),
            "bench api",
            topology,
        )),
        key_ring: None,
        url_policy: syncfleet_connectors::ssrf::UrlPolicy::STRICT,
        console: Arc::new(syncfleet_api::console::Console::new(&scheduler_config.common, None)),
    };
    let api_stop = CancellationToken::new();
    let api = tokio::spawn(syncfleet_api::serve(listener, state, api_stop.clone(), Duration::ZERO));
    let base = format!("http://{address}");
    let client = reqwest::Client::new();

    // 1. Lists.
    let organization = organizations[0];
    let endpoints: Vec<(&str, String, &str)> = vec![
        ("users, by name", "/v1/users?page_size=50".to_owned(), &admin_token),
        (
            "users, newest first",
            "/v1/users?sort=created_at&order=desc&page_size=50".to_owned(),
            &admin_token,
        ),
        (
            "users, search",
            "/v1/users?q=garcia&page_size=50".to_owned(),
            &admin_token,
        ),
        (
            "users, filtered",
            "/v1/users?sync_status=disabled&mailbox_status=initialized&page_size=50".to_owned(),
            &admin_token,
        ),
        (
            "users, org admin",
            "/v1/users?page_size=50".to_owned(),
            &org_admin_token,
        ),
        (
            "organization users",
            format!("/v1/organizations/{organization}/users?page_size=50"),
            &admin_token,
        ),
        (
            "organizations",
            "/v1/organizations?page_size=50".to_owned(),
            &admin_token,
        ),
        (
            "organization statistics",
            format!("/v1/organizations/{organization}/statistics?page_size=50"),
            &admin_token,
        ),
        (
            "organization activities",
            format!("/v1/organizations/{organization}/activities"),
            &admin_token,
        ),
    ];
    let mut lists = serde_json::Map::new();
    for (name, path, token) in &endpoints {
        let latencies = measure(&client, &base, path, token, options.requests, options.concurrency).await?;
        eprintln!("{name}: {}", latency_summary(&latencies));
        lists.insert((*name).to_owned(), latency_summary(&latencies));
    }
    let deep = deep_pages(&client, &base, &admin_token, 100).await?;
    eprintln!("users, following cursors 100 pages deep: {}", latency_summary(&deep));
    lists.insert("users, pages 1-100 by cursor".to_owned(), latency_summary(&deep));

    // 2. Force sync under a cadence backlog.
    let worker_config = WorkerConfig::from_source(&settings)?;
    sqlx::query("WITH enabled AS (UPDATE users SET sync_status = 'enabled' RETURNING id) UPDATE user_runs SET next_sync_at = now() WHERE user_id IN (SELECT id FROM enabled)")
        .execute(&pool)
        .await?;
    let scheduler_stop = CancellationToken::new();
    let scheduler = tokio::spawn(syncfleet_scheduler::run(
        scheduler_config.clone(),
        scheduler_stop.clone(),
    ));
    // Wait for a real backlog before asking.
    let backlog_target = (options.users / 2) as i64;
    loop {
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM user_runs WHERE queued_job_id IS NOT NULL")
            .fetch_one(&pool)
            .await?;
        if queued >= backlog_target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let workers: Vec<_> = (0..options.workers)
        .map(|index| {
            let mut config = worker_config.clone();
            config.worker_id = format!("bench-worker-{index}");
            config.ops_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let token = CancellationToken::new();
            let handle = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), token.clone()));
            (token, handle)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut running = Vec::with_capacity(workers.len());
    for (token, handle) in workers {
        if handle.is_finished() {
            handle.await??;
            anyhow::bail!("a worker stopped at start without an error");
        }
        running.push((token, handle));
    }
    let workers = running;
    let targets: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM user_runs WHERE queued_job_id IS NOT NULL ORDER BY next_sync_at DESC, user_id LIMIT $1",
    )
    .bind(options.force_syncs as i64)
    .fetch_all(&pool)
    .await?;
    let mut force = Vec::with_capacity(targets.len());
    let mut backlog_at_request = Vec::with_capacity(targets.len());
    for user in targets {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM user_runs WHERE queued_job_id IS NOT NULL")
            .fetch_one(&pool)
            .await?;
        backlog_at_request.push(waiting);
        let requested = chrono::Utc::now();
        let response = client
            .post(format!("{base}/v1/users/{user}/actions/force-sync"))
            .bearer_auth(&admin_token)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(
            status.as_u16() == 202 || status.as_u16() == 200,
            "force sync answered {status}: {body}"
        );
        let job: Uuid = body["job"]["id"]
            .as_str()
            .context("the answer names its job")?
            .parse()?;
        let started = loop {
            let started: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT min(started_at) FROM sync_sessions WHERE job_id = $1")
                    .bind(job)
                    .fetch_one(&pool)
                    .await?;
            if let Some(started) = started {
                break started;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        force.push(Duration::from_secs_f64(
            ((started - requested).num_microseconds().unwrap_or(0).max(0) as f64) / 1e6,
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("force sync to session start: {}", latency_summary(&force));
    scheduler_stop.cancel();
    scheduler.await??;
    for (token, handle) in workers {
        token.cancel();
        handle.await??;
    }
    api_stop.cancel();
    api.await??;

    let report = serde_json::json!({
        "users": options.users,
        "organizations": ORGANIZATIONS,
        "requests_per_endpoint": options.requests,
        "concurrency": options.concurrency,
        "list_latency": lists,
        "force_sync_to_session_start": latency_summary(&force),
        "cadence_backlog_when_requested": {
            "min": backlog_at_request.iter().min(),
            "max": backlog_at_request.iter().max(),
        },
        "workers": options.workers,
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    pool.close().await;
    scratch.remove(&scheduler_config.common).await?;
    Ok(())
}

/// `users` users with realistic names over [`ORGANIZATIONS`] organizations,
/// a fifth with an initialized mailbox, a tenth disabled, each with a
/// `user_added` activity and a last session.
async fn seed(pool: &PgPool, users: usize) -> anyhow::Result<Vec<Uuid>> {
    let organizations: Vec<Uuid> = (0..ORGANIZATIONS).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type) \
         SELECT id, 'bench-' || n, 'Organization ' || n, 'office365' \
         FROM UNNEST($1::uuid[]) WITH ORDINALITY AS o (id, n)",
    )
    .bind(&organizations)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO users (id, organization_id, name, email, sync_status, mailbox_status, created_at) \
         SELECT gen_random_uuid(), ($2::uuid[])[1 + n % array_length($2::uuid[], 1)], \
                (ARRAY['Ada','Grace','Alan','Linus','Margaret','Ken','Barbara','Dennis','Frances','John'])[1 + n % 10] \
                || ' ' || (ARRAY['Garcia','Smith','Nguyen','Müller','Rossi','Kowalski','Dubois','Tanaka','Silva','Olsen'])[1 + (n / 10) % 10] \
                || ' ' || n, \
                'user' || n || '@org' || (n % array_length($2::uuid[], 1)) || '.bench.test', \
                CASE WHEN n % 10 = 0 THEN 'disabled' ELSE 'enabled' END, \
                CASE WHEN n % 5 = 0 THEN 'initialized' ELSE 'not_initialized' END, \
                now() - make_interval(secs => n) \
         FROM generate_series(1, $1) AS n",
    )
    .bind(users as i64)
    .bind(&organizations)
    .execute(pool)
    .await?;
    // Each user's last session, as a fleet in service leaves them.
    sqlx::query(
        "UPDATE user_runs SET last_session_id = gen_random_uuid(), \
             last_session_at = now() - make_interval(secs => (random() * 1800)::int), \
             last_session_status = CASE WHEN random() < 1.0 / 7 THEN 'failed' ELSE 'succeeded' END",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO activities (id, organization_id, user_id, actor, kind, details) \
         SELECT gen_random_uuid(), organization_id, id, 'bench', 'user_added', 'user ' || email || ' added' FROM users",
    )
    .execute(pool)
    .await?;
    // A database in service is vacuumed by autovacuum: index-only scans count
    // without reading every row.
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    Ok(organizations)
}

/// `requests` GETs of `path`, `concurrency` at a time; each must answer 200.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token, next) = (client.clone(), format!("{base}{path}"), token.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let started = Instant::now();
                let response = client.get(&url).bearer_auth(&token).send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                latencies.push(started.elapsed());
                anyhow::ensure!(
                    status.is_success(),
                    "{url} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}

/// Follows `next_cursor` through `pages` pages of the user list, one request
/// at a time.
async fn deep_pages(client: &reqwest::Client, base: &str, token: &str, pages: usize) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(pages);
    let mut cursor: Option<String> = None;
    for _ in 0..pages {
        let url = match &cursor {
            // Cursors are base64url: nothing to escape.
            Some(cursor) => format!("{base}/v1/users?page_size=50&cursor={cursor}"),
            None => format!("{base}/v1/users?page_size=50"),
        };
        let started = Instant::now();
        let response = client.get(url).bearer_auth(token).send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        latencies.push(started.elapsed());
        anyhow::ensure!(status.is_success(), "a page answered {status}: {body}");
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(latencies)
}
