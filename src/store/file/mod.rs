//! The embedded store: every record in memory for reads, every change appended to a
//! checksummed log and fsync'd before it is acknowledged.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

mod email_index;
mod log;
mod ordered;
pub mod spool;

use self::email_index::EmailIndex;
use self::log::{Log, Syncer};
use self::ordered::Ordered;
use super::record::{ClientRecord, Entry, RefreshRecord, SessionRecord, UserRecord};
use super::{rotation, RefreshOutcome, Rotation, Store, StoreError, UserToken, UserUpdate};
use crate::domain::{Client, ClientId, Email, RefreshToken, Session, User, UserId};

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
}

#[derive(Default)]
struct State {
    /// Shared with readers: a request checking a token takes a reference, not a copy.
    users: HashMap<UserId, Arc<User>>,
    by_email: EmailIndex,
    by_created: Ordered<(DateTime<Utc>, UserId)>,
    sessions: HashMap<Uuid, Session>,
    /// Refresh-token hash → session.
    by_refresh: HashMap<String, Uuid>,
    /// Revoked access-token ids → when they expire anyway.
    revoked_jtis: HashMap<String, DateTime<Utc>>,
    clients: HashMap<ClientId, Client>,
}

impl State {
    fn apply(&mut self, entry: Entry) -> Result<(), String> {
        match entry {
            Entry::Format { .. } => {}
            Entry::UserPut { user } => {
                let user = Arc::new(User::try_from(user)?);
                if let Some(old) = self.users.insert(user.id, Arc::clone(&user)) {
                    self.unindex(&old);
                }
                self.by_email
                    .insert(&user.email.key(), user.id, &self.users);
                self.by_created.insert((user.created_at, user.id));
            }
            Entry::UserDelete { id } => {
                self.remove_user(id);
            }
            Entry::SessionPut { session } => {
                let session = Session::try_from(session)?;
                self.remove_session(session.id);
                for token in &session.tokens {
                    self.by_refresh.insert(token.hash.clone(), session.id);
                }
                self.sessions.insert(session.id, session);
            }
            Entry::SessionRotate {
                id,
                presented,
                at,
                new,
            } => {
                let Some(session) = self.sessions.get_mut(&id) else {
                    return Ok(()); // pruned since: nothing left to update
                };
                if let Some(token) = session.tokens.iter_mut().find(|t| t.hash == presented) {
                    // The grace window runs from the first rotation, not the latest replay.
                    token.rotated_at.get_or_insert(at);
                }
                self.by_refresh.insert(new.hash.clone(), id);
                let oldest = session.tokens.first().map(|t| t.hash.clone());
                session.push(RefreshToken::from(new));
                if let Some(oldest) = oldest.filter(|h| session.tokens.iter().all(|t| &t.hash != h))
                {
                    self.by_refresh.remove(&oldest);
                }
            }
            Entry::SessionRevoke { id, at } => {
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.revoked_at.get_or_insert(at);
                }
            }
            Entry::JtiRevoke { jti, expires_at } => {
                self.revoked_jtis.insert(jti, expires_at);
            }
            Entry::ClientPut { client } => {
                let client = Client::try_from(client)?;
                self.clients.insert(client.id, client);
            }
            Entry::ClientDelete { id } => {
                self.clients.remove(&id);
            }
        }
        Ok(())
    }

    fn remove_session(&mut self, id: Uuid) {
        if let Some(old) = self.sessions.remove(&id) {
            for token in old.tokens {
                self.by_refresh.remove(&token.hash);
            }
        }
    }

    /// Drops what can no longer matter: dead sessions (revoked, expired, user gone) and
    /// `jti`s past their expiry. A pure function of time, so replaying the log and pruning
    /// again gives the same state.
    fn prune(&mut self, now: DateTime<Utc>, revoked_retention: chrono::Duration) -> usize {
        let dead: Vec<Uuid> = self
            .sessions
            .values()
            .filter(|s| {
                let expired = s.tokens.last().is_none_or(|t| t.expires_at <= now);
                let forgotten = s.revoked_at.is_some_and(|at| at + revoked_retention <= now);
                expired || forgotten || !self.users.contains_key(&s.user_id)
            })
            .map(|s| s.id)
            .collect();
        for id in &dead {
            self.remove_session(*id);
        }
        let before = self.revoked_jtis.len();
        // Kept past `exp` for as long as a token is still accepted after it (the leeway).
        let accepted_until = chrono::Duration::seconds(crate::domain::LEEWAY_SECS as i64);
        self.revoked_jtis
            .retain(|_, exp| *exp + accepted_until > now);
        dead.len() + before - self.revoked_jtis.len()
    }

    fn remove_user(&mut self, id: UserId) -> Option<Arc<User>> {
        let old = self.users.remove(&id)?;
        self.unindex(&old);
        Some(old)
    }

    /// Drops a user's entries from the secondary indexes (the user left `users`, or is
    /// being replaced there).
    fn unindex(&mut self, old: &User) {
        self.by_email.remove(&old.email.key(), old.id);
        self.by_created.remove(&(old.created_at, old.id));
    }

    fn live_records(&self) -> u64 {
        (self.users.len() + self.sessions.len() + self.revoked_jtis.len() + self.clients.len())
            as u64
    }

    /// The live records as log entries, made one at a time (a million users are never
    /// copied at once).
    fn snapshot(&self) -> impl Iterator<Item = Entry> + '_ {
        let users = self.by_created.iter().map(|(_, id)| Entry::UserPut {
            user: UserRecord::from(&*self.users[id]),
        });
        let sessions = self.sessions.values().map(|s| Entry::SessionPut {
            session: SessionRecord::from(s),
        });
        let jtis = self.revoked_jtis.iter().map(|(jti, exp)| Entry::JtiRevoke {
            jti: jti.clone(),
            expires_at: *exp,
        });
        let clients = self.clients.values().map(|c| Entry::ClientPut {
            client: ClientRecord::from(c),
        });
        users.chain(clients).chain(sessions).chain(jtis)
    }
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
    options: FileStoreOptions,
    _lock: File,
}

/// One write, run on the writer thread; it reports its own outcome.
type Job = Box<dyn FnOnce() + Send>;

/// The writer thread: runs jobs in arrival order until the store is dropped. A job that
/// panics may have appended without applying (a bug, not an input): `failed` then stops
/// every later write, as a failed fsync does, since memory and disk may disagree.
fn start_writer(
    failed: impl Fn() + Send + 'static,
) -> Result<std::sync::mpsc::Sender<Job>, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            for job in rx {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a store write panicked; refusing further writes");
                    failed();
                }
            }
        })
        .map_err(|source| StoreError::Io {
            context: "start the store's writer thread".into(),
            source,
        })?;
    Ok(tx)
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
        let syncer = Syncer::new(log.handle())?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                state: RwLock::new(state),
                writer: start_writer(syncer.failer())?,
                syncer,
                log: Mutex::new(log),
                compacting: AtomicBool::new(false),
                options,
                _lock: lock,
            }),
        })
    }

    /// Runs one write on the writer thread: `plan` sees the current state and returns the
    /// entries to append; they are appended and applied in memory at once (so the next
    /// write validates against them), and the caller is answered once they are durable.
    async fn write<T: Send + 'static>(
        &self,
        plan: impl FnOnce(&State) -> Result<(Vec<Entry>, T), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let store = self.clone();
        // The append runs on the writer thread (the lock may be held by a compaction);
        // waiting for the fsync does not hold a thread.
        let job = move || {
            let mut log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
            if inner.syncer.failed() {
                return Err(StoreError::Unavailable(std::io::Error::other(
                    "an fsync of the store failed; restart to recover",
                )));
            }
            let (entries, out) = plan(&read(&inner.state))?;
            if entries.is_empty() {
                // Nothing to append, but the answer may rest on earlier writes that are
                // applied and not yet durable (a repeated revocation, a duplicate email):
                // it waits for them like any write.
                return Ok((inner.syncer.appended(), out));
            }
            log.write(&entries)?;
            let seq = inner.syncer.wrote();
            // Applied before it is durable, so the next writer validates against it; the
            // caller is answered only once it is durable (below).
            let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                state
                    .apply(entry)
                    .expect("entries were built from valid domain values");
            }
            let due = log.entries() > 2 * state.live_records() + inner.options.compact_slack;
            drop((state, log));
            if due {
                store.compact_in_background();
            }
            Ok((seq, out))
        };
        let appended = self.on_writer(job).await??;
        self.inner.syncer.wait_durable(appended.0).await?;
        Ok(appended.1)
    }

    /// Runs `job` on the writer thread, after the writes queued before it.
    async fn on_writer<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let gone = || StoreError::Unavailable(std::io::Error::other("the store's writer stopped"));
        let (done, result) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(Box::new(move || {
                let _ = done.send(job());
            }))
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())
    }

    fn compact_in_background(&self) {
        if self.inner.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        let started = std::thread::Builder::new()
            .name("store-compaction".into())
            .spawn(move || {
                if let Err(e) = store.compact() {
                    tracing::error!(error = %e, "store compaction failed; the log stays as it was");
                }
                store.inner.compacting.store(false, Ordering::Release);
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "could not start a store compaction; will retry");
            self.inner.compacting.store(false, Ordering::Release);
        }
    }

    /// Rewrites the log as the live records only. Writers wait (the log's lock); readers
    /// do not: the rewrite holds the state's lock only for reading, and nothing else waits
    /// for its write side meanwhile (writes and pruning run under the log's lock too).
    pub fn compact(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        self.inner
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .prune(crate::domain::now(), self.inner.options.revoked_retention);
        let before = log.entries();
        log.rewrite(read(&self.inner.state).snapshot())?;
        self.inner.syncer.replaced(log.handle());
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            before,
            after = log.entries(),
            elapsed_ms,
            "store log compacted"
        );
        Ok(())
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
    /// their token history, unexpired revoked token ids, clients oldest first.
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

    async fn list_users(&self, offset: usize, limit: usize) -> Result<Vec<Arc<User>>, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .by_created
            .page(offset, limit)
            .map(|(_, id)| Arc::clone(&state.users[id]))
            .collect())
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
        presented: String,
        new: RefreshToken,
        grace: chrono::Duration,
    ) -> Result<RefreshOutcome, StoreError> {
        self.write(move |state| {
            let now = new.issued_at;
            let session = state
                .by_refresh
                .get(&presented)
                .and_then(|id| state.sessions.get(id));
            let Some(session) = session else {
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
                presented,
                at: now,
                new: RefreshRecord::from(&new),
            };
            let outcome = RefreshOutcome::Rotated {
                session_id: session.id,
                scope: session.scope,
                user: User::clone(user),
                benign_race,
            };
            Ok((vec![rotate], outcome))
        })
        .await
    }

    async fn session_by_refresh(&self, hash: &str) -> Result<Option<Session>, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .by_refresh
            .get(hash)
            .and_then(|id| state.sessions.get(id))
            .cloned())
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
    ) -> Result<UserToken, StoreError> {
        let state = read(&self.inner.state);
        if state.revoked_jtis.contains_key(jti) {
            return Ok(UserToken::Revoked);
        }
        let Some(found) = state.users.get(&user) else {
            return Ok(UserToken::NoUser);
        };
        let revoked = |sid| {
            state
                .sessions
                .get(&sid)
                .is_some_and(|s| s.revoked_at.is_some())
        };
        if session.is_some_and(revoked) {
            return Ok(UserToken::Revoked);
        }
        Ok(UserToken::Live(Arc::clone(found)))
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

    async fn apply_spool(&self) -> Result<usize, StoreError> {
        FileStore::apply_spool(self).await
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        // On the writer thread, under the log's lock: a prune waiting for the state's
        // write lock during a compaction would hold up every reader behind it.
        let inner = self.inner.clone();
        self.on_writer(move || {
            let _log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
            let retention = inner.options.revoked_retention;
            let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
            state.prune(now, retention)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::domain::{RefreshToken, Role, Session};

    fn user(email: &str) -> User {
        User::new(
            Email::parse(email).unwrap(),
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            Role::User,
            None,
            None,
        )
    }

    fn open(dir: &Path) -> FileStore {
        FileStore::open(dir, FileStoreOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn writes_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let alice = user("alice@example.com");
        {
            let store = open(dir.path());
            store.create_user(alice.clone()).await.unwrap();
            store.create_user(user("bob@example.com")).await.unwrap();
            let bob = store
                .user_by_email("BOB@example.com")
                .await
                .unwrap()
                .unwrap();
            store.delete_user(bob.id).await.unwrap();
            store
                .update_user(alice.id, Box::new(|u| u.role = Role::Admin))
                .await
                .unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.count_users().await.unwrap(), 1);
        let loaded = store.user(alice.id).await.unwrap().unwrap();
        assert_eq!(loaded.role, Role::Admin);
        assert_eq!(loaded.email, alice.email);
        assert_eq!(loaded.created_at, alice.created_at);
    }

    #[tokio::test]
    async fn files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = open(&data);
        store.create_user(user("a@example.com")).await.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&FileStore::path(&data)), 0o600);
        assert_eq!(mode(&data.join(".lock")), 0o600);
    }

    #[tokio::test]
    async fn duplicate_email_is_refused_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_user(user("Ada@Example.com")).await.unwrap();
        let err = store
            .create_user(user("ada@example.COM"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DuplicateEmail));
        assert_eq!(store.count_users().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_the_store_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let kept = user("kept@example.com");
        {
            let store = open(dir.path());
            store.create_user(kept.clone()).await.unwrap();
        }
        // Simulate kill -9 in the middle of an append: half a record, no newline.
        let torn = super::log::encode(&Entry::UserPut {
            user: UserRecord::from(&user("torn@example.com")),
        });
        let path = FileStore::path(dir.path());
        let before = fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);

        let store = open(dir.path());
        assert_eq!(store.count_users().await.unwrap(), 1);
        assert!(store.user(kept.id).await.unwrap().is_some());
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            before,
            "torn bytes truncated"
        );
        // And the log accepts appends again, readable after another reopen.
        store.create_user(user("after@example.com")).await.unwrap();
        drop(store);
        assert_eq!(open(dir.path()).count_users().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let err = FileStore::open(dir.path(), FileStoreOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let target = user("target@example.com");
        store.create_user(target.clone()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .create_user(user(&format!("u{i}@example.com")))
                    .await
                    .unwrap();
                // Read-modify-write of one record from many tasks at once.
                store
                    .update_user(
                        target.id,
                        Box::new(|u| {
                            let n: u32 = u
                                .first_name
                                .as_ref()
                                .map_or(0, |n| n.as_str().parse().unwrap());
                            u.first_name = crate::domain::PersonName::parse(
                                &(n + 1).to_string(),
                                "first_name",
                            )
                            .unwrap();
                        }),
                    )
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let check = |store: &FileStore| {
            let state = read(&store.inner.state);
            (
                state.users.len(),
                state.users[&target.id].first_name.clone(),
            )
        };
        assert_eq!(check(&store).0, 51);
        assert_eq!(check(&store).1.unwrap().as_str(), "50");
        drop(store);
        let reopened = open(dir.path());
        assert_eq!(check(&reopened).0, 51);
        assert_eq!(check(&reopened).1.unwrap().as_str(), "50");
    }

    #[tokio::test]
    async fn a_write_that_changes_nothing_still_waits_for_the_writes_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let expires = crate::domain::now() + chrono::Duration::hours(1);
        let first = {
            let store = store.clone();
            tokio::spawn(async move { store.revoke_jti("j1".into(), expires).await })
        };
        // Once the first revocation is applied in memory (not necessarily durable yet),
        // repeating it appends nothing, but must not be answered before that is on disk.
        while !store.is_jti_revoked("j1").await.unwrap() {
            tokio::task::yield_now().await;
        }
        store.revoke_jti("j1".into(), expires).await.unwrap();
        assert!(
            store.fsyncs() >= 1,
            "answered before the revocation it relied on was durable"
        );
        first.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_fsyncs_and_all_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.create_user(user(&format!("g{i}@example.com"))).await },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let fsyncs = store.fsyncs();
        assert!(
            fsyncs < 64,
            "{fsyncs} fsyncs for 64 concurrent writes: no group commit"
        );
        drop(store);
        assert_eq!(open(dir.path()).count_users().await.unwrap(), 64);
    }

    #[tokio::test]
    async fn compaction_keeps_live_records_and_shrinks_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(
            dir.path(),
            FileStoreOptions {
                compact_slack: 1_000_000,
                ..Default::default()
            },
        )
        .unwrap();
        let keep = user("keep@example.com");
        store.create_user(keep.clone()).await.unwrap();
        for i in 0..30 {
            let u = user(&format!("gone{i}@example.com"));
            store.create_user(u.clone()).await.unwrap();
            store.delete_user(u.id).await.unwrap();
            store
                .update_user(keep.id, Box::new(|u| u.updated_at = crate::domain::now()))
                .await
                .unwrap();
        }
        assert_eq!(store.log_entries(), 2 + 30 * 3);
        store.compact().unwrap();
        assert_eq!(store.log_entries(), 2);
        let expected = store.user(keep.id).await.unwrap();
        store.create_user(user("later@example.com")).await.unwrap();
        drop(store);
        let reopened = open(dir.path());
        assert_eq!(reopened.count_users().await.unwrap(), 2);
        assert_eq!(reopened.user(keep.id).await.unwrap(), expected);
        assert!(!dir.path().join("store.log.tmp").exists());
    }

    #[tokio::test]
    async fn compaction_runs_by_itself_once_the_log_outgrows_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(
            dir.path(),
            FileStoreOptions {
                compact_slack: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let u = user("churn@example.com");
        store.create_user(u.clone()).await.unwrap();
        for _ in 0..40 {
            store
                .update_user(u.id, Box::new(|u| u.updated_at = crate::domain::now()))
                .await
                .unwrap();
        }
        for _ in 0..100 {
            if store.log_entries() < 20 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            store.log_entries() < 20,
            "log has {} lines",
            store.log_entries()
        );
        // The compaction thread holds the store (and its lock) until it has finished.
        while store.inner.compacting.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(store);
        assert!(open(dir.path()).user(u.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_failing_disk_refuses_writes_loses_nothing_and_keeps_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let kept = user("kept@example.com");
        store.create_user(kept.clone()).await.unwrap();
        store.inner.log.lock().unwrap().break_writes_for_test();
        let err = store
            .create_user(user("new@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        // The failed write is not applied in memory either, and reads still work.
        assert_eq!(store.count_users().await.unwrap(), 1);
        assert!(store
            .user_by_email("new@example.com")
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            store.user(kept.id).await.unwrap(),
            Some(Arc::new(kept.clone()))
        );
        drop(store);
        let reopened = open(dir.path());
        assert_eq!(reopened.count_users().await.unwrap(), 1);
    }

    fn refresh_token(hash: &str, ttl_secs: i64) -> RefreshToken {
        let now = crate::domain::now();
        RefreshToken {
            hash: hash.into(),
            issued_at: now,
            expires_at: now + chrono::Duration::seconds(ttl_secs),
            rotated_at: None,
        }
    }

    #[tokio::test]
    async fn refresh_rotates_tolerates_a_quick_replay_and_revokes_on_late_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let owner = user("owner@example.com");
        store.create_user(owner.clone()).await.unwrap();
        let session = Session::new(
            owner.id,
            crate::domain::Scopes::default(),
            refresh_token("t1", 60),
        );
        store.create_session(session.clone()).await.unwrap();
        let grace = chrono::Duration::seconds(5);

        let first = store
            .refresh("t1".into(), refresh_token("t2", 60), grace)
            .await
            .unwrap();
        assert!(
            matches!(
                first,
                RefreshOutcome::Rotated {
                    benign_race: false,
                    ..
                }
            ),
            "{first:?}"
        );
        let replay = store
            .refresh("t1".into(), refresh_token("t3", 60), grace)
            .await
            .unwrap();
        assert!(
            matches!(
                replay,
                RefreshOutcome::Rotated {
                    benign_race: true,
                    ..
                }
            ),
            "{replay:?}"
        );
        let late = store
            .refresh(
                "t1".into(),
                refresh_token("t4", 60),
                chrono::Duration::zero(),
            )
            .await
            .unwrap();
        assert!(matches!(late, RefreshOutcome::Reused { .. }), "{late:?}");
        // The whole family is dead now, the newest token included, and stays so on reload.
        let newest = store
            .refresh("t3".into(), refresh_token("t5", 60), grace)
            .await
            .unwrap();
        assert!(matches!(newest, RefreshOutcome::Invalid), "{newest:?}");
        drop(store);
        let store = open(dir.path());
        assert!(store
            .session(session.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
        let unknown = store
            .refresh("nope".into(), refresh_token("t6", 60), grace)
            .await
            .unwrap();
        assert!(matches!(unknown, RefreshOutcome::Invalid));
    }

    #[tokio::test]
    async fn sessions_of_logged_out_or_deleted_users_do_not_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let owner = user("gone@example.com");
        store.create_user(owner.clone()).await.unwrap();
        let session = Session::new(
            owner.id,
            crate::domain::Scopes::default(),
            refresh_token("a", 60),
        );
        store.create_session(session).await.unwrap();
        store
            .update_user(
                owner.id,
                Box::new(|u| u.tokens_valid_after = crate::domain::now()),
            )
            .await
            .unwrap();
        let outcome = store
            .refresh("a".into(), refresh_token("b", 60), chrono::Duration::zero())
            .await
            .unwrap();
        assert!(matches!(outcome, RefreshOutcome::Invalid));
    }

    #[tokio::test]
    async fn revocations_persist_and_expired_state_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let owner = user("prune@example.com");
        store.create_user(owner.clone()).await.unwrap();
        let soon = crate::domain::now() + chrono::Duration::seconds(1);
        store.revoke_jti("j1".into(), soon).await.unwrap();
        store
            .revoke_jti(
                "j2".into(),
                crate::domain::now() + chrono::Duration::hours(1),
            )
            .await
            .unwrap();
        let live = Session::new(
            owner.id,
            crate::domain::Scopes::default(),
            refresh_token("l", 3600),
        );
        let expiring = Session::new(
            owner.id,
            crate::domain::Scopes::default(),
            refresh_token("e", 1),
        );
        store.create_session(live.clone()).await.unwrap();
        store.create_session(expiring.clone()).await.unwrap();
        drop(store);
        let store = open(dir.path());
        assert!(store.is_jti_revoked("j1").await.unwrap());
        // Past j1's expiry but within the verifier's leeway: j1 is still refused.
        let in_leeway = crate::domain::now() + chrono::Duration::seconds(3);
        assert_eq!(store.prune(in_leeway).await.unwrap(), 1, "the session only");
        assert!(store.is_jti_revoked("j1").await.unwrap());
        let after = crate::domain::now() + chrono::Duration::seconds(8);
        assert_eq!(store.prune(after).await.unwrap(), 1);
        assert!(!store.is_jti_revoked("j1").await.unwrap());
        assert!(store.is_jti_revoked("j2").await.unwrap());
        assert!(store.session(expiring.id).await.unwrap().is_none());
        assert!(store.session_by_refresh("e").await.unwrap().is_none());
        assert!(store.session(live.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn list_is_ordered_by_creation_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut ids = Vec::new();
        for i in 0..5 {
            let u = user(&format!("p{i}@example.com"));
            ids.push(u.id);
            store.create_user(u).await.unwrap();
        }
        let page: Vec<_> = store
            .list_users(1, 2)
            .await
            .unwrap()
            .iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(page, ids[1..3]);
        assert_eq!(store.list_users(10, 2).await.unwrap().len(), 0);
    }
}
