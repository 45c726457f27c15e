//! The service's own limits against a determined attacker (issue #15): concurrent
//! guesses, strangers locking a client out, oversized identifiers and a flooded audit log.

use std::collections::BTreeMap;
use std::sync::Barrier;

use serde_json::json;

use super::helpers::{form, spawn_app_with, TestApp};

const TOKEN: &str = "/api/v1/auth/token";
const FORM: &str = "application/x-www-form-urlencoded";
const BURST: usize = 32;

/// Argon2 dear enough that a burst is still being hashed when its last request arrives
/// (the race the reservation closes), with a queue that holds the whole burst.
fn burst_app(max_failures: u32) -> TestApp {
    spawn_app_with(|c| {
        c.login_max_failures = max_failures;
        c.argon2_m_kib = 8192;
        c.argon2_t = 2;
        c.argon2_queue = 256;
    })
}

/// How many `event` lines the app's audit log holds.
fn audited(app: &TestApp, event: &str) -> usize {
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    let tag = format!("\"{event}\"");
    audit.lines().filter(|l| l.contains(&tag)).count()
}

/// Fires `BURST` requests at once (released together by a barrier); their statuses.
fn burst(send: impl Fn() -> u16 + Sync) -> BTreeMap<u16, usize> {
    let barrier = Barrier::new(BURST);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..BURST)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    send()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut counts = BTreeMap::new();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    counts
}

fn judged_at_most(counts: &BTreeMap<u16, usize>, judged: u16, limit: usize) {
    let judged_answers = counts.get(&judged).copied().unwrap_or(0);
    assert!(
        judged_answers <= limit && judged_answers + counts.get(&429).unwrap_or(&0) == BURST,
        "at most {limit} × {judged}, the rest 429: {counts:?}"
    );
}

#[test]
fn a_burst_of_concurrent_wrong_passwords_gets_at_most_the_allowed_guesses() {
    let app = burst_app(5);
    let user = app.new_user();
    let counts = burst(|| {
        let body = form(&[
            ("grant_type", "password"),
            ("username", &user.email),
            ("password", "wrong-password"),
        ]);
        app.send("POST", TOKEN, &[("Content-Type", FORM)], Some(body))
            .status
    });
    judged_at_most(&counts, 400, 5);
    // The account is now throttled even for its right password.
    app.password_grant(&user.email, &user.password).expect(429);
}

#[test]
fn a_burst_of_wrong_current_passwords_gets_at_most_the_allowed_guesses() {
    let app = burst_app(5);
    let user = app.new_user();
    let token = app.token_for(&user.email, &user.password);
    let counts = burst(|| {
        let body = json!({ "current_password": "wrong-password", "new_password": "another-one-1" });
        app.put_json("/api/v1/users/me/password", Some(&token), &body)
            .status
    });
    judged_at_most(&counts, 400, 5);
}

#[test]
fn a_burst_of_wrong_client_secrets_gets_at_most_the_addresss_guesses() {
    let app = burst_app(1);
    let (id, _) = app.new_client("users:read");
    let counts = burst(|| {
        app.client_grant(&id, "wrong-secret", None).status
    });
    // Clients are throttled per address: LOGIN_MAX_FAILURES × 10.
    judged_at_most(&counts, 401, 10);
}

#[test]
fn strangers_guessing_a_client_secret_do_not_lock_the_client_out() {
    let app = spawn_app_with(|c| {
        c.login_max_failures = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let (id, secret) = app.new_client("users:read");
    let grant = |secret: &str, from: &str| {
        app.client_grant_with(&id, secret, None, &[("X-Forwarded-For", from)])
    };
    for _ in 0..10 {
        grant("wrong-secret", "203.0.113.66").expect(401);
    }
    // The stranger's address is spent; the service, from its own address, is not.
    grant("wrong-secret", "203.0.113.66").expect(429);
    grant(&secret, "198.51.100.10").expect(200);
}

#[test]
fn oversized_or_control_character_identifiers_are_refused_before_anything_else() {
    let app = spawn_app_with(|c| c.login_max_failures = 1_000_000);
    let audit = app.config_data_dir().join("audit.log");
    let before = std::fs::metadata(&audit).map_or(0, |m| m.len());
    // As large as fits the body limit once form-encoded (%01: 3 bytes each).
    let huge = "\u{1}".repeat(20_000);
    for _ in 0..100 {
        let body = app.post_form(
            TOKEN,
            &[("grant_type", "password"), ("username", &huge), ("password", "x")],
        );
        assert_eq!(body.expect(400)["error"], "invalid_request");
    }
    let grown = std::fs::metadata(&audit).map_or(0, |m| m.len()) - before;
    assert!(grown < 1 << 20, "audit.log grew by {grown} bytes");
    // 321 bytes is one too many; a control character anywhere is refused too.
    let long = format!("{}@example.com", "a".repeat(321 - "@example.com".len()));
    let body = app.post_form(
        TOKEN,
        &[("grant_type", "password"), ("username", &long), ("password", "x")],
    );
    assert_eq!(body.expect(400)["error"], "invalid_request");
    let cookie = app.send(
        "POST",
        "/api/v1/auth_session/login",
        &[("Content-Type", FORM)],
        Some(form(&[("email", "ann\n@example.com"), ("password", "x")])),
    );
    cookie.expect(400);
    let client = app.post_form(
        TOKEN,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &long),
            ("client_secret", "x"),
        ],
    );
    assert_eq!(client.expect(400)["error"], "invalid_request");
}

#[test]
fn a_throttled_account_is_audited_once_a_window_however_often_it_is_tried() {
    let app = spawn_app_with(|c| c.login_max_failures = 1);
    let user = app.new_user();
    app.password_grant(&user.email, "wrong-password").expect(400);
    for _ in 0..50 {
        app.password_grant(&user.email, "wrong-password").expect(429);
    }
    assert_eq!(audited(&app, "login_throttled"), 1);
}

#[test]
fn a_login_whose_client_hangs_up_mid_hash_still_counts() {
    use std::io::Write;
    let app = burst_app(1);
    let user = app.new_user();
    let address = app.base.trim_start_matches("http://").to_owned();
    let body = form(&[
        ("grant_type", "password"),
        ("username", &user.email),
        ("password", "wrong-password"),
    ]);
    let mut conn = std::net::TcpStream::connect(&address).unwrap();
    let head = format!(
        "POST {TOKEN} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {FORM}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&body).unwrap();
    // Gone before the hash is done: the guess was still made, so it still counts.
    drop(conn);
    std::thread::sleep(std::time::Duration::from_millis(500));
    app.password_grant(&user.email, &user.password).expect(429);
}

#[test]
fn an_address_spraying_new_usernames_once_throttled_is_audited_once_a_window() {
    let app = spawn_app_with(|c| c.login_max_failures = 1);
    let wrong = |i: usize| app.password_grant(&format!("victim{i}@example.com"), "wrong");
    // The address's budget: LOGIN_MAX_FAILURES × 10.
    for i in 0..10 {
        wrong(i).expect(400);
    }
    for i in 10..110 {
        wrong(i).expect(429);
    }
    assert_eq!(audited(&app, "login_throttled"), 1);
}

#[test]
fn a_client_secret_verified_moments_ago_is_not_held_up_by_its_addresss_failures() {
    let app = spawn_app_with(|c| c.login_max_failures = 1);
    let (id, secret) = app.new_client("users:read");
    let (other, other_secret) = app.new_client("users:read");
    // Right: remembered (by a digest of id and secret) for a few seconds.
    app.client_grant(&id, &secret, None).expect(200);
    for _ in 0..10 {
        app.client_grant(&id, "wrong-secret", None).expect(401);
    }
    // The address is spent: guesses, and secrets not verified lately, wait.
    app.client_grant(&id, "wrong-secret", None).expect(429);
    app.client_grant(&other, &other_secret, None).expect(429);
    // The secret verified moments ago is compared with the stored digest, not counted.
    app.client_grant(&id, &secret, None).expect(200);
}
