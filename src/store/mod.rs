//! Durable state behind one trait, so its backends, the file store (default) and
//! PostgreSQL, are interchangeable.

mod file;
pub mod postgres;
mod record;

use std::sync::Arc;

use async_trait::async_trait;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    AuthCode, Client, ClientId, Consent, PresentedRefresh, QueuedMail, RefreshToken, Scopes,
    Session, User, UserCursor, UserId,
};

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

/// How long an authorization code is remembered past its expiry: a replay within it still
/// revokes what the first exchange issued (RFC 6749 §4.1.2).
pub const CODE_MEMORY: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// What presenting a refresh token did.
#[derive(Debug)]
// One per refresh, moved once: boxing the user would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum RefreshOutcome {
    /// The token was current, or was rotated less than the grace window ago (a benign
    /// race: two tabs, a lost response): `new` is now the session's one current token.
    Rotated {
        session_id: Uuid,
        scope: Scopes,
        user: User,
        benign_race: bool,
        /// The client the session was granted to (the authorization code flow).
        client: Option<ClientId>,
        /// How the session's person signed in (`Session::amr`), and when.
        amr: Vec<String>,
        began: DateTime<Utc>,
    },
    /// A token of the family that stopped being current longer than the grace window ago,
    /// however many rotations ago: someone replayed it. The whole session is now revoked,
    /// its newest token included.
    Reused { session_id: Uuid, user_id: UserId },
    /// Unknown, expired or revoked token, or a user who is gone or ended the session.
    Invalid,
}

/// What presenting a session's refresh token means (see `rotation`).
#[derive(Debug)]
pub(crate) enum Rotation<'a> {
    Invalid,
    /// Not current, and rotated longer than the grace window ago: replayed.
    Reused,
    /// Current, or rotated within the grace window (`benign_race`): rotate it for `user`
    /// (`Session::rotate`: the new token supersedes the current one).
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
    presented: &PresentedRefresh,
    user: Option<&'a User>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Rotation<'a> {
    // Naming the session is not enough: the token must carry the family's secret.
    if !session.is_family_of(presented) {
        return Rotation::Invalid;
    }
    let Some(user) = user else {
        return Rotation::Invalid;
    };
    if !session.is_live(now)
        || !user.session_alive(Some(session.id), session.created_at, &session.amr)
    {
        return Rotation::Invalid;
    }
    // A token of the family without a record was superseded longer ago than anything
    // kept (`Session::rotate`): reuse, however many rotations ago.
    let Some(token) = session.tokens.iter().find(|t| t.hash == presented.hash) else {
        return Rotation::Reused;
    };
    if token.expires_at <= now {
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
    /// and atomically across replicas: `Some((wait, key))`, and nothing counted, when a
    /// key's failures in its current window have reached its limit (the key with the
    /// longest wait); a key whose window ended starts a new one of `window`.
    async fn reserve(
        &self,
        keys: &[(String, u32)],
        window: std::time::Duration,
    ) -> Result<Option<(std::time::Duration, String)>, StoreError>;
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
    /// The accounts waiting to move to `email` (a change of address not confirmed yet),
    /// ignoring case. Few: each such change sent a message there, within the mail limits.
    async fn users_moving_to(&self, email: &str) -> Result<Vec<User>, StoreError>;
    /// Users ordered by `created_at` (then id), a page at a time. Costs O(offset) on
    /// PostgreSQL; `list_users_after` does not.
    async fn list_users(&self, offset: usize, limit: usize) -> Result<Vec<Arc<User>>, StoreError>;
    /// Up to `limit` users strictly after `after` in that order (from the first if
    /// `None`), found by a seek: the cost does not grow with the position, and a user
    /// created or deleted meanwhile neither repeats nor skips anyone.
    async fn list_users_after(
        &self,
        after: Option<UserCursor>,
        limit: usize,
    ) -> Result<Vec<Arc<User>>, StoreError>;
    async fn count_users(&self) -> Result<usize, StoreError>;

    // Sessions and revocation.

    /// Records a new login with its first refresh token.
    async fn create_session(&self, session: Session) -> Result<(), StoreError>;
    /// Exchanges `presented` for `new` (a token of the same family), atomically,
    /// detecting reuse (see `RefreshOutcome`; `rotation` decides, `Session::rotate` is
    /// what a rotation changes).
    async fn refresh(
        &self,
        presented: PresentedRefresh,
        new: RefreshToken,
        grace: chrono::Duration,
    ) -> Result<RefreshOutcome, StoreError>;
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
    /// Stores `secret_hash` (the same secret, stored another way) for `expected.id`, only
    /// if its stored secret is still `expected`'s: `false`, and nothing written, when the
    /// client was deleted or its secret rotated meanwhile (a plain `put_client` of the copy
    /// read before would bring a deleted client back or undo a rotation).
    async fn restore_client_secret(
        &self,
        expected: &Client,
        secret_hash: String,
    ) -> Result<bool, StoreError>;
    /// Every client, oldest first.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
    /// Remembers that `client` has used the assertion `jti` (`private_key_jwt`), until
    /// `expires_at` plus the verifier's leeway (as revoked token ids are kept): `true` the
    /// first time, `false` for a replay. Durable and
    /// decided in one place (one lock, or one row), so two replicas or two concurrent
    /// requests presenting the same assertion cannot both get `true`.
    async fn use_assertion(
        &self,
        client: ClientId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    // Browser sign-in.

    /// Keeps a new authorization code (by its hash) for redeeming.
    async fn put_code(&self, code: AuthCode) -> Result<(), StoreError>;
    /// The code with this hash, whether used or not (`used_by`: the session its first
    /// exchange created), while it is remembered: until some minutes past its expiry, so a
    /// late replay is still recognised.
    async fn code(&self, hash: &str) -> Result<Option<(AuthCode, Option<Uuid>)>, StoreError>;
    /// Marks the code used by `session`, once, decided in one place (a lock, a conditional
    /// UPDATE): `None` when this call used it, `Some(earlier)` when it had been used
    /// already (a replay: `earlier` is the session the first exchange created), and
    /// `NotFound` when it is not remembered.
    async fn redeem_code(&self, hash: &str, session: Uuid) -> Result<Option<Uuid>, StoreError>;
    /// What `user` has allowed `client`, if they were asked.
    async fn consent(&self, user: UserId, client: ClientId) -> Result<Option<Consent>, StoreError>;
    /// Remembers (or widens) what `user` allows `consent.client_id`.
    async fn put_consent(&self, user: UserId, consent: Consent) -> Result<(), StoreError>;
    /// Every client `user` has allowed, oldest first.
    async fn consents(&self, user: UserId) -> Result<Vec<Consent>, StoreError>;
    /// Forgets what `user` allowed `client`; `false` if there was nothing.
    async fn delete_consent(&self, user: UserId, client: ClientId) -> Result<bool, StoreError>;

    // Mail (a durable queue).

    /// Queues a message for delivery.
    async fn enqueue_mail(&self, mail: QueuedMail) -> Result<(), StoreError>;
    /// Claims up to `limit` messages due at `now`, oldest first: each one's
    /// `next_attempt_at` moves to `now + lease`, so it is this caller's until then. Decided
    /// in one place (one lock, or `FOR UPDATE SKIP LOCKED`): no two workers, on any
    /// replica, claim one message.
    async fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError>;
    /// A claimed message failed: tried again at `next_attempt_at`, after `attempts`.
    async fn retry_mail(
        &self,
        id: Uuid,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Forgets a message: delivered, or given up.
    async fn delete_mail(&self, id: Uuid) -> Result<(), StoreError>;

    // Upkeep.

    /// Applies admin changes queued by the CLI while this server held the store.
    async fn apply_spool(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Forgets expired and revoked sessions, expired `jti`s, expired assertion ids and
    /// codes past `CODE_MEMORY`; returns how many.
    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Writes what the store holds back for a moment (the file store's used client
    /// assertions): called at shutdown, after the last request.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether this replica's cache is in use, for a store that keeps one (`/metrics`).
    fn cache_live(&self) -> Option<bool> {
        None
    }

    /// Login-failure counters shared with other replicas, if this store keeps them.
    fn failure_counts(&self) -> Option<&dyn FailureCounts> {
        None
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::{Email, Role};

    fn token(hash: &str) -> RefreshToken {
        let now = crate::domain::now();
        RefreshToken {
            hash: hash.into(),
            issued_at: now,
            expires_at: now + Duration::hours(1),
            rotated_at: None,
        }
    }

    /// A user, and a session of theirs (family secret hash `fam`) whose tokens were `a`,
    /// then `b` (at `start`), then `c` (current, a second later); and a moment 11 s after
    /// `start`.
    fn family() -> (User, Session, DateTime<Utc>) {
        let email = Email::parse("rotation@example.com").unwrap();
        let user = User::new(email, "hash".into(), Role::User, None, None);
        let start = crate::domain::now();
        let grace = Duration::seconds(10);
        let (id, scope) = (Uuid::now_v7(), Scopes::default());
        let mut s = Session::new(id, user.id, scope, "fam".into(), token("a"));
        s.rotate(token("b"), start, grace);
        s.rotate(token("c"), start + Duration::seconds(1), grace);
        (user, s, start + Duration::seconds(11))
    }

    /// The verdict on presenting token `hash` carrying the family secret hash `family`.
    fn verdict(
        s: &Session,
        user: Option<&User>,
        (family, hash): (&str, &str),
        now: DateTime<Utc>,
        grace_secs: i64,
    ) -> &'static str {
        let presented = PresentedRefresh {
            session_id: s.id,
            family: family.into(),
            hash: hash.into(),
        };
        match rotation(s, &presented, user, now, Duration::seconds(grace_secs)) {
            Rotation::Invalid => "invalid",
            Rotation::Reused => "reused",
            Rotation::Rotate {
                benign_race: false, ..
            } => "rotate",
            Rotation::Rotate {
                benign_race: true, ..
            } => "benign race",
        }
    }

    #[test]
    fn the_current_token_rotates_and_a_recently_superseded_one_is_a_benign_race() {
        let (u, s, now) = family();
        assert_eq!(verdict(&s, Some(&u), ("fam", "c"), now, 10), "rotate");
        // `b` was superseded 10 s before `now`.
        assert_eq!(verdict(&s, Some(&u), ("fam", "b"), now, 10), "benign race");
        assert_eq!(verdict(&s, Some(&u), ("fam", "b"), now, 9), "reused");
        assert_eq!(verdict(&s, Some(&u), ("fam", "b"), now, 0), "reused");
    }

    #[test]
    fn any_earlier_token_of_the_family_is_reuse_whether_kept_or_not() {
        let (u, mut s, now) = family();
        // `a` is still kept (superseded 11 s ago, kept for 20); `z` stands for a token
        // superseded so many rotations ago that nothing of it is kept.
        assert_eq!(verdict(&s, Some(&u), ("fam", "a"), now, 10), "reused");
        assert_eq!(verdict(&s, Some(&u), ("fam", "z"), now, 10), "reused");
        s.tokens.remove(0);
        assert_eq!(verdict(&s, Some(&u), ("fam", "a"), now, 10), "reused");
    }

    #[test]
    fn a_token_without_the_familys_secret_is_unknown() {
        let (u, mut s, now) = family();
        assert_eq!(verdict(&s, Some(&u), ("forged", "c"), now, 10), "invalid");
        assert_eq!(verdict(&s, Some(&u), ("forged", "z"), now, 10), "invalid");
        // Nor is a token naming another session.
        let elsewhere = PresentedRefresh {
            session_id: Uuid::now_v7(),
            family: "fam".into(),
            hash: "c".into(),
        };
        let grace = Duration::seconds(10);
        let judged = rotation(&s, &elsewhere, Some(&u), now, grace);
        assert!(matches!(judged, Rotation::Invalid), "{judged:?}");
        // A session from before families takes no token at all.
        s.family = None;
        assert_eq!(verdict(&s, Some(&u), ("fam", "c"), now, 10), "invalid");
    }

    #[test]
    fn nothing_rotates_in_a_dead_session_or_for_a_gone_user() {
        let (u, mut s, now) = family();
        assert_eq!(verdict(&s, None, ("fam", "c"), now, 10), "invalid");
        let expired = s.tokens.last().unwrap().expires_at;
        assert_eq!(verdict(&s, Some(&u), ("fam", "c"), expired, 10), "invalid");
        s.revoked_at = Some(now);
        assert_eq!(verdict(&s, Some(&u), ("fam", "c"), now, 10), "invalid");
        assert_eq!(verdict(&s, Some(&u), ("fam", "a"), now, 10), "invalid");
    }
}
