//! The embedded store: every record in memory for reads, every change appended to a
//! checksummed log and fsync'd before it is acknowledged.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::log::Log;
use super::record::{Entry, UserRecord};
use super::{Store, StoreError, UserUpdate};
use crate::domain::{Email, User, UserId};

#[derive(Debug, Clone)]
pub struct FileStoreOptions {
    /// Compact once the log holds this many more lines than twice the live records.
    pub compact_slack: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self {
            compact_slack: 1000,
        }
    }
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, User>,
    by_email: HashMap<String, UserId>,
    by_created: BTreeSet<(DateTime<Utc>, UserId)>,
}

impl State {
    fn apply(&mut self, entry: Entry) -> Result<(), String> {
        match entry {
            Entry::Format { .. } => {}
            Entry::UserPut { user } => {
                let user = User::try_from(user)?;
                self.remove_user(user.id);
                self.by_email.insert(user.email.key(), user.id);
                self.by_created.insert((user.created_at, user.id));
                self.users.insert(user.id, user);
            }
            Entry::UserDelete { id } => {
                self.remove_user(id);
            }
        }
        Ok(())
    }

    fn remove_user(&mut self, id: UserId) -> Option<User> {
        let old = self.users.remove(&id)?;
        self.by_email.remove(&old.email.key());
        self.by_created.remove(&(old.created_at, old.id));
        Some(old)
    }

    fn live_records(&self) -> u64 {
        self.users.len() as u64
    }

    fn snapshot(&self) -> Vec<Entry> {
        self.by_created
            .iter()
            .map(|(_, id)| Entry::UserPut {
                user: UserRecord::from(&self.users[id]),
            })
            .collect()
    }
}

struct Inner {
    state: RwLock<State>,
    /// Serialises writers: validation, append and apply happen as one step.
    log: Mutex<Log>,
    compacting: AtomicBool,
    options: FileStoreOptions,
    _lock: File,
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
        let (log, entries) = Log::open(dir)?;
        let mut state = State::default();
        for entry in entries {
            state.apply(entry).map_err(|reason| StoreError::Corrupt {
                path: dir.join("store.log").display().to_string(),
                reason,
            })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                log: Mutex::new(log),
                compacting: AtomicBool::new(false),
                options,
                _lock: lock,
            }),
        })
    }

    /// Runs one write on the blocking pool: `plan` sees the current state under the
    /// writer lock and returns the entries to append; they are applied only once durable.
    async fn write<T: Send + 'static>(
        &self,
        plan: impl FnOnce(&State) -> Result<(Vec<Entry>, T), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
            let (entries, out) = plan(&read(&inner.state))?;
            log.append(&entries)?;
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
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(std::io::Error::other(e.to_string())))?
    }

    fn compact_in_background(&self) {
        if self.inner.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = store.compact() {
                tracing::error!(error = %e, "store compaction failed; the log stays as it was");
            }
            store.inner.compacting.store(false, Ordering::Release);
        });
    }

    /// Rewrites the log as the live records only. Writers wait; readers do not.
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = read(&self.inner.state).snapshot();
        let before = log.entries();
        log.rewrite(snapshot.into_iter())?;
        tracing::info!(before, after = log.entries(), "store log compacted");
        Ok(())
    }

    /// Lines currently in the log (for tests and metrics).
    pub fn log_entries(&self) -> u64 {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries()
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("store.log")
    }
}

#[async_trait]
impl Store for FileStore {
    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        self.write(move |state| {
            if state.by_email.contains_key(&user.email.key()) {
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
            let mut user = state.users.get(&id).cloned().ok_or(StoreError::NotFound)?;
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
            let user = state.users.get(&id).cloned().ok_or(StoreError::NotFound)?;
            Ok((vec![Entry::UserDelete { id }], user))
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(read(&self.inner.state).users.get(&id).cloned())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .by_email
            .get(&Email::key_of(email))
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn list_users(&self, offset: usize, limit: usize) -> Result<Vec<User>, StoreError> {
        let state = read(&self.inner.state);
        Ok(state
            .by_created
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(_, id)| state.users[id].clone())
            .collect())
    }

    async fn count_users(&self) -> Result<usize, StoreError> {
        Ok(read(&self.inner.state).users.len())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::domain::Role;

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
        let torn = super::super::log::encode(&Entry::UserPut {
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
    async fn compaction_keeps_live_records_and_shrinks_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(
            dir.path(),
            FileStoreOptions {
                compact_slack: 1_000_000,
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
                .update_user(keep.id, Box::new(|u| u.updated_at = Utc::now()))
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
        let store = FileStore::open(dir.path(), FileStoreOptions { compact_slack: 10 }).unwrap();
        let u = user("churn@example.com");
        store.create_user(u.clone()).await.unwrap();
        for _ in 0..40 {
            store
                .update_user(u.id, Box::new(|u| u.updated_at = Utc::now()))
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
        assert_eq!(store.user(kept.id).await.unwrap(), Some(kept.clone()));
        drop(store);
        let reopened = open(dir.path());
        assert_eq!(reopened.count_users().await.unwrap(), 1);
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
