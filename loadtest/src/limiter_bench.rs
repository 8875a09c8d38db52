//! The limiter's cost per call: acquire and release of one call through
//! Redis (a round trip each), and through the local share while Redis is
//! unreachable, from one task and from many at once.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;
use syncfleet_common::{
    config::{REDIS_URL, Source},
    ratelimit::{Admission, Limit, Limiter},
};
use uuid::Uuid;

use crate::scratch::at_least;

/// The benchmark's flags.
#[derive(clap::Args)]
pub struct Options {
    /// Calls measured per mode, at least 64 (one per task of the many-task
    /// mode).
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = at_least(TASKS))]
    pub calls: usize,
}

/// The tasks of the many-task mode.
const TASKS: usize = 64;

/// A limit every call passes (the cost measured is the limiter's own).
const OPEN: Limit = Limit {
    rate: Some((1_000_000_000, Duration::from_secs(1))),
    concurrency: Some(1_000_000),
};

async fn measure(limiter: &Limiter, calls: usize, tasks: usize) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let limiter = limiter.clone();
        let share = calls / tasks;
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for call in 0..share {
                let account = format!("account-{}", (task * share + call) % 64);
                let one = Instant::now();
                match limiter.acquire(&account, OPEN, 1).await {
                    Admission::Granted(permit) => limiter.release(permit).await,
                    Admission::Wait(_) => anyhow::bail!("an open limit made a call wait"),
                }
                latencies.push(one.elapsed());
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    Ok(json!({
        "tasks": tasks,
        "calls": latencies.len(),
        "calls_per_s": (latencies.len() as f64 / elapsed.as_secs_f64()).round(),
        "acquire_release_us": {"p50": percentile(0.5).round(), "p99": percentile(0.99).round()},
    }))
}

/// Runs the benchmark and prints a JSON report.
pub async fn run(source: &Source, options: &Options) -> anyhow::Result<()> {
    let prefix = format!("bench-{}", Uuid::new_v4().simple());
    let redis = Limiter::new(source.secret(&REDIS_URL), &prefix, Duration::from_secs(30), 1);
    // Warm the connection.
    if let Admission::Granted(permit) = redis.acquire("warm", OPEN, 1).await {
        redis.release(permit).await;
    }
    let with_redis = [
        measure(&redis, options.calls, 1).await?,
        measure(&redis, options.calls, TASKS).await?,
    ];
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let unreachable = Limiter::new(
        SecretString::from(format!("redis://127.0.0.1:{port}/0")),
        &prefix,
        Duration::from_secs(30),
        1,
    );
    let local = [
        measure(&unreachable, options.calls, 1).await?,
        measure(&unreachable, options.calls, TASKS).await?,
    ];
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "machine": {"cores": std::thread::available_parallelism().map(usize::from).unwrap_or(1)},
            "with_redis": with_redis,
            "local_share_without_redis": local,
        }))?
    );
    Ok(())
}
