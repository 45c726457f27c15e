//! The PostgreSQL store on a real PostgreSQL (issue #9): migrations, moving a file store
//! in, and the store's own guarantees, below the HTTP suite (which runs on PostgreSQL too,
//! from `main.rs`).

use serde_json::Value;
use simple_api::store::Store;

use super::helpers::cli;
use super::helpers::database::{database, empty_database, query_value};
use super::helpers::process::{command, free_port, replica, start};

fn migrate(url: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = cli::run(command(dir.path()).env("DATABASE_URL", url), &["migrate"]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.is_empty(),
        "migrate is quiet on success: {}",
        out.stderr
    );
    out.json()
}

#[test]
fn migrate_applies_the_schema_once() {
    let db = empty_database();
    let first = migrate(&db.url);
    let versions: Vec<i32> = simple_api::store::postgres::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(first["applied"], serde_json::json!(versions));
    assert_eq!(first["schema_version"], *versions.last().unwrap());
    let again = migrate(&db.url);
    assert_eq!(again["applied"], serde_json::json!([]));
}

#[test]
fn replicas_migrating_at_once_do_not_race() {
    let db = empty_database();
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            command(dir.path())
                .arg("migrate")
                .env("DATABASE_URL", &db.url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        applied.extend(report["applied"].as_array().unwrap().clone());
    }
    assert_eq!(
        applied,
        simple_api::store::postgres::MIGRATIONS
            .iter()
            .map(|m| serde_json::json!(m.version))
            .collect::<Vec<_>>(),
        "exactly one applied it"
    );
}

#[test]
fn a_file_store_moves_into_postgresql_with_its_passwords_and_refresh_tokens() {
    const PASSWORD: &str = "correct horse 1";
    let dir = tempfile::tempdir().unwrap();
    // A file-store server: a user with a live session, a revoked token, a client.
    let file = start(dir.path()).json_only();
    assert_eq!(file.signup("ann@example.com", PASSWORD).status, 201);
    let (_, refresh) = file.tokens("ann@example.com", PASSWORD);
    let (revoked, _) = file.tokens("ann@example.com", PASSWORD);
    assert_eq!(file.revoke(&revoked).status, 200);
    let client = cli::new_client(dir.path(), None);
    drop(file); // the copy needs the store to itself

    let db = database();
    let copy = |extra: &[&str]| {
        command(dir.path())
            .args(["store", "copy", "--to", &db.url])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = copy(&[]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["users"], 2, "ann and the admin: {report}");
    assert_eq!(report["clients"], 1);
    assert_eq!(report["sessions"], 2);
    assert_eq!(report["revoked_token_ids"], 1);

    // A second copy into the now non-empty database is refused, unless told.
    let out = copy(&[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--overwrite"),
        "{out:?}"
    );
    let out = copy(&["--overwrite"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        report
    );

    // Switch DATABASE_URL on: the same password, refresh token, revocation and client.
    let pg = replica(dir.path(), "pg", &db.url, &[]);
    let (access, _) = pg.tokens("ann@example.com", PASSWORD);
    assert_eq!(pg.me(&access).status, 200);
    assert_eq!(pg.refresh(&refresh).status, 200, "the refresh token moved");
    assert_eq!(pg.me(&revoked).status, 401, "the revocation moved");
    pg.client_token(&client.0, &client.1);
}

#[tokio::test]
async fn email_uniqueness_is_the_databases_decision() {
    let db = database();
    let client = simple_api::store::postgres::connect(&db.url).await.unwrap();
    let insert = "INSERT INTO users (id, email, email_key, role, password_hash, created_at,
                      updated_at, tokens_valid_after)
                  VALUES ($1::text::uuid, $2, $3, 'user', 'h', now(), now(), now())";
    let a = uuid::Uuid::now_v7().to_string();
    let b = uuid::Uuid::now_v7().to_string();
    client
        .execute(insert, &[&a, &"Ann@Example.com", &"ann@example.com"])
        .await
        .unwrap();
    let err = client
        .execute(insert, &[&b, &"ann@EXAMPLE.com", &"ann@example.com"])
        .await
        .unwrap_err();
    let code = err.code().cloned();
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err}"
    );
}

#[test]
fn migrate_needs_a_database_url_and_a_reachable_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("migrate").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
    let port = free_port(); // nothing listens there
    let started = std::time::Instant::now();
    let out = command(dir.path())
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://simple@127.0.0.1:{port}/x"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connect to DATABASE_URL"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

async fn open_store(url: &str) -> simple_api::store::postgres::PgStore {
    simple_api::store::postgres::PgStore::open_unlisted(url)
        .await
        .unwrap()
}

fn new_user(email: &str) -> simple_api::domain::User {
    simple_api::domain::User::new(
        simple_api::domain::Email::parse(email).unwrap(),
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        simple_api::domain::Role::User,
        None,
        None,
    )
}

#[tokio::test]
async fn users_live_in_postgresql_as_in_the_file_store() {
    let db = database();
    let store = open_store(&db.url).await;
    let ann = new_user("Ann@Example.com");
    store.create_user(ann.clone()).await.unwrap();
    let err = store
        .create_user(new_user("ann@EXAMPLE.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, simple_api::store::StoreError::DuplicateEmail),
        "{err}"
    );
    let bob = new_user("bob@example.com");
    store.create_user(bob.clone()).await.unwrap();

    // Read back exactly (timestamps at PostgreSQL's microsecond precision).
    let found = store
        .user_by_email("ANN@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, ann.id);
    assert_eq!(found.email.as_str(), "Ann@Example.com");
    assert_eq!(
        store.user(bob.id).await.unwrap().unwrap().email.as_str(),
        "bob@example.com"
    );
    assert_eq!(store.count_users().await.unwrap(), 2);
    let page: Vec<_> = store
        .list_users(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(page, vec![ann.id, bob.id], "oldest first");
    assert_eq!(store.list_users(1, 10).await.unwrap().len(), 1);

    // Concurrent changes of different fields, on two connections: neither is lost.
    let a = open_store(&db.url).await;
    let b = open_store(&db.url).await;
    let first = simple_api::domain::PersonName::parse("Ann", "first_name").unwrap();
    let last = simple_api::domain::PersonName::parse("Lee", "last_name").unwrap();
    let (ra, rb) = tokio::join!(
        a.update_user(ann.id, Box::new(move |u| u.first_name = first)),
        b.update_user(ann.id, Box::new(move |u| u.last_name = last)),
    );
    ra.unwrap();
    rb.unwrap();
    let both = store.user(ann.id).await.unwrap().unwrap();
    assert_eq!(both.first_name.as_ref().unwrap().as_str(), "Ann");
    assert_eq!(both.last_name.as_ref().unwrap().as_str(), "Lee");

    // Taking someone else's email by changing case is refused by the database too.
    let taken = simple_api::domain::Email::parse("BOB@example.com").unwrap();
    let err = a
        .update_user(ann.id, Box::new(move |u| u.email = taken))
        .await
        .unwrap_err();
    assert!(
        matches!(err, simple_api::store::StoreError::DuplicateEmail),
        "{err}"
    );

    assert_eq!(store.delete_user(bob.id).await.unwrap().id, bob.id);
    assert!(store.user(bob.id).await.unwrap().is_none());
    assert!(matches!(
        store.delete_user(bob.id).await.unwrap_err(),
        simple_api::store::StoreError::NotFound
    ));
    assert!(matches!(
        a.update_user(bob.id, Box::new(|_| {})).await.unwrap_err(),
        simple_api::store::StoreError::NotFound
    ));
}

#[tokio::test]
async fn clients_and_revocations_live_in_postgresql() {
    use simple_api::domain::{Client, ClientName, Scope, Scopes};
    let db = database();
    let store = open_store(&db.url).await;
    let now = chrono::Utc::now();
    let mut client = Client {
        id: uuid::Uuid::now_v7(),
        name: ClientName::parse("billing").unwrap(),
        scope: Scopes::of([Scope::UsersRead]),
        credential: simple_api::domain::Credential::Secret(
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        ),
        created_at: now,
        secret_rotated_at: now,
        sign_in: Default::default(),
    };
    store.put_client(client.clone()).await.unwrap();
    client.scope = Scopes::of([Scope::UsersRead, Scope::UsersWrite]);
    store.put_client(client.clone()).await.unwrap(); // a change replaces the row
    let found = store.client(client.id).await.unwrap().unwrap();
    assert_eq!(found.scope, client.scope);
    assert_eq!(found.name.as_str(), "billing");
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
    assert_eq!(store.delete_client(client.id).await.unwrap().id, client.id);
    assert!(store.client(client.id).await.unwrap().is_none());
    assert!(matches!(
        store.delete_client(client.id).await.unwrap_err(),
        simple_api::store::StoreError::NotFound
    ));

    let later = now + chrono::Duration::minutes(15);
    store.revoke_jti("live".into(), later).await.unwrap();
    store.revoke_jti("live".into(), later).await.unwrap(); // idempotent
    store
        .revoke_jti("old".into(), now - chrono::Duration::seconds(10))
        .await
        .unwrap();
    assert!(store.is_jti_revoked("live").await.unwrap());
    assert!(!store.is_jti_revoked("never").await.unwrap());
    assert_eq!(store.prune(now).await.unwrap(), 1, "only the expired one");
    assert!(store.is_jti_revoked("live").await.unwrap());
    assert!(!store.is_jti_revoked("old").await.unwrap());
}

/// However much there is to forget, prune gets through it (in batches, each within the
/// operation bound) and keeps what is live.
#[tokio::test]
async fn prune_gets_through_a_backlog_in_batches() {
    use simple_api::domain::{RefreshToken, Scopes, Session};
    let db = database();
    let store = open_store(&db.url).await;
    let owner = new_user("owner@example.com");
    store.create_user(owner.clone()).await.unwrap();
    let token = |hash: String, ttl: i64| {
        let now = simple_api::domain::now();
        RefreshToken {
            hash,
            issued_at: now - chrono::Duration::hours(2),
            expires_at: now + chrono::Duration::seconds(ttl),
            rotated_at: None,
        }
    };
    let session = |first: RefreshToken| {
        let id = uuid::Uuid::now_v7();
        Session::new(id, owner.id, Scopes::default(), "family".into(), first)
    };
    let dead = 2500;
    let mut first_dead = None;
    for i in 0..dead {
        let session = session(token(format!("d{i}"), -60));
        first_dead.get_or_insert(session.id);
        store.create_session(session).await.unwrap();
    }
    let live = session(token("live".into(), 3600));
    store.create_session(live.clone()).await.unwrap();
    let removed = store.prune(simple_api::domain::now()).await.unwrap();
    assert_eq!(removed, dead);
    assert!(store.session(live.id).await.unwrap().is_some());
    assert!(store.session(first_dead.unwrap()).await.unwrap().is_none());
    assert_eq!(store.prune(simple_api::domain::now()).await.unwrap(), 0);
}

/// The shared login counters take any identifier (kept as a fixed-size digest: a raw key
/// of some kilobytes used to fail the primary key's btree insert) and judge an attempt
/// all or nothing: a refused one counts against no key.
#[tokio::test]
async fn login_counters_take_any_identifier_and_count_all_or_nothing() {
    use simple_api::auth::throttle::{Attempt, LoginThrottle, Throttle};
    use std::sync::Arc;
    let db = database();
    let store: Arc<dyn Store> = Arc::new(open_store(&db.url).await);
    let throttle = LoginThrottle::new(Throttle::new(1, std::time::Duration::from_secs(60)), &store);
    let huge = "x".repeat(10_000);
    let address = Some("192.0.2.9".parse().unwrap());
    let on = |account: &str| Attempt::new(Some(account), address);
    assert_eq!(throttle.reserve(&on(&huge)).await.unwrap(), None);
    assert!(throttle.reserve(&on(&huge)).await.unwrap().is_some());
    // The refused attempts above did not touch the address: its budget (ten) still has
    // nine left for other accounts.
    for i in 0..9 {
        let other = format!("other{i}@example.com");
        assert_eq!(throttle.reserve(&on(&other)).await.unwrap(), None, "{i}");
    }
    assert!(throttle
        .reserve(&on("one-more@example.com"))
        .await
        .unwrap()
        .is_some());
    // A right answer takes its attempt back.
    let fresh = Attempt::new(Some("fresh@example.com"), None);
    throttle.reserve(&fresh).await.unwrap();
    throttle.refund(&fresh, false).await.unwrap();
    assert_eq!(throttle.reserve(&fresh).await.unwrap(), None);
    assert!(throttle.reserve(&fresh).await.unwrap().is_some());
}

/// Sessions from before refresh-token families (migration 4 leaves their `family` NULL)
/// keep their expiry and revocation, but take no refresh token.
#[tokio::test]
async fn sessions_from_before_families_refresh_no_more() {
    use simple_api::domain::{PresentedRefresh, RefreshToken, Scopes, Session};
    use simple_api::store::RefreshOutcome;
    let db = database();
    let store = open_store(&db.url).await;
    let owner = new_user("legacy@example.com");
    store.create_user(owner.clone()).await.unwrap();
    let now = simple_api::domain::now();
    let token = |hash: &str| RefreshToken {
        hash: hash.into(),
        issued_at: now,
        expires_at: now + chrono::Duration::hours(1),
        rotated_at: None,
    };
    let id = uuid::Uuid::now_v7();
    let mut old = Session::new(id, owner.id, Scopes::default(), "f".into(), token("old1"));
    old.tokens[0].rotated_at = Some(now);
    old.tokens.push(token("old2"));
    store.create_session(old).await.unwrap();
    let sql = format!(
        "WITH old AS (UPDATE sessions SET family = NULL WHERE id = '{id}' RETURNING 1) \
         SELECT count(*) FROM old"
    );
    assert_eq!(query_value(&db.url, &sql), "1");

    let read = store.session(id).await.unwrap().unwrap();
    assert_eq!(read.family, None);
    assert!(read.is_live(now), "kept until its newest token expires");
    let hashes: Vec<_> = read.tokens.iter().map(|t| t.hash.as_str()).collect();
    assert_eq!(hashes, ["old2"], "only the newest token counts");
    for hash in ["old1", "old2"] {
        let presented = PresentedRefresh {
            session_id: id,
            family: "f".into(),
            hash: hash.into(),
        };
        let outcome = store
            .refresh(presented, token("new"), chrono::Duration::seconds(10))
            .await
            .unwrap();
        assert!(matches!(outcome, RefreshOutcome::Invalid), "{outcome:?}");
    }
    assert!(!store.session_revoked(id).await.unwrap(), "nothing revoked");
    store.revoke_session(id).await.unwrap();
    assert!(store.session_revoked(id).await.unwrap());
}

/// The plan of `sql` with `params`, run (`EXPLAIN ANALYZE`): one line per node or detail.
async fn plan(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    let explain = format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}");
    let rows = client.query(&explain, params).await.unwrap();
    let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    lines.join("\n")
}

/// `GET /users?after=` on PostgreSQL is a seek: however deep the cursor, the keyset query
/// descends the `(created_at, id)` index once and reads the page's rows only (an OFFSET
/// to the same place reads every row before it); and paging with it returns every row
/// once, in order, ties on `created_at` broken by id.
#[tokio::test]
async fn paging_after_a_cursor_is_an_index_seek() {
    use simple_api::domain::UserCursor;
    use simple_api::store::postgres::list_users_after_sql;
    const ROWS: i64 = 20_000;
    let db = database();
    let store = open_store(&db.url).await;
    let client = simple_api::store::postgres::connect(&db.url).await.unwrap();
    // Two users per millisecond: the id decides between them.
    client
        .batch_execute(
            "INSERT INTO users (id, email, email_key, role, password_hash, created_at,
                                updated_at, tokens_valid_after)
             SELECT gen_random_uuid(), 'u' || i || '@example.com', 'u' || i || '@example.com',
                    'user', 'h', t, t, t
             FROM generate_series(1, 20000) AS i,
                  LATERAL (SELECT timestamptz '2025-01-01 00:00:00+00'
                                  + (i / 2) * interval '1 millisecond' AS t) AS at;
             ANALYZE users;",
        )
        .await
        .unwrap();
    let order: Vec<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> = client
        .query(
            "SELECT created_at, id FROM users ORDER BY created_at, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(order.len() as i64, ROWS);

    let limit: i64 = 101;
    let (created_at, id) = order[19_000];
    let deep = plan(
        &client,
        &list_users_after_sql(true),
        &[&created_at, &id, &limit],
    )
    .await;
    let first = plan(&client, &list_users_after_sql(false), &[&limit]).await;
    for plan in [&deep, &first] {
        assert!(
            plan.contains("Index Scan using users_created on users (actual rows=101 loops=1)"),
            "{plan}"
        );
        assert!(
            !plan.contains("Seq Scan") && !plan.contains("Sort"),
            "{plan}"
        );
        assert!(
            !plan.contains("Filter"),
            "the index bounds the scan: {plan}"
        );
    }
    assert!(
        deep.contains("Index Cond: (ROW(created_at, id) > ROW("),
        "{deep}"
    );
    // What it replaces: the same page by OFFSET reads the 19,000 rows before it.
    let offset = plan(
        &client,
        "SELECT id FROM users ORDER BY created_at, id OFFSET 19001 LIMIT 101",
        &[],
    )
    .await;
    assert!(offset.contains("(actual rows=19102 loops=1)"), "{offset}");

    // The store pages through all of it exactly, 1,000 at a time.
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = store.list_users_after(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(UserCursor::of(last));
        seen.extend(page.iter().map(|u| (u.created_at, u.id)));
    }
    assert_eq!(seen, order);
    let page = store
        .list_users_after(Some(UserCursor { created_at, id }), 3)
        .await
        .unwrap();
    let ids: Vec<_> = page.iter().map(|u| u.id).collect();
    let want: Vec<_> = order[19_001..19_004].iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, want);
}

/// Used assertion ids (`private_key_jwt`): the first use is `true`, a replay `false`
/// (whatever `exp` it claims), per client, at any length; an id whose assertion expired
/// (beyond the verifier's leeway) counts as unknown again, one within the leeway does not;
/// prune forgets the expired ones and counts them.
#[tokio::test]
async fn an_assertion_id_is_used_once_until_it_expires() {
    use chrono::Duration;
    let db = database();
    let store = open_store(&db.url).await;
    let (client, other) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let now = simple_api::domain::now();
    let exp = now + Duration::minutes(1);
    let used = |client, jti: &str, exp| {
        let (store, jti) = (&store, jti.to_owned());
        async move { store.use_assertion(client, &jti, exp).await.unwrap() }
    };
    assert!(used(client, "a1", exp).await);
    assert!(!used(client, "a1", exp).await, "a replay");
    assert!(!used(client, "a1", exp + Duration::hours(1)).await);
    assert!(
        used(other, "a1", exp).await,
        "another client's ids are its own"
    );
    let long = "x".repeat(10_000);
    assert!(used(client, &long, exp).await);
    assert!(!used(client, &long, exp).await);
    // Kept as a fixed-size digest, never as the id itself.
    let sizes = "SELECT string_agg(DISTINCT octet_length(jti_sha256)::text, ',') \
                 FROM client_assertions";
    assert_eq!(query_value(&db.url, sizes), "32");

    let expired = now - Duration::minutes(1);
    assert!(used(client, "old", expired).await);
    assert!(
        used(client, "old", exp).await,
        "its assertion expired: unknown"
    );
    assert!(!used(client, "old", exp).await, "and now in use again");
    let within_leeway = now - Duration::seconds(1);
    assert!(used(client, "recent", within_leeway).await);
    assert!(
        !used(client, "recent", exp).await,
        "a verifier may still accept it: still a replay"
    );

    assert!(used(client, "gone", expired).await);
    assert!(used(other, "gone too", expired).await);
    assert_eq!(store.prune(now).await.unwrap(), 2, "the expired ones only");
    let left = query_value(&db.url, "SELECT count(*) FROM client_assertions");
    assert_eq!(left, "5", "a1 twice, the long one, old, recent");
    assert!(!used(client, "recent", exp).await, "kept through the prune");
}

/// Concurrent uses of one assertion id, over two store handles (two replicas' pools),
/// get exactly one `true`: a new id, and an expired one being taken up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_uses_of_an_assertion_id_exactly_one_wins() {
    use std::sync::Arc;
    let db = database();
    let stores = [
        Arc::new(open_store(&db.url).await),
        Arc::new(open_store(&db.url).await),
    ];
    let client = uuid::Uuid::now_v7();
    let now = simple_api::domain::now();
    let exp = now + chrono::Duration::minutes(5);
    let race = |jti: String| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (store, jti) = (Arc::clone(&stores[i % 2]), jti.clone());
                tokio::spawn(async move { store.use_assertion(client, &jti, exp).await })
            })
            .collect();
        async move {
            let mut wins = 0;
            for handle in handles {
                wins += usize::from(handle.await.unwrap().unwrap());
            }
            wins
        }
    };
    for round in 0..10 {
        let jti = format!("new-{round}");
        assert_eq!(race(jti).await, 1, "round {round}: a new id");
        let jti = format!("expired-{round}");
        let expired = now - chrono::Duration::minutes(5);
        assert!(stores[0]
            .use_assertion(client, &jti, expired)
            .await
            .unwrap());
        assert_eq!(race(jti).await, 1, "round {round}: an expired id");
    }
}

/// A `private_key_jwt` client, as the tests register one: an Ed25519 key (RFC 8037).
fn keys_client(name: &str) -> simple_api::domain::Client {
    use simple_api::domain::{Client, ClientKeys, ClientName, Credential, Scope, Scopes};
    let now = simple_api::domain::now();
    let jwk = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    Client {
        id: uuid::Uuid::now_v7(),
        name: ClientName::parse(name).unwrap(),
        scope: Scopes::of([Scope::UsersRead]),
        credential: Credential::Keys(ClientKeys::parse_jwks(jwk).unwrap()),
        created_at: now,
        secret_rotated_at: now,
        sign_in: Default::default(),
    }
}

/// A client with public keys reads back exactly (get, list), can change to a secret and
/// back; the database itself refuses a row with both credentials or neither.
#[tokio::test]
async fn clients_with_public_keys_live_in_postgresql() {
    use simple_api::domain::Credential;
    let db = database();
    let store = open_store(&db.url).await;
    let mut keys = keys_client("signer");
    let mut secret = keys_client("shared");
    secret.credential = Credential::Secret("sha256$abc".into());
    store.put_client(secret.clone()).await.unwrap();
    store.put_client(keys.clone()).await.unwrap();
    assert_eq!(store.client(keys.id).await.unwrap().as_ref(), Some(&keys));
    assert_eq!(
        store.list_clients().await.unwrap(),
        vec![keys.clone(), secret.clone()],
        "oldest first"
    );
    let columns = format!(
        "SELECT (secret_hash IS NULL)::text || ',' || (jwks IS NULL)::text \
         FROM clients WHERE id = '{}'",
        keys.id
    );
    assert_eq!(query_value(&db.url, &columns), "true,false");

    // From keys to a secret and back: the other column is cleared each time.
    let to_keys = keys.credential.clone();
    keys.credential = Credential::Secret("sha256$def".into());
    store.put_client(keys.clone()).await.unwrap();
    assert_eq!(query_value(&db.url, &columns), "false,true");
    keys.credential = to_keys;
    store.put_client(keys.clone()).await.unwrap();
    assert_eq!(store.client(keys.id).await.unwrap().as_ref(), Some(&keys));
    assert_eq!(store.delete_client(keys.id).await.unwrap(), keys);

    let sql = simple_api::store::postgres::connect(&db.url).await.unwrap();
    for (secret_hash, jwks) in [(None, None), (Some("sha256$x"), Some("{\"keys\":[]}"))] {
        let err = sql
            .execute(
                "INSERT INTO clients (id, name, scope, secret_hash, jwks, created_at, \
                 secret_rotated_at) VALUES (gen_random_uuid(), 'x', 'users:read', $1, $2, \
                 now(), now())",
                &[&secret_hash, &jwks],
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{err}"
        );
    }
}

/// `store copy` carries clients of both kinds from a file store into PostgreSQL as they
/// were.
#[test]
fn store_copy_carries_clients_with_a_secret_or_public_keys() {
    use simple_api::domain::Credential;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_client("signer");
    let mut secret = keys_client("shared");
    secret.credential = Credential::Secret("sha256$abc".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = simple_api::store::FileStore::open(
            &dir.path().join("data"),
            simple_api::store::FileStoreOptions::default(),
        )
        .unwrap();
        store.put_client(secret.clone()).await.unwrap();
        store.put_client(keys.clone()).await.unwrap();
    });
    let db = database();
    let out = command(dir.path())
        .args(["store", "copy", "--to", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["clients"], 2, "{report}");
    let copied = runtime.block_on(async { open_store(&db.url).await.list_clients().await });
    assert_eq!(copied.unwrap(), vec![keys, secret], "oldest first");
}

/// As the file store's test: the argon2 → digest upgrade is one conditional UPDATE.
#[tokio::test]
async fn a_restored_client_secret_never_undoes_a_deletion_or_a_rotation() {
    use simple_api::domain::Credential;
    let db = database();
    let store = open_store(&db.url).await;
    let mut read = keys_client("legacy");
    read.credential = Credential::Secret("$argon2id$old".into());
    store.put_client(read.clone()).await.unwrap();
    assert!(store
        .restore_client_secret(&read, "sha256$new".into())
        .await
        .unwrap());
    let now = store.client(read.id).await.unwrap().unwrap();
    assert_eq!(now.secret_hash(), Some("sha256$new"));
    let mut rotated = now.clone();
    rotated.credential = Credential::Secret("sha256$rotated".into());
    rotated.secret_rotated_at += chrono::Duration::seconds(1);
    store.put_client(rotated.clone()).await.unwrap();
    assert!(!store
        .restore_client_secret(&now, "sha256$stale".into())
        .await
        .unwrap());
    assert_eq!(store.client(read.id).await.unwrap(), Some(rotated.clone()));
    store.delete_client(read.id).await.unwrap();
    assert!(!store
        .restore_client_secret(&rotated, "sha256$again".into())
        .await
        .unwrap());
    assert_eq!(store.client(read.id).await.unwrap(), None);
}

#[tokio::test]
async fn the_mail_queue_gives_each_message_to_one_replica() {
    let db = database();
    // Leaked for the test's length: the two claimers borrow them.
    let a: &'static _ = Box::leak(Box::new(open_store(&db.url).await));
    let b: &'static _ = Box::leak(Box::new(open_store(&db.url).await));
    let now = simple_api::domain::now();
    let lease = chrono::Duration::seconds(60);
    let mut ids = Vec::new();
    for n in 0..40 {
        let m = simple_api::domain::QueuedMail {
            id: uuid::Uuid::now_v7(),
            recipient: format!("r{n}@example.com"),
            sealed: format!("sealed-{n}"),
            purpose: "password_reset".into(),
            user_id: None,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
        };
        ids.push(m.id);
        a.enqueue_mail(m).await.unwrap();
    }
    // Two replicas claiming at once, in small batches: every message once, none twice.
    let claim = |s: &'static simple_api::store::postgres::PgStore| async move {
        let mut got = Vec::new();
        loop {
            let batch = s.claim_mail(now, lease, 3).await.unwrap();
            if batch.is_empty() {
                return got;
            }
            got.extend(batch.into_iter().map(|m| m.id));
        }
    };
    let (from_a, from_b) = tokio::join!(claim(a), claim(b));
    let mut all: Vec<_> = from_a.iter().chain(&from_b).copied().collect();
    all.sort();
    assert_eq!(all, ids, "each message claimed exactly once");
    // Retried and delivered, as in the file store; a lease that runs out frees it.
    b.retry_mail(ids[0], 1, now).await.unwrap();
    a.delete_mail(ids[1]).await.unwrap();
    let again = a.claim_mail(now, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (ids[0], 1));
    let later = a.claim_mail(now + lease, lease, 100).await.unwrap();
    assert_eq!(
        later.len(),
        39,
        "every lease ran out except the delivered one's"
    );
}
