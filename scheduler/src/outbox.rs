//! The email outbox relay: the leader sends what the fleet queued in
//! `email_outbox` (auto-suspend notices, push completions...) over SMTP.
//!
//! One email at a time, each in its own transaction holding the row lock
//! across the send: a second relay skips it, a failure is recorded on the
//! row. A temporary failure (4xx, no connection) is retried with a doubling
//! delay; a permanent one (5xx) or too many attempts marks the email failed.
//! Each email's `Message-ID` is derived from its row, so the rare resend
//! after a crash between the send and the commit is recognisable as the same
//! message.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use syncfleet_common::config::{ConfigError, Setting, Source};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

pub const SMTP_URL: Setting = Setting {
    name: "SYNCFLEET_SMTP_URL",
    default: "",
    doc: "SMTP server of the outgoing emails, e.g. smtp://user:password@mail.example.com:587?tls=required or smtps://...:465; empty: emails stay in the outbox.",
};
pub const SMTP_FROM: Setting = Setting {
    name: "SYNCFLEET_SMTP_FROM",
    default: "Syncfleet <no-reply@syncfleet.invalid>",
    doc: "Sender of the outgoing emails.",
};
pub const OUTBOX_POLL: Setting = Setting {
    name: "SYNCFLEET_OUTBOX_POLL",
    default: "1s",
    doc: "How often the leader looks for emails to send.",
};
pub const OUTBOX_RETRY_DELAY: Setting = Setting {
    name: "SYNCFLEET_OUTBOX_RETRY_DELAY",
    default: "30s",
    doc: "First retry delay of an email the SMTP server refused for now; doubles each attempt, at most an hour.",
};
pub const OUTBOX_MAX_ATTEMPTS: Setting = Setting {
    name: "SYNCFLEET_OUTBOX_MAX_ATTEMPTS",
    default: "10",
    doc: "Attempts of one email before it is marked failed.",
};

/// The relay's settings, for the README check.
pub const SETTINGS: &[Setting] = &[
    SMTP_URL,
    SMTP_FROM,
    OUTBOX_POLL,
    OUTBOX_RETRY_DELAY,
    OUTBOX_MAX_ATTEMPTS,
];

/// How the relay sends.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// The SMTP server; `None`: nothing is sent.
    pub smtp_url: Option<SecretString>,
    /// The sender.
    pub from: Mailbox,
    /// Polling period.
    pub poll: Duration,
    /// First retry delay.
    pub retry_delay: Duration,
    /// Attempts before an email fails.
    pub max_attempts: i32,
}

impl OutboxConfig {
    /// Reads the relay's settings.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let url = source.secret(&SMTP_URL);
        let from: Mailbox = source
            .string(&SMTP_FROM)
            .parse()
            .map_err(|error| ConfigError::Invalid {
                name: SMTP_FROM.name,
                reason: format!("not an address: {error}"),
            })?;
        Ok(Self {
            smtp_url: (!url.expose_secret().trim().is_empty()).then_some(url),
            from,
            poll: source.duration(&OUTBOX_POLL)?,
            retry_delay: source.duration(&OUTBOX_RETRY_DELAY)?,
            max_attempts: source.positive(&OUTBOX_MAX_ATTEMPTS)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct Email {
    id: Uuid,
    recipients: Vec<String>,
    subject: String,
    body_text: String,
    attempts: i32,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayReport {
    pub sent: u64,
    pub deferred: u64,
    pub failed: u64,
}

/// The relay of one leader.
pub struct Relay {
    pool: PgPool,
    config: OutboxConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Relay {
    /// A relay, or `None` when no SMTP server is configured. The URL's
    /// password never reaches an error text.
    pub fn new(pool: PgPool, config: OutboxConfig) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &config.smtp_url else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|_| ConfigError::Invalid {
                name: SMTP_URL.name,
                reason: "not an smtp:// or smtps:// URL lettre understands".to_owned(),
            })?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(Some(Self {
            pool,
            config,
            transport,
        }))
    }

    /// Sends until `stop` is cancelled.
    pub async fn run(&self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self.pass().await {
                Ok(report) if report != RelayReport::default() => info!(
                    sent = report.sent,
                    deferred = report.deferred,
                    failed = report.failed,
                    "Outbox relayed."
                ),
                Ok(_) => {}
                Err(error) => warn!(%error, "The outbox relay could not read the outbox; will try again."),
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Sends every email that is due, one transaction each.
    pub async fn pass(&self) -> Result<RelayReport, sqlx::Error> {
        let mut report = RelayReport::default();
        loop {
            let mut tx = self.pool.begin().await?;
            let email = sqlx::query_as::<_, Email>(
                "SELECT id, recipients, subject, body_text, attempts FROM email_outbox \
                 WHERE status = 'pending' AND next_attempt_at <= now() \
                 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(email) = email else {
                return Ok(report);
            };
            match self.send(&email).await {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE email_outbox SET status = 'sent', sent_at = now(), attempts = attempts + 1, \
                             last_error = NULL WHERE id = $1",
                    )
                    .bind(email.id)
                    .execute(&mut *tx)
                    .await?;
                    report.sent += 1;
                }
                Err((permanent, error)) => {
                    let attempts = email.attempts + 1;
                    let give_up = permanent || attempts >= self.config.max_attempts;
                    let delay = self
                        .config
                        .retry_delay
                        .saturating_mul(1 << (attempts - 1).clamp(0, 16))
                        .min(Duration::from_secs(3600));
                    warn!(email_id = %email.id, attempts, give_up, error = %error, "An email was not sent.");
                    sqlx::query(
                        "UPDATE email_outbox SET attempts = $2, last_error = $3, \
                             status = CASE WHEN $4 THEN 'failed' ELSE 'pending' END, \
                             next_attempt_at = now() + $5 * interval '1 millisecond' WHERE id = $1",
                    )
                    .bind(email.id)
                    .bind(attempts)
                    .bind(&error)
                    .bind(give_up)
                    .bind(delay.as_millis() as f64)
                    .execute(&mut *tx)
                    .await?;
                    if give_up {
                        report.failed += 1;
                    } else {
                        report.deferred += 1;
                    }
                }
            }
            tx.commit().await?;
        }
    }

    /// Sends one email; the error says whether retrying is pointless.
    async fn send(&self, email: &Email) -> Result<(), (bool, String)> {
        let mut builder = Message::builder()
            .from(self.config.from.clone())
            .subject(email.subject.clone())
            .message_id(Some(format!("<{}@outbox.syncfleet>", email.id)))
            .header(ContentType::TEXT_PLAIN);
        for recipient in &email.recipients {
            let mailbox: Mailbox = recipient
                .parse()
                .map_err(|_| (true, format!("{recipient:?} is not an email address")))?;
            builder = builder.to(mailbox);
        }
        let message = builder
            .body(email.body_text.clone())
            .map_err(|error| (true, format!("the email cannot be built: {error}")))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|error| (error.is_permanent(), bounded(&error.to_string())))
    }
}

fn bounded(text: &str) -> String {
    match text.char_indices().nth(500) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
