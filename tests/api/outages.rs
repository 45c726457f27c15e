//! PostgreSQL or a replica going away (issue #9): quick 503s instead of hangs or stale
//! answers, healing without a restart, and no acknowledged write lost.

use std::time::{Duration, Instant};

use super::helpers::database::{database, own_cluster};
use super::helpers::http::{Client, Resp};
use super::helpers::process::{replica, signups_until_killed, Server};
use super::helpers::within;

const PASSWORD: &str = "correct horse 1";

/// `/metrics` reports whether the replica's cache is in use.
fn cache_live(r: &Server) -> bool {
    // Not JSON: asked with a client that does not insist on it.
    let metrics = Client::new(r.base.clone()).get("/metrics", None);
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let line = metrics
        .body
        .lines()
        .find(|l| l.starts_with("simple_api_store_cache_live "))
        .unwrap_or_else(|| panic!("no cache gauge in {}", metrics.body));
    line.ends_with(" 1")
}

#[test]
fn postgresql_stopping_gives_quick_503s_and_coming_back_heals_without_a_restart() {
    let db = own_cluster();
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a", &db.url, &[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (access, refresh) = a.tokens("ann@example.com", PASSWORD);
    assert_eq!(a.me(&access).status, 200);

    within("the cache in use", Duration::from_secs(3), || {
        cache_live(&a)
    });
    db.cluster().stop();
    within("the cache out of use", Duration::from_secs(1), || {
        !cache_live(&a)
    });
    // Everything that needs the database answers 503 JSON with Retry-After, quickly;
    // nothing is served from a cache that can no longer be kept coherent.
    let unavailable = |reply: Resp, started: Instant| {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("unavailable"));
        assert_eq!(reply.header("retry-after"), Some("1"));
    };
    within("503s", Duration::from_secs(3), || {
        a.me(&access).status == 503
    });
    for _ in 0..3 {
        let t = Instant::now();
        unavailable(a.me(&access), t);
        let t = Instant::now();
        unavailable(a.password_grant("ann@example.com", PASSWORD), t);
        let t = Instant::now();
        unavailable(a.signup("bob@example.com", PASSWORD), t);
        let t = Instant::now();
        unavailable(a.refresh(&refresh), t);
    }
    assert_eq!(a.get("/api/v1/status", None).status, 200);

    std::thread::sleep(Duration::from_secs(2));
    db.cluster().restart();
    within("healing", Duration::from_secs(10), || {
        a.me(&access).status == 200
    });
    within("the cache in use", Duration::from_secs(5), || {
        cache_live(&a)
    });
    // Nothing acknowledged was lost, and writes work again.
    assert_eq!(a.refresh(&refresh).status, 200);
    assert_eq!(a.signup("bob@example.com", PASSWORD).status, 201);
    a.tokens("bob@example.com", PASSWORD);
}

/// A database that accepts connections but does not answer (its processes stopped, as
/// a paused VM or a partition looks): requests get 503 after the operation bound instead
/// of hanging, and everything works again when it resumes.
#[test]
fn a_database_that_stops_answering_gives_503s_not_hangs() {
    let db = own_cluster();
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), "a", &db.url, &[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (access, _) = a.tokens("ann@example.com", PASSWORD);
    db.cluster().signal("STOP");
    for _ in 0..2 {
        let started = Instant::now();
        let reply = a.me(&access);
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(a.password_grant("ann@example.com", PASSWORD).status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    db.cluster().signal("CONT");
    within("healing", Duration::from_secs(10), || {
        a.me(&access).status == 200
    });
    a.tokens("ann@example.com", PASSWORD);
}

#[test]
fn a_replica_killed_mid_write_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let mut a = replica(dir.path(), "a", &db.url, &[]);
    let acknowledged = signups_until_killed(&mut a, "", PASSWORD, Duration::from_millis(700));
    assert!(acknowledged.len() > 10, "{} writes", acknowledged.len());
    let b = replica(dir.path(), "b", &db.url, &[]);
    for email in &acknowledged {
        assert_eq!(
            b.password_grant(email, PASSWORD).status,
            200,
            "{email} was lost"
        );
    }
}
