//! The local demo's organizations and users: enough variety to show the
//! cadence, settings issues and the effective status at work.

use anyhow::Context;
use chrono::Utc;
use sqlx::PgPool;
use syncfleet_common::{
    cadence,
    config::{CommonConfig, Source},
    db,
};
use uuid::Uuid;

struct DemoOrganization {
    external_id: &'static str,
    name: &'static str,
    access_type: &'static str,
    sync_enabled: bool,
    users: usize,
}

const ORGANIZATIONS: [DemoOrganization; 3] = [
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
];

/// Replaces the demo organizations and their users. Credentials are stored as
/// placeholders: this build's sync work checks that they exist and never
/// decrypts them (the connectors bring real encrypted secrets).
pub async fn seed(source: &Source) -> anyhow::Result<()> {
    let config = CommonConfig::from_source(source)?;
    let pool = db::connect(&config).await.context("connecting to PostgreSQL")?;
    let interval = source.duration(&syncfleet_scheduler::config::SYNC_INTERVAL)?;
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM organizations WHERE external_id = ANY($1)")
        .bind(ORGANIZATIONS.iter().map(|org| org.external_id).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    for org in &ORGANIZATIONS {
        let org_id = Uuid::now_v7();
        let impersonation = org.access_type == "exchange_impersonation";
        sqlx::query(
            "INSERT INTO organizations (id, external_id, name, access_type, sync_enabled, ews_url, impersonation_account) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(org_id)
        .bind(org.external_id)
        .bind(org.name)
        .bind(org.access_type)
        .bind(org.sync_enabled)
        .bind(impersonation.then_some("https://mail.globex.test/EWS/Exchange.asmx"))
        .bind(impersonation.then_some("svc-sync@globex.test"))
        .execute(&mut *tx)
        .await?;
        if impersonation {
            placeholder_credential(&mut tx, None, Some(org_id), "impersonation_password").await?;
        }
        for index in 0..org.users {
            let user_id = Uuid::new_v4();
            // Most users are enabled and configured; every eighth has no CRM
            // authorization (its sessions fail with settings issues); every
            // twelfth has synchronization disabled.
            let status = if index % 12 == 11 { "disabled" } else { "enabled" };
            let crm_configured = index % 8 != 7;
            sqlx::query(
                "INSERT INTO users (id, organization_id, name, email, sync_status, next_sync_at, salesforce_instance_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'https://demo.my.salesforce.test')",
            )
            .bind(user_id)
            .bind(org_id)
            .bind(format!("{} user {}", org.name, index + 1))
            .bind(format!("user{}@{}.test", index + 1, org.external_id))
            .bind(status)
            .bind(cadence::next_slot(user_id, interval, Utc::now()))
            .execute(&mut *tx)
            .await?;
            if !impersonation {
                placeholder_credential(&mut tx, Some(user_id), None, "mailbox_refresh_token").await?;
            }
            if crm_configured {
                placeholder_credential(&mut tx, Some(user_id), None, "crm_refresh_token").await?;
            }
        }
    }
    tx.commit().await?;
    let total: usize = ORGANIZATIONS.iter().map(|org| org.users).sum();
    println!("Seeded {} demo organizations and {total} users.", ORGANIZATIONS.len());
    pool.close().await;
    Ok(())
}

async fn placeholder_credential(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user_id: Option<Uuid>,
    organization_id: Option<Uuid>,
    kind: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO credentials (id, user_id, organization_id, kind, key_version, nonce, ciphertext) \
         VALUES ($1, $2, $3, $4, 0, '\\x'::bytea, '\\x'::bytea)",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(organization_id)
    .bind(kind)
    .execute(&mut **tx)
    .await?;
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
            "INSERT INTO users (id, organization_id, name, email, sync_status, next_sync_at, salesforce_instance_url) \
             SELECT id, $2, 'Bench ' || left(id::text, 8), id::text || '@bench.test', 'enabled', now(), \
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
