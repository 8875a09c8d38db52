//! The pipeline benchmark. Three phases on a fresh database and queue prefix:
//! 1. the scheduler alone publishes every due user (publish rate, confirms
//!    and commits included);
//! 2. the workers alone drain that backlog (consume, session commit, ack);
//! 3. the users are made due again and scheduler and workers run together:
//!    the end-to-end rate of the whole path;
//!
//! then RabbitMQ's publish+consume ceiling is measured as the fleet load
//! test's P5 measures it (the fleet's publisher, one consumer with the
//! workers' prefetch), and the end-to-end rate is compared with half of it.

use std::{sync::Arc, time::Instant};

use sqlx::PgPool;
use syncfleet_common::{config::Source, db};
use syncfleet_scheduler::SchedulerConfig;
use syncfleet_worker::{WorkerConfig, sync::SettingsCheck};
use tokio_util::sync::CancellationToken;

use crate::scratch::count;

/// The benchmark's flags.
#[derive(clap::Args)]
pub struct Options {
    /// Jobs of the trivial sync work, one per due user.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = count)]
    jobs: usize,
    /// Workers draining the queue.
    #[arg(long, value_name = "W", default_value_t = 2, value_parser = count)]
    workers: usize,
}

pub async fn run(source: &Source, options: &Options) -> anyhow::Result<()> {
    let scratch = crate::scratch::Scratch::create("syncfleet_bench", "bench").await?;
    let settings = |extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("SYNCFLEET_DATABASE_URL", scratch.database_url.as_str()),
            ("SYNCFLEET_QUEUE_PREFIX", scratch.prefix.as_str()),
            ("SYNCFLEET_SYNC_INTERVAL", "24h"),
            ("SYNCFLEET_SCHEDULER_TICK", "100ms"),
        ];
        pairs.extend_from_slice(extra);
        let mut merged = source.clone();
        merged.extend(pairs);
        merged
    };
    let scheduler_config = SchedulerConfig::from_source(&settings(&[]))?;
    let worker_config = WorkerConfig::from_source(&settings(&[("SYNCFLEET_WORKER_CONCURRENCY", "128")]))?;
    let pool = db::connect(&scheduler_config.common).await?;
    db::migrate(&pool).await?;
    let seeding = Instant::now();
    crate::demo::bulk_users(&pool, options.jobs).await?;
    eprintln!(
        "seeded {} users in {:.1}s",
        options.jobs,
        seeding.elapsed().as_secs_f64()
    );

    // 1. Publish.
    let started = Instant::now();
    let scheduler = spawn_scheduler(scheduler_config.clone());
    wait_for(
        &pool,
        "SELECT count(*) FROM user_runs WHERE queued_job_id IS NOT NULL",
        options.jobs,
    )
    .await?;
    let publish_seconds = started.elapsed().as_secs_f64();
    scheduler.0.cancel();
    scheduler.1.await??;

    // 2. Consume.
    let started = Instant::now();
    let workers = spawn_workers(&worker_config, options.workers);
    wait_for_sessions(&pool, chrono::Utc::now(), options.jobs).await?;
    let consume_seconds = started.elapsed().as_secs_f64();

    // 3. End to end: everything due again, scheduler and workers together.
    sqlx::query("UPDATE user_runs SET next_sync_at = now()")
        .execute(&pool)
        .await?;
    let started = Instant::now();
    let since = chrono::Utc::now();
    let scheduler = spawn_scheduler(scheduler_config.clone());
    wait_for_sessions(&pool, since, options.jobs).await?;
    let end_to_end_seconds = started.elapsed().as_secs_f64();
    scheduler.0.cancel();
    scheduler.1.await??;
    for (token, handle) in workers {
        token.cancel();
        handle.await??;
    }

    // 4. The ceiling, on the same broker, with nothing else running.
    let ceiling_messages = options.jobs.min(50_000);
    let ceiling = crate::fleet::ceilings::rabbitmq(
        &scheduler_config.common,
        &scratch.prefix,
        ceiling_messages,
        worker_config.cadence_prefetch,
    )
    .await?;

    let jobs = options.jobs as f64;
    let end_to_end = jobs / end_to_end_seconds;
    let report = serde_json::json!({
        "jobs": options.jobs,
        "workers": options.workers,
        "worker_concurrency": worker_config.cadence_prefetch,
        "scheduler_publish_per_second": (jobs / publish_seconds).round(),
        "workers_drain_per_second": (jobs / consume_seconds).round(),
        "end_to_end_per_second": end_to_end.round(),
        "rabbitmq_publish_consume_ceiling_per_second": ceiling.round(),
        "rabbitmq_ceiling_messages": ceiling_messages,
        "end_to_end_at_least_half_the_ceiling": end_to_end >= ceiling / 2.0,
        "seconds": { "publish": publish_seconds, "drain": consume_seconds, "end_to_end": end_to_end_seconds },
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    pool.close().await;
    if let Err(error) = scratch.remove(&scheduler_config.common).await {
        eprintln!("cleanup incomplete: {error:#}");
    }
    Ok(())
}

type Handle = (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>);

fn spawn_scheduler(config: SchedulerConfig) -> Handle {
    let token = CancellationToken::new();
    let handle = tokio::spawn(syncfleet_scheduler::run(config, token.clone()));
    (token, handle)
}

fn spawn_workers(config: &WorkerConfig, count: usize) -> Vec<Handle> {
    (0..count)
        .map(|index| {
            let mut config = config.clone();
            config.worker_id = format!("bench-worker-{index}");
            // Several workers in one process: each its own free port.
            config.ops_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let token = CancellationToken::new();
            let handle = tokio::spawn(syncfleet_worker::run(config, Arc::new(SettingsCheck), token.clone()));
            (token, handle)
        })
        .collect()
}

/// Waits until `target` users' last sessions succeeded since `since`. Each
/// count scans the run rows, so it polls seldom: half the time the rate so
/// far says is left (100 ms to 2 s). Counting every 100 ms took a third of a
/// core from the run it measured.
async fn wait_for_sessions(pool: &PgPool, since: chrono::DateTime<chrono::Utc>, target: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM user_runs WHERE last_session_status = 'succeeded' AND last_session_at >= $1",
        )
        .bind(since)
        .fetch_one(pool)
        .await?;
        let count = count.max(0) as usize;
        if count >= target {
            return Ok(());
        }
        let rate = count as f64 / started.elapsed().as_secs_f64().max(0.001);
        let left = if rate > 0.0 {
            (target - count) as f64 / rate / 2.0
        } else {
            1.0
        };
        tokio::time::sleep(std::time::Duration::from_secs_f64(left.clamp(0.1, 2.0))).await;
    }
}

async fn wait_for(pool: &PgPool, query: &str, target: usize) -> anyhow::Result<()> {
    loop {
        let count: i64 = sqlx::query_scalar(query).fetch_one(pool).await?;
        if count as usize >= target {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
