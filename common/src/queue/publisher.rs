//! Publishing with confirms and the mandatory flag: a job counts as published
//! only once the broker has confirmed it and routed it to a queue.

use std::time::Duration;

use futures_util::future::join_all;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::ShortString,
    uri::AMQPUri,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::{
    envelope::JobEnvelope,
    topology::{Route, Topology},
};

/// Why a publish did not succeed. The job must then be treated as not sent.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker returned the message as unroutable: {0}")]
    Returned(String),
    #[error("publisher confirms were not enabled on the channel")]
    NotConfirmed,
}

/// The largest AMQP frame a connection asks for, unless its URL names one
/// (`frame_max=`). lapin keeps a receive and a send buffer of 32 frames per
/// connection, written through: at RabbitMQ's default of 128 kB that is
/// 8 MB resident per connection, most of a worker's fixed memory. A job is a
/// few hundred bytes, and a larger message travels in several frames.
const FRAME_MAX: u32 = 16 * 1024;

/// Opens an AMQP connection named after the service, so operators can tell
/// connections apart in the broker's management views.
pub async fn connect(url: &SecretString, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let mut uri: AMQPUri = url
        .expose_secret()
        .parse()
        .map_err(|error: String| lapin::Error::from(std::io::Error::other(error)))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Connection::connect_uri(uri, properties).await
}

/// A confirm-mode channel that reconnects on the next call after a failure.
pub struct Publisher {
    url: SecretString,
    name: String,
    topology: Topology,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    /// Connects and declares the topology.
    pub async fn connect(url: SecretString, name: &str, topology: Topology) -> Result<Self, PublishError> {
        let publisher = Self::lazy(url, name, topology);
        publisher.channel().await?;
        Ok(publisher)
    }

    /// A publisher that connects on its first publish (and reconnects after
    /// a failure), for services that must start while the broker is away.
    pub fn lazy(url: SecretString, name: &str, topology: Topology) -> Self {
        Self {
            url,
            name: name.to_owned(),
            topology,
            state: Mutex::new(None),
        }
    }

    /// The topology this publisher addresses.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut state = self.state.lock().await;
        if let Some((connection, channel)) = state.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        if let Some((connection, _)) = state.take() {
            let _ = connection.close(200, "reconnecting".into()).await;
        }
        let connection = connect(&self.url, &self.name).await?;
        let channel = connection.create_channel().await?;
        self.topology.declare(&channel).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        *state = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn invalidate(&self) {
        if let Some((connection, _)) = self.state.lock().await.take() {
            let _ = connection.close(200, "publish failed".into()).await;
        }
    }

    /// Publishes every job to `route` and waits for all confirms. Any nack,
    /// return or broker error fails the whole call: the caller must treat every
    /// job of the batch as possibly not sent.
    pub async fn publish(&self, route: Route, jobs: &[JobEnvelope]) -> Result<(), PublishError> {
        let (exchange, routing_key) = self.topology.target(route);
        let messages: Vec<_> = jobs.iter().map(|job| (job.encode(), properties(job))).collect();
        self.send(exchange, routing_key, messages).await
    }

    /// Publishes a job that reaches `route` after `delay`, through the retry queues.
    pub async fn publish_delayed(&self, route: Route, job: &JobEnvelope, delay: Duration) -> Result<(), PublishError> {
        let (exchange, routing_key, expiration) = self.topology.delayed_target(route, delay);
        let message = (job.encode(), properties(job).with_expiration(expiration));
        self.send(exchange, routing_key, [message]).await
    }

    /// Publishes an already-encoded body to `route` as it is: for replaying a
    /// dead letter kept in `dead_jobs`. The worker rejects a body that is not
    /// a valid envelope to the dead-letter queue.
    pub async fn publish_bytes(&self, route: Route, body: &[u8]) -> Result<(), PublishError> {
        let (exchange, routing_key) = self.topology.target(route);
        let message = (
            body.to_vec(),
            Topology::properties("replayed", "unknown", &Default::default()),
        );
        self.send(exchange, routing_key, [message]).await
    }

    /// Messages ready in a route's queue.
    pub async fn ready_count(&self, route: Route) -> Result<u32, PublishError> {
        let channel = self.channel().await?;
        Ok(self.topology.ready_count(&channel, route).await?)
    }

    /// Each queue's ready messages and consumers (a passive declare each): what
    /// AMQP itself tells of a queue. A queue that does not exist closes the
    /// channel; the next call opens another.
    pub async fn queue_counts(&self, queues: &[String]) -> Result<Vec<(u32, u32)>, PublishError> {
        let channel = self.channel().await?;
        let mut counts = Vec::with_capacity(queues.len());
        for queue in queues {
            match self.topology.counts(&channel, queue).await {
                Ok(count) => counts.push(count),
                Err(error) => {
                    self.invalidate().await;
                    return Err(error.into());
                }
            }
        }
        Ok(counts)
    }

    /// Moves a message (possibly unreadable) to the dead-letter queue with a reason.
    pub async fn publish_dead(&self, route: Route, body: &[u8], reason: &str) -> Result<(), PublishError> {
        let (exchange, routing_key, headers) = self.topology.dead_target(route, reason);
        let message = (
            body.to_vec(),
            BasicProperties::default().with_delivery_mode(2).with_headers(headers),
        );
        self.send(exchange, routing_key, [message]).await
    }

    async fn send(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        messages: impl IntoIterator<Item = (Vec<u8>, BasicProperties)>,
    ) -> Result<(), PublishError> {
        let channel = self.channel().await?;
        let result = send_on(&channel, exchange, routing_key, messages).await;
        if matches!(result, Err(PublishError::Broker(_))) {
            self.invalidate().await;
        }
        result
    }
}

async fn send_on(
    channel: &Channel,
    exchange: ShortString,
    routing_key: ShortString,
    messages: impl IntoIterator<Item = (Vec<u8>, BasicProperties)>,
) -> Result<(), PublishError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut confirms = Vec::new();
    for (body, properties) in messages {
        confirms.push(
            channel
                .basic_publish(exchange.clone(), routing_key.clone(), options, &body, properties)
                .await?,
        );
    }
    for confirmation in join_all(confirms).await {
        match confirmation? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                return Err(PublishError::Returned(returned.reply_text.as_str().to_owned()));
            }
            Confirmation::Nack(None) => return Err(PublishError::Nacked),
            Confirmation::NotRequested => return Err(PublishError::NotConfirmed),
        }
    }
    Ok(())
}

fn properties(job: &JobEnvelope) -> BasicProperties {
    Topology::properties(&job.job_id.to_string(), job.kind.as_str(), &job.trace)
}
