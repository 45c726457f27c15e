//! The file store's tests, through the `Store` trait and the store's own methods.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;

use super::*;
use serde_json::json;

use crate::domain::{PresentedRefresh, RefreshToken, Role, Session};

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
    let torn = super::codec::encode(&Entry::UserPut {
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
                        u.first_name =
                            crate::domain::PersonName::parse(&(n + 1).to_string(), "first_name")
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
            tokio::spawn(async move { store.create_user(user(&format!("g{i}@example.com"))).await })
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

/// A new session of `owner` (family secret hash `family`) with its first token `first`.
fn new_session(owner: &User, first: &str, ttl_secs: i64) -> Session {
    let scope = crate::domain::Scopes::default();
    let first = refresh_token(first, ttl_secs);
    Session::new(Uuid::now_v7(), owner.id, scope, "family".into(), first)
}

/// Presenting `session`'s token `hash`.
fn presented(session: &Session, hash: &str) -> PresentedRefresh {
    PresentedRefresh {
        session_id: session.id,
        family: "family".into(),
        hash: hash.into(),
    }
}

/// Presents `session`'s token `old` for the next one, `new`.
async fn exchange(
    store: &FileStore,
    session: &Session,
    (old, new): (&str, &str),
    grace: chrono::Duration,
) -> RefreshOutcome {
    let next = refresh_token(new, 60);
    store
        .refresh(presented(session, old), next, grace)
        .await
        .unwrap()
}

/// A store in `dir` holding a user and a new session of theirs, with its first token
/// `first`.
async fn store_with_session(dir: &Path, email: &str, first: &str) -> (FileStore, Session) {
    let store = open(dir);
    let owner = user(email);
    store.create_user(owner.clone()).await.unwrap();
    let session = new_session(&owner, first, 60);
    store.create_session(session.clone()).await.unwrap();
    (store, session)
}

#[tokio::test]
async fn refresh_rotates_tolerates_a_quick_replay_and_revokes_on_late_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let (store, session) = store_with_session(dir.path(), "owner@example.com", "t1").await;
    let grace = chrono::Duration::seconds(5);

    let first = exchange(&store, &session, ("t1", "t2"), grace).await;
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
    let replay = exchange(&store, &session, ("t1", "t3"), grace).await;
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
    // The replay's successor superseded t2, which is now a used token too.
    let stored = store.session(session.id).await.unwrap().unwrap();
    assert_eq!(stored.current().unwrap().hash, "t3");
    assert!(stored
        .tokens
        .iter()
        .any(|t| t.hash == "t2" && t.rotated_at.is_some()));
    let late = exchange(&store, &session, ("t2", "t4"), chrono::Duration::zero()).await;
    assert!(matches!(late, RefreshOutcome::Reused { .. }), "{late:?}");
    // The whole family is dead now, the newest token included, and stays so on reload.
    let newest = exchange(&store, &session, ("t3", "t5"), grace).await;
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
    let mut unknown = presented(&session, "t3");
    unknown.session_id = Uuid::now_v7();
    let unknown = store
        .refresh(unknown, refresh_token("t6", 60), grace)
        .await
        .unwrap();
    assert!(matches!(unknown, RefreshOutcome::Invalid));
}

#[tokio::test]
async fn a_reloaded_family_keeps_one_current_token_and_what_the_window_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, session) = store_with_session(dir.path(), "reload@example.com", "a").await;
    let grace = chrono::Duration::seconds(5);
    for (old, new) in [("a", "b"), ("a", "c"), ("c", "d")] {
        let outcome = exchange(&store, &session, (old, new), grace).await;
        assert!(
            matches!(outcome, RefreshOutcome::Rotated { .. }),
            "{outcome:?}"
        );
    }
    let before = store.session(session.id).await.unwrap().unwrap();
    drop(store);
    let store = open(dir.path());
    let after = store.session(session.id).await.unwrap().unwrap();
    assert_eq!(after, before, "the log replays to the same family");
    assert_eq!(after.current().unwrap().hash, "d");
    assert_eq!(
        after
            .tokens
            .iter()
            .filter(|t| t.rotated_at.is_none())
            .count(),
        1
    );
    // Without a grace window, a rotation keeps nothing superseded, in memory and on disk.
    exchange(&store, &session, ("d", "e"), chrono::Duration::zero()).await;
    drop(store);
    let store = open(dir.path());
    let tokens = store.session(session.id).await.unwrap().unwrap().tokens;
    assert_eq!(tokens.len(), 1);
    let old = exchange(&store, &session, ("a", "f"), grace).await;
    assert!(matches!(old, RefreshOutcome::Reused { .. }), "{old:?}");
}

/// Writes `lines` as the store's log, each framed as the store frames it.
fn write_log(dir: &Path, lines: impl IntoIterator<Item = serde_json::Value>) {
    let mut log = Vec::new();
    for line in lines {
        let json = line.to_string();
        log.extend(format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes())).into_bytes());
    }
    fs::write(FileStore::path(dir), log).unwrap();
}

/// A log written before refresh-token families (no `family`, no `grace_ms`) loads: its
/// sessions keep their revocations and expiry, but take no refresh token.
#[tokio::test]
async fn a_store_written_before_families_loads_and_its_sessions_refresh_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let owner = user("legacy@example.com");
    let (live, revoked) = (Uuid::now_v7(), Uuid::now_v7());
    let now = crate::domain::now();
    let token = |hash: &str, rotated: bool| {
        let rotated_at = if rotated { json!(now) } else { json!(null) };
        json!({"hash": hash, "issued_at": now, "expires_at": now + chrono::Duration::hours(1),
               "rotated_at": rotated_at})
    };
    let session = |id: Uuid, tokens: Vec<serde_json::Value>| {
        json!({"op": "session_put", "session": {"id": id, "user_id": owner.id,
               "scope": "profile", "created_at": now, "revoked_at": null, "tokens": tokens}})
    };
    let lines = [
        json!({"op": "format", "version": 1}),
        serde_json::to_value(Entry::UserPut {
            user: UserRecord::from(&owner),
        })
        .unwrap(),
        session(live, vec![token("l1", true), token("l2", false)]),
        json!({"op": "session_rotate", "id": live, "presented": "l2", "at": now,
               "new": token("l3", false)}),
        session(revoked, vec![token("r1", false)]),
        json!({"op": "session_revoke", "id": revoked, "at": now}),
    ];
    write_log(dir.path(), lines);

    let store = open(dir.path());
    let old = store.session(live).await.unwrap().unwrap();
    assert_eq!(old.family, None);
    assert!(old.is_live(now), "kept until its newest token expires");
    assert_eq!(old.tokens.len(), 1, "only the newest token is kept");
    assert!(store.session_revoked(revoked).await.unwrap());
    for hash in ["l1", "l2", "l3"] {
        let mut p = presented(&old, hash);
        p.family = String::new();
        let outcome = store
            .refresh(p, refresh_token("new", 60), chrono::Duration::seconds(5))
            .await
            .unwrap();
        assert!(
            matches!(outcome, RefreshOutcome::Invalid),
            "{hash}: {outcome:?}"
        );
    }
    assert!(
        !store.session_revoked(live).await.unwrap(),
        "nothing revoked"
    );
    store.compact().unwrap();
    drop(store);
    assert!(open(dir.path()).session_revoked(revoked).await.unwrap());
}

#[tokio::test]
async fn sessions_of_logged_out_or_deleted_users_do_not_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let (store, session) = store_with_session(dir.path(), "gone@example.com", "a").await;
    store
        .update_user(
            session.user_id,
            Box::new(|u| u.tokens_valid_after = crate::domain::now()),
        )
        .await
        .unwrap();
    let outcome = exchange(&store, &session, ("a", "b"), chrono::Duration::zero()).await;
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
    let live = new_session(&owner, "l", 3600);
    let expiring = new_session(&owner, "e", 1);
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

/// A log file built line by line, as the store appends one, for the start-up to judge.
struct Image(Vec<u8>);

impl Image {
    fn new(format: u32) -> Self {
        Image(super::codec::encode(&Entry::Format { version: format }))
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn record(mut self, user: &User) -> Self {
        self.0.extend(put(user));
        self
    }

    /// A commit marker: "the first `through` bytes were synced before this line was
    /// written". Framed by hand, so this also pins the format on disk.
    fn marker(mut self, through: u64) -> Self {
        let json = format!(r#"{{"op":"synced","through":{through}}}"#);
        let line = format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()));
        self.0.extend_from_slice(line.as_bytes());
        self
    }

    /// `user`'s record as a power cut leaves it when its page never reached the disk.
    fn lost(mut self, user: &User) -> Self {
        let len = put(user).len();
        self.0.extend(std::iter::repeat_n(0u8, len - 1));
        self.0.push(b'\n');
        self
    }

    fn write_to(&self, dir: &Path) {
        fs::write(FileStore::path(dir), &self.0).unwrap();
    }
}

fn put(user: &User) -> Vec<u8> {
    super::codec::encode(&Entry::UserPut {
        user: UserRecord::from(user),
    })
}

/// Runs `f` with this thread's log events captured: its result and what it logged.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

async fn emails(store: &FileStore) -> Vec<String> {
    let users = store.list_users(0, 100).await.unwrap();
    users.iter().map(|u| u.email.as_str().to_owned()).collect()
}

fn users<const N: usize>(names: [&str; N]) -> [User; N] {
    names.map(|n| user(&format!("{n}@example.com")))
}

#[tokio::test]
async fn a_power_cut_mid_group_commit_drops_the_unacknowledged_records_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c, d] = users(["a", "b", "c", "d"]);
    // a is synced, so the next append (b) starts with a marker claiming it. c is appended
    // while the fdatasync covering b runs; it returns, so d's append starts with a marker
    // claiming b. Then the power goes: c's page never reached the disk, d's did.
    let image = Image::new(2).record(&a);
    let after_a = image.len();
    let image = image.marker(after_a).record(&b);
    let after_b = image.len();
    let image = image.lost(&c).marker(after_b).record(&d);
    image.write_to(dir.path());

    let (opened, logs) = logged(|| FileStore::open(dir.path(), FileStoreOptions::default()));
    let store = opened.expect("only unacknowledged records were damaged: the store starts");
    assert_eq!(emails(&store).await, ["a@example.com", "b@example.com"]);
    let path = FileStore::path(dir.path());
    assert_eq!(fs::metadata(&path).unwrap().len(), after_b, "cut at c");
    assert!(
        logs.contains("dropping a damaged record and the valid ones after it")
            && logs.contains("none was acknowledged")
            && logs.contains(&format!("damaged_at={after_b}"))
            && logs.contains("dropped_records=2"),
        "{logs}"
    );
    // The log takes appends again, and they load.
    store.create_user(c.clone()).await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        emails(&store).await,
        ["a@example.com", "b@example.com", "c@example.com"]
    );
}

#[tokio::test]
async fn damage_a_commit_marker_records_as_synced_still_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c, d] = users(["a", "b", "c", "d"]);
    // b and c were synced (the marker before d says so), then b was damaged: not a power
    // cut, and b was acknowledged.
    let image = Image::new(2).record(&a);
    let after_a = image.len();
    let image = image.marker(after_a);
    let at_b = image.len();
    let image = image.lost(&b).record(&c);
    let after_c = image.len();
    let image = image.marker(after_c).record(&d);
    image.write_to(dir.path());

    let err = FileStore::open(dir.path(), FileStoreOptions::default())
        .err()
        .expect("acknowledged data is damaged: the store must not start");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
    assert!(
        text.contains(&format!("damaged record at byte {at_b} followed by"))
            && text.contains(&format!(
                "commit marker (line 6) recording the first {after_c} bytes as synced"
            ))
            && text.contains("refusing to drop"),
        "{text}"
    );
    assert_eq!(
        fs::read(FileStore::path(dir.path())).unwrap(),
        image.0,
        "the log is left as it was"
    );
}

#[tokio::test]
async fn a_format_1_log_loads_as_before_and_compaction_rewrites_it_as_format_2() {
    let [a, b, c, d] = users(["a", "b", "c", "d"]);
    // Without markers nothing tells acknowledged from not: damage followed by valid
    // records is refused, even in a shape a format 2 log would recover from.
    let dir = tempfile::tempdir().unwrap();
    let image = Image::new(1).record(&a);
    let at_b = image.len();
    image.lost(&b).record(&c).write_to(dir.path());
    let err = FileStore::open(dir.path(), FileStoreOptions::default())
        .err()
        .expect("damage before valid records in a format 1 log is refused");
    assert!(
        err.to_string().contains(&format!(
            "damaged record at byte {at_b} followed by valid records (line 4); refusing to drop acknowledged data"
        )),
        "{err}"
    );

    // A torn tail is cut off, and the rest loads.
    let dir = tempfile::tempdir().unwrap();
    let mut image = Image::new(1).record(&a).record(&b);
    let whole = image.len();
    image.0.extend_from_slice(&put(&c)[..20]);
    image.write_to(dir.path());
    let store = open(dir.path());
    assert_eq!(emails(&store).await, ["a@example.com", "b@example.com"]);
    let path = FileStore::path(dir.path());
    assert_eq!(fs::metadata(&path).unwrap().len(), whole);

    // Appends go on in format 1, which the previous version still reads...
    store.create_user(c.clone()).await.unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        Image::new(1).record(&a).record(&b).record(&c).0
    );
    // ...until a compaction rewrites the log in format 2, whose appends carry markers.
    store.compact().unwrap();
    let compacted = fs::read(&path).unwrap();
    assert!(
        compacted.starts_with(&Image::new(2).0),
        "{}",
        String::from_utf8_lossy(&compacted)
    );
    store.create_user(d.clone()).await.unwrap();
    assert_eq!(
        fs::read(&path).unwrap()[compacted.len()..],
        Image(Vec::new())
            .marker(compacted.len() as u64)
            .record(&d)
            .0
    );
    drop(store);
    assert_eq!(open(dir.path()).count_users().await.unwrap(), 4);
}

#[tokio::test]
async fn every_acknowledged_write_is_claimed_by_the_marker_that_starts_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = users(["a", "b", "c"]);
    let store = open(dir.path());
    for u in [&a, &b, &c] {
        store.create_user(u.clone()).await.unwrap();
    }
    drop(store);
    // One write at a time: each was synced (and answered) before the next was appended.
    let header = Image::new(2).len();
    let image = Image::new(2).marker(header).record(&a);
    let after_a = image.len();
    let image = image.marker(after_a);
    let at_b = image.len();
    let image = image.record(&b);
    let after_b = image.len();
    let image = image.marker(after_b).record(&c);
    let path = FileStore::path(dir.path());
    assert_eq!(
        String::from_utf8(fs::read(&path).unwrap()).unwrap(),
        String::from_utf8(image.0.clone()).unwrap()
    );
    // So damage to an acknowledged record is refused, not dropped as a power cut's.
    let mut damaged = image.0.clone();
    damaged[at_b as usize + 20] ^= 1;
    fs::write(&path, damaged).unwrap();
    let err = FileStore::open(dir.path(), FileStoreOptions::default())
        .err()
        .expect("b was acknowledged");
    assert!(
        err.to_string().contains(&format!(
            "damaged record at byte {at_b} followed by a commit marker"
        )),
        "{err}"
    );
}

/// `secs` seconds from now.
fn in_secs(secs: i64) -> DateTime<Utc> {
    crate::domain::now() + chrono::Duration::seconds(secs)
}

#[tokio::test]
async fn an_assertion_is_used_once_per_client_and_a_replay_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b, exp) = (Uuid::now_v7(), Uuid::now_v7(), in_secs(60));
    assert!(store.use_assertion(a, "jti-1", exp).await.unwrap());
    let lines = store.log_entries();
    assert!(!store.use_assertion(a, "jti-1", exp).await.unwrap());
    assert_eq!(store.log_entries(), lines, "a replay appends nothing");
    // A jti is the client's own: another client's equal one is another assertion.
    assert!(store.use_assertion(b, "jti-1", exp).await.unwrap());
    assert!(store.use_assertion(a, "jti-2", exp).await.unwrap());
}

#[tokio::test]
async fn a_used_assertion_is_forgotten_once_past_its_exp_and_the_leeway() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let client = Uuid::now_v7();
    assert!(store
        .use_assertion(client, "soon", in_secs(1))
        .await
        .unwrap());
    assert!(store
        .use_assertion(client, "later", in_secs(3600))
        .await
        .unwrap());
    // Past `exp` but within the leeway a verifier still accepts it: still refused.
    assert_eq!(store.prune(in_secs(3)).await.unwrap(), 0);
    assert!(!store
        .use_assertion(client, "soon", in_secs(1))
        .await
        .unwrap());
    assert_eq!(store.prune(in_secs(8)).await.unwrap(), 1);
    assert!(!store
        .use_assertion(client, "later", in_secs(3600))
        .await
        .unwrap());
    // Expired and not yet pruned counts as unknown as well.
    let past = in_secs(-10);
    assert!(store.use_assertion(client, "stale", past).await.unwrap());
    assert!(store.use_assertion(client, "stale", past).await.unwrap());
    assert_eq!(store.prune(crate::domain::now()).await.unwrap(), 1);
}

#[tokio::test]
async fn used_assertions_survive_reopening_and_compaction_as_digests() {
    let dir = tempfile::tempdir().unwrap();
    let client = Uuid::now_v7();
    let jti = "a-jti-the-log-never-holds";
    let store = open(dir.path());
    assert!(store.use_assertion(client, jti, in_secs(60)).await.unwrap());
    drop(store);
    let store = open(dir.path());
    assert!(!store.use_assertion(client, jti, in_secs(60)).await.unwrap());
    store.compact().unwrap();
    assert_eq!(store.log_entries(), 2, "the format line and the assertion");
    drop(store);
    let store = open(dir.path());
    assert!(!store.use_assertion(client, jti, in_secs(60)).await.unwrap());
    assert!(store
        .use_assertion(client, "another", in_secs(60))
        .await
        .unwrap());
    let log = fs::read_to_string(FileStore::path(dir.path())).unwrap();
    assert!(
        !log.contains(jti) && !log.contains(&client.to_string()),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_presentations_of_one_assertion_are_accepted_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (client, exp) = (Uuid::now_v7(), in_secs(60));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.use_assertion(client, "raced", exp).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(accepted, 1);
    store.flush_assertions().await;
    assert_eq!(store.log_entries(), 2, "one line written");
}

/// A client registered with public keys (`private_key_jwt`) instead of a secret.
fn client_with_keys() -> Client {
    const ED: &str =
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    let now = crate::domain::now();
    Client {
        id: Uuid::now_v7(),
        name: crate::domain::ClientName::parse("signer").unwrap(),
        scope: crate::domain::Scopes::of([crate::domain::Scope::UsersRead]),
        credential: crate::domain::Credential::Keys(
            crate::domain::ClientKeys::parse_jwks(ED).unwrap(),
        ),
        created_at: now,
        secret_rotated_at: now,
        sign_in: Default::default(),
    }
}

#[tokio::test]
async fn a_client_with_public_keys_round_trips_through_the_log_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let client = client_with_keys();
    let store = open(dir.path());
    store.put_client(client.clone()).await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.client(client.id).await.unwrap().as_ref(),
        Some(&client)
    );
    store.compact().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.list_clients().await.unwrap(),
        std::slice::from_ref(&client)
    );
    let log = fs::read_to_string(FileStore::path(dir.path())).unwrap();
    assert!(!log.contains("secret_hash"), "{log}");
}

/// A client line as builds before public keys wrote it (`secret_hash` a string, no
/// `jwks`) loads as a client with a secret, and is written back in the same shape.
#[tokio::test]
async fn a_client_record_from_before_public_keys_loads_and_is_kept_in_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (id, now) = (Uuid::now_v7(), crate::domain::now());
    let hash = "sha256$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    write_log(
        dir.path(),
        [
            json!({"op": "format", "version": 2}),
            json!({"op": "client_put", "client": {"id": id, "name": "legacy",
                   "scope": "users:read", "secret_hash": hash, "created_at": now,
                   "secret_rotated_at": now}}),
        ],
    );
    let store = open(dir.path());
    let client = store.client(id).await.unwrap().expect("loaded");
    assert_eq!(client.secret_hash(), Some(hash));
    store.compact().unwrap();
    let log = fs::read_to_string(FileStore::path(dir.path())).unwrap();
    assert!(
        log.contains(&format!(r#""secret_hash":"{hash}""#)) && !log.contains("jwks"),
        "{log}"
    );
}

/// The argon2 → digest upgrade of a client secret happens only on the client as it was
/// read: never bringing back a deleted client, never undoing a rotation.
#[tokio::test]
async fn a_restored_client_secret_never_undoes_a_deletion_or_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut read = client_with_keys();
    read.credential = crate::domain::Credential::Secret("$argon2id$old".into());
    store.put_client(read.clone()).await.unwrap();
    assert!(store
        .restore_client_secret(&read, "sha256$new".into())
        .await
        .unwrap());
    let now = store.client(read.id).await.unwrap().unwrap();
    assert_eq!(now.secret_hash(), Some("sha256$new"));
    // Read before a rotation, restored after it: refused.
    let mut rotated = now.clone();
    rotated.credential = crate::domain::Credential::Secret("sha256$rotated".into());
    rotated.secret_rotated_at += chrono::Duration::seconds(1);
    store.put_client(rotated.clone()).await.unwrap();
    assert!(!store
        .restore_client_secret(&now, "sha256$stale".into())
        .await
        .unwrap());
    assert_eq!(store.client(read.id).await.unwrap(), Some(rotated.clone()));
    // Read before a deletion: refused, the client stays deleted.
    store.delete_client(read.id).await.unwrap();
    assert!(!store
        .restore_client_secret(&rotated, "sha256$again".into())
        .await
        .unwrap());
    assert_eq!(store.client(read.id).await.unwrap(), None);
}

/// What `use_assertion` holds back for a moment is written by `flush` (at shutdown).
#[tokio::test]
async fn flush_writes_the_used_assertions_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let entries = store.log_entries();
    assert!(store
        .use_assertion(Uuid::now_v7(), "held", in_secs(60))
        .await
        .unwrap());
    assert_eq!(store.log_entries(), entries, "not appended yet");
    store.flush().await.unwrap();
    assert_eq!(store.log_entries(), entries + 1);
}

fn queued(n: u8, due: DateTime<Utc>) -> QueuedMail {
    QueuedMail {
        id: Uuid::now_v7(),
        recipient: format!("r{n}@example.com"),
        sealed: format!("sealed-{n}"),
        purpose: "password_reset".into(),
        user_id: None,
        attempts: 0,
        next_attempt_at: due,
        created_at: due,
    }
}

#[tokio::test]
async fn the_mail_queue_is_durable_and_a_claim_is_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::domain::now();
    let lease = chrono::Duration::seconds(60);
    let (first, second) = (queued(1, now), queued(2, now));
    let later = queued(3, now + chrono::Duration::hours(1));
    {
        let store = open(dir.path());
        for m in [&first, &second, &later] {
            store.enqueue_mail(m.clone()).await.unwrap();
        }
        // Due ones, oldest first, up to the limit; each now leased.
        let claimed = store.claim_mail(now, lease, 1).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, first.id);
        assert_eq!(claimed[0].next_attempt_at, now + lease);
        let claimed = store.claim_mail(now, lease, 10).await.unwrap();
        assert_eq!(
            claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![second.id]
        );
        assert!(store.claim_mail(now, lease, 10).await.unwrap().is_empty());
        store.delete_mail(second.id).await.unwrap();
        store
            .retry_mail(first.id, 1, now + chrono::Duration::seconds(5))
            .await
            .unwrap();
    }
    // Reopened (a restart): the first is due again once its retry time comes; the
    // delivered one is gone; the later one waits.
    let store = open(dir.path());
    let at = now + chrono::Duration::seconds(5);
    let claimed = store.claim_mail(at, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].id, claimed[0].attempts), (first.id, 1));
    assert_eq!(claimed[0].sealed, "sealed-1");
    // A lease that ran out (the worker died): due again.
    let claimed = store.claim_mail(at + lease, lease, 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![first.id]
    );
    let claimed = store
        .claim_mail(now + chrono::Duration::hours(2), lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "the first again and the later one");
}

#[tokio::test]
async fn a_pending_change_of_address_is_found_by_its_address_until_it_ends_and_after_reopening() {
    use crate::domain::{EmailChange, MailCode};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (ann, bob) = (user("ann@example.com"), user("bob@example.com"));
    store.create_user(ann.clone()).await.unwrap();
    store.create_user(bob.clone()).await.unwrap();
    let moving = |to: &str| {
        let change = EmailChange {
            new_email: Email::parse(to).unwrap(),
            code: MailCode {
                hash: "h".into(),
                expires_at: crate::domain::now(),
            },
        };
        Box::new(move |u: &mut User| u.mail_codes.email_change = Some(change)) as UserUpdate
    };
    store
        .update_user(ann.id, moving("new@example.com"))
        .await
        .unwrap();
    store
        .update_user(bob.id, moving("NEW@example.com"))
        .await
        .unwrap();
    let ids = |found: Vec<User>| {
        let mut ids: Vec<_> = found.into_iter().map(|u| u.id).collect();
        ids.sort();
        ids
    };
    let mut both = vec![ann.id, bob.id];
    both.sort();
    assert_eq!(
        ids(store.users_moving_to(" New@Example.com").await.unwrap()),
        both
    );
    // Bob moves elsewhere; Ann's move is confirmed (her address changes).
    store
        .update_user(bob.id, moving("other@example.com"))
        .await
        .unwrap();
    store
        .update_user(
            ann.id,
            Box::new(|u| {
                u.mail_codes.email_change = None;
                u.email = Email::parse("new@example.com").unwrap();
            }),
        )
        .await
        .unwrap();
    assert!(store
        .users_moving_to("new@example.com")
        .await
        .unwrap()
        .is_empty());
    // The index is rebuilt from the log, and from a compacted one.
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        ids(store.users_moving_to("other@example.com").await.unwrap()),
        vec![bob.id]
    );
    store.compact().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        ids(store.users_moving_to("other@example.com").await.unwrap()),
        vec![bob.id]
    );
    // A move to a taken address is refused by the store itself.
    let err = store
        .update_user(
            bob.id,
            Box::new(|u| u.email = Email::parse("NEW@example.com").unwrap()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEmail), "{err}");
    store.delete_user(bob.id).await.unwrap();
    assert!(store
        .users_moving_to("other@example.com")
        .await
        .unwrap()
        .is_empty());
}
