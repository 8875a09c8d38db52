//! The token spool: a rotated refresh token is written to the worker's
//! local disk, sealed, before its store in PostgreSQL is tried, and deleted
//! once the store commits.
//!
//! A strict provider (Salesforce with rotation, Graph when it revokes)
//! invalidates the old refresh token the moment it answers with the new one,
//! so the new one exists only in the worker's memory until PostgreSQL has
//! it. The store is retried while the database is unreachable, but memory
//! does not survive kill -9 or the OOM killer. The spool does: a worker
//! started again (the same container's restart keeps its `emptyDir`) stores
//! what it finds there before it takes any job, and every worker stores the
//! entries a store gave up on (older than the retry budget) once a minute.
//!
//! An entry is put back only while the refresh token stored for its owner is
//! still the one the rotation consumed (kept, sealed, in the entry): a newer
//! grant (the user reconnected, or a later session rotated again) or a
//! deleted credential wins, and the entry is dropped. Entries are sealed
//! with the credential keys like the database's rows: the file holds no
//! secret in the clear.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use syncfleet_common::{
    config::Setting,
    secrets::{self, CredentialKind, Grant, KeyRing, Owner, Sealed},
};
use tokio::sync::Semaphore;
use tracing::{info, warn};
use uuid::Uuid;

pub const TOKEN_SPOOL_DIR: Setting = Setting {
    name: "SYNCFLEET_TOKEN_SPOOL_DIR",
    default: "",
    doc: "The folder where the worker writes each rotated refresh token (sealed) before storing it in PostgreSQL, and deletes it once stored; a worker started again stores what a crash left there, unless a newer grant was stored meanwhile. Give it a volume that outlives the container (the chart mounts an `emptyDir`). Empty: `syncfleet-token-spool` in the temporary folder.",
};

/// Spool files written or deleted at once per worker. Each runs on tokio's
/// blocking pool, and a write syncs its file and its folder: a burst of
/// rotations (a thousand first sessions refreshing at once) would otherwise
/// start a blocking thread per write, up to tokio's 512, each with its stack
/// and its own allocator heap, which the fleet load test measured as most of
/// the worker's peak memory. The disk serializes the syncs anyway, so a few
/// at a time write as many entries a second.
const CONCURRENT_FILE_OPERATIONS: usize = 4;

/// The folder of the spool.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// Bounds the file operations in flight, see [`CONCURRENT_FILE_OPERATIONS`].
    operations: Arc<Semaphore>,
}

/// One sealed credential of an entry.
#[derive(Serialize, Deserialize)]
struct SpooledCredential {
    kind: String,
    key_version: i32,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
}

impl SpooledCredential {
    fn seal(
        ring: &KeyRing,
        owner: Owner,
        kind: CredentialKind,
        secret: &SecretString,
        expires_at: Option<DateTime<Utc>>,
    ) -> Self {
        let sealed = ring.seal(owner, kind, secret);
        Self {
            kind: kind.as_str().to_owned(),
            key_version: sealed.key_version,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            expires_at,
        }
    }

    fn open(&self, ring: &KeyRing, owner: Owner) -> Option<(CredentialKind, SecretString)> {
        let kind = CredentialKind::parse(&self.kind)?;
        let sealed = Sealed {
            key_version: self.key_version,
            nonce: self.nonce.clone(),
            ciphertext: self.ciphertext.clone(),
        };
        ring.open(owner, kind, &sealed).ok().map(|secret| (kind, secret))
    }
}

/// One rotation: whose, the refresh token it consumed, and what to store.
#[derive(Serialize, Deserialize)]
struct Entry {
    user_id: Option<Uuid>,
    organization_id: Option<Uuid>,
    /// The refresh token the rotation consumed (its kind is the new one's).
    previous: SpooledCredential,
    credentials: Vec<SpooledCredential>,
}

impl Entry {
    fn owner(&self) -> Option<Owner> {
        match (self.user_id, self.organization_id) {
            (Some(user), None) => Some(Owner::User(user)),
            (None, Some(organization)) => Some(Owner::Organization(organization)),
            _ => None,
        }
    }
}

/// What a replay of the spool did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Entries stored (their owner's refresh token was still the consumed one).
    pub stored: usize,
    /// Entries dropped: a newer grant was stored, the credential or its owner
    /// is gone, or the entry cannot be opened with the configured keys.
    pub dropped: usize,
    /// Entries left for a later pass (the database unreachable).
    pub left: usize,
}

impl Spool {
    /// The spool in `dir` (created when first written); an empty setting
    /// names `syncfleet-token-spool` in the temporary folder.
    pub fn new(dir: &str) -> Self {
        let dir = match dir.trim() {
            "" => std::env::temp_dir().join("syncfleet-token-spool"),
            dir => PathBuf::from(dir),
        };
        Self {
            dir,
            operations: Arc::new(Semaphore::new(CONCURRENT_FILE_OPERATIONS)),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a rotation of `owner`'s `refresh_kind` durably (the file and
    /// its folder synced): `previous` is the refresh token it consumed.
    /// Answers the entry's path, to [`remove`](Self::remove) once stored.
    pub async fn write(
        &self,
        ring: &KeyRing,
        owner: Owner,
        refresh_kind: CredentialKind,
        previous: &SecretString,
        credentials: &[Grant],
    ) -> io::Result<PathBuf> {
        let (user_id, organization_id) = secrets::owner_columns(owner);
        let entry = Entry {
            user_id,
            organization_id,
            previous: SpooledCredential::seal(ring, owner, refresh_kind, previous, None),
            credentials: credentials
                .iter()
                .map(|(kind, secret, expires_at)| SpooledCredential::seal(ring, owner, *kind, secret, *expires_at))
                .collect(),
        };
        let body = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        let dir = self.dir.clone();
        // Never closed, so acquiring only waits.
        let _operation = self.operations.acquire().await.map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let name = Uuid::now_v7();
            let partial = dir.join(format!("{name}.partial"));
            let path = dir.join(format!("{name}.json"));
            {
                use std::io::Write;
                let mut file = std::fs::File::create(&partial)?;
                file.write_all(&body)?;
                file.sync_all()?;
            }
            std::fs::rename(&partial, &path)?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(path)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Deletes a stored entry (one already gone is fine: another pass
    /// stored it).
    pub async fn remove(&self, path: &Path) {
        let removed = match self.operations.acquire().await {
            Ok(_operation) => tokio::fs::remove_file(path).await,
            Err(closed) => Err(io::Error::other(closed)),
        };
        match removed {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => warn!(%error, "Could not delete a stored token's spool entry; a later pass drops it."),
        }
    }

    /// Stores the entries older than `older_than` (all of them with
    /// `Duration::ZERO`), each only while its owner's refresh token is still
    /// the one it consumed; deletes what it stored or dropped.
    pub async fn replay(&self, pool: &PgPool, ring: &KeyRing, older_than: Duration) -> Replayed {
        let mut replayed = Replayed::default();
        let paths = match self.entries(older_than).await {
            Ok(paths) => paths,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return replayed,
            Err(error) => {
                warn!(%error, dir = %self.dir.display(), "Could not read the token spool.");
                return replayed;
            }
        };
        for path in paths {
            match replay_one(pool, ring, &path).await {
                Ok(true) => {
                    replayed.stored += 1;
                    self.remove(&path).await;
                }
                Ok(false) => {
                    replayed.dropped += 1;
                    self.remove(&path).await;
                }
                Err(error) if syncfleet_common::db::is_transient(&error) => replayed.left += 1,
                Err(error) => {
                    // A vanished owner (deleted user) ends in a foreign-key
                    // violation: nothing to store it for.
                    warn!(%error, "A spooled grant could not be stored; dropped.");
                    replayed.dropped += 1;
                    self.remove(&path).await;
                }
            }
        }
        if replayed != Replayed::default() {
            info!(
                stored = replayed.stored,
                dropped = replayed.dropped,
                left = replayed.left,
                "Token spool replayed."
            );
        }
        replayed
    }

    /// The entries' paths, oldest first, whose file is older than `older_than`.
    async fn entries(&self, older_than: Duration) -> io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        let now = SystemTime::now();
        while let Some(item) = dir.next_entry().await? {
            let path = item.path();
            if path.extension().is_none_or(|extension| extension != "json") {
                continue;
            }
            let modified = item.metadata().await?.modified()?;
            if now.duration_since(modified).unwrap_or_default() >= older_than {
                found.push(path);
            }
        }
        // Entry names are UUIDv7s: in the order they were written.
        found.sort();
        Ok(found)
    }
}

/// Stores one entry if its owner's refresh token is still the consumed one:
/// `Ok(true)` stored, `Ok(false)` dropped (superseded, gone or unreadable).
async fn replay_one(pool: &PgPool, ring: &KeyRing, path: &Path) -> Result<bool, sqlx::Error> {
    let Ok(body) = tokio::fs::read(path).await else {
        return Ok(false);
    };
    let Some((entry, owner)) = serde_json::from_slice::<Entry>(&body)
        .ok()
        .and_then(|entry| entry.owner().map(|owner| (entry, owner)))
    else {
        warn!(path = %path.display(), "A token spool entry is unreadable; dropped.");
        return Ok(false);
    };
    let Some((refresh_kind, previous)) = entry.previous.open(ring, owner) else {
        warn!(path = %path.display(), "A token spool entry does not open with the configured keys; dropped.");
        return Ok(false);
    };
    let opened: Option<Vec<Grant>> = entry
        .credentials
        .iter()
        .map(|credential| {
            credential
                .open(ring, owner)
                .map(|(kind, secret)| (kind, secret, credential.expires_at))
        })
        .collect();
    let Some(opened) = opened else {
        warn!(path = %path.display(), "A token spool entry does not open with the configured keys; dropped.");
        return Ok(false);
    };
    let mut tx = pool.begin().await?;
    // The row is locked: a session storing its own rotation waits, then
    // finds this one (and stores its newer grant over it). Each owner column
    // has its own statement, so the look-up uses that column's index.
    let kind = refresh_kind.as_str();
    match owner {
        Owner::User(id) => {
            sqlx::query_scalar!(
                "SELECT 1 FROM credentials WHERE user_id = $1 AND kind = $2 FOR UPDATE",
                id,
                kind
            )
            .fetch_optional(&mut *tx)
            .await?;
        }
        Owner::Organization(id) => {
            sqlx::query_scalar!(
                "SELECT 1 FROM credentials WHERE organization_id = $1 AND kind = $2 FOR UPDATE",
                id,
                kind
            )
            .fetch_optional(&mut *tx)
            .await?;
        }
    }
    let current = match secrets::load(&mut *tx, ring, owner, refresh_kind).await {
        Ok(current) => current,
        Err(secrets::CredentialError::Database(error)) => return Err(error),
        Err(_) => None,
    };
    let still_consumed = current.is_some_and(|current| current.expose_secret() == previous.expose_secret());
    if !still_consumed {
        return Ok(false);
    }
    secrets::store_grants(&mut *tx, ring, owner, &opened).await?;
    tx.commit().await?;
    Ok(true)
}
