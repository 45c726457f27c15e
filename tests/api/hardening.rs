//! Throttling, load shedding, hostile input, the audit log, metrics and request ids.

use serde_json::{json, Value};

use super::helpers::{form, spawn_app, spawn_app_with, TestApp, FORM};

const TOKEN: &str = "/api/v1/auth/token";

fn wrong_login(app: &TestApp, email: &str, headers: &[(&str, &str)]) -> super::helpers::Resp {
    let mut all = vec![("Content-Type", FORM)];
    all.extend_from_slice(headers);
    let body = form(&[
        ("grant_type", "password"),
        ("username", email),
        ("password", "wrong-password"),
    ]);
    app.send("POST", TOKEN, &all, Some(body))
}

#[test]
fn an_account_is_throttled_after_its_failures_even_for_the_right_password() {
    let app = spawn_app_with(|c| c.login_max_failures = 3);
    let user = app.new_user();
    let other = app.new_user();
    for _ in 0..3 {
        assert_eq!(
            wrong_login(&app, &user.email, &[]).expect(400)["error"],
            "invalid_grant"
        );
    }
    let throttled = app.password_grant(&user.email, &user.password);
    assert_eq!(throttled.expect(429)["error"], "too_many_requests");
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // The cookie login is the same door.
    let cookie = app.send(
        "POST",
        "/api/v1/auth_session/login",
        &[("Content-Type", FORM)],
        Some(form(&[
            ("email", &user.email),
            ("password", &user.password),
        ])),
    );
    assert!(cookie.expect(429)["error"].is_string());
    assert!(cookie.header("retry-after").is_some());
    // Another account is not locked out by it.
    app.password_grant(&other.email, &other.password)
        .expect(200);
}

#[test]
fn an_address_spraying_many_accounts_is_throttled() {
    let app = spawn_app_with(|c| c.login_max_failures = 1);
    let mine = app.new_user();
    // One failure on each of ten accounts: the address's budget (10 × 1).
    for i in 0..10 {
        wrong_login(&app, &format!("victim{i}@example.com"), &[]).expect(400);
    }
    // Logging into an account of one's own does not reset the address.
    app.password_grant(&mine.email, &mine.password).expect(429);
    assert_eq!(
        wrong_login(&app, "fresh@example.com", &[]).expect(429)["error"],
        "too_many_requests"
    );
}

#[test]
fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let spray = |app: &TestApp| {
        for i in 0..10 {
            let xff = format!("203.0.113.{i}");
            wrong_login(
                app,
                &format!("victim{i}@example.com"),
                &[("X-Forwarded-For", &xff)],
            )
            .expect(400);
        }
    };
    // Untrusted peer: X-Forwarded-For is ignored, all ten failures are the peer's.
    let app = spawn_app_with(|c| c.login_max_failures = 1);
    spray(&app);
    wrong_login(
        &app,
        "fresh@example.com",
        &[("X-Forwarded-For", "198.51.100.1")],
    )
    .expect(429);
    // Trusted proxy: each forwarded client has its own budget.
    let app = spawn_app_with(|c| {
        c.login_max_failures = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    spray(&app);
    wrong_login(
        &app,
        "fresh@example.com",
        &[("X-Forwarded-For", "198.51.100.1")],
    )
    .expect(400);
}

#[test]
fn every_forwarded_for_line_counts_so_a_spoofed_first_line_cannot_choose_the_address() {
    // Behind a proxy that appends its own line (HAProxy `option forwardfor`), the client's
    // own first line is spoofed; the proxy's last line names the real client.
    let app = spawn_app_with(|c| {
        c.login_max_failures = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let address_limit = 10; // LOGIN_MAX_FAILURES × the address factor
    for i in 0..address_limit {
        let spoofed = format!("203.0.113.{i}");
        let headers = [
            ("X-Forwarded-For", spoofed.as_str()),
            ("X-Forwarded-For", "198.51.100.9"),
        ];
        wrong_login(&app, &format!("victim{i}@example.com"), &headers).expect(400);
    }
    let headers = [
        ("X-Forwarded-For", "203.0.113.200"),
        ("X-Forwarded-For", "198.51.100.9"),
    ];
    wrong_login(&app, "fresh@example.com", &headers).expect(429);
}

#[test]
fn a_full_hashing_queue_sheds_load_with_503_and_retry_after() {
    let app = spawn_app_with(|c| {
        c.argon2_m_kib = 16_384;
        c.argon2_t = 3;
        c.argon2_queue = 1;
        c.login_max_failures = 1000;
    });
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let app = &app;
                s.spawn(move || {
                    let r = wrong_login(app, &format!("load{i}@example.com"), &[]);
                    (r.status, r.header("retry-after").map(str::to_owned))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let shed: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!shed.is_empty(), "{statuses:?}");
    assert!(shed.iter().all(|(_, retry)| retry.as_deref() == Some("1")));
    assert!(
        statuses.iter().all(|(s, _)| *s == 503 || *s == 400),
        "{statuses:?}"
    );
}

/// The hashing queue's gauge, from `/metrics`.
fn argon2_queue_depth(app: &TestApp) -> u64 {
    let metrics = app.get("/metrics", None);
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("simple_api_argon2_queue_depth "))
        .expect("the gauge is rendered")
        .parse()
        .unwrap()
}

#[test]
fn logins_whose_clients_hang_up_are_not_hashed_behind_the_gauges_back() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| {
        c.argon2_m_kib = 16_384;
        c.argon2_t = 3;
        c.login_max_failures = 100_000;
    });
    let timed_login = || {
        let started = Instant::now();
        wrong_login(&app, "someone@example.com", &[]).expect(400);
        started.elapsed()
    };
    timed_login();
    let one = (0..3).map(|_| timed_login()).max().unwrap();
    // A flood of logins whose clients send the request and hang up with a reset (a
    // client's kernel does that when the client dies with unread data; a proxy can too):
    // the server drops those requests' handlers while their hashes wait in the queue.
    // (After a plain FIN, hyper goes on with the request and answers into the void.)
    let body = form(&[
        ("grant_type", "password"),
        ("username", "flood@example.com"),
        ("password", &"p".repeat(16 * 1024)),
    ]);
    let request = [
        format!(
            "POST {TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body,
    ]
    .concat();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<_> = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..100 {
            let mut client = tokio::net::TcpStream::connect(&addr).await.unwrap();
            client.write_all(&request).await.unwrap();
            // Closed with a reset rather than a FIN (only SO_LINGER 0, which never blocks).
            #[allow(deprecated)]
            client.set_linger(Some(Duration::ZERO)).unwrap();
            clients.push(client);
        }
        clients
    });
    super::helpers::within("the flood reaches the hasher", Duration::from_secs(60), || {
        argon2_queue_depth(&app) >= 50
    });
    drop(clients);
    // The gauge counts the abandoned hashes until they are done or skipped: once it reads
    // 0 the hashing threads are free, and a login costs one hash, not the flood's.
    super::helpers::within("the hashing queue drains", Duration::from_secs(60), || {
        argon2_queue_depth(&app) == 0
    });
    let after = timed_login();
    assert!(
        after < one * 5 + Duration::from_millis(300),
        "a login took {after:?} after the flood's gauge read 0 (one login: {one:?})"
    );
    app.get("/api/v1/status", None).expect(200);
}

#[test]
fn cleartext_http2_is_refused_and_h2c_upgrades_are_answered_over_http1() {
    use std::io::{Read, Write};
    let app = spawn_app();
    let addr = app.base.trim_start_matches("http://").to_owned();
    // HTTP/2 with prior knowledge: the preface, an empty SETTINGS frame, then a HEADERS
    // frame (HPACK, no Huffman) for GET /api/v1/status on stream 1.
    let mut block = vec![0x82, 0x86, 0x04, 14];
    block.extend_from_slice(b"/api/v1/status");
    block.extend_from_slice(&[0x01, 1, b'x']);
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    h2.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, 1]);
    h2.extend_from_slice(&block);
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&h2).unwrap();
    let mut answer = Vec::new();
    let end = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains(r#""status":"OK""#), "served over HTTP/2: {answer:?}");
    // Closed, not kept open for more streams: EOF, or a reset for the frames left unread.
    assert!(
        end.is_ok() || end.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection stayed open: {end:?}, {answer:?}"
    );
    // What arrives before the close is SETTINGS, then GOAWAY HTTP_1_1_REQUIRED.
    let refusal = [
        0, 0, 0, 0x4, 0, 0, 0, 0, 0, 0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xd,
    ];
    assert!(refusal.starts_with(&answer), "{answer:?}");
    // `Upgrade: h2c` is not performed: the request is answered over HTTP/1.1.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"OK"}"#), "{answer}");
}

#[test]
fn security_events_are_audited_without_secrets() {
    let app = spawn_app();
    let user = app.new_user();
    wrong_login(&app, &user.email, &[]).expect(400);
    let pair = app.password_grant(&user.email, &user.password).expect(200);
    app.delete("/api/v1/auth_session/logout", Some(&user.token))
        .expect(200);
    let log = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in ["user_created", "login_ok", "login_failed", "logout"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let failed = events
        .iter()
        .find(|e| e["event"] == "login_failed")
        .unwrap();
    assert_eq!(failed["client_ip"], "127.0.0.1");
    assert!(failed["request_id"].is_string() && failed["time"].is_string());
    for secret in [
        user.password.as_str(),
        "wrong-password",
        &user.token,
        pair["refresh_token"].as_str().unwrap(),
        "$argon2",
    ] {
        assert!(!log.contains(secret), "the audit log contains a secret");
    }
}

#[test]
fn metrics_count_requests_logins_and_tokens() {
    let app = spawn_app();
    app.get("/api/v1/status", None).expect(200);
    let user = app.new_user();
    wrong_login(&app, &user.email, &[]).expect(400);
    let resp = app.get("/metrics", None);
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    for line in [
        "simple_api_http_requests_total{route=\"getStatus\",status=\"200\"} 1",
        "simple_api_logins_total{result=\"ok\"} 1",
        "simple_api_logins_total{result=\"failed\"} 1",
        "simple_api_tokens_issued_total{grant=\"password\"} 1",
        "simple_api_argon2_queue_depth 0",
    ] {
        assert!(resp.body.contains(line), "missing {line} in\n{}", resp.body);
    }
    assert!(resp.body.contains(
        "simple_api_http_request_duration_seconds_bucket{route=\"getStatus\",le=\"+Inf\"} 1"
    ));
}

#[test]
fn every_response_carries_a_request_id_and_a_plain_one_is_echoed() {
    let app = spawn_app();
    let generated = app.get("/api/v1/status", None);
    assert_eq!(generated.header("x-request-id").unwrap().len(), 32);
    let echoed = app.send(
        "GET",
        "/api/v1/nothing",
        &[("X-Request-Id", "trace-42")],
        None,
    );
    assert_eq!(echoed.header("x-request-id"), Some("trace-42"));
    let unsafe_id = app.send(
        "GET",
        "/api/v1/status",
        &[("X-Request-Id", "a b <script>")],
        None,
    );
    assert_ne!(unsafe_id.header("x-request-id"), Some("a b <script>"));
}

#[test]
fn hostile_bodies_get_4xx_json() {
    let app = spawn_app();
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", deep.into_bytes()),
        ("application/json", vec![b'{', 0xff, 0xfe, b'}']),
        (
            "application/json",
            br#"{"email": "a\u0000b@example.com", "password": "a-good-password"}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"email": "x@example.com", "password": "a-good-password", "first_name": "a\nb"}"#
                .to_vec(),
        ),
        (
            "application/json",
            br#"{"email": ["x"], "password": {"a": 1}}"#.to_vec(),
        ),
    ];
    for (ct, body) in cases {
        let resp = app.request("POST", "/api/v1/users", None, Some(ct), Some(body));
        assert!(resp.expect(400)["error"].is_string());
    }
    let bad_form = app.request(
        "POST",
        TOKEN,
        None,
        Some(FORM),
        Some(vec![b'a', b'=', 0xff, 0xfe]),
    );
    assert!((400..500).contains(&bad_form.status), "{}", bad_form.body);
    let admin = app.admin_token();
    assert_eq!(
        app.get("/api/v1/users?offset=4294967295", Some(&admin))
            .expect(200),
        json!([])
    );
    app.get("/api/v1/users?limit=99999999999999999999", Some(&admin))
        .expect(400);
}

#[test]
fn every_route_answers_every_wrong_method_with_json_405() {
    let app = spawn_app();
    let spec: Value = serde_json::from_str(&simple_api::api::spec_json()).unwrap();
    let token = app.new_user().token;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "me");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if item.get(method.to_lowercase()).is_some() {
                continue;
            }
            let resp = app.request(method, &concrete, Some(&token), None, None);
            assert_eq!(resp.status, 405, "{method} {concrete}: {}", resp.body);
            resp.expect(405);
        }
    }
}
