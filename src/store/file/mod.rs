//! The embedded store: every record in memory for reads, every change appended to a
//! checksummed log and fsync'd before it is acknowledged.
//!
//! `state` is the memory, `writer` the one thread that changes it (and compaction),
//! `log` the file with its line format in `codec`, `syncer` the group commit that makes
//! appends durable, `spool` the CLI's way in while a server holds the store.

mod codec;
mod email_index;
mod log;
mod ordered;
pub mod spool;
mod state;
mod syncer;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use self::codec::{AssertionKey, Entry};
use self::log::Log;
use self::state::State;
use self::syncer::Syncer;
use self::writer::{start_writer, Job};
use super::record::{ClientRecord, MailRecord, RefreshRecord, SessionRecord, UserRecord};
use super::{rotation, RefreshOutcome, Rotation, Store, StoreError, TokenStanding, UserUpdate};
use crate::domain::{
    AuthCode, Client, ClientId, Consent, Email, PresentedRefresh, QueuedMail, RefreshToken,
    Session, User, UserCursor, UserId,
};

#[derive(Debug, Clone)]
pub struct FileStoreOptions {
    /// Compact once the log holds this many more lines than twice the live records.
    pub compact_slack: u64,
    /// How long a revoked session is remembered: as long as an access token of it may
    /// still be valid, so that token stays refused.
    pub revoked_retention: chrono::Duration,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self {
            compact_slack: 1000,
            revoked_retention: chrono::Duration::days(1),
        }
    }
}

/// A copy of a file store's contents (see `FileStore::export`).
pub struct Export {
    pub users: Vec<Arc<User>>,
    pub sessions: Vec<Session>,
    pub revoked_jtis: Vec<(String, DateTime<Utc>)>,
    pub clients: Vec<Client>,
    /// What each person allowed third-party clients.
    pub consents: Vec<(UserId, Consent)>,
}

struct Inner {
    dir: PathBuf,
    state: RwLock<State>,
    /// Serialises writers: validation, append and apply happen as one step.
    log: Mutex<Log>,
    /// Makes appends durable, many at a time (group commit).
    syncer: Syncer,
    /// The writer thread's queue: appends run there one after another, so writers never
    /// contend for the log's lock (only a compaction takes it from elsewhere).
    writer: std::sync::mpsc::Sender<Job>,
    compacting: AtomicBool,
    /// Assertions used but not yet appended (see `use_assertion`): one writer job appends
    /// all of them at a time.
    pending_assertions: Mutex<PendingAssertions>,
    /// Authorization codes by hash, with the session their first exchange created. Only
    /// in memory: a code lives a minute, and a restart that forgets one forgets its use
    /// too, so it can neither be redeemed nor replayed afterwards (the person signs in
    /// again). One lock decides which exchange of a code is first.
    codes: Mutex<HashMap<String, (AuthCode, Option<Uuid>)>>,
    options: FileStoreOptions,
    _lock: File,
}

impl FileStore {
    /// Appends the used assertions pending now, on the writer thread.
    pub(super) async fn flush_assertions(&self) {
        let store = self.clone();
        if self
            .on_writer(move || store.append_pending_assertions())
            .await
            .is_err()
        {
            tracing::error!("the store's writer stopped; used client assertions stay in memory");
        }
    }
}

impl Drop for Inner {
    /// Used assertions still pending (see `FileStore::use_assertion`) are appended and made
    /// durable as the store closes, so a clean shutdown forgets none.
    fn drop(&mut self) {
        let pending = std::mem::take(
            &mut self
                .pending_assertions
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .uses,
        );
        if pending.is_empty() || self.syncer.failed() {
            return;
        }
        let entries: Vec<Entry> = pending
            .into_iter()
            .map(|(key, exp)| Entry::AssertionUse { key, exp })
            .collect();
        let log = self.log.get_mut().unwrap_or_else(|e| e.into_inner());
        let written = log
            .write(&entries, self.syncer.synced_len())
            .map_err(|e| e.to_string())
            .and_then(|()| log.handle().sync_data().map_err(|e| e.to_string()));
        if let Err(error) = written {
            tracing::error!(%error, "could not write the used client assertions pending at close");
        }
    }
}

/// How long a used client assertion may wait to be appended (see `use_assertion`): what a
/// crash can forget.
const ASSERTION_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// Used assertions held in memory at most while they cannot be appended (a full disk):
/// beyond that, assertions are refused (503) rather than remembered in memory only.
const MAX_PENDING_ASSERTIONS: usize = 100_000;

/// Used assertions waiting to be appended, and whether a flush is on its way.
#[derive(Default)]
pub(super) struct PendingAssertions {
    pub(super) uses: std::collections::HashMap<AssertionKey, i64>,
    /// A flush is scheduled; cleared by the flush (appended or not), so the next use
    /// schedules another after a failure.
    pub(super) scheduled: bool,
}

/// The file-backed store in DATA_DIR. Cheap to clone.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl FileStore {
    /// Opens DATA_DIR (created 0700 if missing), takes its lock and loads the log.
    pub fn open(dir: &Path, options: FileStoreOptions) -> Result<Self, StoreError> {
        let io = |context: String| move |source| StoreError::Io { context, source };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(format!("create DATA_DIR {}", dir.display())))?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(format!("open {}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.display().to_string()))
            }
            Err(TryLockError::Error(e)) => {
                return Err(io(format!("lock {}", lock_path.display()))(e))
            }
        }
        let mut state = State::default();
        let log = Log::open(dir, |entry| {
            state.apply(entry).map_err(|reason| StoreError::Corrupt {
                path: dir.join("store.log").display().to_string(),
                reason,
            })
        })?;
        state.prune(crate::domain::now(), options.revoked_retention);
        let syncer = Syncer::new(log.handle(), log.len())?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                state: RwLock::new(state),
                writer: start_writer(syncer.failer())?,
                syncer,
                log: Mutex::new(log),
                compacting: AtomicBool::new(false),
                pending_assertions: Mutex::new(PendingAssertions::default()),
                codes: Mutex::new(HashMap::new()),
                options,
                _lock: lock,
            }),
        })
    }

    /// fsyncs of the log so far (for tests and metrics).
    pub fn fsyncs(&self) -> u64 {
        self.inner.syncer.fsyncs()
    }

    /// Lines currently in the log (for tests and metrics).
    pub fn log_entries(&self) -> u64 {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries()
    }

    /// Everything the store holds, for `store copy`: users oldest first, sessions with
    /// their refresh-token families, unexpired revoked token ids, clients oldest first.
    pub fn export(&self) -> Export {
        let state = read(&self.inner.state);
        let mut clients: Vec<Client> = state.clients.values().cloned().collect();
        clients.sort_by_key(|c| (c.created_at, c.id));
        let mut sessions: Vec<Session> = state.sessions.values().cloned().collect();
        sessions.sort_by_key(|s| (s.created_at, s.id));
        Export {
            users: state
                .by_created
                .iter()
                .map(|(_, id)| Arc::clone(&state.users[id]))
                .collect(),
            sessions,
            revoked_jtis: state
                .revoked_jtis
                .iter()
                .map(|(jti, exp)| (jti.clone(), *exp))
                .collect(),
            clients,
            consents: state
                .consents
                .iter()
                .flat_map(|(&user, c)| c.values().map(move |c| (user, c.clone())))
                .collect(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("store.log")
    }
}

#[async_trait]
impl Store for FileStore {
    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        self.write(move |state| {
            if state
                .by_email
                .get(&user.email.key(), &state.users)
                .is_some()
            {
                return Err(StoreError::DuplicateEmail);
            }
            let entry = Entry::UserPut {
                user: UserRecord::from(&user),
            };
            Ok((vec![entry], ()))
        })
        .await
    }

    async fn update_user(&self, id: UserId, update: UserUpdate) -> Result<User, StoreError> {
        self.write(move |state| {
            let mut user = User::clone(state.users.get(&id).ok_or(StoreError::NotFound)?);
            update(&mut user);
            // A new address must be free (a confirmed change of address).
            let holder = state.by_email.get(&user.email.key(), &state.users);
            if holder.is_some_and(|holder| holder != id) {
                return Err(StoreError::DuplicateEmail);
            }
            let entry = Entry::UserPut {
                user: UserRecord::from(&user),
            };
            Ok((vec![entry], user))
        })
        .await
    }

    async fn delete_user(&self, id: UserId) -> Result<User, StoreError> {
        self.write(move |state| {
            let user = User::clone(state.users.get(&id).ok_or(StoreError::NotFound)?);
            Ok((vec![Entry::UserDelete { id }], user))
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<Arc<User>>, StoreError> {
        Ok(read(&self.inner.state).users.get(&id).cloned())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .by_email
            .get(&Email::key_of(email), &state.users)
            .and_then(|id| state.users.get(&id))
            .map(|u| User::clone(u)))
    }

    async fn users_moving_to(&self, email: &str) -> Result<Vec<User>, StoreError> {
        let state = read(&self.inner.state);
        let ids = state.moving_to.get(&Email::key_of(email));
        Ok(ids
            .into_iter()
            .flatten()
            .filter_map(|id| state.users.get(id))
            .map(|u| User::clone(u))
            .collect())
    }

    async fn list_users(&self, offset: usize, limit: usize) -> Result<Vec<Arc<User>>, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .by_created
            .page(offset, limit)
            .map(|(_, id)| Arc::clone(&state.users[id]))
            .collect())
    }

    async fn list_users_after(
        &self,
        after: Option<UserCursor>,
        limit: usize,
    ) -> Result<Vec<Arc<User>>, StoreError> {
        let state = read(&self.inner.state);
        let user = |(_, id): &(_, UserId)| Arc::clone(&state.users[id]);
        Ok(match after {
            Some(c) => state
                .by_created
                .after(&(c.created_at, c.id), limit)
                .map(user)
                .collect(),
            None => state.by_created.page(0, limit).map(user).collect(),
        })
    }

    async fn count_users(&self) -> Result<usize, StoreError> {
        Ok(read(&self.inner.state).users.len())
    }

    async fn create_session(&self, session: Session) -> Result<(), StoreError> {
        self.write(move |_| {
            let entry = Entry::SessionPut {
                session: SessionRecord::from(&session),
            };
            Ok((vec![entry], ()))
        })
        .await
    }

    async fn refresh(
        &self,
        presented: PresentedRefresh,
        new: RefreshToken,
        grace: chrono::Duration,
    ) -> Result<RefreshOutcome, StoreError> {
        self.write(move |state| {
            let now = new.issued_at;
            let Some(session) = state.sessions.get(&presented.session_id) else {
                return Ok((vec![], RefreshOutcome::Invalid));
            };
            let user = state.users.get(&session.user_id);
            let (benign_race, user) =
                match rotation(session, &presented, user.map(|u| &**u), now, grace) {
                    Rotation::Invalid => return Ok((vec![], RefreshOutcome::Invalid)),
                    Rotation::Reused => {
                        let revoke = Entry::SessionRevoke {
                            id: session.id,
                            at: now,
                        };
                        let outcome = RefreshOutcome::Reused {
                            session_id: session.id,
                            user_id: session.user_id,
                        };
                        return Ok((vec![revoke], outcome));
                    }
                    Rotation::Rotate { benign_race, user } => (benign_race, user),
                };
            let rotate = Entry::SessionRotate {
                id: session.id,
                presented: presented.hash,
                at: now,
                new: RefreshRecord::from(&new),
                grace_ms: grace.num_milliseconds().max(0) as u64,
            };
            let outcome = RefreshOutcome::Rotated {
                session_id: session.id,
                scope: session.scope,
                user: User::clone(user),
                benign_race,
                client: session.client_id,
                amr: session.amr.clone(),
                began: session.created_at,
            };
            Ok((vec![rotate], outcome))
        })
        .await
    }

    async fn session_revoked(&self, id: Uuid) -> Result<bool, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .sessions
            .get(&id)
            .is_some_and(|s| s.revoked_at.is_some()))
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        Ok(read(&self.inner.state).sessions.get(&id).cloned())
    }

    async fn revoke_session(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |state| {
            let live = state
                .sessions
                .get(&id)
                .is_some_and(|s| s.revoked_at.is_none());
            let entries = if live {
                vec![Entry::SessionRevoke {
                    id,
                    at: crate::domain::now(),
                }]
            } else {
                vec![]
            };
            Ok((entries, ()))
        })
        .await
    }

    async fn revoke_jti(&self, jti: String, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |state| {
            let entries = if state.revoked_jtis.contains_key(&jti) {
                vec![]
            } else {
                vec![Entry::JtiRevoke { jti, expires_at }]
            };
            Ok((entries, ()))
        })
        .await
    }

    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(read(&self.inner.state).revoked_jtis.contains_key(jti))
    }

    async fn user_token(
        &self,
        jti: &str,
        user: UserId,
        session: Option<Uuid>,
    ) -> Result<TokenStanding, StoreError> {
        let state = read(&self.inner.state);
        if state.revoked_jtis.contains_key(jti) {
            return Ok(TokenStanding::Revoked);
        }
        let Some(found) = state.users.get(&user) else {
            return Ok(TokenStanding::NoUser);
        };
        let revoked = |sid| {
            state
                .sessions
                .get(&sid)
                .is_some_and(|s| s.revoked_at.is_some())
        };
        if session.is_some_and(revoked) {
            return Ok(TokenStanding::Revoked);
        }
        Ok(TokenStanding::Live(Arc::clone(found)))
    }

    async fn put_client(&self, client: Client) -> Result<(), StoreError> {
        self.write(move |_| {
            let entry = Entry::ClientPut {
                client: ClientRecord::from(&client),
            };
            Ok((vec![entry], ()))
        })
        .await
    }

    async fn restore_client_secret(
        &self,
        expected: &Client,
        secret_hash: String,
    ) -> Result<bool, StoreError> {
        let expected = expected.clone();
        // Decided on the writer thread against the state every earlier write has changed.
        self.write(move |state| {
            let current = state.clients.get(&expected.id);
            let unchanged = current.is_some_and(|c| {
                c.secret_hash() == expected.secret_hash()
                    && c.secret_rotated_at == expected.secret_rotated_at
            });
            if !unchanged {
                return Ok((vec![], false));
            }
            let mut client = current.cloned().unwrap_or(expected);
            client.credential = crate::domain::Credential::Secret(secret_hash);
            let entry = Entry::ClientPut {
                client: ClientRecord::from(&client),
            };
            Ok((vec![entry], true))
        })
        .await
    }

    async fn delete_client(&self, id: ClientId) -> Result<Client, StoreError> {
        self.write(move |state| {
            let client = state
                .clients
                .get(&id)
                .cloned()
                .ok_or(StoreError::NotFound)?;
            Ok((vec![Entry::ClientDelete { id }], client))
        })
        .await
    }

    async fn client(&self, id: ClientId) -> Result<Option<Client>, StoreError> {
        Ok(read(&self.inner.state).clients.get(&id).cloned())
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let mut clients: Vec<Client> = read(&self.inner.state).clients.values().cloned().collect();
        clients.sort_by_key(|c| (c.created_at, c.id));
        Ok(clients)
    }

    async fn use_assertion(
        &self,
        client: ClientId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if self.inner.syncer.failed() {
            return Err(StoreError::Unavailable(std::io::Error::other(
                "an fsync of the store failed; restart to recover",
            )));
        }
        let (key, exp) = (AssertionKey::of(client, jti), expires_at.timestamp());
        // Decided here, under one lock, against the applied state and the uses not yet
        // appended (a flush moves a use from one to the other while holding this lock), so
        // of two presentations of one assertion the second sees the first, in this process
        // and so everywhere (one process holds the store). The use is appended by the
        // writer thread with all others pending, and answered without waiting for that or
        // the fsync: per request, a round trip to the writer thread and an fsync would
        // cost more than the signature check (measured: a third of the throughput), and
        // what a crash can lose is only the record of assertions used in the last
        // `ASSERTION_FLUSH_DELAY` before it, which could then be presented once more
        // before their `exp`, by someone who captured them in transit in that instant.
        let schedule = {
            let mut pending = self
                .inner
                .pending_assertions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = crate::domain::now();
            let used = pending
                .uses
                .get(&key)
                .is_some_and(|&exp| state::still_accepted(exp, now))
                || read(&self.inner.state).assertion_used(&key, now);
            if used {
                return Ok(false);
            }
            if pending.uses.len() >= MAX_PENDING_ASSERTIONS {
                return Err(StoreError::Unavailable(std::io::Error::other(
                    "used client assertions cannot be written to the store",
                )));
            }
            pending.uses.insert(key, exp);
            !std::mem::replace(&mut pending.scheduled, true)
        };
        if schedule {
            // Appended a moment later with every use that arrives meanwhile: one append and
            // one fsync for all of them (an fsync per use cost a quarter of a core under
            // load). Weak: a flush waiting to run must not keep a dropped store (and its
            // lock file) alive; what is still pending then is written by `flush` at
            // shutdown, or by `Inner`'s drop.
            let inner = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                tokio::time::sleep(ASSERTION_FLUSH_DELAY).await;
                if let Some(inner) = inner.upgrade() {
                    FileStore { inner }.flush_assertions().await;
                }
            });
        }
        Ok(true)
    }

    async fn put_code(&self, code: AuthCode) -> Result<(), StoreError> {
        let mut codes = self.inner.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.insert(code.hash.clone(), (code, None));
        Ok(())
    }

    async fn code(&self, hash: &str) -> Result<Option<(AuthCode, Option<Uuid>)>, StoreError> {
        let codes = self.inner.codes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(codes.get(hash).cloned())
    }

    async fn redeem_code(&self, hash: &str, session: Uuid) -> Result<Option<Uuid>, StoreError> {
        let mut codes = self.inner.codes.lock().unwrap_or_else(|e| e.into_inner());
        let (_, used_by) = codes.get_mut(hash).ok_or(StoreError::NotFound)?;
        Ok(match used_by {
            Some(earlier) => Some(*earlier),
            None => {
                *used_by = Some(session);
                None
            }
        })
    }

    async fn consent(&self, user: UserId, client: ClientId) -> Result<Option<Consent>, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .consents
            .get(&user)
            .and_then(|c| c.get(&client))
            .cloned())
    }

    async fn put_consent(&self, user: UserId, consent: Consent) -> Result<(), StoreError> {
        self.write(move |state| {
            if !state.users.contains_key(&user) || !state.clients.contains_key(&consent.client_id) {
                return Err(StoreError::NotFound);
            }
            let entry = Entry::ConsentPut {
                user,
                client: consent.client_id,
                scope: consent.scope.to_string(),
                at: consent.granted_at,
            };
            Ok((vec![entry], ()))
        })
        .await
    }

    async fn consents(&self, user: UserId) -> Result<Vec<Consent>, StoreError> {
        let state = read(&self.inner.state);
        let mut all: Vec<Consent> = state
            .consents
            .get(&user)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|c| (c.granted_at, c.client_id));
        Ok(all)
    }

    async fn delete_consent(&self, user: UserId, client: ClientId) -> Result<bool, StoreError> {
        self.write(move |state| {
            let known = state
                .consents
                .get(&user)
                .is_some_and(|c| c.contains_key(&client));
            let entries = match known {
                true => vec![Entry::ConsentDelete { user, client }],
                false => Vec::new(),
            };
            Ok((entries, known))
        })
        .await
    }

    async fn apply_spool(&self) -> Result<usize, StoreError> {
        FileStore::apply_spool(self).await
    }

    /// The used client assertions still pending, appended and made durable.
    async fn flush(&self) -> Result<(), StoreError> {
        self.flush_assertions().await;
        self.write(|_| Ok((Vec::new(), ()))).await
    }

    async fn enqueue_mail(&self, mail: QueuedMail) -> Result<(), StoreError> {
        self.write(move |_| {
            let entry = Entry::MailPut {
                mail: MailRecord::from(&mail),
            };
            Ok((vec![entry], ()))
        })
        .await
    }

    async fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError> {
        self.write(move |state| {
            let until = now + lease;
            let due: Vec<QueuedMail> = state
                .mail
                .values()
                .filter(|m| m.next_attempt_at <= now)
                .take(limit)
                .map(|m| QueuedMail {
                    next_attempt_at: until,
                    ..m.clone()
                })
                .collect();
            let entries = due
                .iter()
                .map(|m| Entry::MailRetry {
                    id: m.id,
                    attempts: m.attempts,
                    next_attempt_at: until,
                })
                .collect();
            Ok((entries, due))
        })
        .await
    }

    async fn retry_mail(
        &self,
        id: Uuid,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |state| {
            if !state.mail.contains_key(&id) {
                return Ok((Vec::new(), ()));
            }
            let entry = Entry::MailRetry {
                id,
                attempts,
                next_attempt_at,
            };
            Ok((vec![entry], ()))
        })
        .await
    }

    async fn delete_mail(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |state| {
            let entries = match state.mail.contains_key(&id) {
                true => vec![Entry::MailDelete { id }],
                false => Vec::new(),
            };
            Ok((entries, ()))
        })
        .await
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        // On the writer thread, under the log's lock: a prune waiting for the state's
        // write lock during a compaction would hold up every reader behind it.
        // Used assertions still pending are appended first, so they are pruned like the rest.
        let store = self.clone();
        let inner = self.inner.clone();
        self.on_writer(move || {
            store.append_pending_assertions();
            let _log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
            let retention = inner.options.revoked_retention;
            let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
            state.prune(now, retention)
        })
        .await
        .map(|pruned| pruned + self.prune_codes(now))
    }
}

impl FileStore {
    /// Forgets codes past `CODE_MEMORY`; returns how many.
    fn prune_codes(&self, now: DateTime<Utc>) -> usize {
        let mut codes = self.inner.codes.lock().unwrap_or_else(|e| e.into_inner());
        let before = codes.len();
        codes.retain(|_, (code, _)| code.expires_at + super::CODE_MEMORY > now);
        before - codes.len()
    }
}
