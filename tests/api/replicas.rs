//! Replicas on one database (issue #9): two server processes sharing DATABASE_URL and
//! KEYS_DIR behave as one service; PostgreSQL going away and coming back; moving a file
//! store into PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::database::{database, own_cluster, TestDatabase};
use super::helpers::kids_of;
use super::process::{command, start_logged, Server};

/// One replica: a server process with its own DATA_DIR (its audit log) and the shared
/// KEYS_DIR and database.
struct Replica {
    server: Server,
    log: PathBuf,
}

/// What a request got back.
struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Replica {
    fn start(dir: &Path, name: &str, url: &str, extra: &[(&str, &str)]) -> Replica {
        let data = dir.join(name);
        let keys = dir.join("keys");
        let mut env = vec![
            ("DATABASE_URL", url),
            ("DATA_DIR", data.to_str().unwrap()),
            ("KEYS_DIR", keys.to_str().unwrap()),
            ("RELOAD_INTERVAL", "1"),
        ];
        env.extend_from_slice(extra);
        let (server, log) = start_logged(dir, &env);
        Replica { server, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.1)
    }

    fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Body>) -> Reply {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build(),
        );
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let payload = match body {
            Some(Body::Json(v)) => {
                request = request.header("Content-Type", "application/json");
                v.to_string().into_bytes()
            }
            Some(Body::Form(fields)) => {
                request = request.header("Content-Type", "application/x-www-form-urlencoded");
                form(&fields)
            }
            None => Vec::new(),
        };
        let mut response = agent.run(request.body(payload).unwrap()).unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} → {status}, not JSON ({e}): {text}"));
        Reply {
            status,
            body,
            retry_after,
        }
    }

    fn signup(&self, email: &str, password: &str) -> Reply {
        let body = json!({ "email": email, "password": password });
        self.send("POST", "/api/v1/users", None, Some(Body::Json(body)))
    }

    fn login(&self, email: &str, password: &str) -> Reply {
        let fields = vec![
            ("grant_type", "password".to_owned()),
            ("username", email.to_owned()),
            ("password", password.to_owned()),
        ];
        self.send("POST", "/api/v1/auth/token", None, Some(Body::Form(fields)))
    }

    fn refresh(&self, token: &str) -> Reply {
        let fields = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", token.to_owned()),
        ];
        self.send("POST", "/api/v1/auth/token", None, Some(Body::Form(fields)))
    }

    /// RFC 7009 revocation of an access or refresh token.
    fn revoke(&self, token: &str) -> Reply {
        let fields = vec![("token", token.to_owned())];
        self.send(
            "POST",
            "/api/v1/auth/revoke",
            None,
            Some(Body::Form(fields)),
        )
    }

    fn me(&self, token: &str) -> Reply {
        self.send("GET", "/api/v1/users/me", Some(token), None)
    }

    /// `(access, refresh)` of a fresh login.
    fn tokens(&self, email: &str, password: &str) -> (String, String) {
        let reply = self.login(email, password);
        assert_eq!(reply.status, 200, "{}", reply.body);
        (
            reply.body["access_token"].as_str().unwrap().to_owned(),
            reply.body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// `/metrics` reports whether the replica's cache is in use.
    fn cache_live(&self) -> bool {
        let text = ureq::get(self.url("/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("simple_api_store_cache_live "))
            .unwrap_or_else(|| panic!("no cache gauge in {text}"));
        line.ends_with(" 1")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

enum Body {
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

fn form(fields: &[(&str, String)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
        .into_bytes()
}

/// Two replicas on a fresh database; A starts first, so that it makes the signing key
/// both then use.
fn two(extra: &[(&str, &str)]) -> (tempfile::TempDir, TestDatabase, Replica, Replica) {
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let a = Replica::start(dir.path(), "a", &db.url, extra);
    let b = Replica::start(dir.path(), "b", &db.url, extra);
    (dir, db, a, b)
}

/// Polls `check` until it holds, for at most `limit`; returns how long it took.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const PASSWORD: &str = "correct horse 1";

#[test]
fn sign_up_on_one_replica_log_in_on_the_other_and_use_the_token_on_the_first() {
    let (_dir, _db, a, b) = two(&[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (access, _) = b.tokens("ANN@example.com", PASSWORD);
    let me = a.me(&access);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["email"], "ann@example.com");
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
        let took = within(Duration::from_secs(1), || b.me(token).status == 401);
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
    let out = a.send(
        "DELETE",
        "/api/v1/auth_session/logout?scope=global",
        Some(&access),
        None,
    );
    assert_eq!(out.status, 200, "{}", out.body);
    refused_by_b(&access);
    assert_eq!(b.refresh(&refresh).status, 400, "its refresh token too");

    // Password change on A ends the other sessions, B's included.
    let (email, access, _) = user(2);
    let (mine, _) = a.tokens(&email, PASSWORD);
    let change = json!({ "current_password": PASSWORD, "new_password": "a new password 2" });
    let out = a.send(
        "PUT",
        "/api/v1/users/me/password",
        Some(&mine),
        Some(Body::Json(change)),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    refused_by_b(&access);

    // Deleting the user on A.
    let (_, access, _) = user(3);
    let out = a.send("DELETE", "/api/v1/users/me", Some(&access), None);
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

/// Presents one refresh token on A and B at the same instant; returns both statuses.
fn race(a: &Replica, b: &Replica, token: &str) -> (Reply, Reply) {
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
        assert_eq!(loser.body["error"], "invalid_grant");
        let newest = winner.body["refresh_token"].as_str().unwrap();
        assert_eq!(a.refresh(newest).status, 400, "the family is revoked");
    }

    // With the grace window both get a pair, but exactly one is the rotation; the other
    // is the benign race of the same family (the servers log which).
    let (_dir, _db, a, b) = two(&[("REFRESH_REUSE_GRACE", "10")]);
    assert_eq!(a.signup("bob@example.com", PASSWORD).status, 201);
    let rounds = 10;
    for _ in 0..rounds {
        let (_, refresh) = a.tokens("bob@example.com", PASSWORD);
        let (x, y) = race(&a, &b, &refresh);
        assert_eq!((x.status, y.status), (200, 200), "{} / {}", x.body, y.body);
        for new in [&x, &y] {
            let newest = new.body["refresh_token"].as_str().unwrap();
            assert_eq!(b.refresh(newest).status, 200, "both pairs are live");
        }
    }
    // Logs are written as requests finish; give the last lines a moment.
    std::thread::sleep(Duration::from_millis(200));
    let logs = a.log_text() + &b.log_text();
    let benign = logs.matches("benign_race=true").count();
    assert_eq!(benign, rounds, "one benign race per round:\n{logs}");
}

#[test]
fn replicas_starting_together_on_an_empty_keys_dir_share_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Replica::start(dir.path(), "a", &db.url, &[]));
        let b = s.spawn(|| Replica::start(dir.path(), "b", &db.url, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let jwks = |r: &Replica| r.send("GET", "/.well-known/jwks.json", None, None).body;
    assert_eq!(jwks(&a)["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks(&a), jwks(&b));
}

#[test]
fn login_failures_on_every_replica_count_together() {
    let (_dir, _db, a, b) = two(&[("LOGIN_MAX_FAILURES", "4")]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    for replica in [&a, &b, &a, &b] {
        assert_eq!(
            replica.login("ann@example.com", "wrong password").status,
            400
        );
    }
    for replica in [&a, &b] {
        let reply = replica.login("ann@example.com", PASSWORD);
        assert_eq!(reply.status, 429, "{}", reply.body);
        assert!(reply.retry_after.is_some());
    }

    // One address spraying many accounts over both replicas: its budget (ten times an
    // account's) is shared too.
    let (_dir, _db, a, b) = two(&[("LOGIN_MAX_FAILURES", "1")]);
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let reply = replica.login(&format!("victim{i}@example.com"), "wrong password");
        assert_eq!(reply.status, 400, "{}", reply.body);
    }
    for replica in [&a, &b] {
        assert_eq!(replica.login("fresh@example.com", PASSWORD).status, 429);
    }
}

/// The listeners' connections are cut again and again while A revokes tokens: B, whose
/// cache had accepted each token, refuses it within a second every time (it reads
/// through while its listener is down, and empties its cache when it is back).
#[test]
fn a_replica_whose_listener_drops_does_not_serve_stale_state() {
    let (_dir, db, a, b) = two(&[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let listeners = |what: &str| {
        super::database::query_value(
            &db.url,
            &format!(
                "SELECT count({what}) FROM pg_stat_activity WHERE application_name = '{}'",
                simple_api::store::postgres::LISTENER_NAME
            ),
        )
    };
    within(Duration::from_secs(3), || listeners("*") == "2"); // one per replica
    let cut = || listeners("pg_terminate_backend(pid)");
    for _ in 0..5 {
        let (access, _) = a.tokens("ann@example.com", PASSWORD);
        within(Duration::from_secs(2), || b.me(&access).status == 200);
        cut();
        assert_eq!(a.revoke(&access).status, 200);
        let took = within(Duration::from_secs(1), || b.me(&access).status == 401);
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    // Back to normal: the listener reconnected, and B still follows A.
    let (access, _) = a.tokens("ann@example.com", PASSWORD);
    assert_eq!(b.me(&access).status, 200);
    assert_eq!(a.revoke(&access).status, 200);
    within(Duration::from_secs(1), || b.me(&access).status == 401);
}

/// Runs the CLI on `dir` (and the database, if given); its one line of JSON.
fn cli(dir: &Path, url: Option<&str>, args: &[&str]) -> Value {
    let out = command(dir)
        .envs(url.map(|u| ("DATABASE_URL", u)))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

const NEW_CLIENT: &[&str] = &[
    "clients",
    "create",
    "--name",
    "billing",
    "--scope",
    "users:read",
];

/// A client_credentials grant for `client` (as `clients create` printed it).
fn client_grant(r: &Replica, client: &Value) -> Reply {
    let fields = vec![
        ("grant_type", "client_credentials".to_owned()),
        (
            "client_id",
            client["client_id"].as_str().unwrap().to_owned(),
        ),
        (
            "client_secret",
            client["client_secret"].as_str().unwrap().to_owned(),
        ),
    ];
    r.send("POST", "/api/v1/auth/token", None, Some(Body::Form(fields)))
}

fn access_token(reply: Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn clients_and_keys_made_once_are_seen_by_every_replica() {
    let (dir, db, a, b) = two(&[("KEY_PUBLISH_DELAY", "1")]);
    let client = cli(dir.path(), Some(&db.url), NEW_CLIENT);
    let grant = |r: &Replica| access_token(client_grant(r, &client));
    grant(&a);
    let token = grant(&b);
    let stats = a.send("GET", "/api/v1/stats", Some(&token), None);
    assert_eq!(
        stats.status, 200,
        "a client token from B works on A: {}",
        stats.body
    );

    // `keys rotate` once, in the shared KEYS_DIR: both publish the key, then sign with
    // it, and each accepts the other's tokens.
    let kids = |r: &Replica| kids_of(&r.send("GET", "/.well-known/jwks.json", None, None).body);
    let before = kids(&a);
    let out = command(dir.path())
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for replica in [&a, &b] {
        within(Duration::from_secs(5), || {
            kids(replica).len() == before.len() + 1
        });
    }
    let new_kid = kids(&a).into_iter().find(|k| !before.contains(k)).unwrap();
    let kid_of = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    for (signer, checker) in [(&a, &b), (&b, &a)] {
        within(Duration::from_secs(10), || {
            kid_of(&grant(signer)) == new_kid
        });
        let token = grant(signer);
        let stats = checker.send("GET", "/api/v1/stats", Some(&token), None);
        assert_eq!(stats.status, 200, "{}", stats.body);
    }
}

#[test]
fn postgresql_stopping_gives_quick_503s_and_coming_back_heals_without_a_restart() {
    let db = own_cluster();
    let dir = tempfile::tempdir().unwrap();
    let a = Replica::start(dir.path(), "a", &db.url, &[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (access, refresh) = a.tokens("ann@example.com", PASSWORD);
    assert_eq!(a.me(&access).status, 200);

    within(Duration::from_secs(3), || a.cache_live());
    db.cluster().stop();
    within(Duration::from_secs(1), || !a.cache_live());
    // Everything that needs the database answers 503 JSON with Retry-After, quickly;
    // nothing is served from a cache that can no longer be kept coherent.
    let unavailable = |reply: Reply, started: Instant| {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.body["error"]
            .as_str()
            .unwrap()
            .contains("unavailable"));
        assert_eq!(reply.retry_after.as_deref(), Some("1"));
    };
    within(Duration::from_secs(3), || a.me(&access).status == 503);
    for _ in 0..3 {
        let t = Instant::now();
        unavailable(a.me(&access), t);
        let t = Instant::now();
        unavailable(a.login("ann@example.com", PASSWORD), t);
        let t = Instant::now();
        unavailable(a.signup("bob@example.com", PASSWORD), t);
        let t = Instant::now();
        unavailable(a.refresh(&refresh), t);
    }
    assert_eq!(a.send("GET", "/api/v1/status", None, None).status, 200);

    std::thread::sleep(Duration::from_secs(2));
    db.cluster().restart();
    within(Duration::from_secs(10), || a.me(&access).status == 200);
    within(Duration::from_secs(5), || a.cache_live());
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
    let a = Replica::start(dir.path(), "a", &db.url, &[]);
    assert_eq!(a.signup("ann@example.com", PASSWORD).status, 201);
    let (access, _) = a.tokens("ann@example.com", PASSWORD);
    db.cluster().signal("STOP");
    for _ in 0..2 {
        let started = Instant::now();
        let reply = a.me(&access);
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.retry_after.as_deref(), Some("1"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(a.login("ann@example.com", PASSWORD).status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    db.cluster().signal("CONT");
    within(Duration::from_secs(10), || a.me(&access).status == 200);
    a.tokens("ann@example.com", PASSWORD);
}

#[test]
fn a_replica_killed_mid_write_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let mut a = Replica::start(dir.path(), "a", &db.url, &[]);
    let acknowledged = std::sync::Mutex::new(Vec::new());
    let users = a.url("/api/v1/users");
    std::thread::scope(|s| {
        for t in 0..4 {
            let (users, acknowledged) = (&users, &acknowledged);
            s.spawn(move || {
                let agent = ureq::Agent::new_with_config(
                    ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build(),
                );
                for i in 0.. {
                    let email = format!("w{t}-{i}@example.com");
                    let body = json!({ "email": email, "password": PASSWORD });
                    let sent = agent
                        .post(users)
                        .header("Content-Type", "application/json")
                        .send(body.to_string());
                    match sent {
                        Ok(r) if r.status() == 201 => acknowledged.lock().unwrap().push(email),
                        _ => return, // the replica is gone
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(700));
        a.server.0.kill().unwrap(); // SIGKILL
    });
    let _ = a.server.0.wait();
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(acknowledged.len() > 10, "{} writes", acknowledged.len());
    let b = Replica::start(dir.path(), "b", &db.url, &[]);
    for email in &acknowledged {
        assert_eq!(b.login(email, PASSWORD).status, 200, "{email} was lost");
    }
}

#[test]
fn a_file_store_moves_into_postgresql_with_its_passwords_and_refresh_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // A file-store server: a user with a live session, a revoked token, a client.
    let (server, _) = start_logged(dir.path(), &[]);
    let file = Replica {
        server,
        log: PathBuf::new(),
    };
    assert_eq!(file.signup("ann@example.com", PASSWORD).status, 201);
    let (_, refresh) = file.tokens("ann@example.com", PASSWORD);
    let (revoked, _) = file.tokens("ann@example.com", PASSWORD);
    assert_eq!(file.revoke(&revoked).status, 200);
    let client = cli(dir.path(), None, NEW_CLIENT);
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
    let pg = Replica::start(dir.path(), "pg", &db.url, &[]);
    let (access, _) = pg.tokens("ann@example.com", PASSWORD);
    assert_eq!(pg.me(&access).status, 200);
    assert_eq!(pg.refresh(&refresh).status, 200, "the refresh token moved");
    assert_eq!(pg.me(&revoked).status, 401, "the revocation moved");
    access_token(client_grant(&pg, &client));
}
