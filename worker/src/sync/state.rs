//! A user's sync state in PostgreSQL: the cursor of each stream (delta
//! tokens, sync states, history ids, CRM watermarks; the settings query reads
//! them all) and the item mappings between mailbox items and CRM records.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

/// Which way a mapping was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A mailbox item logged to the CRM.
    MailboxToCrm,
    /// A CRM record written into the mailbox.
    CrmToMailbox,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::MailboxToCrm => "mailbox_to_crm",
            Direction::CrmToMailbox => "crm_to_mailbox",
        }
    }
}

/// One mailbox item and the CRM record it corresponds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The mailbox item's id.
    pub mailbox_item_id: String,
    /// The CRM object (`Task`, `Event`, `Contact`).
    pub crm_object: &'static str,
    /// The CRM record's id.
    pub crm_id: String,
    /// The external id it was written under (the CRM id for CRM-to-mailbox).
    pub external_id: String,
}

/// Records `mappings` (one statement; a replay updates them in place).
pub async fn save_mappings(
    pool: &PgPool,
    user_id: Uuid,
    direction: Direction,
    mappings: &[Mapping],
) -> Result<(), sqlx::Error> {
    if mappings.is_empty() {
        return Ok(());
    }
    let items: Vec<&str> = mappings
        .iter()
        .map(|mapping| mapping.mailbox_item_id.as_str())
        .collect();
    let objects: Vec<&str> = mappings.iter().map(|mapping| mapping.crm_object).collect();
    let crm_ids: Vec<&str> = mappings.iter().map(|mapping| mapping.crm_id.as_str()).collect();
    let external_ids: Vec<&str> = mappings.iter().map(|mapping| mapping.external_id.as_str()).collect();
    sqlx::query!(
        "INSERT INTO item_mappings (user_id, mailbox_item_id, crm_object, crm_id, external_id, direction) \
         SELECT DISTINCT ON (item) $1, item, object, crm_id, external_id, $6 \
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[]) AS m(item, object, crm_id, external_id) \
         ON CONFLICT (user_id, mailbox_item_id) DO UPDATE SET crm_object = EXCLUDED.crm_object, \
             crm_id = EXCLUDED.crm_id, external_id = EXCLUDED.external_id, direction = EXCLUDED.direction, \
             updated_at = now()",
        user_id,
        &items as &[&str],
        &objects as &[&str],
        &crm_ids as &[&str],
        &external_ids as &[&str],
        direction.as_str()
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The mailbox item last written for each of `crm_ids`.
pub async fn mailbox_items_of(
    pool: &PgPool,
    user_id: Uuid,
    crm_ids: &[String],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT DISTINCT ON (crm_id) crm_id, mailbox_item_id FROM item_mappings \
         WHERE user_id = $1 AND crm_id = ANY($2) AND direction = 'crm_to_mailbox' \
         ORDER BY crm_id, updated_at DESC",
        user_id,
        crm_ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.crm_id, row.mailbox_item_id)).collect())
}
