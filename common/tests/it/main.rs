//! The queue topology and publisher against the real RabbitMQ, and the
//! credential store against the real PostgreSQL.

#![allow(clippy::unwrap_used)]

mod credentials;
mod ratelimit;

use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, QueueDeleteOptions};
use syncfleet_common::{
    domain::Trigger,
    queue::{self, JobEnvelope, PublishError, Route},
};
use syncfleet_testkit::TestEnv;
use uuid::Uuid;

#[tokio::test]
async fn a_message_no_queue_takes_is_a_failure_not_a_success() {
    let env = TestEnv::new().await;
    let publisher = env.publisher().await;
    let connection = queue::connect(&env.common().amqp_url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            env.topology().queue_name(Route::Push).into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();

    let job = JobEnvelope::sync(Uuid::new_v4(), Trigger::Admin, Utc::now());
    let error = publisher.publish(Route::Push, &[job]).await.unwrap_err();
    assert!(matches!(error, PublishError::Returned(_)), "{error:?}");
    connection.close(200, "done".into()).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn declaring_the_topology_twice_is_harmless() {
    let env = TestEnv::new().await;
    let connection = queue::connect(&env.common().amqp_url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    env.topology().declare(&channel).await.unwrap();
    env.topology().declare(&channel).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_delayed_job_reaches_its_queue_after_the_delay_with_its_routing() {
    let env = TestEnv::new().await;
    let publisher = env.publisher().await;
    let job = JobEnvelope::sync(Uuid::new_v4(), Trigger::Force, Utc::now());
    let sent = Instant::now();
    publisher
        .publish_delayed(Route::Priority, &job, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(env.ready(Route::Priority).await, 0, "the job waits in the retry tier");

    let connection = queue::connect(&env.common().amqp_url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = env
        .topology()
        .consume(&channel, Route::Priority, 1, "test")
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(1900), "delivered after {waited:?}");
    assert_eq!(JobEnvelope::decode(&delivery.data).unwrap(), job);
    assert_eq!(env.topology().route_of(&delivery), Some(Route::Priority));
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
    env.cleanup().await;
}
