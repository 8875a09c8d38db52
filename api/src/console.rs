//! What the operator console reads outside PostgreSQL: the queues (from
//! RabbitMQ's management API when configured, else from AMQP itself) and the
//! cooldowns running in the fleet's limiter (Redis).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use syncfleet_common::{
    config::CommonConfig,
    queue::{Publisher, Topology},
    ratelimit::{Cooldown, Limiter},
};
use tracing::warn;
use utoipa::ToSchema;

/// How long a read from the broker's management API may take.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The console's outside sources.
pub struct Console {
    topology: Topology,
    /// The management API's base URL (no credentials), its credentials and
    /// the virtual host, when configured.
    management: Option<Management>,
    limiter: Limiter,
}

struct Management {
    base: reqwest::Url,
    user: String,
    password: SecretString,
    vhost: String,
    http: reqwest::Client,
}

/// A queue as the console shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub queue: String,
    /// `cadence`, `priority`, `push`, `retry` or `dead`.
    pub role: &'static str,
    pub ready: i64,
    /// Delivered and not yet acknowledged (management API only).
    pub unacknowledged: Option<i64>,
    pub consumers: Option<i64>,
    /// Messages per second over the broker's last sample (management API only).
    pub publish_rate: Option<f64>,
    pub deliver_rate: Option<f64>,
    pub ack_rate: Option<f64>,
}

/// Where the queue figures came from: `management` or `amqp`.
pub type BrokerSource = &'static str;

#[derive(Deserialize)]
struct QueuePage {
    items: Vec<ManagedQueue>,
}

#[derive(Deserialize)]
struct ManagedQueue {
    name: String,
    #[serde(default)]
    messages_ready: i64,
    #[serde(default)]
    messages_unacknowledged: i64,
    #[serde(default)]
    consumers: i64,
    #[serde(default)]
    message_stats: Option<MessageStats>,
}

#[derive(Deserialize, Default)]
struct MessageStats {
    publish_details: Option<Rate>,
    deliver_get_details: Option<Rate>,
    ack_details: Option<Rate>,
}

#[derive(Deserialize)]
struct Rate {
    rate: f64,
}

impl Console {
    /// The console's sources from the services' common settings.
    pub fn new(common: &CommonConfig, management_url: Option<&SecretString>) -> Self {
        let topology = Topology::new(common.queue_prefix.clone(), common.delivery_limit);
        let management = management_url.and_then(|url| match Management::parse(url, &common.amqp_url) {
            Ok(management) => Some(management),
            Err(reason) => {
                warn!(
                    reason,
                    "SYNCFLEET_RABBITMQ_MANAGEMENT_URL is not usable; the console reads AMQP only."
                );
                None
            }
        });
        // The console only reads: no lease outlives a call of its own.
        let limiter = Limiter::new(
            common.redis_url.clone(),
            &common.queue_prefix,
            Duration::from_secs(1),
            1,
        );
        Self {
            topology,
            management,
            limiter,
        }
    }

    /// Every queue's figures, from the management API when it answers, else
    /// from AMQP.
    pub async fn queues(&self, publisher: &Publisher) -> Result<(BrokerSource, Vec<QueueView>), String> {
        let queues = self.topology.queues_with_roles();
        if let Some(management) = &self.management {
            match management.queues(&queues).await {
                Ok(views) => return Ok(("management", views)),
                Err(error) => warn!(%error, "RabbitMQ's management API did not answer; reading AMQP."),
            }
        }
        let names: Vec<String> = queues.iter().map(|(name, _)| name.clone()).collect();
        let counts = publisher
            .queue_counts(&names)
            .await
            .map_err(|error| format!("the broker did not answer: {error}"))?;
        Ok((
            "amqp",
            queues
                .into_iter()
                .zip(counts)
                .map(|((queue, role), (ready, consumers))| QueueView {
                    queue,
                    role,
                    ready: i64::from(ready),
                    unacknowledged: None,
                    consumers: Some(i64::from(consumers)),
                    publish_rate: None,
                    deliver_rate: None,
                    ack_rate: None,
                })
                .collect(),
        ))
    }

    /// The cooldowns running now.
    pub async fn cooldowns(&self) -> Result<Vec<Cooldown>, String> {
        self.limiter
            .cooldowns()
            .await
            .map_err(|error| format!("Redis did not answer: {error}"))
    }
}

impl Management {
    fn parse(url: &SecretString, amqp_url: &SecretString) -> Result<Self, &'static str> {
        let mut base: reqwest::Url = url.expose_secret().trim().parse().map_err(|_| "not a URL")?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("not an http or https URL");
        }
        let user = match base.username() {
            "" => "guest".to_owned(),
            user => percent_decode(user),
        };
        let password = SecretString::from(percent_decode(base.password().unwrap_or("guest")));
        let _ = base.set_username("");
        let _ = base.set_password(None);
        // The AMQP URL's path is its virtual host, already percent-encoded.
        let vhost = amqp_url
            .expose_secret()
            .parse::<reqwest::Url>()
            .ok()
            .map(|amqp| amqp.path().trim_start_matches('/').to_owned())
            .filter(|vhost| !vhost.is_empty())
            .unwrap_or_else(|| "%2F".to_owned());
        let http = reqwest::Client::builder()
            .timeout(MANAGEMENT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| "no HTTP client")?;
        Ok(Self {
            base,
            user,
            password,
            vhost,
            http,
        })
    }

    async fn queues(&self, queues: &[(String, &'static str)]) -> Result<Vec<QueueView>, reqwest::Error> {
        let prefix = queues
            .first()
            .and_then(|(name, _)| name.rsplit_once('.').map(|(prefix, _)| prefix.to_owned()))
            .unwrap_or_default();
        let mut url = self.base.clone();
        url.set_path(&format!("/api/queues/{}", self.vhost));
        url.query_pairs_mut()
            .append_pair("page", "1")
            .append_pair("page_size", "100")
            .append_pair("use_regex", "true")
            .append_pair("name", &format!("^{}\\.", regex_escape(&prefix)));
        let page: QueuePage = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(queues
            .iter()
            .map(|(name, role)| {
                let found = page.items.iter().find(|queue| &queue.name == name);
                let stats = found.and_then(|queue| queue.message_stats.as_ref());
                QueueView {
                    queue: name.clone(),
                    role,
                    ready: found.map_or(0, |queue| queue.messages_ready),
                    unacknowledged: found.map(|queue| queue.messages_unacknowledged),
                    consumers: found.map(|queue| queue.consumers),
                    publish_rate: found.map(|_| rate(stats.and_then(|stats| stats.publish_details.as_ref()))),
                    deliver_rate: found.map(|_| rate(stats.and_then(|stats| stats.deliver_get_details.as_ref()))),
                    ack_rate: found.map(|_| rate(stats.and_then(|stats| stats.ack_details.as_ref()))),
                }
            })
            .collect())
    }
}

fn rate(rate: Option<&Rate>) -> f64 {
    rate.map_or(0.0, |rate| rate.rate)
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            true => vec![c],
            false => vec!['\\', c],
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_url_keeps_its_credentials_apart_and_names_the_amqp_virtual_host() {
        syncfleet_common::telemetry::install_tls_provider();
        let management = Management::parse(
            &SecretString::from("http://ops%40fleet:p%2Fss@rabbit:15672"),
            &SecretString::from("amqp://guest:guest@rabbit:5672/fleet%2Fprod"),
        )
        .unwrap();
        assert_eq!(management.user, "ops@fleet");
        assert_eq!(management.password.expose_secret(), "p/ss");
        assert_eq!(management.base.as_str(), "http://rabbit:15672/");
        assert_eq!(management.vhost, "fleet%2Fprod");
        assert!(Management::parse(&SecretString::from("amqp://rabbit"), &SecretString::from("")).is_err());
    }
}
