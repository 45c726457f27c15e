use serde_json::json;

use super::helpers::{spawn_app, spawn_app_with};

#[test]
fn unknown_routes_are_json_404s() {
    let app = spawn_app();
    for (method, path) in [
        ("GET", "/api/v1/no-such-route"),
        ("POST", "/api/v1/no/such/route"),
        ("GET", "/.well-known/nothing"),
        ("GET", "/"),
    ] {
        app.request(method, path, None, None, None)
            .expect_error(404, "Not found");
    }
}

#[test]
fn wrong_methods_are_json_405s() {
    let app = spawn_app();
    let token = app.new_user().token;
    for (method, path) in [
        ("DELETE", "/api/v1/status"),
        ("GET", "/api/v1/auth/token"),
        ("PATCH", "/api/v1/users/me"),
    ] {
        app.request(method, path, Some(&token), None, None)
            .expect_error(405, "Method not allowed");
    }
}

#[test]
fn bodies_over_the_limit_are_413_and_change_nothing() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024);
    let padding = "x".repeat(2000);
    let body =
        json!({"email": "big@example.com", "password": "a-good-password", "first_name": padding});
    let resp = app.post_json("/api/v1/users", None, &body);
    resp.expect_error(413, "Payload too large");
    let admin = app.admin_token();
    assert_eq!(
        app.get("/api/v1/stats", Some(&admin)).expect(200),
        json!({"users": 1})
    );
    // The token endpoint keeps its RFC 6749 shape even here.
    let long = "p".repeat(2000);
    let resp = app.post_form(
        "/api/v1/auth/token",
        &[("grant_type", "password"), ("password", &long)],
    );
    assert_eq!(resp.expect(413)["error"], "invalid_request");
}

#[test]
fn bad_query_parameters_are_json_400s() {
    let app = spawn_app();
    let admin = app.admin_token();
    for query in ["limit=abc", "limit=0", "limit=1001", "offset=-1"] {
        let resp = app.get(&format!("/api/v1/users?{query}"), Some(&admin));
        let body = resp.expect(400);
        assert!(body["error"].is_string(), "{query}: {body}");
    }
}

#[test]
fn the_spec_and_the_docs_answer_only_get() {
    let app = spawn_app();
    app.request("DELETE", "/openapi.json", None, None, None)
        .expect_error(405, "Method not allowed");
    app.request("POST", "/docs", None, None, None)
        .expect_error(405, "Method not allowed");
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    use std::io::{Read, Write};
    let app = spawn_app();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 99999999999\r\nConnection: close\r\n\r\n{",
        )
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#"{"error":"Payload too large"}"#),
        "{response}"
    );
}

#[test]
fn a_client_trickling_its_headers_is_cut_off() {
    use std::io::{Read, Write};
    let app = spawn_app_with(|c| c.header_timeout = 1);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    // One byte every 200 ms is never idle, but never finishes its headers either.
    for b in b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .cycle()
        .take(40)
    {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains(r#"{"error":"#),
        "{answer}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "held for {:?}",
        started.elapsed()
    );
    // A normal client on a keep-alive connection is unaffected, request after request,
    // idle longer than the header deadline in between, bodies included.
    let mut fast = std::net::TcpStream::connect(&addr).unwrap();
    let body = r#"{"email": "keepalive@example.com", "password": "a-good-password"}"#;
    let post = format!(
        "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    fast.write_all(post.as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = fast.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 201"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for _ in 0..2 {
        fast.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = fast.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
}

fn raw(app: &super::helpers::TestApp, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn oversized_request_heads_get_a_json_431() {
    let app = spawn_app();
    let many = format!(
        "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(80)
    );
    let huge = format!(
        "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    for request in [many, huge] {
        let response = raw(&app, request.as_bytes());
        assert!(response.starts_with("HTTP/1.1 431"), "{response:.200}");
        assert!(
            response.ends_with(r#"{"error":"Request header fields too large"}"#),
            "{response:.300}"
        );
    }
    // Normal heads are untouched.
    assert!(raw(
        &app,
        b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .starts_with("HTTP/1.1 200"));
}
