//! The ceilings (P5): what this machine's RabbitMQ and PostgreSQL do alone,
//! on the same services and in the same run as the fleet, so that every fleet
//! figure can be read as a fraction of them.
//!
//! - RabbitMQ: M job envelopes published through the fleet's own `Publisher`
//!   (quorum queue, publisher confirms, batches of 500 as the scheduler
//!   sends) while a consumer with the workers' prefetch takes and acknowledges
//!   each one; the rate is M over the time to the last acknowledgement.
//! - PostgreSQL: session rows as the worker opens them, into the real
//!   partitioned `sync_sessions` of the run's database: one row per
//!   statement and transaction from 16 connections (the fleet's shape), then
//!   500 rows per statement (what a batched writer could do). The rows are
//!   deleted afterwards.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use sqlx::PgPool;
use syncfleet_common::{
    config::CommonConfig,
    domain::Trigger,
    queue::{self, JobEnvelope, Publisher, Route, Topology},
};
use uuid::Uuid;

/// Connections inserting single rows at once.
const CONNECTIONS: usize = 16;
/// Rows per batched statement.
const ROWS_PER_BATCH: usize = 500;

/// The ceilings measured.
#[derive(Debug, Clone, Copy)]
pub struct Ceilings {
    pub rabbitmq_per_s: f64,
    pub postgres_single_per_s: f64,
    pub postgres_batched_per_s: f64,
}

impl Ceilings {
    pub fn json(&self, messages: usize, rows: usize) -> serde_json::Value {
        serde_json::json!({
            "rabbitmq_publish_consume_per_s": self.rabbitmq_per_s.round(),
            "rabbitmq_messages": messages,
            "postgres_session_inserts_single_per_s": self.postgres_single_per_s.round(),
            "postgres_session_inserts_batched_per_s": self.postgres_batched_per_s.round(),
            "postgres_rows": rows,
            "postgres_single_connections": CONNECTIONS,
            "postgres_rows_per_batch": ROWS_PER_BATCH,
        })
    }
}

/// Measures every ceiling; `users` are real users of the run's database
/// (the session rows reference them).
pub async fn measure(
    common: &CommonConfig,
    pool: &PgPool,
    prefix: &str,
    users: &[(Uuid, Uuid)],
    messages: usize,
    rows: usize,
    prefetch: u16,
) -> anyhow::Result<Ceilings> {
    let rabbitmq_per_s = rabbitmq(common, prefix, messages, prefetch)
        .await
        .context("measuring RabbitMQ's ceiling")?;
    let (postgres_single_per_s, postgres_batched_per_s) = postgres(pool, users, rows)
        .await
        .context("measuring PostgreSQL's ceiling")?;
    Ok(Ceilings {
        rabbitmq_per_s,
        postgres_single_per_s,
        postgres_batched_per_s,
    })
}

/// RabbitMQ's publish+consume ceiling (messages per second) on a topology
/// of its own under `prefix`.
pub async fn rabbitmq(common: &CommonConfig, prefix: &str, messages: usize, prefetch: u16) -> anyhow::Result<f64> {
    // A topology of its own, so the fleet's queues stay empty.
    let topology = Topology::new(format!("{prefix}-ceiling"), common.delivery_limit);
    let publisher = Publisher::connect(common.amqp_url.clone(), "loadtest ceiling", topology.clone()).await?;
    let connection = queue::connect(&common.amqp_url, "loadtest ceiling consumer").await?;
    let channel = connection.create_channel().await?;
    let mut consumer = topology.consume(&channel, Route::Cadence, prefetch, "ceiling").await?;
    let now = Utc::now();
    let jobs: Vec<JobEnvelope> = (0..messages)
        .map(|_| JobEnvelope::sync(Uuid::new_v4(), Trigger::Cadence, now))
        .collect();
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut acked = 0;
        while acked < messages {
            let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
                .await
                .context("no delivery for 60 s")?
                .context("the consumer stopped")??;
            delivery.ack(BasicAckOptions::default()).await?;
            acked += 1;
        }
        anyhow::Ok(())
    });
    for chunk in jobs.chunks(500) {
        publisher.publish(Route::Cadence, chunk).await?;
    }
    consume.await??;
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    // The consumer's channel goes first: a queue is deleted from a channel
    // that does not consume it.
    channel.close(200, "done".into()).await?;
    let cleanup = connection.create_channel().await?;
    topology.delete(&cleanup).await?;
    connection.close(200, "done".into()).await?;
    Ok(rate)
}

/// A session's row as a close writes it (its one write).
const INSERT_SESSION: &str = "INSERT INTO sync_sessions (id, user_id, organization_id, job_id, attempt, trigger, \
                              scope, status, scheduled_at, started_at, ended_at, worker_id) \
                              VALUES ($1, $2, $3, $4, 1, 'cadence', 'incremental', 'succeeded', now(), now(), now(), \
                              'ceiling')";

async fn postgres(pool: &PgPool, users: &[(Uuid, Uuid)], rows: usize) -> anyhow::Result<(f64, f64)> {
    anyhow::ensure!(!users.is_empty(), "the ceilings need seeded users");
    let started = Instant::now();
    let per_connection = rows.div_ceil(CONNECTIONS);
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for connection in 0..CONNECTIONS {
        let pool = pool.clone();
        let mine: Vec<(Uuid, Uuid)> = (0..per_connection)
            .map(|index| users[(connection * per_connection + index) % users.len()])
            .collect();
        tasks.push(tokio::spawn(async move {
            for (user, organization) in mine {
                sqlx::query(INSERT_SESSION)
                    .bind(Uuid::now_v7())
                    .bind(user)
                    .bind(organization)
                    .bind(Uuid::new_v4())
                    .execute(&pool)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let single = (per_connection * CONNECTIONS) as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    for start in (0..rows).step_by(ROWS_PER_BATCH) {
        let batch: Vec<(Uuid, Uuid)> = (start..(start + ROWS_PER_BATCH).min(rows))
            .map(|index| users[index % users.len()])
            .collect();
        let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
        let jobs: Vec<Uuid> = batch.iter().map(|_| Uuid::new_v4()).collect();
        let (user_ids, organization_ids): (Vec<Uuid>, Vec<Uuid>) = batch.into_iter().unzip();
        sqlx::query(
            "INSERT INTO sync_sessions (id, user_id, organization_id, job_id, attempt, trigger, scope, status, \
                                        scheduled_at, started_at, ended_at, worker_id) \
             SELECT id, user_id, organization_id, job_id, 1, 'cadence', 'incremental', 'succeeded', now(), now(), \
                    now(), 'ceiling' \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[]) AS s(id, user_id, organization_id, job_id)",
        )
        .bind(ids)
        .bind(user_ids)
        .bind(organization_ids)
        .bind(jobs)
        .execute(pool)
        .await?;
    }
    let batched = rows as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DELETE FROM sync_sessions WHERE worker_id = 'ceiling'")
        .execute(pool)
        .await?;
    Ok((single, batched))
}
