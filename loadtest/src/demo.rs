//! The local demo's organizations and users, connected for real to the
//! simulators (`syncfleet-simulators`): every user has a mailbox with a few
//! messages and, most of them, a Salesforce user with an Event; their refresh
//! tokens and passwords are sealed into `credentials` as the api would. The
//! simulators start empty on every run, so the demo organizations, their users
//! and credentials are deleted and made again each time.

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use syncfleet_common::{
    cadence,
    config::{CommonConfig, Setting, Source},
    db,
    secrets::{self, CredentialKind, KeyRing, Owner},
};
use uuid::Uuid;

/// Where the demo finds the simulators' control APIs (and the fleet the
/// simulated providers).
pub const SIMULATOR_URL: Setting = Setting {
    name: "SYNCFLEET_DEMO_SIMULATOR_URL",
    default: "http://127.0.0.1:9400",
    doc: "Base URL of `syncfleet-simulators` (its HTTP listener) the demo users are created in.",
};

/// Salesforce's daily API allocation of the demo org: enough for a demo left
/// running for days.
const DEMO_DAILY_API_MAX: u64 = 10_000_000;

/// The EWS endpoint's path on the simulators' listener.
const EWS_PATH: &str = "/EWS/Exchange.asmx";

struct DemoOrganization {
    external_id: &'static str,
    name: &'static str,
    access_type: &'static str,
    sync_enabled: bool,
    users: usize,
}

const ORGANIZATIONS: [DemoOrganization; 4] = [
    DemoOrganization {
        external_id: "acme",
        name: "Acme",
        access_type: "office365",
        sync_enabled: true,
        users: 24,
    },
    DemoOrganization {
        external_id: "globex",
        name: "Globex",
        access_type: "exchange_impersonation",
        sync_enabled: true,
        users: 12,
    },
    DemoOrganization {
        external_id: "initech",
        name: "Initech",
        access_type: "gmail",
        sync_enabled: false,
        users: 6,
    },
    DemoOrganization {
        external_id: "umbrella",
        name: "Umbrella",
        access_type: "exchange_direct",
        sync_enabled: true,
        users: 6,
    },
];

/// The external ids of the demo organizations.
fn organization_ids() -> Vec<&'static str> {
    ORGANIZATIONS.iter().map(|org| org.external_id).collect()
}

/// Someone the demo users write with who is known to the CRM.
struct Person {
    first_name: &'static str,
    last_name: &'static str,
    email: &'static str,
    company: &'static str,
}

impl Person {
    fn name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

/// Customers, as Salesforce Contacts.
const CONTACTS: [Person; 4] = [
    Person {
        first_name: "Jordan",
        last_name: "Lee",
        email: "jordan.lee@initrode.example",
        company: "Initrode",
    },
    Person {
        first_name: "Priya",
        last_name: "Shah",
        email: "priya.shah@vandelay.example",
        company: "Vandelay Industries",
    },
    Person {
        first_name: "Marco",
        last_name: "Rossi",
        email: "marco.rossi@hooli.example",
        company: "Hooli",
    },
    Person {
        first_name: "Ana",
        last_name: "Silva",
        email: "ana.silva@soylent.example",
        company: "Soylent",
    },
];

/// Prospects, as Salesforce Leads.
const LEADS: [Person; 2] = [
    Person {
        first_name: "Sam",
        last_name: "Taylor",
        email: "sam.taylor@piedpiper.example",
        company: "Pied Piper",
    },
    Person {
        first_name: "Lin",
        last_name: "Chen",
        email: "lin.chen@massive-dynamic.example",
        company: "Massive Dynamic",
    },
];

/// A private address on a free-mail domain: never logged.
const FREE_MAIL: (&str, &str) = ("Chris Private", "chris.private@gmail.com");

/// A sender the CRM does not know: nothing to log it against.
const UNKNOWN: (&str, &str) = ("Weekly Offers", "offers@newsletter.example");

/// A message put in a demo mailbox, seen from its owner.
struct DemoMessage {
    /// Sent by the owner (Sent Items) or received (Inbox).
    sent: bool,
    counterpart_name: String,
    counterpart: String,
    subject: &'static str,
    body: &'static str,
    at: DateTime<Utc>,
}

/// The `index`-th user's messages: with a Contact both ways, from a Lead, from
/// a free-mail address and from an unknown sender (three become Tasks).
fn messages(index: usize, now: DateTime<Utc>) -> Vec<DemoMessage> {
    let contact = &CONTACTS[index % CONTACTS.len()];
    let other_contact = &CONTACTS[(index + 1) % CONTACTS.len()];
    let lead = &LEADS[index % LEADS.len()];
    let minutes = i64::try_from(index).unwrap_or(0);
    let at = |hours: i64| now - Duration::hours(hours) - Duration::minutes(minutes);
    vec![
        DemoMessage {
            sent: false,
            counterpart_name: contact.name(),
            counterpart: contact.email.to_owned(),
            subject: "Re: renewal quote",
            body: "Thanks, the quote looks good. Can we sign next week?",
            at: at(30),
        },
        DemoMessage {
            sent: true,
            counterpart_name: other_contact.name(),
            counterpart: other_contact.email.to_owned(),
            subject: "Agenda for our call",
            body: "Here is the agenda for Thursday: roadmap, pricing, next steps.",
            at: at(20),
        },
        DemoMessage {
            sent: false,
            counterpart_name: lead.name(),
            counterpart: lead.email.to_owned(),
            subject: "Interested in a demo",
            body: "We saw your product at the fair and would like a demo.",
            at: at(6),
        },
        DemoMessage {
            sent: false,
            counterpart_name: FREE_MAIL.0.to_owned(),
            counterpart: FREE_MAIL.1.to_owned(),
            subject: "Dinner on Saturday?",
            body: "Are you free on Saturday evening?",
            at: at(4),
        },
        DemoMessage {
            sent: false,
            counterpart_name: UNKNOWN.0.to_owned(),
            counterpart: UNKNOWN.1.to_owned(),
            subject: "This week's offers",
            body: "Everything must go.",
            at: at(2),
        },
    ]
}

/// The simulators' control APIs.
/// The simulators' control APIs over HTTP (the demo's seeding and the fleet
/// load test's bulk seeding).
pub(crate) struct ControlApi {
    http: reqwest::Client,
    base: Url,
}

impl ControlApi {
    pub(crate) fn new(base: &str) -> anyhow::Result<Self> {
        let base: Url = base
            .parse()
            .with_context(|| format!("{} is not a URL", SIMULATOR_URL.name))?;
        let http = reqwest::Client::builder()
            // Bulk seeding sends thousands of mailboxes in one call.
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Self { http, base })
    }

    /// The simulators' base URL without a trailing slash: the providers' URLs
    /// hang off it.
    pub(crate) fn base_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{} cannot be a base URL", self.base))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// POSTs `body` and answers the JSON answer (`Null` for an empty one).
    pub(crate) async fn post(&self, segments: &[&str], body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, segments, Some(body)).await
    }

    /// PUTs `body`; answers the JSON answer (`Null` for an empty one).
    pub(crate) async fn put(&self, segments: &[&str], body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, segments, Some(body)).await
    }

    /// GETs a JSON answer.
    pub(crate) async fn get(&self, segments: &[&str]) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, segments, None).await
    }

    /// DELETEs what `segments` name.
    pub(crate) async fn delete(&self, segments: &[&str]) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, segments, None).await
    }

    async fn call(&self, method: reqwest::Method, segments: &[&str], body: Option<Value>) -> anyhow::Result<Value> {
        let url = self.url(segments)?;
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling the simulators at {url} (is syncfleet-simulators running?)"))?;
        let status = response.status();
        let text = response.text().await?;
        if status == StatusCode::CONFLICT {
            anyhow::bail!(
                "{method} {url} answered {status}: {text}; the simulators hold an earlier demo \
                 (they keep everything in memory): restart syncfleet-simulators, then seed again"
            );
        }
        if !status.is_success() {
            anyhow::bail!("{method} {url} answered {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url} answered no JSON"))
    }
}

fn field(answer: &Value, name: &str) -> anyhow::Result<String> {
    answer
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("the simulator's answer has no {name}"))
}

/// A fresh password for a demo Exchange account.
fn new_password() -> SecretString {
    SecretString::from(format!("Demo-{}", Uuid::new_v4().simple()))
}

/// The demo's Salesforce org in the simulator.
struct Crm {
    org_id: String,
}

impl Crm {
    /// A new org with the Contacts and Leads the demo mail is written with.
    async fn create(control: &ControlApi) -> anyhow::Result<Self> {
        let org = control
            .post(
                &["_control", "salesforce", "orgs"],
                json!({ "daily_api_max": DEMO_DAILY_API_MAX }),
            )
            .await
            .context("creating the demo Salesforce org")?;
        let crm = Self {
            org_id: field(&org, "org_id")?,
        };
        for person in &CONTACTS {
            crm.insert(
                control,
                "Contact",
                json!({
                    "FirstName": person.first_name,
                    "LastName": person.last_name,
                    "Email": person.email,
                    "Title": format!("Buyer at {}", person.company),
                }),
            )
            .await?;
        }
        for person in &LEADS {
            crm.insert(
                control,
                "Lead",
                json!({
                    "FirstName": person.first_name,
                    "LastName": person.last_name,
                    "Email": person.email,
                    "Company": person.company,
                    "Status": "Open - Not Contacted",
                }),
            )
            .await?;
        }
        Ok(crm)
    }

    async fn insert(&self, control: &ControlApi, object: &str, fields: Value) -> anyhow::Result<String> {
        let answer = control
            .post(
                &["_control", "salesforce", "orgs", &self.org_id, "records", object],
                fields,
            )
            .await
            .with_context(|| format!("creating a demo {object}"))?;
        field(&answer, "id")
    }

    /// A Salesforce user for the `index`-th demo user, with an Event of
    /// theirs (written into their mailbox by the sync); answers its refresh
    /// token.
    async fn user(&self, control: &ControlApi, index: usize, now: DateTime<Utc>) -> anyhow::Result<SecretString> {
        let user = control
            .post(&["_control", "salesforce", "orgs", &self.org_id, "users"], json!({}))
            .await
            .context("creating a demo Salesforce user")?;
        let owner = field(&user, "user_id")?;
        let contact = &CONTACTS[index % CONTACTS.len()];
        let start = now + Duration::days(1) + Duration::hours(i64::try_from(index % 8).unwrap_or(0));
        self.insert(
            control,
            "Event",
            json!({
                "Subject": format!("Quarterly review with {}", contact.company),
                "StartDateTime": start.to_rfc3339(),
                "EndDateTime": (start + Duration::hours(1)).to_rfc3339(),
                "Location": "Video call",
                "Description": format!("Review the account with {}.", contact.name()),
                "OwnerId": owner,
            }),
        )
        .await?;
        Ok(SecretString::from(field(&user, "refresh_token")?))
    }
}

/// A demo user's mailbox, made in the simulator of their access type with
/// their messages.
struct DemoMailbox<'a> {
    control: &'a ControlApi,
    email: &'a str,
    name: &'a str,
}

impl DemoMailbox<'_> {
    /// An Office 365 mailbox in the Graph simulator; answers its refresh token.
    async fn graph(&self, messages: &[DemoMessage]) -> anyhow::Result<SecretString> {
        let mailbox = self
            .control
            .post(&["_control", "graph", "mailboxes"], json!({ "upn": self.email }))
            .await
            .context("creating a Graph mailbox")?;
        for message in messages {
            let (from, to) = self.parties(message);
            self.control
                .post(
                    &["_control", "graph", "mailboxes", self.email, "messages"],
                    json!({
                        "folder": if message.sent { "sent_items" } else { "inbox" },
                        "from": from,
                        "to": [to],
                        "subject": message.subject,
                        "sent_at": message.at.to_rfc3339(),
                        "body": message.body,
                    }),
                )
                .await?;
        }
        Ok(SecretString::from(field(&mailbox, "refresh_token")?))
    }

    /// A Gmail mailbox; answers its refresh token.
    async fn gmail(&self, messages: &[DemoMessage]) -> anyhow::Result<SecretString> {
        let mailbox = self
            .control
            .post(&["_control", "gmail", "mailboxes"], json!({ "email": self.email }))
            .await
            .context("creating a Gmail mailbox")?;
        let header = |party: &Value| {
            format!(
                "{} <{}>",
                party["name"].as_str().unwrap_or_default(),
                party["address"].as_str().unwrap_or_default()
            )
        };
        for message in messages {
            let (from, to) = self.parties(message);
            self.control
                .post(
                    &["_control", "gmail", "mailboxes", self.email, "messages"],
                    json!({
                        "from": header(&from),
                        "to": [header(&to)],
                        "subject": message.subject,
                        "sent_at": message.at.to_rfc3339(),
                        "snippet": message.body,
                        "sent": message.sent,
                    }),
                )
                .await?;
        }
        Ok(SecretString::from(field(&mailbox, "refresh_token")?))
    }

    /// An Exchange account owning a mailbox at its address, in the EWS
    /// simulator; answers the account's password.
    async fn ews(&self, messages: &[DemoMessage]) -> anyhow::Result<SecretString> {
        let password = new_password();
        self.control
            .post(
                &["_control", "ews", "accounts"],
                json!({ "account": self.email, "password": password.expose_secret() }),
            )
            .await
            .context("creating an Exchange account")?;
        self.control
            .post(
                &["_control", "ews", "mailboxes"],
                json!({ "smtp": self.email, "owner": self.email }),
            )
            .await
            .context("creating an Exchange mailbox")?;
        let domain = self.email.rsplit_once('@').map_or("demo.test", |(_, domain)| domain);
        for message in messages {
            let (from, to) = self.parties(message);
            self.control
                .post(
                    &["_control", "ews", "mailboxes", self.email, "messages"],
                    json!({
                        "folder": if message.sent { "sentitems" } else { "inbox" },
                        "subject": message.subject,
                        "from": from,
                        "to": [to],
                        "body": message.body,
                        "internet_message_id": format!("<{}@{domain}>", Uuid::new_v4().simple()),
                        "sent": message.at.to_rfc3339(),
                        "received": message.at.to_rfc3339(),
                    }),
                )
                .await?;
        }
        Ok(password)
    }

    /// The sender and the recipient of a message, owner included.
    fn parties(&self, message: &DemoMessage) -> (Value, Value) {
        let owner = json!({ "address": self.email, "name": self.name });
        let counterpart = json!({ "address": message.counterpart, "name": message.counterpart_name });
        if message.sent {
            (owner, counterpart)
        } else {
            (counterpart, owner)
        }
    }
}

async fn seal(
    tx: &mut Transaction<'_, Postgres>,
    ring: &KeyRing,
    owner: Owner,
    kind: CredentialKind,
    secret: &SecretString,
) -> anyhow::Result<()> {
    secrets::store(&mut **tx, ring, owner, kind, secret)
        .await
        .with_context(|| format!("storing a demo {}", kind.as_str()))
}

/// Replaces the demo organizations and their users, each connected to the
/// simulators with sealed credentials.
pub async fn seed(source: &Source) -> anyhow::Result<()> {
    let config = CommonConfig::from_source(source)?;
    let ring = secrets::configured_key_ring(source)?.with_context(|| {
        format!(
            "{} must be set: the demo seals its users' credentials",
            secrets::ENCRYPTION_KEYS.name
        )
    })?;
    let interval = source.duration(&syncfleet_scheduler::config::SYNC_INTERVAL)?;
    let control = ControlApi::new(&source.string(&SIMULATOR_URL))?;
    let simulators = control.base_url();
    let ews_url = format!("{simulators}{EWS_PATH}");
    let crm = Crm::create(&control).await?;
    let now = Utc::now();

    let pool = db::connect(&config).await.context("connecting to PostgreSQL")?;
    let mut tx = pool.begin().await?;
    // Users, credentials, sync state and sessions go with their organization.
    sqlx::query("DELETE FROM organizations WHERE external_id = ANY($1)")
        .bind(organization_ids())
        .execute(&mut *tx)
        .await?;
    let (mut users, mut crm_users) = (0usize, 0usize);
    for org in &ORGANIZATIONS {
        let org_id = Uuid::now_v7();
        let impersonation = org.access_type == "exchange_impersonation";
        let exchange = impersonation || org.access_type == "exchange_direct";
        let service_account = format!("svc-sync@{}.test", org.external_id);
        sqlx::query(
            "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled, ews_url, impersonation_account) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(org_id)
        .bind(org.external_id)
        .bind(org.name)
        .bind(org.access_type)
        .bind(org.sync_enabled)
        .bind(exchange.then_some(ews_url.as_str()))
        .bind(impersonation.then_some(service_account.as_str()))
        .execute(&mut *tx)
        .await?;
        if impersonation {
            let password = new_password();
            control
                .post(
                    &["_control", "ews", "service-accounts"],
                    json!({
                        "name": service_account,
                        "password": password.expose_secret(),
                        "impersonation_role": true,
                    }),
                )
                .await
                .context("creating the impersonation service account")?;
            seal(
                &mut tx,
                &ring,
                Owner::Organization(org_id),
                CredentialKind::ImpersonationPassword,
                &password,
            )
            .await?;
        }
        for index in 0..org.users {
            let user_id = Uuid::new_v4();
            let name = format!("{} user {}", org.name, index + 1);
            let email = format!("user{}@{}.test", index + 1, org.external_id);
            // Most users are enabled and configured; every eighth has no CRM
            // authorization (its sessions fail with settings issues); every
            // twelfth has synchronization disabled.
            let status = if index % 12 == 11 { "disabled" } else { "enabled" };
            let crm_configured = index % 8 != 7;
            sqlx::query(
                "INSERT INTO users (id, organization_id, name, email, sync_status, salesforce_instance_url) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user_id)
            .bind(org_id)
            .bind(&name)
            .bind(&email)
            .bind(status)
            .bind(&simulators)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE user_runs SET next_sync_at = $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(cadence::next_slot(user_id, interval, now))
                .execute(&mut *tx)
                .await?;
            let mailbox = DemoMailbox {
                control: &control,
                email: &email,
                name: &name,
            };
            let messages = messages(index, now);
            let owner = Owner::User(user_id);
            match org.access_type {
                "office365" => {
                    let token = mailbox.graph(&messages).await?;
                    seal(&mut tx, &ring, owner, CredentialKind::MailboxRefreshToken, &token).await?;
                }
                "gmail" => {
                    let token = mailbox.gmail(&messages).await?;
                    seal(&mut tx, &ring, owner, CredentialKind::MailboxRefreshToken, &token).await?;
                }
                "exchange_direct" => {
                    let password = mailbox.ews(&messages).await?;
                    seal(&mut tx, &ring, owner, CredentialKind::MailboxPassword, &password).await?;
                }
                // Impersonation: the user's own password is never known to
                // the fleet; the service account opens the mailbox.
                _ => {
                    mailbox.ews(&messages).await?;
                }
            }
            if crm_configured {
                let token = crm.user(&control, index, now).await?;
                seal(&mut tx, &ring, owner, CredentialKind::CrmRefreshToken, &token).await?;
                crm_users += 1;
            }
            users += 1;
        }
    }
    tx.commit().await?;
    pool.close().await;
    println!(
        "Seeded {} demo organizations and {users} users in the simulators at {simulators}.",
        ORGANIZATIONS.len()
    );
    println!(
        "Salesforce org: {} ({} Contacts, {} Leads, {crm_users} users with one Event each).",
        crm.org_id,
        CONTACTS.len(),
        LEADS.len()
    );
    Ok(())
}

/// Kept for the benchmark's seeding: `count` configured users due now.
pub async fn bulk_users(pool: &PgPool, count: usize) -> anyhow::Result<()> {
    let org_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type) VALUES ($1, $2, 'Benchmark', 'office365')",
    )
    .bind(org_id)
    .bind(format!("bench-{}", org_id.simple()))
    .execute(pool)
    .await?;
    for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::new_v4()).collect();
        sqlx::query(
            "INSERT INTO users (id, organization_id, name, email, sync_status, salesforce_instance_url) \
             SELECT id, $2, 'Bench ' || left(id::text, 8), id::text || '@bench.test', 'enabled', \
                    'https://bench.my.salesforce.test' FROM UNNEST($1::uuid[]) AS id",
        )
        .bind(&ids)
        .bind(org_id)
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO credentials (id, user_id, kind, key_version, nonce, ciphertext) \
             SELECT gen_random_uuid(), user_id, kind, 0, '\\x'::bytea, '\\x'::bytea \
             FROM UNNEST($1::uuid[]) AS user_id, UNNEST(ARRAY['mailbox_refresh_token', 'crm_refresh_token']) AS kind",
        )
        .bind(&ids)
        .execute(pool)
        .await?;
    }
    Ok(())
}
