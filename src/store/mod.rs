//! Durable state behind one trait, so its backends, the file store (default) and
//! PostgreSQL, are interchangeable.

mod file;
pub mod postgres;
mod record;

use std::sync::Arc;

use async_trait::async_trait;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Client, ClientId, RefreshToken, Scopes, Session, User, UserId};

pub use file::{spool, Export, FileStore, FileStoreOptions};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already exists")]
    DuplicateEmail,
    #[error("not found")]
    NotFound,
    /// The store cannot accept writes (disk full, read-only, an earlier failed write it could
    /// not roll back). Reads keep working.
    #[error("the store cannot write: {0}")]
    Unavailable(#[source] std::io::Error),
    /// DATA_DIR is held by another process.
    #[error("{0} is in use by another simple-api process (lock file {0}/.lock)")]
    Locked(String),
    /// The data on disk cannot be read back (not a torn tail: that is repaired).
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    /// PostgreSQL refused or could not be reached.
    #[error("{context}: {reason}")]
    Database { context: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A change to a user applied atomically under the store's write lock, so concurrent
/// updates of different fields never overwrite each other.
pub type UserUpdate = Box<dyn FnOnce(&mut User) + Send>;

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// The token was current, or was rotated less than the grace window ago (a benign
    /// race: two tabs, a lost response): `new` is now the session's newest token.
    Rotated {
        session_id: Uuid,
        scope: Scopes,
        user: User,
        benign_race: bool,
    },
    /// The token was rotated longer ago than the grace window: someone replayed it. The
    /// whole session is now revoked, its newest token included.
    Reused { session_id: Uuid, user_id: UserId },
    /// Unknown, expired or revoked token, or a user who is gone or ended the session.
    Invalid,
}

/// What presenting a session's refresh token means (see `rotation`).
pub(crate) enum Rotation<'a> {
    Invalid,
    /// Rotated longer than the grace window ago: replayed.
    Reused,
    /// Current, or rotated within the grace window (`benign_race`): rotate it for `user`.
    Rotate {
        benign_race: bool,
        user: &'a User,
    },
}

/// The refresh decision, the same in every store, each taking it under its own lock on
/// the session (the file store's writer, PostgreSQL's row lock) so that two concurrent
/// presentations of one token are decided one after the other.
pub(crate) fn rotation<'a>(
    session: &Session,
    presented: &str,
    user: Option<&'a User>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Rotation<'a> {
    let token = session.tokens.iter().find(|t| t.hash == presented);
    let (Some(token), Some(user)) = (token, user) else {
        return Rotation::Invalid;
    };
    if !session.is_live(now)
        || token.expires_at <= now
        || !user.session_alive(Some(session.id), session.created_at)
    {
        return Rotation::Invalid;
    }
    match token.rotated_at {
        None => Rotation::Rotate {
            benign_race: false,
            user,
        },
        // `now` was read before the lock was taken, so it may precede `at`; with no
        // grace window (0) there is no benign race at all, not even at the same instant.
        Some(at) if grace > chrono::Duration::zero() && now - at <= grace => Rotation::Rotate {
            benign_race: true,
            user,
        },
        Some(_) => Rotation::Reused,
    }
}

/// Login-failure counters kept where every replica sees them (the PostgreSQL store). The
/// file store has none: its one process counts in memory (`auth::throttle`).
#[async_trait]
pub trait FailureCounts: Send + Sync {
    /// Counts one attempt against each of `keys` (each with its limit), all or nothing
    /// and atomically across replicas: `Some(wait)`, and nothing counted, when a key's
    /// failures in its current window have reached its limit (the longest wait); a key
    /// whose window ended starts a new one of `window`.
    async fn reserve(
        &self,
        keys: &[(String, u32)],
        window: std::time::Duration,
    ) -> Result<Option<std::time::Duration>, StoreError>;
    /// Takes back one counted attempt from each key (it turned out right).
    async fn refund(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Forgets a key's failures (a successful login).
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
}

/// The store's verdict on a user's access token (see `Store::user_token`): whether the
/// token still stands, not the token itself.
#[derive(Debug)]
pub enum TokenStanding {
    /// Its `jti` or its session is revoked.
    Revoked,
    /// The user no longer exists.
    NoUser,
    /// Neither: the user as they are now (whether the token predates the user's last
    /// "end sessions" is the caller's check).
    Live(Arc<User>),
}

/// The durable state the service runs on: `FileStore` or `postgres::PgStore`.
///
/// One trait rather than narrow ones (users, sessions, clients, failures): every backend
/// implements all of it, and one `Arc<dyn Store>` is passed around. The per-request token
/// check (`user_token`) reads users, sessions and revoked `jti`s in one call, which narrow
/// traits would split. The methods are grouped by section instead. Only the login-failure
/// counters, which one backend keeps, are a trait of their own (`FailureCounts`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Users.

    /// Adds a user; `DuplicateEmail` when the email (case-insensitively) is taken.
    async fn create_user(&self, user: User) -> Result<(), StoreError>;
    /// Applies `update` to the current record and persists it; returns the new record.
    async fn update_user(&self, id: UserId, update: UserUpdate) -> Result<User, StoreError>;
    /// Removes a user; returns the removed record.
    async fn delete_user(&self, id: UserId) -> Result<User, StoreError>;
    async fn user(&self, id: UserId) -> Result<Option<Arc<User>>, StoreError>;
    /// Looks up by email, ignoring case and surrounding spaces.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Users ordered by `created_at` (then id), a page at a time.
    async fn list_users(&self, offset: usize, limit: usize) -> Result<Vec<Arc<User>>, StoreError>;
    async fn count_users(&self) -> Result<usize, StoreError>;

    // Sessions and revocation.

    /// Records a new login with its first refresh token.
    async fn create_session(&self, session: Session) -> Result<(), StoreError>;
    /// Exchanges the refresh token whose SHA-256 is `presented` for `new`, atomically,
    /// detecting reuse (see `RefreshOutcome`).
    async fn refresh(
        &self,
        presented: String,
        new: RefreshToken,
        grace: chrono::Duration,
    ) -> Result<RefreshOutcome, StoreError>;
    async fn session_by_refresh(&self, hash: &str) -> Result<Option<Session>, StoreError>;
    async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError>;
    /// Whether session `id` is known and revoked (cheap: asked on every request).
    async fn session_revoked(&self, id: Uuid) -> Result<bool, StoreError>;
    /// Revokes a session (idempotent; unknown ids are ignored).
    async fn revoke_session(&self, id: Uuid) -> Result<(), StoreError>;
    /// Revokes an access token's `jti` until `expires_at`.
    async fn revoke_jti(&self, jti: String, expires_at: DateTime<Utc>) -> Result<(), StoreError>;
    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError>;

    /// Everything checking a user's access token needs from the store, in one call: it
    /// runs on every authenticated request, so stores answer it with one read.
    async fn user_token(
        &self,
        jti: &str,
        user: UserId,
        session: Option<Uuid>,
    ) -> Result<TokenStanding, StoreError>;

    // Clients.

    /// Adds or replaces a client (creation, secret rotation).
    async fn put_client(&self, client: Client) -> Result<(), StoreError>;
    /// Removes a client; `NotFound` if there is none.
    async fn delete_client(&self, id: ClientId) -> Result<Client, StoreError>;
    async fn client(&self, id: ClientId) -> Result<Option<Client>, StoreError>;
    /// Every client, oldest first.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;

    // Upkeep.

    /// Applies admin changes queued by the CLI while this server held the store.
    async fn apply_spool(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Forgets expired and revoked sessions and expired `jti`s; returns how many.
    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Whether this replica's cache is in use, for a store that keeps one (`/metrics`).
    fn cache_live(&self) -> Option<bool> {
        None
    }

    /// Login-failure counters shared with other replicas, if this store keeps them.
    fn failure_counts(&self) -> Option<&dyn FailureCounts> {
        None
    }
}
