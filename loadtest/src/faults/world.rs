//! The run's organizations, users and mail: Office 365, Exchange (Direct
//! Logon) and Gmail users, each with a Salesforce authorization (ten users
//! per simulated Salesforce org, whose Contacts they write with), and the
//! ledger: every message put in a mailbox, so that the end can check it was
//! logged in Salesforce exactly once.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_common::secrets::{self, CredentialKind, KeyRing, Owner};
use uuid::Uuid;

use crate::demo::ControlApi;

/// Users per simulated Salesforce org.
const USERS_PER_SALESFORCE_ORG: usize = 10;
/// Contacts of each Salesforce org (the ledger's counterparts).
const CONTACTS_PER_ORG: usize = 10;
/// Messages in each mailbox before the first session (its baseline).
const FIRST_MESSAGES: usize = 2;
/// The EWS endpoint's path on the simulators' listener.
const EWS_PATH: &str = "/EWS/Exchange.asmx";

/// How a user's mailbox is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Graph,
    Ews,
    Gmail,
}

impl Access {
    /// The organization's `access_type`.
    pub fn access_type(self) -> &'static str {
        match self {
            Self::Graph => "office365",
            Self::Ews => "exchange_direct",
            Self::Gmail => "gmail",
        }
    }

    /// Half of the users on Office 365, a quarter each on Exchange and Gmail.
    fn of(index: usize) -> Self {
        match index % 4 {
            0 | 1 => Self::Graph,
            2 => Self::Ews,
            _ => Self::Gmail,
        }
    }
}

/// A seeded user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub access: Access,
    pub organization: Uuid,
    /// The index of their Salesforce org in [`World::salesforce_orgs`].
    pub salesforce_org: usize,
    /// Their organization's admin (the pusher of the run's pushes).
    pub admin: bool,
}

/// A message put in a mailbox.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The index of its mailbox's user in [`World::users`].
    pub user: usize,
    /// Unique in the run: the Task's subject is `Email: {subject}`.
    pub subject: String,
    /// The Contact who sent it.
    pub contact: String,
    pub added_at: DateTime<Utc>,
}

/// What was seeded, and the ledger.
pub struct World {
    pub users: Vec<User>,
    /// Every simulated Salesforce org's id.
    pub salesforce_orgs: Vec<String>,
    /// Every message put in a mailbox, in order.
    pub ledger: Vec<Entry>,
    /// The seeded secrets (refresh tokens, passwords): none may reach a log.
    pub secrets: Vec<String>,
    run: String,
}

/// Contact `index` of Salesforce org `org`.
fn contact(org: usize, index: usize) -> String {
    format!("buyer{index}@customer{org}.example")
}

impl World {
    /// Seeds `count` users over three organizations (one per access type), in
    /// the simulators and the database, each due at a spread moment of the
    /// first `interval`.
    pub async fn seed(
        pool: &PgPool,
        control: &ControlApi,
        ring: &KeyRing,
        count: usize,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let simulators = control.base_url();
        let run = Uuid::new_v4().simple().to_string()[..6].to_owned();
        let mut world = Self {
            users: Vec::with_capacity(count),
            salesforce_orgs: Vec::new(),
            ledger: Vec::new(),
            secrets: Vec::new(),
            run,
        };

        let orgs = count.div_ceil(USERS_PER_SALESFORCE_ORG);
        let body = json!({
            "orgs": (0..orgs).map(|org| json!({
                "records": { "Contact": (0..CONTACTS_PER_ORG).map(|index| json!({
                    "Email": contact(org, index), "FirstName": format!("Buyer{index}"), "LastName": format!("Customer{org}"),
                })).collect::<Vec<_>>() },
                "refresh_tokens": USERS_PER_SALESFORCE_ORG,
            })).collect::<Vec<_>>(),
        });
        let answer = control
            .post(&["_control", "salesforce", "orgs", "bulk"], body)
            .await
            .context("seeding Salesforce orgs")?;
        let mut crm_tokens = Vec::with_capacity(count);
        for org in answer["orgs"].as_array().context("the bulk answer lists its orgs")? {
            world
                .salesforce_orgs
                .push(org["org_id"].as_str().context("an org without id")?.to_owned());
            for token in org["refresh_tokens"].as_array().into_iter().flatten() {
                crm_tokens.push(token.as_str().context("a token that is no text")?.to_owned());
            }
        }
        anyhow::ensure!(crm_tokens.len() >= count, "too few Salesforce refresh tokens");

        let mut tx = pool.begin().await?;
        let mut organizations = Vec::new();
        for access in [Access::Graph, Access::Ews, Access::Gmail] {
            let id = Uuid::now_v7();
            let ews_url = (access == Access::Ews).then(|| format!("{simulators}{EWS_PATH}"));
            sqlx::query(
                "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled, ews_url) \
                 VALUES ($1, $2, $3, $4, true, $5)",
            )
            .bind(id)
            .bind(format!("faults-{}-{}", access.access_type(), world.run))
            .bind(format!("Faults {}", access.access_type()))
            .bind(access.access_type())
            .bind(ews_url)
            .execute(&mut *tx)
            .await?;
            organizations.push((access, id));
        }

        let now = Utc::now();
        for (index, crm_token) in crm_tokens.into_iter().enumerate().take(count) {
            let access = Access::of(index);
            let organization = organizations
                .iter()
                .find(|(kind, _)| *kind == access)
                .map(|(_, id)| *id)
                .context("every access type has its organization")?;
            let user = User {
                id: Uuid::new_v4(),
                email: format!("user{index}-{}@{}.example", world.run, access.access_type()),
                access,
                organization,
                salesforce_org: index / USERS_PER_SALESFORCE_ORG,
                admin: index < 4 && index != 1,
            };
            let first: Vec<Entry> = (0..FIRST_MESSAGES)
                .map(|n| world.entry(index, &user, n, now - chrono::Duration::hours(2)))
                .collect();
            let mailbox_secret = mailbox(control, &user, &first).await?;
            world.ledger.extend(first);
            let due = now + chrono::Duration::milliseconds((interval.as_millis() as usize * index / count) as i64);
            sqlx::query(
                "INSERT INTO users (id, organization_id, name, email, role, sync_status, salesforce_instance_url) \
                 VALUES ($1, $2, $3, $4, $5, 'enabled', $6)",
            )
            .bind(user.id)
            .bind(user.organization)
            .bind(format!("Faults user {index}"))
            .bind(&user.email)
            .bind(if user.admin { "org_admin" } else { "user" })
            .bind(&simulators)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE user_runs SET next_sync_at = $2 WHERE user_id = $1")
                .bind(user.id)
                .bind(due)
                .execute(&mut *tx)
                .await?;
            let mailbox_kind = match access {
                Access::Ews => CredentialKind::MailboxPassword,
                Access::Graph | Access::Gmail => CredentialKind::MailboxRefreshToken,
            };
            for (kind, secret) in [
                (mailbox_kind, mailbox_secret),
                (CredentialKind::CrmRefreshToken, crm_token),
            ] {
                secrets::store(
                    &mut *tx,
                    ring,
                    Owner::User(user.id),
                    kind,
                    &SecretString::from(secret.clone()),
                )
                .await?;
                world.secrets.push(secret);
            }
            world.users.push(user);
            if (index + 1) % 100 == 0 {
                eprintln!("seeded {} of {count} users", index + 1);
            }
        }
        tx.commit().await?;
        Ok(world)
    }

    /// The `n`-th first message of a user, or a ledger message.
    fn entry(&self, index: usize, user: &User, n: usize, at: DateTime<Utc>) -> Entry {
        Entry {
            user: index,
            subject: format!("Ledger {}-{index}-{n}", self.run),
            contact: contact(user.salesforce_org, (index + n) % CONTACTS_PER_ORG),
            added_at: at,
        }
    }

    /// Puts a new message from one of their Contacts in user `index`'s
    /// inbox and records it in the ledger.
    pub async fn add_message(&mut self, control: &ControlApi, index: usize) -> anyhow::Result<()> {
        let user = self.users[index].clone();
        let n = FIRST_MESSAGES + self.ledger.iter().filter(|entry| entry.user == index).count();
        let entry = self.entry(index, &user, n, Utc::now());
        put_message(control, &user, &entry).await?;
        self.ledger.push(entry);
        Ok(())
    }
}

/// Creates the user's mailbox with `messages`; answers the secret the fleet
/// opens it with (a refresh token, or the Exchange password).
async fn mailbox(control: &ControlApi, user: &User, messages: &[Entry]) -> anyhow::Result<String> {
    let secret = match user.access {
        Access::Graph => {
            let answer = control
                .post(&["_control", "graph", "mailboxes"], json!({ "upn": user.email }))
                .await?;
            text(&answer, "refresh_token")?
        }
        Access::Gmail => {
            let answer = control
                .post(&["_control", "gmail", "mailboxes"], json!({ "email": user.email }))
                .await?;
            text(&answer, "refresh_token")?
        }
        Access::Ews => {
            let password = format!("Faults-{}", Uuid::new_v4().simple());
            control
                .post(
                    &["_control", "ews", "accounts"],
                    json!({ "account": user.email, "password": password }),
                )
                .await?;
            control
                .post(
                    &["_control", "ews", "mailboxes"],
                    json!({ "smtp": user.email, "owner": user.email }),
                )
                .await?;
            password
        }
    };
    for entry in messages {
        put_message(control, user, entry).await?;
    }
    Ok(secret)
}

/// Puts `entry` in the user's inbox, from its Contact.
async fn put_message(control: &ControlApi, user: &User, entry: &Entry) -> anyhow::Result<()> {
    let at = entry.added_at.to_rfc3339();
    let body = format!("About {}.", entry.subject);
    let (segments, message) = match user.access {
        Access::Graph => (
            ["_control", "graph", "mailboxes", user.email.as_str(), "messages"],
            json!({
                "folder": "inbox", "from": { "address": entry.contact }, "to": [{ "address": user.email }],
                "subject": entry.subject, "sent_at": at, "body": body,
            }),
        ),
        Access::Ews => (
            ["_control", "ews", "mailboxes", user.email.as_str(), "messages"],
            json!({
                "folder": "inbox", "subject": entry.subject,
                "from": { "address": entry.contact, "name": "Buyer" },
                "to": [{ "address": user.email, "name": "User" }], "body": body,
                "internet_message_id": format!("<{}@customer.example>", Uuid::new_v4().simple()),
                "sent": at, "received": at,
            }),
        ),
        Access::Gmail => (
            ["_control", "gmail", "mailboxes", user.email.as_str(), "messages"],
            json!({
                "from": format!("Buyer <{}>", entry.contact), "to": [format!("User <{}>", user.email)],
                "subject": entry.subject, "sent_at": at, "snippet": body, "sent": false,
            }),
        ),
    };
    control
        .post(&segments, message)
        .await
        .with_context(|| format!("adding {} to {}", entry.subject, user.email))?;
    Ok(())
}

fn text(answer: &Value, field: &str) -> anyhow::Result<String> {
    answer[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the simulator's answer has no {field}"))
}
