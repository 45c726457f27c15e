//! Replicas on one database (issue #9): two server processes sharing DATABASE_URL and
//! KEYS_DIR behave as one service. (PostgreSQL or a replica going away: `outages.rs`.)

use std::time::Duration;

use serde_json::json;

use super::helpers::database::{database, query_value, TestDatabase};
use super::helpers::process::{command, replica, Server};
use super::helpers::{cli, kids_of, within, Resp};

const PASSWORD: &str = "correct horse 1";

/// Two replicas on a fresh database; A starts first, so that it makes the signing key
/// both then use.
fn two(extra: &[(&str, &str)]) -> (tempfile::TempDir, TestDatabase, Server, Server) {
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let a = replica(dir.path(), "a", &db.url, extra);
    let b = replica(dir.path(), "b", &db.url, extra);
    (dir, db, a, b)
}

#[test]
fn sign_up_on_one_replica_log_in_on_the_other_and_use_the_token_on_the_first() {
    let (_dir, _db, a, b) = two(&[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (access, _) = b.tokens("ANN@example.com", PASSWORD);
    let me = a.me(&access);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["email"], "ann@example.com");
    // One uniqueness for both: the email is taken on B too, in any case.
    let again = b.signup("Ann@Example.COM", PASSWORD);
    assert_eq!(again.status, 409, "{}", again.body);
}

/// Each way of ending a token's life, done on A, is refused by B (whose cache had
/// accepted the token just before) within a second.
#[test]
fn what_ends_a_token_on_one_replica_ends_it_on_the_other_within_a_second() {
    let (_dir, _db, a, b) = two(&[]);
    let refused_by_b = |token: &str| {
        let took = within("B refusing it", Duration::from_secs(1), || {
            b.me(token).status == 401
        });
        assert!(took < Duration::from_secs(1), "{took:?}");
    };
    let user = |n: u32| {
        let email = format!("u{n}@example.com");
        assert_eq!(a.signup(&email, PASSWORD).status, 201);
        let (access, refresh) = b.tokens(&email, PASSWORD);
        assert_eq!(b.me(&access).status, 200, "B accepts (and caches) it first");
        (email, access, refresh)
    };

    // Logout everywhere (cookie logout with scope=global) on A.
    let (_, access, refresh) = user(1);
    let out = a.delete("/api/v1/auth_session/logout?scope=global", Some(&access));
    assert_eq!(out.status, 200, "{}", out.body);
    refused_by_b(&access);
    assert_eq!(b.refresh(&refresh).status, 400, "its refresh token too");

    // Password change on A ends the other sessions, B's included.
    let (email, access, _) = user(2);
    let (mine, _) = a.tokens(&email, PASSWORD);
    let change = json!({ "current_password": PASSWORD, "new_password": "a new password 2" });
    let out = a.put_json("/api/v1/users/me/password", Some(&mine), &change);
    assert_eq!(out.status, 200, "{}", out.body);
    refused_by_b(&access);

    // Deleting the user on A.
    let (_, access, _) = user(3);
    let out = a.delete("/api/v1/users/me", Some(&access));
    assert_eq!(out.status, 200, "{}", out.body);
    refused_by_b(&access);

    // Revoking the access token on A (RFC 7009).
    let (_, access, _) = user(4);
    assert_eq!(a.revoke(&access).status, 200);
    refused_by_b(&access);

    // Revoking the refresh token on A ends its family on B.
    let (_, _, refresh) = user(5);
    assert_eq!(a.revoke(&refresh).status, 200);
    assert_eq!(b.refresh(&refresh).status, 400);
}

/// Presents one refresh token on A and B at the same instant; returns both answers.
fn race(a: &Server, b: &Server, token: &str) -> (Resp, Resp) {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let on_a = s.spawn(|| {
            barrier.wait();
            a.refresh(token)
        });
        let on_b = s.spawn(|| {
            barrier.wait();
            b.refresh(token)
        });
        (on_a.join().unwrap(), on_b.join().unwrap())
    })
}

/// The refresh token a grant answered with.
fn refresh_token_of(resp: &Resp) -> String {
    resp.json()["refresh_token"].as_str().unwrap().to_owned()
}

#[test]
fn the_database_decides_a_refresh_race_between_replicas() {
    // Without a grace window the loser is reuse: exactly one rotation, then the family
    // is revoked, the winner's new token included.
    let (_dir, _db, a, b) = two(&[("REFRESH_REUSE_GRACE", "0")]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    for _ in 0..10 {
        let (_, refresh) = a.tokens("ann@example.com", PASSWORD);
        let (x, y) = race(&a, &b, &refresh);
        let mut statuses = [x.status, y.status];
        statuses.sort();
        assert_eq!(statuses, [200, 400], "{} / {}", x.body, y.body);
        let winner = if x.status == 200 { &x } else { &y };
        let loser = if x.status == 200 { &y } else { &x };
        assert_eq!(loser.json()["error"], "invalid_grant");
        let newest = refresh_token_of(winner);
        assert_eq!(a.refresh(&newest).status, 400, "the family is revoked");
    }

    // With the grace window both get a pair, but exactly one is the rotation; the other
    // is the benign race of the same family (the servers log which).
    let (_dir, _db, a, b) = two(&[("REFRESH_REUSE_GRACE", "10")]);
    assert_eq!(a.signup("bob@example.com", PASSWORD).status, 201);
    let rounds = 10;
    let mut pairs = Vec::new();
    for _ in 0..rounds {
        let (_, refresh) = a.tokens("bob@example.com", PASSWORD);
        let (x, y) = race(&a, &b, &refresh);
        assert_eq!((x.status, y.status), (200, 200), "{} / {}", x.body, y.body);
        pairs.push((x, y));
    }
    // Logs are written as requests finish; give the last lines a moment.
    std::thread::sleep(Duration::from_millis(200));
    let logs = a.log_text() + &b.log_text();
    let benign = logs.matches("benign_race=true").count();
    assert_eq!(benign, rounds, "one benign race per round:\n{logs}");
    // Both pairs are the family's: within the window either one's token rotates (the
    // one the race's second pair superseded, as a benign race of its own).
    for (x, y) in &pairs {
        for new in [x, y] {
            let newest = refresh_token_of(new);
            assert_eq!(b.refresh(&newest).status, 200, "within the window");
        }
    }
}

/// Issue #15 (b) across replicas: a replay on B within the window supersedes the
/// successor A issued, so after the windows that successor is reuse (on either replica)
/// and the family dies, the replay's newest token included.
#[test]
fn a_replay_on_another_replica_supersedes_the_successor_the_first_issued() {
    let (_dir, _db, a, b) = two(&[("REFRESH_REUSE_GRACE", "1")]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (_, first) = a.tokens("ann@example.com", PASSWORD);
    let earlier = a.refresh(&first);
    assert_eq!(earlier.status, 200, "{}", earlier.body);
    let replayed = b.refresh(&first);
    assert_eq!(replayed.status, 200, "a benign race: {}", replayed.body);
    std::thread::sleep(Duration::from_millis(1_500));
    let stolen = b.refresh(&refresh_token_of(&earlier));
    assert_eq!(stolen.status, 400, "{}", stolen.body);
    assert_eq!(stolen.json()["error"], "invalid_grant");
    let newest = a.refresh(&refresh_token_of(&replayed));
    assert_eq!(newest.status, 400, "the family is revoked: {}", newest.body);
    let access = replayed.json()["access_token"].as_str().unwrap().to_owned();
    within(
        "A refusing its access token",
        Duration::from_secs(1),
        || a.me(&access).status == 401,
    );
}

/// Issue #15 (a) across replicas: a family rotated 1,000 times, in turn on A and B (what
/// once pushed its first token out of the session's history), still knows its first
/// token: presented on B, it is reuse, and the family is revoked on A too.
#[test]
fn a_token_a_thousand_rotations_old_is_reuse_on_any_replica() {
    let (_dir, _db, a, b) = two(&[("REFRESH_REUSE_GRACE", "0")]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (_, first) = a.tokens("ann@example.com", PASSWORD);
    let mut newest = first.clone();
    for i in 0..1_000 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let next = replica.refresh(&newest);
        assert_eq!(next.status, 200, "rotation {i}: {}", next.body);
        newest = refresh_token_of(&next);
    }
    let stolen = b.refresh(&first);
    assert_eq!(stolen.status, 400, "{}", stolen.body);
    assert_eq!(stolen.json()["error"], "invalid_grant");
    assert_eq!(a.refresh(&newest).status, 400, "the family is revoked");
}

#[test]
fn replicas_starting_together_on_an_empty_keys_dir_share_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| replica(dir.path(), "a", &db.url, &[]));
        let b = s.spawn(|| replica(dir.path(), "b", &db.url, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let jwks = |r: &Server| r.get("/.well-known/jwks.json", None).json();
    // One signing key and one ID-token key, not one of each per replica.
    let published = jwks(&a);
    let algs: Vec<&str> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert_eq!(algs.len(), 2, "{algs:?}");
    assert!(
        algs.contains(&"EdDSA") && algs.contains(&"RS256"),
        "{algs:?}"
    );
    assert_eq!(jwks(&a), jwks(&b));
}

#[test]
fn login_failures_on_every_replica_count_together() {
    let (_dir, _db, a, b) = two(&[("LOGIN_MAX_FAILURES", "4")]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    for r in [&a, &b, &a, &b] {
        assert_eq!(
            r.password_grant("ann@example.com", "wrong password").status,
            400
        );
    }
    for r in [&a, &b] {
        let reply = r.password_grant("ann@example.com", PASSWORD);
        assert_eq!(reply.status, 429, "{}", reply.body);
        assert!(reply.header("retry-after").is_some());
    }

    // One address spraying many accounts over both replicas: its budget (ten times an
    // account's) is shared too.
    let (_dir, _db, a, b) = two(&[("LOGIN_MAX_FAILURES", "1")]);
    for i in 0..10 {
        let r = if i % 2 == 0 { &a } else { &b };
        let reply = r.password_grant(&format!("victim{i}@example.com"), "wrong password");
        assert_eq!(reply.status, 400, "{}", reply.body);
    }
    for r in [&a, &b] {
        assert_eq!(r.password_grant("fresh@example.com", PASSWORD).status, 429);
    }
}

/// A rotation whose new secret lands after the old one minted a token (the CLI's clock,
/// a replica's clock, a change applied later) still ends that token: tokens carry the
/// version of the secret that minted them, not just a time. (Made in SQL, the rotation
/// reaches A's cache of the client by notification: within a second, not at once.)
#[test]
fn a_token_minted_with_the_old_secret_after_the_rotation_was_dated_still_ends() {
    let (dir, db, a, _b) = two(&[]);
    let (id, secret) = cli::new_client(dir.path(), Some(&db.url));
    let dated = query_value(&db.url, "SELECT now()::text");
    std::thread::sleep(Duration::from_millis(50));
    let token = a.client_token(&id, &secret);
    assert_eq!(a.get("/api/v1/stats", Some(&token)).status, 200);
    query_value(
        &db.url,
        &format!(
            "UPDATE clients SET secret_hash = 'rotated', secret_rotated_at = '{dated}' \
             WHERE id = '{id}' RETURNING 1"
        ),
    );
    within("A refusing it", Duration::from_secs(1), || {
        a.get("/api/v1/stats", Some(&token)).status == 401
    });
}

/// A burst of concurrent wrong guesses, half on each replica, gets at most the account's
/// failures judged: the attempts are counted in the database before they are hashed.
#[test]
fn a_burst_of_concurrent_guesses_over_both_replicas_gets_at_most_the_allowed_ones() {
    let dear = [
        ("LOGIN_MAX_FAILURES", "5"),
        ("ARGON2_M_KIB", "8192"),
        ("ARGON2_T", "2"),
        ("ARGON2_QUEUE", "256"),
    ];
    let (_dir, _db, a, b) = two(&dear);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let barrier = std::sync::Barrier::new(32);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (r, barrier) = (if i % 2 == 0 { &a } else { &b }, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    r.password_grant("ann@example.com", "wrong password").status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let judged = statuses.iter().filter(|s| **s == 400).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(judged <= 5 && judged + throttled == 32, "{statuses:?}");
}

/// The listeners' connections are cut again and again while A revokes tokens: B, whose
/// cache had accepted each token, refuses it within a second every time (it reads
/// through while its listener is down, and empties its cache when it is back).
#[test]
fn a_replica_whose_listener_drops_does_not_serve_stale_state() {
    let (_dir, db, a, b) = two(&[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let listeners = |what: &str| {
        query_value(
            &db.url,
            &format!(
                "SELECT count({what}) FROM pg_stat_activity WHERE application_name = '{}'",
                simple_api::store::postgres::LISTENER_NAME
            ),
        )
    };
    // One per replica.
    within("both listeners", Duration::from_secs(3), || {
        listeners("*") == "2"
    });
    let cut = || listeners("pg_terminate_backend(pid)");
    for _ in 0..5 {
        let (access, _) = a.tokens("ann@example.com", PASSWORD);
        within("B accepting it", Duration::from_secs(2), || {
            b.me(&access).status == 200
        });
        cut();
        assert_eq!(a.revoke(&access).status, 200);
        let took = within("B refusing it", Duration::from_secs(1), || {
            b.me(&access).status == 401
        });
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    // Back to normal: the listener reconnected, and B still follows A.
    let (access, _) = a.tokens("ann@example.com", PASSWORD);
    assert_eq!(b.me(&access).status, 200);
    assert_eq!(a.revoke(&access).status, 200);
    within("B refusing it", Duration::from_secs(1), || {
        b.me(&access).status == 401
    });
}

#[test]
fn clients_and_keys_made_once_are_seen_by_every_replica() {
    let (dir, db, a, b) = two(&[("KEY_PUBLISH_DELAY", "1")]);
    let client = cli::new_client(dir.path(), Some(&db.url));
    let grant = |r: &Server| r.client_token(&client.0, &client.1);
    grant(&a);
    let token = grant(&b);
    let stats = a.get("/api/v1/stats", Some(&token));
    assert_eq!(
        stats.status, 200,
        "a client token from B works on A: {}",
        stats.body
    );

    // `keys rotate` once, in the shared KEYS_DIR: both publish the key, then sign with
    // it, and each accepts the other's tokens.
    let kids = |r: &Server| kids_of(&r.get("/.well-known/jwks.json", None).json());
    let before = kids(&a);
    let out = command(dir.path())
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for r in [&a, &b] {
        within("the new key published", Duration::from_secs(5), || {
            kids(r).len() == before.len() + 1
        });
    }
    let new_kid = kids(&a).into_iter().find(|k| !before.contains(k)).unwrap();
    let kid_of = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    for (signer, checker) in [(&a, &b), (&b, &a)] {
        within("signing with the new key", Duration::from_secs(10), || {
            kid_of(&grant(signer)) == new_kid
        });
        let token = grant(signer);
        let stats = checker.get("/api/v1/stats", Some(&token));
        assert_eq!(stats.status, 200, "{}", stats.body);
    }

    // Each token refused by both replicas within `limit`.
    let refused_on_both = |what: &str, tokens: &[String], limit: Duration| {
        for r in [&a, &b] {
            for token in tokens {
                within(what, limit, || {
                    r.get("/api/v1/stats", Some(token)).status == 401
                });
            }
        }
    };

    // `clients rotate-secret` once: the tokens minted with the old secret end on both.
    let minted = [grant(&a), grant(&b)];
    let rotated = cli::json_on(
        dir.path(),
        Some(&db.url),
        &["clients", "rotate-secret", &client.0],
    );
    assert!(rotated["client_secret"].is_string());
    let limit = Duration::from_secs(2);
    refused_on_both("the old secret's tokens refused", &minted, limit);

    // `clients delete` once: both replicas, which hold the client in their caches (each
    // just accepted a token of it), refuse its tokens within a second.
    let secret = rotated["client_secret"].as_str().unwrap();
    let minted = [
        a.client_token(&client.0, secret),
        b.client_token(&client.0, secret),
    ];
    for (r, token) in [&a, &b].into_iter().zip(&minted) {
        assert_eq!(r.get("/api/v1/stats", Some(token)).status, 200);
    }
    cli::json_on(dir.path(), Some(&db.url), &["clients", "delete", &client.0]);
    let limit = Duration::from_secs(1);
    refused_on_both("the deleted client's tokens refused", &minted, limit);
}

/// Polls `check` (async) every 10 ms until it holds, for at most `limit`; returns how
/// long it took.
async fn within_async<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Duration {
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The client cache of the PostgreSQL store, through two store handles on one database
/// (replicas A and B, each with its listener): B answers from its cache (a change that
/// notifies nobody goes unseen there), A sees its own change at once (no notification
/// needed), and B sees A's credential rotation and deletion of a client it had cached
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_changed_on_one_replica_is_seen_by_another_within_a_second() {
    use simple_api::domain::{Client, ClientKeys, ClientName, Credential, Scope, Scopes};
    use simple_api::store::postgres::PgStore;
    use simple_api::store::Store;
    let db = database();
    let (a, b) = (
        PgStore::open(&db.url).await.unwrap(),
        PgStore::open(&db.url).await.unwrap(),
    );
    for store in [&a, &b] {
        within_async("the cache in use", Duration::from_secs(3), || async {
            store.cache_live() == Some(true)
        })
        .await;
    }
    let sql = simple_api::store::postgres::connect(&db.url).await.unwrap();
    let notify = |on: bool| {
        let sql = &sql;
        async move {
            let verb = if on { "ENABLE" } else { "DISABLE" };
            let ddl = format!("ALTER TABLE clients {verb} TRIGGER clients_notify");
            sql.batch_execute(&ddl).await.unwrap();
        }
    };
    let now = simple_api::domain::now();
    let mut client = Client {
        id: uuid::Uuid::new_v4(),
        name: ClientName::parse("billing").unwrap(),
        scope: Scopes::of([Scope::UsersRead]),
        credential: Credential::Secret("sha256$before".into()),
        created_at: now,
        secret_rotated_at: now,
        sign_in: Default::default(),
    };
    let id = client.id;
    a.put_client(client.clone()).await.unwrap();
    for store in [&a, &b] {
        assert_eq!(store.client(id).await.unwrap().as_ref(), Some(&client));
    }

    // Unannounced changes: one in SQL, one through A.
    notify(false).await;
    let renamed = format!("UPDATE clients SET name = 'unheard' WHERE id = '{id}'");
    sql.batch_execute(&renamed).await.unwrap();
    let mut unheard = client.clone();
    unheard.scope = Scopes::of([Scope::UsersRead, Scope::UsersWrite]);
    a.put_client(unheard.clone()).await.unwrap();
    assert_eq!(
        a.client(id).await.unwrap().as_ref(),
        Some(&unheard),
        "A's own write, at once"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.client(id).await.unwrap().as_ref(),
        Some(&client),
        "B answers from its cache"
    );
    notify(true).await;

    // A rotates the credential, from a secret to public keys: B follows.
    client.credential = Credential::Keys(
        ClientKeys::parse_jwks(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        )
        .unwrap(),
    );
    client.secret_rotated_at = simple_api::domain::now();
    a.put_client(client.clone()).await.unwrap();
    assert_eq!(a.client(id).await.unwrap().as_ref(), Some(&client));
    let took = within_async("B seeing the rotation", Duration::from_secs(1), || async {
        b.client(id).await.unwrap().as_ref() == Some(&client)
    })
    .await;
    eprintln!("B saw the rotation after {took:?}");

    // A deletes it: B follows.
    a.delete_client(id).await.unwrap();
    assert!(a.client(id).await.unwrap().is_none());
    within_async("B seeing the deletion", Duration::from_secs(1), || async {
        b.client(id).await.unwrap().is_none()
    })
    .await;
}
