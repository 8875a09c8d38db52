//! Secrets at rest (R6): mailbox passwords, refresh tokens and impersonation
//! passwords are sealed with AES-256-GCM under a versioned key, bound to the
//! row and field they belong to, and stored in `credentials`. A secret is
//! opened only by the call that needs it and lives in a [`SecretString`],
//! whose `Debug` never shows it.
//!
//! The key ring comes from `SYNCFLEET_ENCRYPTION_KEYS`: comma-separated
//! `version:key` pairs, each key 32 bytes in standard base64. The highest
//! version seals; every listed version opens. Rotating means adding a higher
//! version, running `syncfleet-api secrets reencrypt` (which reseals every row
//! under it), then dropping the old version.
//!
//! The associated data binds a ciphertext to its owner and field: a sealed
//! value copied to another user's row, or from the password field to the
//! refresh token field, does not open.

use std::{collections::BTreeMap, fmt, sync::Arc};

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::config::{ConfigError, Setting, Source};

/// The key ring's setting.
pub const ENCRYPTION_KEYS: Setting = Setting {
    name: "SYNCFLEET_ENCRYPTION_KEYS",
    default: "",
    doc: "Keys sealing stored credentials with AES-256-GCM: comma-separated version:key pairs, each key 32 bytes in base64; the highest version seals, all open. Generate one with `openssl rand -base64 32`.",
};

/// The key ring configured in `source`; `None` when the setting is empty.
pub fn configured_key_ring(source: &Source) -> Result<Option<KeyRing>, ConfigError> {
    let spec = source.secret(&ENCRYPTION_KEYS);
    if spec.expose_secret().trim().is_empty() {
        return Ok(None);
    }
    KeyRing::parse(&spec).map(Some).map_err(|error| ConfigError::Invalid {
        name: ENCRYPTION_KEYS.name,
        reason: error.to_string(),
    })
}

/// Why a key ring could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// No key at all.
    #[error("no key: give at least one version:key pair")]
    Empty,
    /// A pair is malformed; the message never holds key material.
    #[error("entry {position}: {reason}")]
    Invalid {
        /// The 1-based position of the pair.
        position: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a sealed secret did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The key version it was sealed under is not in the ring.
    #[error("the credential was sealed under key version {0}, which is not configured")]
    UnknownKey(i32),
    /// The ciphertext, its nonce or its binding does not match: tampered
    /// with, copied from another row or field, or sealed under another key.
    #[error("the credential does not open: it was altered or belongs to another row")]
    Corrupt,
}

/// Whose credential it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A user's own credential.
    User(Uuid),
    /// An organization's (the impersonation account's password).
    Organization(Uuid),
}

impl Owner {
    fn binding(self, kind: CredentialKind) -> String {
        match self {
            Owner::User(id) => format!("syncfleet/credentials/user/{id}/{}", kind.as_str()),
            Owner::Organization(id) => format!("syncfleet/credentials/organization/{id}/{}", kind.as_str()),
        }
    }
}

/// Which credential (the field a sealed value is bound to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// An Exchange Direct Logon password.
    MailboxPassword,
    /// A Microsoft or Google refresh token.
    MailboxRefreshToken,
    /// A Salesforce refresh token.
    CrmRefreshToken,
    /// The organization's impersonation account password.
    ImpersonationPassword,
    /// A Microsoft or Google access token kept between sessions.
    MailboxAccessToken,
    /// A Salesforce session kept between sessions: its access token, instance
    /// URL and identity, as one sealed document.
    CrmAccessToken,
}

impl CredentialKind {
    /// The value stored in `credentials.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::MailboxPassword => "mailbox_password",
            CredentialKind::MailboxRefreshToken => "mailbox_refresh_token",
            CredentialKind::CrmRefreshToken => "crm_refresh_token",
            CredentialKind::ImpersonationPassword => "impersonation_password",
            CredentialKind::MailboxAccessToken => "mailbox_access_token",
            CredentialKind::CrmAccessToken => "crm_access_token",
        }
    }

    /// Every kind.
    pub const ALL: [CredentialKind; 6] = [
        CredentialKind::MailboxPassword,
        CredentialKind::MailboxRefreshToken,
        CredentialKind::CrmRefreshToken,
        CredentialKind::ImpersonationPassword,
        CredentialKind::MailboxAccessToken,
        CredentialKind::CrmAccessToken,
    ];

    /// The kind stored as `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The access token obtained with this refresh token (or mailbox
    /// password's replacement): it belongs to that authorization, so it goes
    /// when the authorization is replaced or removed.
    pub fn kept_access(self) -> Option<CredentialKind> {
        match self {
            CredentialKind::MailboxRefreshToken | CredentialKind::MailboxPassword => {
                Some(CredentialKind::MailboxAccessToken)
            }
            CredentialKind::CrmRefreshToken => Some(CredentialKind::CrmAccessToken),
            _ => None,
        }
    }
}

/// A sealed secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The key version that sealed it.
    pub key_version: i32,
    /// The 96-bit nonce, random per sealing.
    pub nonce: Vec<u8>,
    /// The ciphertext with its tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Sealed")
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// The configured keys. A clone shares them: every session's token stores
/// hold the ring, and a map's node of expanded AES keys is about 10 kB.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<BTreeMap<i32, Aes256Gcm>>,
    current: i32,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KeyRing")
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

impl KeyRing {
    /// Reads `version:base64key,...`.
    pub fn parse(spec: &SecretString) -> Result<Self, KeyRingError> {
        let mut keys = BTreeMap::new();
        for (index, pair) in spec
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .enumerate()
        {
            let invalid = |reason| KeyRingError::Invalid {
                position: index + 1,
                reason,
            };
            let (version, key) = pair.split_once(':').ok_or(invalid("expected version:key"))?;
            let version: i32 = version
                .trim()
                .parse()
                .ok()
                .filter(|version| *version > 0)
                .ok_or(invalid("the version must be a positive integer"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| invalid("the key is not base64"))?;
            if bytes.len() != 32 {
                return Err(invalid("the key must be 32 bytes (AES-256)"));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
            if keys.insert(version, cipher).is_some() {
                return Err(invalid("the version is listed twice"));
            }
        }
        let current = *keys.keys().next_back().ok_or(KeyRingError::Empty)?;
        Ok(Self {
            keys: Arc::new(keys),
            current,
        })
    }

    /// The version new secrets are sealed under.
    pub fn current_version(&self) -> i32 {
        self.current
    }

    /// Seals `secret` for `owner`'s `kind` under the current key.
    pub fn seal(&self, owner: Owner, kind: CredentialKind, secret: &SecretString) -> Sealed {
        let cipher = &self.keys[&self.current];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = owner.binding(kind);
        // Encryption with a valid key and nonce only fails on inputs longer than
        // AES-GCM's 64 GiB bound, which no credential comes near.
        #[allow(clippy::expect_used)]
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a credential");
        Sealed {
            key_version: self.current,
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a secret sealed for `owner`'s `kind`.
    pub fn open(&self, owner: Owner, kind: CredentialKind, sealed: &Sealed) -> Result<SecretString, OpenError> {
        let cipher = self
            .keys
            .get(&sealed.key_version)
            .ok_or(OpenError::UnknownKey(sealed.key_version))?;
        if sealed.nonce.len() != 12 {
            return Err(OpenError::Corrupt);
        }
        let aad = owner.binding(kind);
        let plaintext = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Corrupt)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| OpenError::Corrupt)
    }
}

/// Why a credential could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The stored value does not open.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// The `(user_id, organization_id)` values of `owner`'s row.
pub fn owner_columns(owner: Owner) -> (Option<Uuid>, Option<Uuid>) {
    match owner {
        Owner::User(id) => (Some(id), None),
        Owner::Organization(id) => (None, Some(id)),
    }
}

/// The owner's column and id: `column = $1` finds the row through that
/// column's unique index (`IS NOT DISTINCT FROM` on both columns cannot use
/// an index, and read the whole table on every load).
pub fn owner_column(owner: Owner) -> (&'static str, Uuid) {
    match owner {
        Owner::User(id) => ("user_id", id),
        Owner::Organization(id) => ("organization_id", id),
    }
}

/// One credential to seal and store, with the moment it stops being used
/// (kept access tokens; `None` for secrets that do not expire).
#[derive(Debug, Clone, Copy)]
pub struct ToStore<'a> {
    /// Which credential.
    pub kind: CredentialKind,
    /// Its value.
    pub secret: &'a SecretString,
    /// When it stops being used.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Seals and stores (inserts or replaces) `owner`'s `kind`. A new
/// authorization drops the access token kept for the one it replaces.
pub async fn store<'e>(
    executor: impl PgExecutor<'e>,
    ring: &KeyRing,
    owner: Owner,
    kind: CredentialKind,
    secret: &SecretString,
) -> Result<(), sqlx::Error> {
    store_many(
        executor,
        ring,
        owner,
        &[ToStore {
            kind,
            secret,
            expires_at: None,
        }],
    )
    .await
}

/// A credential to store, owned: its kind, value and expiry.
pub type Grant = (CredentialKind, SecretString, Option<DateTime<Utc>>);

/// [`store_many`] for owned grants.
pub async fn store_grants<'e>(
    executor: impl PgExecutor<'e>,
    ring: &KeyRing,
    owner: Owner,
    grants: &[Grant],
) -> Result<(), sqlx::Error> {
    let batch: Vec<ToStore<'_>> = grants
        .iter()
        .map(|(kind, secret, expires_at)| ToStore {
            kind: *kind,
            secret,
            expires_at: *expires_at,
        })
        .collect();
    store_many(executor, ring, owner, &batch).await
}

/// Seals and stores several credentials of `owner` in one statement (a
/// rotated refresh token and the access token that came with it are durable
/// together or not at all). A refresh token stored without its access token
/// drops the kept access token of the authorization it replaces.
pub async fn store_many<'e>(
    executor: impl PgExecutor<'e>,
    ring: &KeyRing,
    owner: Owner,
    credentials: &[ToStore<'_>],
) -> Result<(), sqlx::Error> {
    let (user_id, organization_id) = owner_columns(owner);
    let written: Vec<CredentialKind> = credentials.iter().map(|credential| credential.kind).collect();
    let dropped: Vec<&str> = written
        .iter()
        .filter_map(|kind| kind.kept_access())
        .filter(|access| !written.contains(access))
        .map(CredentialKind::as_str)
        .collect();
    let mut kinds = Vec::with_capacity(credentials.len());
    let mut ids = Vec::with_capacity(credentials.len());
    let mut versions = Vec::with_capacity(credentials.len());
    let mut nonces = Vec::with_capacity(credentials.len());
    let mut ciphertexts = Vec::with_capacity(credentials.len());
    let mut expiries = Vec::with_capacity(credentials.len());
    for credential in credentials {
        let sealed = ring.seal(owner, credential.kind, credential.secret);
        kinds.push(credential.kind.as_str());
        ids.push(Uuid::now_v7());
        versions.push(sealed.key_version);
        nonces.push(sealed.nonce);
        ciphertexts.push(sealed.ciphertext);
        expiries.push(credential.expires_at);
    }
    // Each owner column has its own partial unique index, named by the
    // conflict target's predicate.
    let conflict = match owner {
        Owner::User(_) => "(user_id, kind) WHERE user_id IS NOT NULL",
        Owner::Organization(_) => "(organization_id, kind) WHERE organization_id IS NOT NULL",
    };
    // A new authorization replacing one the provider refused makes its user
    // due at once (the scheduler's next tick queues the sync).
    sqlx::query(&format!(
        "WITH dropped AS (DELETE FROM credentials WHERE user_id = $1 AND kind = ANY($9::text[])), \
         due AS (UPDATE user_runs SET next_sync_at = now() WHERE user_id = $1 AND EXISTS ( \
             SELECT 1 FROM credentials WHERE user_id = $1 AND kind = ANY($3::text[]) AND refused_at IS NOT NULL)) \
         INSERT INTO credentials (user_id, organization_id, kind, id, key_version, nonce, ciphertext, expires_at) \
         SELECT $1, $2, kind, id, key_version, nonce, ciphertext, expires_at \
         FROM UNNEST($3::text[], $4::uuid[], $5::int[], $6::bytea[], $7::bytea[], $8::timestamptz[]) \
             AS new (kind, id, key_version, nonce, ciphertext, expires_at) \
         ON CONFLICT {conflict} DO UPDATE SET key_version = excluded.key_version, nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, expires_at = excluded.expires_at, refused_at = NULL, \
             updated_at = now()"
    ))
    .bind(user_id)
    .bind(organization_id)
    .bind(&kinds)
    .bind(&ids)
    .bind(&versions)
    .bind(&nonces)
    .bind(&ciphertexts)
    .bind(&expiries)
    .bind(&dropped)
    .execute(executor)
    .await?;
    Ok(())
}

/// A credential as stored, not yet opened.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    /// Whose it is.
    pub owner: Owner,
    /// Which one.
    pub kind: CredentialKind,
    /// The sealed value.
    pub sealed: Sealed,
    /// When it stops being used, for kept access tokens.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the provider refused it (the user was asked to reconnect).
    pub refused: bool,
}

impl StoredCredential {
    /// Opens it.
    pub fn open(&self, ring: &KeyRing) -> Result<SecretString, OpenError> {
        ring.open(self.owner, self.kind, &self.sealed)
    }
}

/// The sealed credentials of a user and of their organization, as one query
/// reads them (the session's settings query selects them in the same
/// statement: see [`CREDENTIALS_SELECT`]).
#[derive(Debug, Clone, Default)]
pub struct StoredCredentials(Vec<StoredCredential>);

/// The column `credentials` that selects every credential of user `u` and
/// organization `o` in one scan of their index entries, for
/// [`StoredCredentials::from_column`].
pub const CREDENTIALS_SELECT: &str = "\
    (SELECT coalesce(json_agg(json_build_array(c.organization_id IS NOT NULL, c.kind, c.key_version, \
                encode(c.nonce, 'base64'), encode(c.ciphertext, 'base64'), c.expires_at, \
                c.refused_at IS NOT NULL)), '[]') \
     FROM credentials c WHERE c.user_id = u.id OR c.organization_id = o.id) AS credentials";

/// One element of [`CREDENTIALS_SELECT`]: the organization's?, kind, key
/// version, nonce and ciphertext (base64), expiry, refused?
pub type CredentialColumn = sqlx::types::Json<Vec<(bool, String, i32, String, String, Option<DateTime<Utc>>, bool)>>;

fn base64_column(text: &str) -> Option<Vec<u8>> {
    // PostgreSQL's base64 breaks lines every 76 characters.
    let joined: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(joined).ok()
}

impl StoredCredentials {
    /// The credentials of `user` in `organization` from the selected column;
    /// an unknown kind (a newer release's) or an unreadable entry is skipped.
    pub fn from_column(user: Uuid, organization: Uuid, column: CredentialColumn) -> Self {
        let stored = column
            .0
            .into_iter()
            .filter_map(
                |(of_organization, kind, key_version, nonce, ciphertext, expires_at, refused)| {
                    Some(StoredCredential {
                        owner: if of_organization {
                            Owner::Organization(organization)
                        } else {
                            Owner::User(user)
                        },
                        kind: CredentialKind::parse(&kind)?,
                        sealed: Sealed {
                            key_version,
                            nonce: base64_column(&nonce)?,
                            ciphertext: base64_column(&ciphertext)?,
                        },
                        expires_at,
                        refused,
                    })
                },
            )
            .collect();
        Self(stored)
    }

    /// `owner`'s `kind`, if stored.
    pub fn get(&self, owner: Owner, kind: CredentialKind) -> Option<&StoredCredential> {
        self.0
            .iter()
            .find(|credential| credential.owner == owner && credential.kind == kind)
    }

    /// Whether `owner` has a `kind`.
    pub fn has(&self, owner: Owner, kind: CredentialKind) -> bool {
        self.get(owner, kind).is_some()
    }
}

/// Reads and opens `owner`'s `kind`, if stored.
pub async fn load<'e>(
    executor: impl PgExecutor<'e>,
    ring: &KeyRing,
    owner: Owner,
    kind: CredentialKind,
) -> Result<Option<SecretString>, CredentialError> {
    let (column, id) = owner_column(owner);
    let row = sqlx::query(&format!(
        "SELECT key_version, nonce, ciphertext FROM credentials WHERE {column} = $1 AND kind = $2"
    ))
    .bind(id)
    .bind(kind.as_str())
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let sealed = Sealed {
        key_version: row.try_get("key_version")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
    };
    Ok(Some(ring.open(owner, kind, &sealed)?))
}

/// Deletes `owner`'s `kind` (with the access token kept for it); answers
/// whether one was stored.
pub async fn delete<'e>(
    executor: impl PgExecutor<'e>,
    owner: Owner,
    kind: CredentialKind,
) -> Result<bool, sqlx::Error> {
    let (column, id) = owner_column(owner);
    let access = kind.kept_access().map(CredentialKind::as_str);
    let deleted: Vec<String> = sqlx::query_scalar(&format!(
        "DELETE FROM credentials WHERE {column} = $1 AND (kind = $2 OR kind = $3) RETURNING kind"
    ))
    .bind(id)
    .bind(kind.as_str())
    .bind(access)
    .fetch_all(executor)
    .await?;
    Ok(deleted.iter().any(|deleted| deleted == kind.as_str()))
}

/// What a re-encryption pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reencrypted {
    /// Rows resealed under the current key.
    pub resealed: u64,
    /// Rows already under it.
    pub current: u64,
}

/// Reseals every credential not under the ring's current key, in batches of
/// `batch` rows, each batch one transaction (rows locked, so a concurrent
/// rotated-token write is not overwritten with a stale value). A row that does
/// not open stops the pass with its error, leaving earlier batches done; the
/// pass can run again.
pub async fn reencrypt_all(pool: &PgPool, ring: &KeyRing, batch: i64) -> Result<Reencrypted, CredentialError> {
    let mut done = Reencrypted::default();
    loop {
        let mut transaction = pool.begin().await?;
        let rows = sqlx::query!(
            "SELECT id, user_id, organization_id, kind, key_version, nonce, ciphertext FROM credentials
             WHERE key_version <> $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            ring.current_version(),
            batch
        )
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let kind = CredentialKind::parse(&row.kind).ok_or(OpenError::Corrupt)?;
            let owner = match (row.user_id, row.organization_id) {
                (Some(user), _) => Owner::User(user),
                (None, Some(organization)) => Owner::Organization(organization),
                (None, None) => return Err(OpenError::Corrupt.into()),
            };
            let sealed = Sealed {
                key_version: row.key_version,
                nonce: row.nonce,
                ciphertext: row.ciphertext,
            };
            let secret = ring.open(owner, kind, &sealed)?;
            let resealed = ring.seal(owner, kind, &secret);
            sqlx::query!(
                "UPDATE credentials SET key_version = $2, nonce = $3, ciphertext = $4, updated_at = now()
                 WHERE id = $1",
                row.id,
                resealed.key_version,
                &resealed.nonce,
                &resealed.ciphertext
            )
            .execute(&mut *transaction)
            .await?;
            done.resealed += 1;
        }
        transaction.commit().await?;
    }
    done.current = sqlx::query_scalar!(
        "SELECT count(*) AS \"count!\" FROM credentials WHERE key_version = $1",
        ring.current_version()
    )
    .fetch_one(pool)
    .await? as u64;
    done.current = done.current.saturating_sub(done.resealed);
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(&SecretString::from(spec.to_owned())).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_row_and_field() {
        let ring = ring(&format!("1:{}", key(7)));
        let user = Owner::User(Uuid::new_v4());
        let secret = SecretString::from("hunter2".to_owned());
        let sealed = ring.seal(user, CredentialKind::MailboxPassword, &secret);
        assert!(!sealed.ciphertext.windows(7).any(|window| window == b"hunter2"));
        let opened = ring.open(user, CredentialKind::MailboxPassword, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "hunter2");
        let other_user = Owner::User(Uuid::new_v4());
        assert_eq!(
            ring.open(other_user, CredentialKind::MailboxPassword, &sealed)
                .unwrap_err(),
            OpenError::Corrupt
        );
        assert_eq!(
            ring.open(user, CredentialKind::MailboxRefreshToken, &sealed)
                .unwrap_err(),
            OpenError::Corrupt
        );
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(
            ring.open(user, CredentialKind::MailboxPassword, &tampered).unwrap_err(),
            OpenError::Corrupt
        );
    }

    #[test]
    fn the_highest_version_seals_and_every_version_opens() {
        let old = ring(&format!("1:{}", key(1)));
        let rotated = ring(&format!("2:{}, 1:{}", key(2), key(1)));
        assert_eq!(rotated.current_version(), 2);
        let owner = Owner::Organization(Uuid::new_v4());
        let kind = CredentialKind::ImpersonationPassword;
        let secret = SecretString::from("service-password".to_owned());
        let sealed_old = old.seal(owner, kind, &secret);
        assert_eq!(
            rotated.open(owner, kind, &sealed_old).unwrap().expose_secret(),
            "service-password"
        );
        let sealed_new = rotated.seal(owner, kind, &secret);
        assert_eq!(sealed_new.key_version, 2);
        assert_eq!(
            old.open(owner, kind, &sealed_new).unwrap_err(),
            OpenError::UnknownKey(2)
        );
        // Two sealings of one secret differ (random nonces).
        assert_ne!(rotated.seal(owner, kind, &secret), sealed_new);
    }

    #[test]
    fn a_bad_key_ring_is_refused_without_echoing_key_material() {
        let parse = |spec: &str| KeyRing::parse(&SecretString::from(spec.to_owned())).unwrap_err();
        assert_eq!(parse(""), KeyRingError::Empty);
        let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
        let error = parse(&format!("1:{short}"));
        assert_eq!(
            error,
            KeyRingError::Invalid {
                position: 1,
                reason: "the key must be 32 bytes (AES-256)"
            }
        );
        assert!(!error.to_string().contains(&short));
        assert!(matches!(parse("0:abc"), KeyRingError::Invalid { position: 1, .. }));
        assert!(matches!(
            parse(&format!("1:{},1:{}", key(1), key(2))),
            KeyRingError::Invalid { position: 2, .. }
        ));
        assert!(matches!(parse("1:not base64!"), KeyRingError::Invalid { .. }));
        let debug = format!("{:?}", ring(&format!("3:{}", key(3))));
        assert!(!debug.contains(&key(3)), "{debug}");
    }
}
