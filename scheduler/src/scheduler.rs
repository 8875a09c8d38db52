//! The scheduler's life: a candidate until it holds the lease, then the
//! leader until it loses the lease or is asked to stop.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use syncfleet_common::{
    db,
    queue::{Publisher, Topology},
};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    config::SchedulerConfig,
    leader::Leadership,
    tick::{self, TickError},
};

/// Runs the scheduler until `shutdown` is cancelled. Several replicas may
/// run: one leads, the others wait to take over.
pub async fn run(config: SchedulerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::connect(&config.common).await.context("connecting to PostgreSQL")?;
    let topology = Topology::new(config.common.queue_prefix.clone(), config.common.delivery_limit);
    let leadership = Leadership::new(pool.clone(), config.leader_lease);
    info!(holder = %leadership.holder(), "Scheduler started; waiting for leadership.");
    let mut publisher: Option<Publisher> = None;

    while !shutdown.is_cancelled() {
        match leadership.try_acquire().await {
            Ok(Some(term)) => {
                if publisher.is_none() {
                    match Publisher::connect(config.common.amqp_url.clone(), "syncfleet-scheduler", topology.clone())
                        .await
                    {
                        Ok(connected) => publisher = Some(connected),
                        Err(error) => {
                            warn!(%error, "Leader cannot reach the broker; stepping down.");
                            let _ = leadership.release(term).await;
                            wait(&shutdown, config.tick).await;
                            continue;
                        }
                    }
                }
                if let Some(publisher) = &publisher {
                    lead(&config, &pool, publisher, &leadership, term, &shutdown).await;
                }
            }
            Ok(None) => wait(&shutdown, config.tick).await,
            Err(error) => {
                warn!(%error, "Cannot reach PostgreSQL for leadership.");
                wait(&shutdown, config.tick).await;
            }
        }
    }
    pool.close().await;
    info!("Scheduler stopped.");
    Ok(())
}

async fn wait(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = sleep(duration) => {}
    }
}

async fn lead(
    config: &SchedulerConfig,
    pool: &PgPool,
    publisher: &Publisher,
    leadership: &Leadership,
    term: i64,
    shutdown: &CancellationToken,
) {
    info!(term, "Became the scheduler leader.");
    let lost = CancellationToken::new();
    let renewal = tokio::spawn(renew(leadership.clone(), term, config.leader_lease, lost.clone()));
    let mut next_sweep = Instant::now();
    let mut next_maintenance = Instant::now();

    loop {
        if Instant::now() >= next_maintenance {
            match db::maintain_partitions(pool, config.retention).await {
                Ok(report) => info!(
                    created = report.created,
                    dropped = report.dropped,
                    "Partitions maintained."
                ),
                Err(error) => warn!(%error, "Partition maintenance failed; will try again."),
            }
            next_maintenance = Instant::now() + config.maintenance_interval;
        }
        if Instant::now() >= next_sweep {
            match tick::sweep(pool, config.queued_job_timeout).await {
                Ok((0, 0)) => {}
                Ok((abandoned, recovered)) => {
                    info!(abandoned, recovered, "Expired leases released and lost jobs recovered.")
                }
                Err(error) => warn!(%error, "Recovery sweep failed; will try again."),
            }
            next_sweep = Instant::now() + config.sweep_interval;
        }

        let started = Instant::now();
        match tick::tick(
            pool,
            publisher,
            leadership.holder(),
            term,
            config.interval,
            config.batch_size,
        )
        .await
        {
            Ok(report) if report.published + report.skipped > 0 => {
                let elapsed = started.elapsed();
                info!(
                    published = report.published,
                    skipped = report.skipped,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "Due users scheduled."
                );
            }
            Ok(_) => {}
            Err(TickError::NotLeader) => {
                warn!(term, "Leadership lost.");
                break;
            }
            Err(error) => error!(%error, "Scheduling pass failed; nothing was committed, it will be retried."),
        }

        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Err(error) = leadership.release(term).await {
                    warn!(%error, "Could not release leadership; a standby takes over when it expires.");
                }
                break;
            }
            _ = lost.cancelled() => {
                warn!(term, "Leadership lease lost.");
                break;
            }
            _ = sleep(config.tick) => {}
        }
    }
    renewal.abort();
}

/// Renews the lease every third of it; cancels `lost` when renewal fails
/// for longer than the lease.
async fn renew(leadership: Leadership, term: i64, lease: Duration, lost: CancellationToken) {
    let mut last_renewed = Instant::now();
    loop {
        sleep(lease / 3).await;
        match leadership.renew(term).await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                lost.cancel();
                return;
            }
            Err(error) => {
                warn!(%error, "Could not renew leadership.");
                if last_renewed.elapsed() >= lease {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
