//! The email outbox relay: the leader sends what the fleet queued in
//! `email_outbox` (auto-suspend notices, push completions...) over SMTP.
//!
//! One email at a time, in three steps, so that nothing but a crash in the
//! instant between the server's acceptance and the record of it can send an
//! email twice:
//! 1. the relay claims the email (`sending`, committed) for
//!    [`SENDING_LEASE`]: a second relay skips it meanwhile;
//! 2. it sends it;
//! 3. it records the outcome. `sent` is retried while the database is away
//!    (the fact held in memory), so an outage after the server accepted the
//!    email no longer sends it again. A temporary failure (4xx, no
//!    connection) is retried with a doubling delay; a permanent one (5xx) or
//!    too many attempts marks the email failed.
//!
//! A relay killed between 1 and 3 leaves its email `sending`; when the lease
//! ends the next pass sends it (at least once: a kill after the server's
//! acceptance and before the record sends it again). Each email's
//! `Message-ID` is derived from its row, so such a resend is recognisable as
//! the same message.

use std::time::Duration;

use backon::Retryable;
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

/// How long a claimed email is left to the relay sending it: longer than a
/// send (the transport gives up after 30 s) and the retries of its record
/// ([`RECORD_RETRY`]).
pub const SENDING_LEASE: Duration = Duration::from_secs(150);
/// How long a relay keeps trying to record that an email was sent.
const RECORD_RETRY: Duration = Duration::from_secs(100);

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

struct Email {
    id: Uuid,
    recipients: Vec<String>,
    subject: String,
    body_text: String,
    /// Attempts so far, this one included.
    attempts: i32,
    /// Claimed from a relay that stopped while sending it.
    interrupted: bool,
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

    /// Sends every email that is due, one at a time.
    pub async fn pass(&self) -> Result<RelayReport, sqlx::Error> {
        let mut report = RelayReport::default();
        while let Some(email) = self.claim().await? {
            match self.send(&email).await {
                Ok(()) => {
                    self.record_sent(email.id).await?;
                    report.sent += 1;
                }
                Err((permanent, error)) => {
                    let give_up = permanent || email.attempts >= self.config.max_attempts;
                    let delay = self
                        .config
                        .retry_delay
                        .saturating_mul(1 << (email.attempts - 1).clamp(0, 16))
                        .min(Duration::from_secs(3600));
                    warn!(email_id = %email.id, attempts = email.attempts, give_up, error = %error, "An email was not sent.");
                    // Not recorded (the database away): the email is sent
                    // again when its lease ends, which is what a retry does.
                    sqlx::query!(
                        "UPDATE email_outbox SET last_error = $2, \
                             status = CASE WHEN $3 THEN 'failed' ELSE 'pending' END, \
                             next_attempt_at = now() + $4 * interval '1 millisecond' \
                         WHERE id = $1 AND status = 'sending'",
                        email.id,
                        &error,
                        give_up,
                        delay.as_millis() as f64
                    )
                    .execute(&self.pool)
                    .await?;
                    if give_up {
                        report.failed += 1;
                    } else {
                        report.deferred += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Claims the next email due, committed before it is sent: a pending
    /// one, or one whose sending relay's lease ended (it died sending).
    async fn claim(&self) -> Result<Option<Email>, sqlx::Error> {
        let email = sqlx::query_as!(
            Email,
            "WITH due AS ( \
                 SELECT id, status FROM email_outbox \
                 WHERE status IN ('pending', 'sending') AND next_attempt_at <= now() \
                 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED \
             ) \
             UPDATE email_outbox e SET status = 'sending', attempts = attempts + 1, \
                 next_attempt_at = now() + $1 * interval '1 millisecond' \
             FROM due WHERE e.id = due.id \
             RETURNING e.id, e.recipients, e.subject, e.body_text, e.attempts, \
                 due.status = 'sending' AS \"interrupted!\"",
            SENDING_LEASE.as_millis() as f64
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(email) = email.as_ref().filter(|email| email.interrupted) {
            warn!(
                email_id = %email.id,
                "An email whose relay stopped while sending it is sent again (same Message-ID)."
            );
        }
        Ok(email)
    }

    /// Records that the server accepted `id`, retrying while the database is
    /// away: the fact is held in memory rather than the email sent again.
    async fn record_sent(&self, id: Uuid) -> Result<(), sqlx::Error> {
        let record = || async {
            sqlx::query!(
                "UPDATE email_outbox SET status = 'sent', sent_at = now(), last_error = NULL \
                 WHERE id = $1 AND status = 'sending'",
                id
            )
            .execute(&self.pool)
            .await
            .map(drop)
        };
        record
            .retry(syncfleet_common::db::transient_backoff(
                Duration::from_secs(2),
                RECORD_RETRY,
            ))
            .when(syncfleet_common::db::is_transient)
            .notify(|error, delay| {
                warn!(email_id = %id, %error, retry_in_ms = delay.as_millis() as u64,
                      "Could not record a sent email; retrying.");
            })
            .await
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
