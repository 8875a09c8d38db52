//! The scheduler's life: a candidate until it holds the lease, then the
//! leader until it loses the lease or is asked to stop.

use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use syncfleet_common::{
    db,
    ops::{self, Health},
    queue::{Publisher, Route, Topology},
};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    config::SchedulerConfig,
    leader::{Leadership, Tenure},
    metrics::{ClassLabel, QueueLabel, SchedulerMetrics},
    tick::{self, TickError},
};

/// What the scheduler works with.
struct Scheduler {
    config: SchedulerConfig,
    pool: PgPool,
    leadership: Leadership,
    /// The leader gauge, in step with the lease.
    tenure: Tenure,
    metrics: SchedulerMetrics,
}

/// Runs the scheduler until `shutdown` is cancelled. Several replicas may
/// run: one leads, the others wait to take over.
pub async fn run(config: SchedulerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::lazy_pool(&config.common).context("SYNCFLEET_DATABASE_URL")?;
    let mut registry = Registry::default();
    let metrics = SchedulerMetrics::register(&mut registry);
    // Probes are answered from the start; readiness fails until PostgreSQL
    // answers.
    let health = Health::starting(false);
    let ops_stop = ops::start(config.ops_listen, pool.clone(), health.clone(), registry, &shutdown).await?;
    let reached = db::wait_until_reachable(&config.common, &shutdown)
        .await
        .context("connecting to PostgreSQL")?;
    if !reached {
        info!("Stopped while waiting for PostgreSQL.");
        pool.close().await;
        ops_stop.cancel();
        return Ok(());
    }
    health.set_started();
    let topology = Topology::new(config.common.queue_prefix.clone(), config.common.delivery_limit);
    let tenure = Tenure::new(metrics.leader.clone(), config.leader_lease);
    let gauge = tokio::spawn(tenure.clone().watch());
    let scheduler = Scheduler {
        leadership: Leadership::new(pool.clone(), config.leader_lease),
        tenure,
        config,
        pool,
        metrics,
    };
    info!(holder = %scheduler.leadership.holder(), "Scheduler started; waiting for leadership.");
    let mut publisher: Option<Publisher> = None;

    while !shutdown.is_cancelled() {
        let asked = Instant::now();
        match scheduler.leadership.try_acquire().await {
            Ok(Some(term)) => {
                if publisher.is_none() {
                    let url = scheduler.config.common.amqp_url.clone();
                    match Publisher::connect(url, "syncfleet-scheduler", topology.clone()).await {
                        Ok(connected) => publisher = Some(connected),
                        Err(error) => {
                            warn!(%error, "Leader cannot reach the broker; stepping down.");
                            let _ = scheduler.leadership.release(term).await;
                            wait(&shutdown, scheduler.config.tick).await;
                            continue;
                        }
                    }
                }
                if let Some(publisher) = &publisher {
                    scheduler.tenure.renewed(asked);
                    scheduler.lead(publisher, term, &shutdown).await;
                    scheduler.tenure.ended();
                }
            }
            Ok(None) => wait(&shutdown, scheduler.config.tick).await,
            Err(error) => {
                warn!(%error, "Cannot reach PostgreSQL for leadership.");
                wait(&shutdown, scheduler.config.tick).await;
            }
        }
    }
    gauge.abort();
    scheduler.pool.close().await;
    ops_stop.cancel();
    info!("Scheduler stopped.");
    Ok(())
}

async fn wait(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = sleep(duration) => {}
    }
}

impl Scheduler {
    async fn lead(&self, publisher: &Publisher, term: i64, shutdown: &CancellationToken) {
        info!(term, "Became the scheduler leader.");
        let config = &self.config;
        let lost = CancellationToken::new();
        let renewal = tokio::spawn(renew(
            self.leadership.clone(),
            self.tenure.clone(),
            term,
            config.leader_lease,
            lost.clone(),
        ));
        let mut next_sweep = Instant::now();
        let mut next_maintenance = Instant::now();
        // The outbox relay runs beside the ticks, so a slow SMTP server never
        // delays scheduling; it stops with the leadership.
        let relay_stop = CancellationToken::new();
        let relay = match crate::outbox::Relay::new(self.pool.clone(), config.outbox.clone()) {
            Ok(Some(relay)) => {
                let stop = relay_stop.clone();
                Some(tokio::spawn(async move { relay.run(stop).await }))
            }
            Ok(None) => None,
            Err(error) => {
                warn!(%error, "The outbox relay cannot start; emails stay in the outbox.");
                None
            }
        };

        loop {
            if Instant::now() >= next_maintenance {
                match db::maintain_partitions(&self.pool, config.retention).await {
                    Ok(report) => info!(
                        created = report.created,
                        dropped = report.dropped,
                        "Partitions maintained."
                    ),
                    Err(error) => warn!(%error, "Partition maintenance failed; will try again."),
                }
                if let Err(error) = crate::fleet::prune(&self.pool).await {
                    warn!(%error, "Could not prune the console's history; will try again.");
                }
                next_maintenance = Instant::now() + config.maintenance_interval;
            }
            if Instant::now() >= next_sweep {
                self.sweep(publisher).await;
                next_sweep = Instant::now() + config.sweep_interval;
            }

            let started = Instant::now();
            let holder = self.leadership.holder();
            let pass = tick::Tick {
                pool: &self.pool,
                publisher,
                holder,
                term,
                interval: config.interval,
                batch_size: config.batch_size,
            };
            match pass.run().await {
                Ok(report) => {
                    self.tenure.fenced();
                    self.metrics.tick_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.published.inc_by(report.published);
                    self.metrics.skipped.inc_by(report.skipped);
                    if report.published + report.skipped > 0 {
                        info!(
                            published = report.published,
                            skipped = report.skipped,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "Due users scheduled."
                        );
                    }
                }
                Err(TickError::NotLeader) => {
                    self.tenure.ended();
                    warn!(term, "Leadership lost.");
                    break;
                }
                Err(error) => {
                    // Without the database the fence cannot be known to hold.
                    if matches!(error, TickError::Database(_)) {
                        self.tenure.doubted();
                    }
                    error!(%error, "Scheduling pass failed; nothing was committed, it will be retried.");
                }
            }

            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.tenure.ended();
                    if let Err(error) = self.leadership.release(term).await {
                        warn!(%error, "Could not release leadership; a standby takes over when it expires.");
                    }
                    break;
                }
                _ = lost.cancelled() => {
                    self.tenure.ended();
                    warn!(term, "Leadership lease lost.");
                    break;
                }
                _ = sleep(config.tick) => {}
            }
        }
        renewal.abort();
        relay_stop.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
    }

    /// Recovery and the gauges only the leader keeps up to date.
    async fn sweep(&self, publisher: &Publisher) {
        match tick::sweep(&self.pool, self.config.queued_job_timeout).await {
            Ok((abandoned, recovered)) => {
                self.metrics.abandoned.inc_by(abandoned);
                self.metrics.recovered.inc_by(recovered);
                if abandoned + recovered > 0 {
                    info!(abandoned, recovered, "Expired leases released and lost jobs recovered.");
                }
            }
            Err(error) => warn!(%error, "Recovery sweep failed; will try again."),
        }
        let mut depths = Vec::with_capacity(3);
        for (route, queue) in [
            (Route::Cadence, "cadence"),
            (Route::Priority, "priority"),
            (Route::Push, "push"),
        ] {
            match publisher.ready_count(route).await {
                Ok(depth) => {
                    self.metrics
                        .queue_depth
                        .get_or_create(&QueueLabel { queue })
                        .set(i64::from(depth));
                    depths.push((queue, f64::from(depth)));
                }
                Err(error) => warn!(%error, queue, "Could not read the queue depth."),
            }
        }
        if let Err(error) = crate::fleet::record_queue_depths(&self.pool, &depths).await {
            warn!(%error, "Could not record the queue depths for the console.");
        }
        match crate::fleet::gauges(&self.pool).await {
            Ok(gauges) => {
                let metrics = &self.metrics;
                metrics.outbox_backlog.set(gauges.outbox_backlog);
                metrics.outbox_oldest_seconds.set(gauges.outbox_oldest_seconds);
                for (class, count) in gauges.auto_suspended {
                    metrics.auto_suspended.get_or_create(&ClassLabel { class }).set(count);
                }
                metrics.orgs_near_reserve.set(gauges.orgs_near_reserve);
                metrics.dead_jobs_waiting.set(gauges.dead_jobs_waiting);
                metrics.workers_silent.set(gauges.workers_silent);
            }
            Err(error) => warn!(%error, "Could not read the fleet's gauges."),
        }
    }
}

/// Renews the lease every third of it; cancels `lost` when renewal fails
/// for longer than the lease. Each outcome moves the leader gauge's tenure.
async fn renew(leadership: Leadership, tenure: Tenure, term: i64, lease: Duration, lost: CancellationToken) {
    let mut last_renewed = Instant::now();
    loop {
        sleep(lease / 3).await;
        let asked = Instant::now();
        match leadership.renew(term).await {
            Ok(true) => {
                tenure.renewed(asked);
                last_renewed = asked;
            }
            Ok(false) => {
                tenure.ended();
                lost.cancel();
                return;
            }
            Err(error) => {
                tenure.doubted();
                warn!(%error, "Could not renew leadership.");
                if last_renewed.elapsed() >= lease {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
