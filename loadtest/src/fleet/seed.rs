//! Bulk seeding: organizations and users in PostgreSQL, their Graph
//! mailboxes and Salesforce orgs in the simulators (run as a process), a few
//! thousand at a time, one statement or one call per batch.
//!
//! Every user is the steady state of a connected Office 365 user: mailbox
//! initialized, both refresh tokens sealed, five messages within the baseline
//! (three exchanged with Contacts of their Salesforce org, one from an unknown
//! company, one from a free-mail address). A user's first session therefore
//! logs three Tasks; later ones find nothing new. Users share Salesforce orgs
//! ten at a time (see `sync_bench` for why not one org for all). Users are
//! not due: each phase of the run makes the ones it needs due.

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use syncfleet_common::secrets::{CredentialKind, KeyRing, Owner};
use uuid::Uuid;

use crate::demo::ControlApi;

/// Users seeded per batch (one Graph call, one Salesforce call, a few statements).
const BATCH: usize = 5_000;
/// Fleet users per Salesforce org.
pub const USERS_PER_SALESFORCE_ORG: usize = 10;
/// Contacts of each Salesforce org.
pub const CONTACTS_PER_ORG: usize = 10;
/// Tasks each user's first session logs.
pub const TASKS_PER_USER: usize = 3;

/// What was seeded.
pub struct Seeded {
    /// The users, in the order the phases take them.
    pub users: Vec<Uuid>,
    pub organizations: usize,
    pub salesforce_orgs: usize,
}

/// Seeds `count` users over `organizations` organizations.
pub async fn seed(
    pool: &PgPool,
    control: &ControlApi,
    ring: &KeyRing,
    count: usize,
    organizations: usize,
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

    let salesforce_url = control.base_url();
    let now = Utc::now();
    let mut users = Vec::with_capacity(count);
    let mut salesforce_orgs = 0;
    for start in (0..count).step_by(BATCH) {
        let indexes = start..(start + BATCH).min(count);
        // Salesforce first: each org's Contacts are the mail's counterparts.
        let orgs = indexes.len().div_ceil(USERS_PER_SALESFORCE_ORG);
        let contacts = |org: usize| -> Vec<String> {
            (0..CONTACTS_PER_ORG)
                .map(|index| format!("contact{index}@customer{}-{}.example", index % 5, salesforce_orgs + org))
                .collect()
        };
        let body = json!({
            "orgs": (0..orgs).map(|org| json!({
                "records": { "Contact": contacts(org).iter().enumerate().map(|(index, email)| json!({
                    "Email": email, "FirstName": format!("Buyer{index}"), "LastName": "Loadtest",
                })).collect::<Vec<_>>() },
                "refresh_tokens": USERS_PER_SALESFORCE_ORG,
            })).collect::<Vec<_>>(),
        });
        let answer = control
            .post(&["_control", "salesforce", "orgs", "bulk"], body)
            .await
            .context("seeding Salesforce orgs")?;
        let crm_tokens: Vec<String> = answer["orgs"]
            .as_array()
            .context("the Salesforce bulk answer lists its orgs")?
            .iter()
            .flat_map(|org| org["refresh_tokens"].as_array().cloned().unwrap_or_default())
            .filter_map(|token| token.as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(
            crm_tokens.len() >= indexes.len(),
            "the Salesforce bulk answer has {} refresh tokens for {} users",
            crm_tokens.len(),
            indexes.len()
        );

        let emails: Vec<String> = indexes
            .clone()
            .map(|index| format!("user{index}@loadtest.example"))
            .collect();
        let mailboxes: Vec<Value> = emails
            .iter()
            .enumerate()
            .map(|(offset, email)| {
                let org_contacts = contacts(offset / USERS_PER_SALESFORCE_ORG);
                let contact = |n: usize| org_contacts[(offset * TASKS_PER_USER + n) % CONTACTS_PER_ORG].clone();
                json!({ "upn": email, "messages": messages(email, [contact(0), contact(1), contact(2)], now) })
            })
            .collect();
        let answer = control
            .post(
                &["_control", "graph", "mailboxes", "bulk"],
                json!({ "mailboxes": mailboxes }),
            )
            .await
            .context("seeding Graph mailboxes")?;
        let mailbox_tokens: Vec<String> = answer["mailboxes"]
            .as_array()
            .context("the Graph bulk answer lists its mailboxes")?
            .iter()
            .filter_map(|mailbox| mailbox["refresh_token"].as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(
            mailbox_tokens.len() == indexes.len(),
            "the Graph bulk answer has {} refresh tokens for {} users",
            mailbox_tokens.len(),
            indexes.len()
        );

        let ids: Vec<Uuid> = indexes.clone().map(|_| Uuid::new_v4()).collect();
        let organization_of: Vec<Uuid> = indexes
            .clone()
            .map(|index| organization_ids[index % organizations])
            .collect();
        // One transaction: no scheduler sees the users due at their creation.
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, organization_id, name, email, sync_status, mailbox_status, salesforce_instance_url) \
             SELECT id, organization_id, 'Load ' || email, email, 'enabled', 'initialized', $4 \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS u(id, organization_id, email)",
        )
        .bind(&ids)
        .bind(&organization_of)
        .bind(&emails)
        .bind(&salesforce_url)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE user_runs SET next_sync_at = now() + interval '10 years' WHERE user_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        insert_credentials(pool, ring, &ids, &mailbox_tokens, &crm_tokens).await?;
        users.extend(ids);
        salesforce_orgs += orgs;
        eprintln!("seeded {} of {count} users", users.len());
    }
    Ok(Seeded {
        users,
        organizations,
        salesforce_orgs,
    })
}

/// Both refresh tokens of every user, sealed, in one statement.
async fn insert_credentials(
    pool: &PgPool,
    ring: &KeyRing,
    users: &[Uuid],
    mailbox_tokens: &[String],
    crm_tokens: &[String],
) -> anyhow::Result<()> {
    let capacity = users.len() * 2;
    let (mut owners, mut kinds, mut ids) = (
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
    );
    let (mut versions, mut nonces, mut ciphertexts) = (
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
        Vec::with_capacity(capacity),
    );
    for ((user, mailbox), crm) in users.iter().zip(mailbox_tokens).zip(crm_tokens) {
        for (kind, token) in [
            (CredentialKind::MailboxRefreshToken, mailbox),
            (CredentialKind::CrmRefreshToken, crm),
        ] {
            let sealed = ring.seal(Owner::User(*user), kind, &SecretString::from(token.clone()));
            owners.push(*user);
            kinds.push(kind.as_str());
            ids.push(Uuid::now_v7());
            versions.push(sealed.key_version);
            nonces.push(sealed.nonce);
            ciphertexts.push(sealed.ciphertext);
        }
    }
    sqlx::query(
        "INSERT INTO credentials (user_id, kind, id, key_version, nonce, ciphertext) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::int4[], $5::bytea[], $6::bytea[])",
    )
    .bind(owners)
    .bind(kinds)
    .bind(ids)
    .bind(versions)
    .bind(nonces)
    .bind(ciphertexts)
    .execute(pool)
    .await?;
    Ok(())
}

/// A user's five messages: two received from Contacts and one sent to a
/// Contact (the three Tasks), one from an unknown company, one from free mail.
pub fn messages(email: &str, contacts: [String; 3], now: DateTime<Utc>) -> Vec<Value> {
    let at = |minutes: i64| (now - chrono::Duration::minutes(60 + minutes)).to_rfc3339();
    let received = |from: &str, subject: &str, minutes: i64| {
        json!({
            "folder": "inbox",
            "from": { "address": from },
            "to": [{ "address": email }],
            "subject": subject,
            "sent_at": at(minutes),
            "body": format!("About {subject}."),
        })
    };
    let [first, second, third] = contacts;
    vec![
        received(&first, "Proposal", 50),
        received(&second, "Pricing question", 40),
        received("news@unknown-vendor.example", "Newsletter", 30),
        received("someone@gmail.com", "Private note", 20),
        json!({
            "folder": "sent_items",
            "from": { "address": email },
            "to": [{ "address": third }],
            "subject": "Re: Proposal",
            "sent_at": at(10),
            "body": "Here is the proposal.",
        }),
    ]
}
