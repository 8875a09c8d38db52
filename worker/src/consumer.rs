//! The consuming side: one connection with a channel per queue (priority jobs
//! never wait behind a cadence backlog), bounded prefetch, reconnection with
//! backoff, and the drain on shutdown.
//!
//! Every delivery ends in exactly one of: acknowledged after its session (or
//! admin job, see [`crate::admin`]) committed; republished (retry, deferral,
//! hand-back, dead letter) with a confirm and then acknowledged; or
//! negatively acknowledged so the broker delivers it again. Nothing is
//! acknowledged before its effect is durable.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use futures_util::StreamExt;
use lapin::{
    Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions, BasicRejectOptions},
};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use syncfleet_common::{
    batch::Batcher,
    db,
    domain::{SessionStatus, Trigger},
    ops::{self, Health},
    queue::{self, JobEnvelope, JobKind, Publisher, Route, Topology},
    reconnect::{self, Failure},
    telemetry,
};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, error, info, info_span, warn};

use crate::{
    admin,
    config::WorkerConfig,
    dead_letters,
    heartbeat::{Heartbeat, InFlight, Tally},
    metrics::{JobLabels, QueueLabel, ReasonLabel, StatusLabel, StepLabel, TriggerLabel, WorkerMetrics, WriteLabel},
    push,
    session::{self, Claim, Claimed, Ending, FastClaim, FastClaimed, QuietClose},
    sync::{SessionContext, SyncFailure, SyncWork},
};

/// Dead letters read concurrently per worker.
const DEAD_LETTER_PREFETCH: u16 = 8;
/// Customization pushes run concurrently per worker (each applies batches
/// of recipients, one transaction at a time).
const PUSH_PREFETCH: u16 = 2;
/// How long hand-backs may take once the grace period is over.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the pool may take to close its connections on the way out. A
/// connection still inside a statement (a handed-back session's, waiting on
/// a lock) would hold the exit for as long as the lock; leaving it to the
/// process' exit closes its socket, and PostgreSQL rolls its transaction back.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What becomes of a delivery.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Done: acknowledge.
    Ack,
    /// Let the broker deliver it again (counts toward the delivery limit).
    Requeue,
    /// Put the same job back on its queue now.
    HandBack,
    /// Run the next attempt after this delay.
    Retry(Duration),
    /// Run this same attempt after this delay (the user is busy).
    Defer(Duration),
    /// Give up on it: to the dead-letter queue with this reason.
    DeadLetter(String),
    /// Done, and this follow-up job continues the work on the cadence queue.
    Continue(JobEnvelope),
}

/// What the session's task returns: the context back, and the work's result.
type WorkOutput = (SessionContext, Result<(), SyncFailure>);

/// How the session's work ended.
enum Run {
    Finished(Result<Box<WorkOutput>, tokio::task::JoinError>),
    HardStop,
    LeaseLost,
}

struct Fleet<W> {
    config: WorkerConfig,
    pool: PgPool,
    topology: Topology,
    publisher: Publisher,
    work: Arc<W>,
    /// Cancelled when the shutdown grace period is over.
    hard_stop: CancellationToken,
    metrics: WorkerMetrics,
    health: Arc<Health>,
    /// Fast claims, written together (see [`syncfleet_common::batch`]).
    claims: Batcher<FastClaim, FastClaimed>,
    /// Quiet closes, written together.
    closes: Batcher<QuietClose, Result<bool, ()>>,
    /// Deliveries in flight per queue, for the heartbeat.
    in_flight: Arc<InFlight>,
    /// What the heartbeat reports of sessions (the sync's gate adds its own).
    tally: Tally,
}

/// Statements of each kind in flight at once per worker.
const GROUP_COMMIT_SLOTS: usize = 2;

/// Runs a worker until `shutdown` is cancelled, then drains: stops consuming,
/// lets in-flight jobs finish within the grace period, hands the rest back.
pub async fn run<W: SyncWork>(config: WorkerConfig, work: Arc<W>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::lazy_pool(&config.common).context("SYNCFLEET_DATABASE_URL")?;
    let mut registry = Registry::default();
    let metrics = WorkerMetrics::register(&mut registry);
    work.register_metrics(&mut registry);
    // Probes are answered from the start; readiness fails until PostgreSQL
    // and the broker answer.
    let health = Health::starting(true);
    let ops_stop = ops::start(config.ops_listen, pool.clone(), health.clone(), registry, &shutdown).await?;
    let reached = db::wait_until_reachable(&config.common, &shutdown)
        .await
        .context("connecting to PostgreSQL")?;
    if reached {
        // A crash's rotated refresh tokens are stored before this worker
        // runs a session (which would read the ones they replaced).
        work.recover(&pool).await;
    }
    let topology = Topology::new(config.common.queue_prefix.clone(), config.common.delivery_limit);
    let publisher_name = format!("syncfleet-worker {} publisher", config.worker_id);
    let publisher = match reached {
        true => reconnect::until_reached(&shutdown, "the broker", || async {
            Publisher::connect(config.common.amqp_url.clone(), &publisher_name, topology.clone())
                .await
                .map_err(Failure::Unreachable)
        })
        .await
        // Every failure above is retried: nothing is fatal.
        .ok()
        .flatten(),
        false => None,
    };
    let Some(publisher) = publisher else {
        info!("Stopped while waiting for PostgreSQL or the broker.");
        pool.close().await;
        ops_stop.cancel();
        return Ok(());
    };
    health.set_started();
    // Statements run, and the sessions they wrote (claims opened, closes
    // released): their ratio is the batches' size.
    let counters = |write: &'static str| {
        let label = WriteLabel { write };
        (
            metrics.group_statements.get_or_create(&label).clone(),
            metrics.group_writes.get_or_create(&label).clone(),
        )
    };
    let claims = {
        let (pool, worker_id, lease) = (pool.clone(), config.worker_id.clone(), config.user_lease);
        let (statements, writes) = counters("claim");
        Batcher::start(
            config.group_commit_batch,
            GROUP_COMMIT_SLOTS,
            move |requests: Vec<FastClaim>| {
                let (pool, worker_id, writes) = (pool.clone(), worker_id.clone(), writes.clone());
                statements.inc();
                async move {
                    let answers = session::claim_together(&pool, &worker_id, lease, requests).await;
                    writes.inc_by(answers.iter().filter(|answer| matches!(answer, Ok(Some(_)))).count() as u64);
                    answers
                }
            },
        )
    };
    let closes = {
        let pool = pool.clone();
        let (statements, writes) = counters("close");
        Batcher::start(
            config.group_commit_batch,
            GROUP_COMMIT_SLOTS,
            move |closes: Vec<QuietClose>| {
                let (pool, writes) = (pool.clone(), writes.clone());
                statements.inc();
                async move {
                    let answers = session::close_quietly_together(&pool, closes).await;
                    writes.inc_by(answers.iter().filter(|answer| matches!(answer, Ok(true))).count() as u64);
                    answers
                }
            },
        )
    };
    let tally = work.tally().unwrap_or_default();
    let in_flight = Arc::new(InFlight::default());
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(
        Heartbeat {
            pool: pool.clone(),
            worker_id: config.worker_id.clone(),
            started_at: chrono::Utc::now(),
            interval: config.heartbeat_interval,
            in_flight: in_flight.clone(),
            draining: Arc::default(),
            tally: tally.clone(),
        }
        .run(shutdown.clone(), heartbeat_stop.clone()),
    );
    let fleet = Arc::new(Fleet {
        claims,
        closes,
        in_flight,
        tally,
        config,
        pool,
        topology,
        publisher,
        work,
        hard_stop: CancellationToken::new(),
        metrics,
        health,
    });
    let tracker = TaskTracker::new();

    let mut reconnect_delays = reconnect::backoff();
    let mut open_connection = None;
    loop {
        let mut connected = false;
        match fleet.consume(&tracker, &shutdown, &mut connected).await {
            Ok(open) => {
                open_connection = Some(open);
                break;
            }
            Err(error) => {
                fleet.health.set_broker_connected(false);
                if connected {
                    reconnect_delays = reconnect::backoff();
                }
                let delay = reconnect_delays.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "Broker connection lost; reconnecting.");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = sleep(delay) => {}
                }
            }
        }
    }

    fleet.drain(&tracker).await;
    if let Some((connection, channels)) = open_connection {
        // Closing each channel waits for the broker's Close-Ok, which comes
        // after it has processed the acknowledgements sent on that channel.
        for channel in channels {
            let _ = channel.close(200, "worker shutting down".into()).await;
        }
        let _ = connection.close(200, "worker shutting down".into()).await;
    }
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    if timeout(POOL_CLOSE_TIMEOUT, fleet.pool.close()).await.is_err() {
        warn!("A database connection was still busy; it closes as the worker exits.");
    }
    ops_stop.cancel();
    info!("Worker stopped.");
    Ok(())
}

impl<W: SyncWork> Fleet<W> {
    /// One connection's life: returns the connection and its consuming
    /// channels when shutdown was requested (after cancelling the consumers),
    /// or an error when the broker went away.
    async fn consume(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> anyhow::Result<(Connection, [Channel; 4])> {
        let name = format!("syncfleet-worker {}", self.config.worker_id);
        let connection = queue::connect(&self.config.common.amqp_url, &name).await?;
        let setup = connection.create_channel().await?;
        self.topology.declare(&setup).await?;
        setup.close(200, "topology declared".into()).await?;

        let tag = self.config.worker_id.as_str();
        let priority_channel = connection.create_channel().await?;
        let mut priority = self
            .topology
            .consume(&priority_channel, Route::Priority, self.config.priority_prefetch, tag)
            .await?;
        let cadence_channel = connection.create_channel().await?;
        let mut cadence = self
            .topology
            .consume(&cadence_channel, Route::Cadence, self.config.cadence_prefetch, tag)
            .await?;
        let dead_channel = connection.create_channel().await?;
        let mut dead = self
            .topology
            .consume_dead(&dead_channel, DEAD_LETTER_PREFETCH, tag)
            .await?;
        let push_channel = connection.create_channel().await?;
        let mut push = self
            .topology
            .consume(&push_channel, Route::Push, PUSH_PREFETCH, tag)
            .await?;
        *connected = true;
        self.health.set_broker_connected(true);
        info!(worker_id = %self.config.worker_id, "Consuming the priority and cadence queues.");

        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    info!("Shutdown requested: no new jobs will be taken.");
                    for (channel, consumer) in [(&priority_channel, &priority), (&cadence_channel, &cadence), (&dead_channel, &dead), (&push_channel, &push)] {
                        let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                    }
                    return Ok((connection, [priority_channel, cadence_channel, dead_channel, push_channel]));
                }
                delivery = priority.next() => self.dispatch(tracker, Route::Priority, next_delivery(delivery, &priority)?),
                delivery = cadence.next() => self.dispatch(tracker, Route::Cadence, next_delivery(delivery, &cadence)?),
                delivery = push.next() => self.dispatch(tracker, Route::Push, next_delivery(delivery, &push)?),
                delivery = dead.next() => {
                    let delivery = next_delivery(delivery, &dead)?;
                    let fleet = self.clone();
                    tracker.spawn(async move { fleet.process_dead(delivery).await });
                }
            }
        }
    }

    fn dispatch(self: &Arc<Self>, tracker: &TaskTracker, route: Route, delivery: Delivery) {
        let fleet = self.clone();
        tracker.spawn(async move { fleet.process(route, delivery).await });
    }

    async fn drain(&self, tracker: &TaskTracker) {
        let started = Instant::now();
        self.drain_jobs(tracker).await;
        // A rotated refresh token still being stored (the database
        // unreachable) is worth the rest of the grace period.
        let left = self.config.shutdown_grace.saturating_sub(started.elapsed());
        self.work.drain(left.max(Duration::from_secs(1))).await;
    }

    async fn drain_jobs(&self, tracker: &TaskTracker) {
        tracker.close();
        info!(
            in_flight = tracker.len(),
            grace_ms = self.config.shutdown_grace.as_millis() as u64,
            "Draining in-flight jobs."
        );
        if timeout(self.config.shutdown_grace, tracker.wait()).await.is_err() {
            warn!(
                in_flight = tracker.len(),
                "Grace period over: handing back the jobs still running."
            );
            self.hard_stop.cancel();
            if timeout(HAND_BACK_TIMEOUT, tracker.wait()).await.is_err() {
                error!(
                    in_flight = tracker.len(),
                    "Hand-back timed out; the broker will redeliver those jobs."
                );
            }
        }
    }

    async fn process(self: Arc<Self>, route: Route, delivery: Delivery) {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        self.in_flight.start(route);
        let queue = queue_label(route);
        let outcome = match JobEnvelope::decode(&delivery.data) {
            Ok(job) => {
                let user_id = job.user_id.map(|id| id.to_string()).unwrap_or_default();
                let span = info_span!(
                    "job",
                    job_id = %job.job_id,
                    user_id = %user_id,
                    trigger = %job.trigger,
                    attempt = job.attempt,
                    trace_id = tracing::field::Empty
                );
                telemetry::continue_trace(&span, &self.topology.trace_context(&delivery, &job));
                async {
                    let (verdict, outcome) = self.handle(&job, delivery.redelivered).await;
                    self.settle(route, &job, &delivery, verdict).await;
                    outcome
                }
                .instrument(span)
                .await
            }
            Err(error) => {
                warn!(%error, ?route, "Unreadable message: rejected to the dead-letter queue.");
                if let Err(error) = delivery.reject(BasicRejectOptions { requeue: false }).await {
                    warn!(%error, "Could not reject the message; the broker will redeliver it.");
                }
                "rejected"
            }
        };
        self.metrics.jobs.get_or_create(&JobLabels { queue, outcome }).inc();
        self.metrics
            .job_seconds
            .get_or_create(&QueueLabel { queue })
            .observe(started.elapsed().as_secs_f64());
        self.metrics.in_flight.dec();
        self.in_flight.end(route);
    }

    /// Decides a delivery's verdict; the second value is its outcome for the
    /// metrics (a session status, or what happened instead).
    async fn handle(&self, job: &JobEnvelope, redelivered: bool) -> (Verdict, &'static str) {
        let user_id = match (job.kind, job.user_id) {
            (JobKind::Sync, Some(user_id)) => user_id,
            (JobKind::Admin, Some(user_id)) => {
                return admin::handle(&self.pool, &self.work, &self.config, &self.hard_stop, job, user_id).await;
            }
            (JobKind::Push, _) => return push::handle(&self.pool, &self.config, &self.hard_stop, job).await,
            (kind, _) => {
                let reason = format!("{kind:?} jobs are not handled by this worker build");
                return (Verdict::DeadLetter(reason), "dead_lettered");
            }
        };
        let claim = self
            .claim(job, user_id, redelivered)
            .instrument(info_span!("claim"))
            .await;
        match claim {
            Ok(Claim::Run(claimed, settings)) => {
                let lag = (claimed.started_at - job.scheduled_at).num_milliseconds().max(0) as f64 / 1000.0;
                self.metrics
                    .lag_seconds
                    .get_or_create(&TriggerLabel {
                        trigger: job.trigger.as_str(),
                    })
                    .observe(lag);
                if job.trigger == Trigger::Cadence {
                    self.tally.lag(lag);
                }
                self.run_session(job, claimed, settings).await
            }
            Ok(Claim::Drop(reason)) => {
                info!(reason, "Job dropped.");
                (Verdict::Ack, "dropped")
            }
            Ok(Claim::Skipped) => {
                info!("Synchronization is disabled: skipped session recorded.");
                self.metrics
                    .sessions
                    .get_or_create(&StatusLabel { status: "skipped" })
                    .inc();
                self.tally.session("skipped");
                (Verdict::Ack, "skipped")
            }
            Ok(Claim::Busy(remaining)) => {
                info!(
                    lease_remaining_ms = remaining.as_millis() as u64,
                    "Another session of this user is running; deferring."
                );
                (Verdict::Defer(remaining + Duration::from_millis(250)), "deferred")
            }
            Err(error) => {
                warn!(%error, "Could not claim the session; deferring.");
                (Verdict::Defer(Duration::from_secs(5)), "deferred")
            }
        }
    }

    /// Claims the session: with the group commit when the job may take a
    /// fast claim, otherwise (or when the batch could not open it) on its own.
    async fn claim(&self, job: &JobEnvelope, user_id: uuid::Uuid, redelivered: bool) -> Result<Claim, sqlx::Error> {
        if let Some(request) = FastClaim::of(job, user_id, redelivered)
            && let Some(Ok(Some((claimed, settings)))) = self.claims.submit(request).await
        {
            return Ok(Claim::Run(claimed, settings));
        }
        session::claim(
            &self.pool,
            job,
            user_id,
            &self.config.worker_id,
            self.config.user_lease,
            redelivered,
        )
        .await
    }

    /// Writes the session's end: with the group commit when it is a quiet
    /// close, otherwise (or when the batch failed) on its own.
    async fn close(&self, claimed: &Claimed, job: &JobEnvelope, ending: Ending) -> Result<bool, sqlx::Error> {
        if let Some(close) = QuietClose::of(claimed, job, &ending)
            && let Some(Ok(released)) = self.closes.submit(close).await
        {
            return Ok(released);
        }
        session::finish(&self.pool, claimed, job, ending).await
    }

    async fn run_session(
        &self,
        job: &JobEnvelope,
        claimed: Claimed,
        settings: Box<crate::sync::settings::Settings>,
    ) -> (Verdict, &'static str) {
        let lease = self.config.user_lease;
        let lost = CancellationToken::new();
        let finished = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.pool.clone(),
            claimed,
            lease,
            lost.clone(),
            finished.clone(),
        ));

        let mut context = SessionContext::new(
            self.pool.clone(),
            claimed.session_id,
            claimed.user_id,
            claimed.organization_id,
            job.clone(),
        );
        context.settings = Some(settings);
        context.log.push(
            "claim",
            "info",
            format!(
                "Session opened by {} (trigger {}, attempt {}).",
                self.config.worker_id, job.trigger, job.attempt
            ),
        );
        let work = self.work.clone();
        let mut handle = tokio::spawn(
            async move {
                let result = work.run(&mut context).await;
                Box::new((context, result))
            }
            .instrument(info_span!("sync_work", session_id = %claimed.session_id)),
        );
        let run = tokio::select! {
            joined = &mut handle => Run::Finished(joined),
            _ = self.hard_stop.cancelled() => Run::HardStop,
            _ = lost.cancelled() => Run::LeaseLost,
        };
        finished.cancel();
        let _ = heartbeat.await;

        let (ending, verdict) = match run {
            Run::Finished(Ok(output)) => {
                let (context, result) = *output;
                self.conclude(job, &claimed, context, result)
            }
            Run::Finished(Err(join_error)) => {
                error!(error = %join_error, "The sync work crashed; the job will be delivered again.");
                let message = "the sync work crashed; the job will be delivered again";
                (Ending::interrupted(SessionStatus::Abandoned, message), Verdict::Requeue)
            }
            Run::HardStop => {
                handle.abort();
                let message = "the worker shut down before the session finished; the job was handed back";
                (
                    Ending::interrupted(SessionStatus::Abandoned, message),
                    Verdict::HandBack,
                )
            }
            Run::LeaseLost => {
                handle.abort();
                warn!("The user's lease was lost mid-session; handing the job back.");
                return (Verdict::HandBack, "handed_back");
            }
        };

        let status = ending.status;
        for entry in ending.log.entries() {
            if let Some(duration_ms) = entry.duration_ms {
                self.metrics
                    .step_seconds
                    .get_or_create(&StepLabel {
                        step: entry.step.clone(),
                    })
                    .observe(duration_ms as f64 / 1000.0);
            }
        }
        match self
            .close(&claimed, job, ending)
            .instrument(info_span!("write_session"))
            .await
        {
            Ok(true) => {
                info!(session_id = %claimed.session_id, status = %status, "Sync session finished.");
                self.metrics
                    .sessions
                    .get_or_create(&StatusLabel {
                        status: status.as_str(),
                    })
                    .inc();
                self.tally.session(status.as_str());
                (verdict, status.as_str())
            }
            Ok(false) => {
                warn!(session_id = %claimed.session_id, "The lease was lost before the session could be written; handing the job back.");
                (Verdict::HandBack, "handed_back")
            }
            Err(error) => {
                error!(%error, session_id = %claimed.session_id, "Could not write the session; handing the job back.");
                (Verdict::HandBack, "handed_back")
            }
        }
    }

    /// The session's ending and the job's verdict, from what the work returned.
    fn conclude(
        &self,
        job: &JobEnvelope,
        claimed: &Claimed,
        mut context: SessionContext,
        result: Result<(), SyncFailure>,
    ) -> (Ending, Verdict) {
        let failure = match result {
            Ok(()) => {
                let status = if context.issues.is_empty() {
                    SessionStatus::Succeeded
                } else {
                    SessionStatus::SucceededWithIssues
                };
                if context.continuation {
                    let mut follow_up = JobEnvelope::sync(context.user_id, Trigger::Cadence, Utc::now());
                    follow_up.trace = job.trace.clone();
                    let mut ending = ending_of(context, status, None, true);
                    ending.continue_with = Some(follow_up.job_id);
                    return (ending, Verdict::Continue(follow_up));
                }
                return (ending_of(context, status, None, true), Verdict::Ack);
            }
            Err(failure) if failure.grant_refused && claimed.after_abandoned => failure.inconclusive_refusal(),
            Err(failure) => failure,
        };
        let retryable = failure.class.is_retryable();
        let exhausted = job.attempt >= self.config.retry.max_attempts;
        if context.issues.is_empty() {
            context.issue(failure.side, failure.class.category(), None, failure.message.clone());
        }
        let verdict = match (retryable, exhausted) {
            (true, false) => {
                let backoff = self.config.retry.delay_after(job.attempt);
                Verdict::Retry(failure.retry_after.map_or(backoff, |asked| asked.max(backoff)))
            }
            (true, true) => Verdict::DeadLetter("retries_exhausted".to_owned()),
            (false, _) => Verdict::Ack,
        };
        info!(failure = %failure, ?verdict, "Session failed.");
        let error = Some((failure.class.category(), failure.side, failure.message));
        let mut ending = ending_of(context, SessionStatus::Failed, error, !retryable);
        let class = failure.class.suspend_class();
        ending.failure_class = Some(class);
        ending.grant_refused = failure.grant_refused;
        if failure.class != crate::sync::FailureClass::Deferred {
            ending.suspend_at = Some(i32::try_from(self.config.suspend.threshold(class)).unwrap_or(i32::MAX));
        }
        (ending, verdict)
    }

    async fn settle(&self, route: Route, job: &JobEnvelope, delivery: &Delivery, verdict: Verdict) {
        let republished = match &verdict {
            Verdict::Ack => Ok(()),
            Verdict::Requeue => {
                if let Err(error) = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await
                {
                    warn!(%error, "Could not requeue the message; the broker will redeliver it.");
                }
                return;
            }
            Verdict::HandBack => self.publisher.publish(route, std::slice::from_ref(job)).await,
            Verdict::Retry(delay) => self.publisher.publish_delayed(route, &job.next_attempt(), *delay).await,
            Verdict::Defer(delay) => self.publisher.publish_delayed(route, job, *delay).await,
            Verdict::DeadLetter(reason) => self.publisher.publish_dead(route, &delivery.data, reason).await,
            Verdict::Continue(follow_up) => {
                self.publisher
                    .publish(Route::Cadence, std::slice::from_ref(follow_up))
                    .await
            }
        };
        match republished {
            Ok(()) => {
                if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                    warn!(%error, "Could not acknowledge the message; the broker will redeliver it.");
                }
            }
            Err(error) => {
                warn!(%error, ?verdict, "Could not republish the job; asking the broker to redeliver it.");
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
            }
        }
    }

    async fn process_dead(self: Arc<Self>, delivery: Delivery) {
        let dead = self.topology.dead_letter(&delivery);
        let job_id = dead.envelope.as_ref().ok().map(|job| job.job_id);
        let user_id = dead.envelope.as_ref().ok().and_then(|job| job.user_id);
        match dead_letters::record(&self.pool, &dead, &delivery.data).await {
            Ok(()) => {
                warn!(?job_id, ?user_id, reason = %dead.reason, deliveries = ?dead.deliveries, "Dead-lettered job recorded.");
                self.metrics
                    .dead_letters
                    .get_or_create(&ReasonLabel {
                        reason: dead.reason.clone(),
                    })
                    .inc();
                if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                    warn!(%error, "Could not acknowledge the dead letter; it will be recorded once more, harmlessly.");
                }
            }
            Err(error) => {
                error!(%error, ?job_id, "Could not record a dead letter; it stays in the dead-letter queue.");
                sleep(Duration::from_secs(5)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await;
            }
        }
    }
}

fn queue_label(route: Route) -> &'static str {
    match route {
        Route::Cadence => "cadence",
        Route::Priority => "priority",
        Route::Push => "push",
    }
}

fn next_delivery(delivery: Option<lapin::Result<Delivery>>, consumer: &Consumer) -> anyhow::Result<Delivery> {
    match delivery {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(error)) => Err(error).with_context(|| format!("consuming {}", consumer.queue())),
        None => anyhow::bail!("the broker closed the consumer of {}", consumer.queue()),
    }
}

fn ending_of(
    context: SessionContext,
    status: SessionStatus,
    error: Option<(
        syncfleet_common::domain::IssueCategory,
        syncfleet_common::domain::IssueSource,
        String,
    )>,
    job_done: bool,
) -> Ending {
    Ending {
        status,
        scope: context.scope,
        error,
        calls: serde_json::to_value(&context.calls).unwrap_or_default(),
        issues: context.issues,
        log: context.log,
        items_to_crm: context.items_to_crm,
        items_to_mailbox: context.items_to_mailbox,
        cursors: context.cursors.into_iter().collect(),
        job_done,
        continue_with: None,
        failure_class: None,
        suspend_at: None,
        grant_refused: false,
    }
}

/// Renews the lease every third of its length until the session (or admin
/// job) finishes; cancels `lost` when the lease is gone or could not be
/// renewed in time.
pub(crate) async fn heartbeat(
    pool: PgPool,
    claimed: Claimed,
    lease: Duration,
    lost: CancellationToken,
    finished: CancellationToken,
) {
    let period = lease / 3;
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            _ = finished.cancelled() => return,
            _ = sleep(period) => {}
        }
        match session::renew(&pool, &claimed, lease).await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                lost.cancel();
                return;
            }
            Err(error) => {
                warn!(%error, "Could not renew the user's lease.");
                if last_renewed.elapsed() >= lease {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}
