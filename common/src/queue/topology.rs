//! Exchange and queue names, their arguments, and how messages are addressed.
//!
//! ```text
//! {p}.jobs (direct) --sync.cadence--> {p}.sync           quorum, delivery limit, DLX {p}.dead
//!                   --sync.priority-> {p}.sync.priority  quorum, delivery limit, DLX {p}.dead
//!                   --push----------> {p}.push           quorum, delivery limit, DLX {p}.dead
//! {p}.retry.<tier> (fanout) --> {p}.retry.<tier>  quorum, TTL = tier, DLX {p}.jobs: back to
//!                                                 the original routing key when it expires
//! {p}.dead (fanout) --> {p}.dead  quorum; read by the workers' dead-letter consumer
//! ```

use std::{collections::BTreeMap, time::Duration};

use lapin::{
    BasicProperties, Channel, Consumer, ExchangeKind,
    message::Delivery,
    options::{
        BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use super::envelope::{EnvelopeError, JobEnvelope};

/// Delays a retry can wait, shortest first. A retry waits in the smallest tier
/// that holds its delay; its own expiration makes it leave sooner.
pub const RETRY_TIERS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];

const DEAD_REASON_HEADER: &str = "x-syncfleet-dead-reason";
/// W3C trace context headers.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Where a job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Cadence syncs published by the scheduler.
    Cadence,
    /// Force syncs and admin jobs: consumed on their own channel so they never
    /// wait behind a cadence backlog.
    Priority,
    /// Customization pushes.
    Push,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 3] = [Route::Cadence, Route::Priority, Route::Push];

    fn routing_key(self) -> &'static str {
        match self {
            Route::Cadence => "sync.cadence",
            Route::Priority => "sync.priority",
            Route::Push => "push",
        }
    }

    fn queue_suffix(self) -> &'static str {
        match self {
            Route::Cadence => "sync",
            Route::Priority => "sync.priority",
            Route::Push => "push",
        }
    }

    fn from_routing_key(key: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|route| route.routing_key() == key)
    }
}

/// A message read from the dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    /// The job, when the body could be read.
    pub envelope: Result<JobEnvelope, EnvelopeError>,
    /// Why it died: `delivery_limit`, `rejected`, `retries_exhausted`...
    pub reason: String,
    /// The queue it died in, when the broker said.
    pub queue: Option<String>,
    /// How many times it was delivered before dying, when known.
    pub deliveries: Option<i64>,
}

/// The fleet's AMQP names under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    delivery_limit: u16,
}

impl Topology {
    /// The topology under `prefix`, with quorum queues that dead-letter a
    /// message after `delivery_limit` deliveries.
    pub fn new(prefix: impl Into<String>, delivery_limit: u16) -> Self {
        Self {
            prefix: prefix.into(),
            delivery_limit,
        }
    }

    fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    fn retry_name(&self, tier: Duration) -> String {
        format!("{}.retry.{}s", self.prefix, tier.as_secs())
    }

    /// The name of a route's queue (for operators' tooling and tests).
    pub fn queue_name(&self, route: Route) -> String {
        format!("{}.{}", self.prefix, route.queue_suffix())
    }

    /// The dead-letter queue's name.
    pub fn dead_queue_name(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Every queue with its role (`cadence`, `priority`, `push`, `retry`,
    /// `dead`), for the operator console.
    pub fn queues_with_roles(&self) -> Vec<(String, &'static str)> {
        let mut queues: Vec<(String, &'static str)> = Route::ALL
            .iter()
            .map(|route| {
                let role = match route {
                    Route::Cadence => "cadence",
                    Route::Priority => "priority",
                    Route::Push => "push",
                };
                (self.queue_name(*route), role)
            })
            .collect();
        queues.extend(RETRY_TIERS.iter().map(|tier| (self.retry_name(*tier), "retry")));
        queues.push((self.dead_queue_name(), "dead"));
        queues
    }

    /// A queue's ready messages and consumers, as a passive declare tells.
    pub async fn counts(&self, channel: &Channel, queue: &str) -> lapin::Result<(u32, u32)> {
        let queue = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((queue.message_count(), queue.consumer_count()))
    }

    /// Every queue, for declaration and deletion.
    fn all_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = Route::ALL.iter().map(|route| self.queue_name(*route)).collect();
        queues.extend(RETRY_TIERS.iter().map(|tier| self.retry_name(*tier)));
        queues.push(self.dead_queue_name());
        queues
    }

    fn quorum_arguments(&self, dead_letter_exchange: &str) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), long_string("quorum"));
        arguments.insert("x-dead-letter-exchange".into(), long_string(dead_letter_exchange));
        // At-least-once dead-lettering: a message is not dropped between the
        // queue and its dead-letter target. It requires reject-publish.
        arguments.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
        arguments.insert("x-overflow".into(), long_string("reject-publish"));
        arguments
    }

    /// Declares every exchange, queue and binding; idempotent.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.jobs_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;

        for route in Route::ALL {
            let mut arguments = self.quorum_arguments(&self.dead_exchange());
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::from(self.delivery_limit)),
            );
            channel
                .queue_declare(self.queue_name(route).into(), durable_queue, arguments)
                .await?;
            channel
                .queue_bind(
                    self.queue_name(route).into(),
                    self.jobs_exchange().into(),
                    route.routing_key().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }

        for tier in RETRY_TIERS {
            let name = self.retry_name(tier);
            channel
                .exchange_declare(
                    name.clone().into(),
                    ExchangeKind::Fanout,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await?;
            let mut arguments = self.quorum_arguments(&self.jobs_exchange());
            arguments.insert(
                "x-message-ttl".into(),
                AMQPValue::LongInt(i32::try_from(tier.as_millis()).unwrap_or(i32::MAX)),
            );
            channel
                .queue_declare(name.clone().into(), durable_queue, arguments)
                .await?;
            channel
                .queue_bind(
                    name.clone().into(),
                    name.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }

        let mut dead_arguments = FieldTable::default();
        dead_arguments.insert("x-queue-type".into(), long_string("quorum"));
        channel
            .queue_declare(self.dead_queue_name().into(), durable_queue, dead_arguments)
            .await?;
        channel
            .queue_bind(
                self.dead_queue_name().into(),
                self.dead_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Deletes everything [`Topology::declare`] made (tests and teardown).
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.all_queues() {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        let mut exchanges = vec![self.jobs_exchange(), self.dead_exchange()];
        exchanges.extend(RETRY_TIERS.iter().map(|tier| self.retry_name(*tier)));
        for exchange in exchanges {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Starts consuming a route's queue with at most `prefetch` unacknowledged
    /// deliveries on this channel.
    pub async fn consume(&self, channel: &Channel, route: Route, prefetch: u16, tag: &str) -> lapin::Result<Consumer> {
        self.consume_queue(channel, self.queue_name(route), prefetch, tag).await
    }

    /// Starts consuming the dead-letter queue.
    pub async fn consume_dead(&self, channel: &Channel, prefetch: u16, tag: &str) -> lapin::Result<Consumer> {
        self.consume_queue(channel, self.dead_queue_name(), prefetch, tag).await
    }

    async fn consume_queue(
        &self,
        channel: &Channel,
        queue: String,
        prefetch: u16,
        tag: &str,
    ) -> lapin::Result<Consumer> {
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// The messages waiting in a route's queue (ready, not unacknowledged).
    pub async fn ready_count(&self, channel: &Channel, route: Route) -> lapin::Result<u32> {
        let queue = channel
            .queue_declare(
                self.queue_name(route).into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(queue.message_count())
    }

    /// The route a delivery came from, read from its routing key.
    pub fn route_of(&self, delivery: &Delivery) -> Option<Route> {
        Route::from_routing_key(delivery.routing_key.as_str())
    }

    /// Reads a dead-lettered delivery: the job, and why and where it died.
    pub fn dead_letter(&self, delivery: &Delivery) -> DeadLetter {
        let headers = delivery.properties.headers().as_ref();
        let own_reason = headers
            .and_then(|headers| headers.inner().get(DEAD_REASON_HEADER))
            .and_then(amqp_string);
        let first_death = headers
            .and_then(|headers| headers.inner().get("x-death"))
            .and_then(|value| match value {
                AMQPValue::FieldArray(deaths) => deaths.as_slice().first().cloned(),
                _ => None,
            })
            .and_then(|death| match death {
                AMQPValue::FieldTable(table) => Some(table),
                _ => None,
            });
        let broker_reason = first_death
            .as_ref()
            .and_then(|death| death.inner().get("reason"))
            .and_then(amqp_string);
        let queue = first_death
            .as_ref()
            .and_then(|death| death.inner().get("queue"))
            .and_then(amqp_string);
        let deliveries = headers
            .and_then(|headers| headers.inner().get("x-delivery-count"))
            .and_then(amqp_integer)
            .map(|count| count + 1);
        DeadLetter {
            envelope: JobEnvelope::decode(&delivery.data),
            reason: own_reason.or(broker_reason).unwrap_or_else(|| "unknown".to_owned()),
            queue,
            deliveries,
        }
    }

    /// Exchange and routing key for a job published to a route now.
    pub(super) fn target(&self, route: Route) -> (ShortString, ShortString) {
        (self.jobs_exchange().into(), route.routing_key().into())
    }

    /// Exchange, routing key and per-message expiration for a job that should
    /// reach `route` after `delay` (rounded up to 1 s, capped at the largest tier).
    pub(super) fn delayed_target(&self, route: Route, delay: Duration) -> (ShortString, ShortString, ShortString) {
        let largest = RETRY_TIERS[RETRY_TIERS.len() - 1];
        let delay = delay.clamp(Duration::from_secs(1), largest);
        let tier = RETRY_TIERS.into_iter().find(|tier| *tier >= delay).unwrap_or(largest);
        (
            self.retry_name(tier).into(),
            route.routing_key().into(),
            delay.as_millis().to_string().into(),
        )
    }

    /// Exchange, routing key and headers for a job the worker dead-letters itself.
    pub(super) fn dead_target(&self, route: Route, reason: &str) -> (ShortString, ShortString, FieldTable) {
        let mut headers = FieldTable::default();
        headers.insert(DEAD_REASON_HEADER.into(), long_string(reason));
        (self.dead_exchange().into(), route.routing_key().into(), headers)
    }

    /// The properties of every job message; the trace context also travels
    /// as AMQP headers, where tracing-aware tools look for it.
    pub(super) fn properties(job_id: &str, kind: &str, trace: &BTreeMap<String, String>) -> BasicProperties {
        let mut headers = FieldTable::default();
        for key in TRACE_HEADERS {
            if let Some(value) = trace.get(key) {
                headers.insert(key.into(), long_string(value));
            }
        }
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(job_id.into())
            .with_type(kind.into())
            .with_headers(headers)
    }

    /// The trace context a delivery carries: its AMQP headers, else the
    /// envelope's copy.
    pub fn trace_context(&self, delivery: &Delivery, job: &JobEnvelope) -> BTreeMap<String, String> {
        let headers = delivery.properties.headers().as_ref();
        let from_headers: BTreeMap<String, String> = TRACE_HEADERS
            .iter()
            .filter_map(|key| {
                let value = headers
                    .and_then(|headers| headers.inner().get(*key))
                    .and_then(amqp_string)?;
                Some(((*key).to_owned(), value))
            })
            .collect();
        if from_headers.is_empty() {
            job.trace.clone()
        } else {
            from_headers
        }
    }
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

fn amqp_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

fn amqp_integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(number) => Some(*number),
        AMQPValue::LongInt(number) => Some(i64::from(*number)),
        AMQPValue::LongUInt(number) => Some(i64::from(*number)),
        AMQPValue::ShortInt(number) => Some(i64::from(*number)),
        AMQPValue::ShortUInt(number) => Some(i64::from(*number)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_waits_in_the_smallest_tier_that_holds_it() {
        let topology = Topology::new("t", 5);
        let (exchange, key, expiration) = topology.delayed_target(Route::Cadence, Duration::from_secs(7));
        assert_eq!(exchange.as_str(), "t.retry.30s");
        assert_eq!(key.as_str(), "sync.cadence");
        assert_eq!(expiration.as_str(), "7000");
    }

    #[test]
    fn delays_are_clamped_to_the_tiers() {
        let topology = Topology::new("t", 5);
        let (short, _, short_expiration) = topology.delayed_target(Route::Priority, Duration::from_millis(10));
        assert_eq!((short.as_str(), short_expiration.as_str()), ("t.retry.1s", "1000"));
        let (long, _, long_expiration) = topology.delayed_target(Route::Priority, Duration::from_secs(86_400));
        assert_eq!((long.as_str(), long_expiration.as_str()), ("t.retry.600s", "600000"));
    }

    #[test]
    fn routes_are_read_back_from_their_routing_keys() {
        for route in Route::ALL {
            assert_eq!(Route::from_routing_key(route.routing_key()), Some(route));
        }
    }
}
