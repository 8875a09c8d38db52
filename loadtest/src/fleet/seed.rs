//! Bulk seeding: organizations and users in PostgreSQL, their Graph
//! mailboxes and Salesforce orgs in the simulators (run as a process),
//! [`BATCH`] users at a time, one statement or one call per batch and kind.
//!
//! Every user is a connected Office 365 user with both refresh tokens sealed.
//! Users share Salesforce orgs ten at a time (see `sync_bench` for why not
//! one org for all), each org with ten Contacts, the counterparts of the mail.
//! How far along the users are is their [`Standing`]:
//!
//! - [`Standing::FirstSession`] (P1-P5): the mailbox initialized but never
//!   synced, five messages within the baseline (three exchanged with Contacts
//!   of their org, one from an unknown company, one from a free-mail
//!   address). A user's first session therefore logs three Tasks; later ones
//!   find nothing new. Users are not due: each phase makes the ones it needs
//!   due.
//! - [`Standing::Steady`] (the real-cadence P2): what the fleet holds of a user
//!   after many sessions on the cadence. The simulators create the mailbox
//!   and the org as already connected (an access token each, the delta links
//!   of Inbox and Sent Items with everything behind them); the database holds
//!   the four credentials (the access tokens kept with their expiry, as the
//!   worker keeps them), the two mail cursors, the mappings of the three
//!   Tasks the first session logged, and the next slot on the cadence with
//!   the last session one interval before it. The Contacts were last changed
//!   before the baseline, so CRM-to-mailbox finds nothing and, as the worker
//!   does when nothing changed, no CRM watermark is stored. Departures from a
//!   real history: the past mail and Tasks are not in the simulators (nothing
//!   in a steady session reads them), and no past sessions are in
//!   `sync_sessions`.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_common::secrets::{CredentialKind, KeyRing, Owner};
use syncfleet_connectors::{mailbox::MailFolder, oauth::EXPIRY_MARGIN};
use syncfleet_worker::sync::KeptSalesforceSession;
use uuid::Uuid;

use crate::demo::ControlApi;

/// Users seeded per batch (one Graph call, one Salesforce call, one
/// transaction): the most mailboxes one bulk call of the simulator takes.
const BATCH: usize = 10_000;
/// Fleet users per Salesforce org.
pub const USERS_PER_SALESFORCE_ORG: usize = 10;
/// Contacts of each Salesforce org.
pub const CONTACTS_PER_ORG: usize = 10;
/// Tasks each user's first session logs.
pub const TASKS_PER_USER: usize = 3;
/// How long a kept Salesforce session is used: the simulator's session
/// timeout and the worker's `SYNCFLEET_SALESFORCE_SESSION_LIFETIME`, both two
/// hours by default.
const SALESFORCE_SESSION: Duration = Duration::from_secs(2 * 60 * 60);
/// How old the steady users' Contacts are: older than any baseline.
const CONTACTS_AGE_DAYS: i64 = 30;

/// How far along the seeded users are; see the module's docs.
#[derive(Debug, Clone, Copy)]
pub enum Standing {
    /// Never synced: the first session takes the baseline's mail.
    FirstSession,
    /// In the steady state of a cadence of `interval`.
    Steady {
        /// The cadence, which spreads the next slots.
        interval: Duration,
        /// The baseline the worker's first delta requests asked for (the
        /// organizations' `baseline_days`, or the worker's default).
        baseline_days: u32,
    },
}

/// What was seeded.
pub struct Seeded {
    /// The users, in the order the phases take them: user `i` is
    /// [`user_email`]`(i)`, of Salesforce org `i / USERS_PER_SALESFORCE_ORG`.
    pub users: Vec<Uuid>,
    pub organizations: usize,
    pub salesforce_orgs: usize,
}

/// The mailbox address of the `index`th user seeded.
pub fn user_email(index: usize) -> String {
    format!("user{index}@loadtest.example")
}

/// The address of Contact `contact` of the `org`th Salesforce org seeded.
pub fn contact_email(org: usize, contact: usize) -> String {
    format!("contact{contact}@customer{}-{org}.example", contact % 5)
}

/// Seeds `count` users over `organizations` organizations, standing as `standing` says.
pub async fn seed(
    pool: &PgPool,
    control: &ControlApi,
    ring: &KeyRing,
    count: usize,
    organizations: usize,
    standing: Standing,
) -> anyhow::Result<Seeded> {
    let organization_ids: Vec<Uuid> = (0..organizations).map(|_| Uuid::now_v7()).collect();
    let names: Vec<String> = (0..organizations).map(|index| format!("Load test {index}")).collect();
    let external_ids: Vec<String> = organization_ids
        .iter()
        .map(|id| format!("loadtest-{}", id.simple()))
        .collect();
    sqlx::query(
        "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled) \
         SELECT id, external_id, name, 'office365', true FROM UNNEST($1::uuid[], $2::text[], $3::text[]) \
             AS o(id, external_id, name)",
    )
    .bind(&organization_ids)
    .bind(&external_ids)
    .bind(&names)
    .execute(pool)
    .await?;

    let mut users = Vec::with_capacity(count);
    let mut salesforce_orgs = 0;
    let mut pending: Option<Batch> = None;
    let mut next = 0;
    // The simulators create batch k + 1 while PostgreSQL stores batch k.
    loop {
        let indexes = next..(next + BATCH).min(count);
        next = indexes.end;
        let provisioning = async {
            match indexes.is_empty() {
                true => Ok(None),
                false => provision(control, indexes, standing).await.map(Some),
            }
        };
        let storing = async {
            match &pending {
                Some(batch) => store(pool, ring, batch, &organization_ids, control, standing).await,
                None => Ok(()),
            }
        };
        let (provisioned, ()) = tokio::try_join!(provisioning, storing)?;
        if let Some(batch) = pending.take() {
            users.extend(batch.ids);
            salesforce_orgs += batch.salesforce_orgs;
            eprintln!("seeded {} of {count} users", users.len());
        }
        pending = provisioned;
        if pending.is_none() {
            break;
        }
    }
    Ok(Seeded {
        users,
        organizations,
        salesforce_orgs,
    })
}

/// A batch of users as the simulators created them, before it is stored.
struct Batch {
    /// The batch's first user's index.
    first: usize,
    ids: Vec<Uuid>,
    emails: Vec<String>,
    salesforce_orgs: usize,
    /// Per user, in order.
    mailboxes: Vec<Mailbox>,
    crm: Vec<Crm>,
    /// When the simulators issued the batch's access tokens (or a moment before).
    issued: DateTime<Utc>,
}

/// What the Graph simulator answered for one mailbox.
struct Mailbox {
    refresh_token: String,
    /// Steady users: the access token and its lifetime, the delta links by folder.
    connected: Option<(String, Duration, BTreeMap<String, String>)>,
}

/// What the Salesforce simulator answered for one user.
struct Crm {
    refresh_token: String,
    /// Steady users: the session kept, as the worker keeps it (sealed as
    /// one JSON document).
    session: Option<KeptSalesforceSession>,
}

/// Creates the batch's Salesforce orgs and Graph mailboxes.
async fn provision(control: &ControlApi, indexes: std::ops::Range<usize>, standing: Standing) -> anyhow::Result<Batch> {
    let issued = Utc::now();
    let steady = matches!(standing, Standing::Steady { .. });
    let first_org = indexes.start / USERS_PER_SALESFORCE_ORG;
    let orgs = indexes.len().div_ceil(USERS_PER_SALESFORCE_ORG);
    // Salesforce first: each org's Contacts are the mail's counterparts.
    let contacts_changed = (issued - chrono::Duration::days(CONTACTS_AGE_DAYS)).to_rfc3339();
    let body = json!({
        "orgs": (0..orgs).map(|org| {
            let contacts: Vec<Value> = (0..CONTACTS_PER_ORG).map(|index| {
                let mut contact = json!({
                    "Email": contact_email(first_org + org, index),
                    "FirstName": format!("Buyer{index}"),
                    "LastName": "Loadtest",
                });
                if steady {
                    contact["CreatedDate"] = json!(contacts_changed);
                    contact["LastModifiedDate"] = json!(contacts_changed);
                }
                contact
            }).collect();
            json!({
                "records": { "Contact": contacts },
                "refresh_tokens": USERS_PER_SALESFORCE_ORG,
                "access_tokens": if steady { USERS_PER_SALESFORCE_ORG } else { 0 },
            })
        }).collect::<Vec<_>>(),
    });
    let answer = control
        .post(&["_control", "salesforce", "orgs", "bulk"], body)
        .await
        .context("seeding Salesforce orgs")?;
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The session's instance and login host: the simulators', as the users'
    // `salesforce_instance_url` names it.
    let salesforce = Url::parse(&control.base_url())?.to_string();
    let mut crm = Vec::with_capacity(indexes.len());
    for org in answer["orgs"]
        .as_array()
        .context("the Salesforce bulk answer lists its orgs")?
    {
        let sessions = strings(&org["access_tokens"]);
        for (position, refresh_token) in strings(&org["refresh_tokens"]).into_iter().enumerate() {
            let session = sessions.get(position).map(|access_token| KeptSalesforceSession {
                access_token: access_token.clone(),
                instance_url: salesforce.clone(),
                login_url: salesforce.clone(),
                org_id: org["org_id"].as_str().map(str::to_owned),
                user_id: org["owner_id"].as_str().map(str::to_owned),
            });
            crm.push(Crm { refresh_token, session });
        }
    }
    anyhow::ensure!(
        crm.len() >= indexes.len() && (!steady || crm.iter().all(|user| user.session.is_some())),
        "the Salesforce bulk answer has {} users' tokens for {} users",
        crm.len(),
        indexes.len()
    );
    crm.truncate(indexes.len());

    let emails: Vec<String> = indexes.clone().map(user_email).collect();
    let mailboxes: Vec<Value> = emails
        .iter()
        .enumerate()
        .map(|(offset, email)| match standing {
            Standing::FirstSession => {
                let org = first_org + offset / USERS_PER_SALESFORCE_ORG;
                let contact = |n: usize| contact_email(org, (offset * TASKS_PER_USER + n) % CONTACTS_PER_ORG);
                json!({ "upn": email, "messages": messages(email, [contact(0), contact(1), contact(2)], issued) })
            }
            Standing::Steady { .. } => json!({ "upn": email }),
        })
        .collect();
    let mut body = json!({ "mailboxes": mailboxes });
    if let Standing::Steady { baseline_days, .. } = standing {
        // The worker's first delta request filters on the baseline (and
        // selects the properties it reads, which is left out here: the
        // links' answers carry every property then, a few bytes more per
        // new message).
        let since =
            (issued - chrono::Duration::days(i64::from(baseline_days))).to_rfc3339_opts(SecondsFormat::Secs, true);
        body["connected"] = json!({ "delta_query": format!("$filter=receivedDateTime ge {since}") });
    }
    let answer = control
        .post(&["_control", "graph", "mailboxes", "bulk"], body)
        .await
        .context("seeding Graph mailboxes")?;
    let mailboxes: Vec<Mailbox> = answer["mailboxes"]
        .as_array()
        .context("the Graph bulk answer lists its mailboxes")?
        .iter()
        .filter_map(|mailbox| {
            let refresh_token = mailbox["refresh_token"].as_str()?.to_owned();
            let connected = mailbox["connected"].as_object().and_then(|connected| {
                let links = connected.get("delta_links")?.as_object()?;
                Some((
                    connected.get("access_token")?.as_str()?.to_owned(),
                    Duration::from_secs(connected.get("expires_in")?.as_u64()?),
                    links
                        .iter()
                        .filter_map(|(folder, link)| Some((folder.clone(), link.as_str()?.to_owned())))
                        .collect(),
                ))
            });
            Some(Mailbox {
                refresh_token,
                connected,
            })
        })
        .collect();
    anyhow::ensure!(
        mailboxes.len() == indexes.len() && (!steady || mailboxes.iter().all(|mailbox| mailbox.connected.is_some())),
        "the Graph bulk answer has {} mailboxes for {} users",
        mailboxes.len(),
        indexes.len()
    );
    Ok(Batch {
        first: indexes.start,
        ids: indexes.map(|_| Uuid::new_v4()).collect(),
        emails,
        salesforce_orgs: orgs,
        mailboxes,
        crm,
        issued,
    })
}

/// Stores a batch's users in one transaction: no scheduler sees a user before
/// it is whole.
async fn store(
    pool: &PgPool,
    ring: &KeyRing,
    batch: &Batch,
    organization_ids: &[Uuid],
    control: &ControlApi,
    standing: Standing,
) -> anyhow::Result<()> {
    let organization_of: Vec<Uuid> = (batch.first..batch.first + batch.ids.len())
        .map(|index| organization_ids[index % organization_ids.len()])
        .collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO users (id, organization_id, name, email, sync_status, mailbox_status, salesforce_instance_url) \
         SELECT id, organization_id, 'Load ' || email, email, 'enabled', 'initialized', $4 \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS u(id, organization_id, email)",
    )
    .bind(&batch.ids)
    .bind(&organization_of)
    .bind(&batch.emails)
    .bind(control.base_url())
    .execute(&mut *tx)
    .await?;
    match standing {
        Standing::FirstSession => {
            sqlx::query("UPDATE user_runs SET next_sync_at = now() + interval '10 years' WHERE user_id = ANY($1)")
                .bind(&batch.ids)
                .execute(&mut *tx)
                .await?;
        }
        Standing::Steady { interval, .. } => {
            let slots: Vec<DateTime<Utc>> = batch
                .ids
                .iter()
                .map(|user| syncfleet_common::cadence::next_slot(*user, interval, batch.issued))
                .collect();
            sqlx::query(
                "UPDATE user_runs r SET next_sync_at = s.slot, last_session_at = s.slot - $3 * interval '1 millisecond', \
                     last_session_status = 'succeeded' \
                 FROM UNNEST($1::uuid[], $2::timestamptz[]) AS s(id, slot) WHERE r.user_id = s.id",
            )
            .bind(&batch.ids)
            .bind(&slots)
            .bind(interval.as_millis() as f64)
            .execute(&mut *tx)
            .await?;
            insert_cursors(&mut tx, batch).await?;
            insert_mappings(&mut tx, &batch.ids).await?;
        }
    }
    insert_credentials(&mut tx, ring, batch).await?;
    tx.commit().await?;
    Ok(())
}

/// The mail cursors of every steady user: the delta links of Inbox and Sent
/// Items, under the worker's stream names.
async fn insert_cursors(tx: &mut sqlx::PgConnection, batch: &Batch) -> anyhow::Result<()> {
    let (mut users, mut streams, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for (user, mailbox) in batch.ids.iter().zip(&batch.mailboxes) {
        let Some((_, _, links)) = &mailbox.connected else {
            continue;
        };
        for (folder, graph_name) in [(MailFolder::Inbox, "inbox"), (MailFolder::SentItems, "sentitems")] {
            let link = links
                .get(graph_name)
                .with_context(|| format!("the Graph bulk answer has no {graph_name} delta link"))?;
            users.push(*user);
            streams.push(format!("mail:{}", folder.as_str()));
            tokens.push(link.clone());
        }
    }
    sqlx::query(
        "INSERT INTO sync_state (user_id, stream, token) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[])",
    )
    .bind(users)
    .bind(streams)
    .bind(tokens)
    .execute(tx)
    .await?;
    Ok(())
}

/// The mappings of the Tasks each steady user's first session logged, ids
/// shaped as Graph's, Salesforce's and the worker's are.
async fn insert_mappings(tx: &mut sqlx::PgConnection, users: &[Uuid]) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO item_mappings (user_id, mailbox_item_id, crm_object, crm_id, external_id, direction) \
         SELECT u.id, 'AAkALg' || md5(u.id::text || n), 'Task', '00T' || upper(left(md5(n || u.id::text), 12)), \
             'sf1-' || left(encode(sha256((u.id::text || '|mid:' || n)::bytea), 'hex'), 40), 'mailbox_to_crm' \
         FROM UNNEST($1::uuid[]) AS u(id), generate_series(1, $2) AS n",
    )
    .bind(users)
    .bind(TASKS_PER_USER as i32)
    .execute(tx)
    .await?;
    Ok(())
}

/// Every credential of the batch's users, sealed, as one statement: both
/// refresh tokens, and for steady users both access tokens with the moment
/// the worker stops using them.
async fn insert_credentials(tx: &mut sqlx::PgConnection, ring: &KeyRing, batch: &Batch) -> anyhow::Result<()> {
    let capacity = batch.ids.len() * 4;
    let (mut owners, mut kinds, mut ids) = (
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
    );
    let (mut versions, mut nonces, mut ciphertexts, mut expiries) = (
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
    );
    let usable = |lifetime: Duration| {
        batch.issued + chrono::Duration::from_std(lifetime.saturating_sub(EXPIRY_MARGIN)).unwrap_or_default()
    };
    for ((user, mailbox), crm) in batch.ids.iter().zip(&batch.mailboxes).zip(&batch.crm) {
        let mut credentials: Vec<(CredentialKind, String, Option<DateTime<Utc>>)> = vec![
            (CredentialKind::MailboxRefreshToken, mailbox.refresh_token.clone(), None),
            (CredentialKind::CrmRefreshToken, crm.refresh_token.clone(), None),
        ];
        if let Some((token, lifetime, _)) = &mailbox.connected {
            credentials.push((
                CredentialKind::MailboxAccessToken,
                token.clone(),
                Some(usable(*lifetime)),
            ));
        }
        if let Some(session) = &crm.session {
            credentials.push((
                CredentialKind::CrmAccessToken,
                serde_json::to_string(session)?,
                Some(usable(SALESFORCE_SESSION)),
            ));
        }
        for (kind, token, expires) in credentials {
            let sealed = ring.seal(Owner::User(*user), kind, &SecretString::from(token));
            owners.push(*user);
            kinds.push(kind.as_str());
            ids.push(Uuid::now_v7());
            versions.push(sealed.key_version);
            nonces.push(sealed.nonce);
            ciphertexts.push(sealed.ciphertext);
            expiries.push(expires);
        }
    }
    sqlx::query(
        "INSERT INTO credentials (user_id, kind, id, key_version, nonce, ciphertext, expires_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::int4[], $5::bytea[], $6::bytea[], \
             $7::timestamptz[])",
    )
    .bind(owners)
    .bind(kinds)
    .bind(ids)
    .bind(versions)
    .bind(nonces)
    .bind(ciphertexts)
    .bind(expiries)
    .execute(tx)
    .await?;
    Ok(())
}

/// A message received by `email` from `from`, sent `at`.
pub fn received(email: &str, from: &str, subject: &str, at: DateTime<Utc>) -> Value {
    json!({
        "folder": "inbox",
        "from": { "address": from },
        "to": [{ "address": email }],
        "subject": subject,
        "sent_at": at.to_rfc3339(),
        "body": format!("About {subject}."),
    })
}

/// A user's five messages: two received from Contacts and one sent to a
/// Contact (the three Tasks), one from an unknown company, one from free mail.
pub fn messages(email: &str, contacts: [String; 3], now: DateTime<Utc>) -> Vec<Value> {
    let at = |minutes: i64| now - chrono::Duration::minutes(60 + minutes);
    let [first, second, third] = contacts;
    vec![
        received(email, &first, "Proposal", at(50)),
        received(email, &second, "Pricing question", at(40)),
        received(email, "news@unknown-vendor.example", "Newsletter", at(30)),
        received(email, "someone@gmail.com", "Private note", at(20)),
        json!({
            "folder": "sent_items",
            "from": { "address": email },
            "to": [{ "address": third }],
            "subject": "Re: Proposal",
            "sent_at": at(10).to_rfc3339(),
            "body": "Here is the proposal.",
        }),
    ]
}
