//! Cookie sessions, logout and the lifetime of access tokens.

use serde_json::json;

use super::helpers::{form, spawn_app, spawn_app_with, TestApp, TestUser, FORM};

const LOGIN: &str = "/api/v1/auth_session/login";
const LOGOUT: &str = "/api/v1/auth_session/logout";

fn post_login(app: &TestApp, user: &TestUser) -> super::helpers::Resp {
    app.send(
        "POST",
        LOGIN,
        &[("Content-Type", FORM)],
        Some(form(&[
            ("email", &user.email),
            ("password", &user.password),
        ])),
    )
}

fn cookie_login(app: &TestApp, user: &TestUser) -> String {
    let resp = post_login(app, user);
    let body = resp.expect(200);
    assert_eq!(body["id"], user.id.as_str());
    let cookie = resp.set_cookie("session_id").expect("a session cookie");
    let value = cookie.split(';').next().unwrap();
    value.split_once('=').unwrap().1.to_owned()
}

fn with_cookie(value: &str) -> String {
    format!("session_id={value}")
}

#[test]
fn cookie_login_sets_a_strict_http_only_cookie_that_works_like_a_bearer_token() {
    let app = spawn_app();
    let user = app.new_user();
    let resp = post_login(&app, &user);
    super::users::assert_user_json(&resp.expect(200));
    let cookie = resp.set_cookie("session_id").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=900"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
    let me = app.send(
        "GET",
        "/api/v1/users/me",
        &[("Cookie", &with_cookie(value))],
        None,
    );
    assert_eq!(me.expect(200)["id"], user.id.as_str());
}

#[test]
fn cookie_secure_and_session_name_are_honoured() {
    let app = spawn_app_with(|c| {
        c.cookie_secure = true;
        c.session_name = "_my_session_id".into();
    });
    let user = app.new_user();
    let resp = post_login(&app, &user);
    let cookie = resp
        .set_cookie("_my_session_id")
        .expect("cookie named by SESSION_NAME");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[test]
fn cookie_login_errors_are_the_contracts() {
    let app = spawn_app();
    let user = app.new_user();
    let post = |fields: &[(&str, &str)]| {
        app.send("POST", LOGIN, &[("Content-Type", FORM)], Some(form(fields)))
    };
    post(&[("password", "x")]).expect_error(400, "email missing");
    post(&[("email", ""), ("password", "x")]).expect_error(400, "email missing");
    post(&[("email", &user.email)]).expect_error(400, "password missing");
    let wrong = post(&[("email", &user.email), ("password", "wrong-password")]);
    wrong.expect_error(401, "invalid credentials");
    assert!(wrong
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    post(&[
        ("email", "nobody@example.com"),
        ("password", "wrong-password"),
    ])
    .expect_error(401, "invalid credentials");
    // JSON is not a form: like the classic API, there is no email in it.
    let body = json!({"email": user.email, "password": user.password});
    app.post_json(LOGIN, None, &body)
        .expect_error(400, "email missing");
}

#[test]
fn cookie_authenticated_writes_from_another_origin_are_refused() {
    let app = spawn_app();
    let user = app.new_user();
    let value = cookie_login(&app, &user);
    let cookie = with_cookie(&value);
    let path = format!("/api/v1/users/{}", user.id);
    let body = Some(br#"{"first_name": "Mallory"}"#.to_vec());
    let evil = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", "https://evil.example"),
    ];
    app.send("PUT", &path, &evil, body.clone()).expect(403);
    let own = app.base.clone();
    let same = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", own.as_str()),
    ];
    assert_eq!(
        app.send("PUT", &path, &same, body.clone()).expect(200)["first_name"],
        "Mallory"
    );
    // Bearer tokens are not sent by browsers on their own: no Origin check for them.
    let bearer = format!("Bearer {}", user.token);
    let api = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", "https://app.example"),
    ];
    app.send("PUT", &path, &api, body).expect(200);
    // Nor may another site log a visitor in (login CSRF).
    let login = app.send(
        "POST",
        LOGIN,
        &[("Content-Type", FORM), ("Origin", "https://evil.example")],
        Some(form(&[
            ("email", &user.email),
            ("password", &user.password),
        ])),
    );
    login.expect(403);
}

#[test]
fn logout_clears_the_cookie_and_kills_the_token() {
    let app = spawn_app();
    let user = app.new_user();
    let value = cookie_login(&app, &user);
    let cookie = with_cookie(&value);
    let resp = app.send("DELETE", LOGOUT, &[("Cookie", &cookie)], None);
    assert_eq!(resp.expect(200), json!({}));
    let cleared = resp.set_cookie("session_id").unwrap();
    assert!(
        cleared.starts_with("session_id=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    app.send("GET", "/api/v1/users/me", &[("Cookie", &cookie)], None)
        .expect(401);
    app.send("DELETE", LOGOUT, &[("Cookie", &cookie)], None)
        .expect(401);
    app.delete(LOGOUT, None).expect_error(401, "Unauthorized");
    // Other sessions of the user are untouched by a local logout.
    app.get("/api/v1/users/me", Some(&user.token)).expect(200);
}

#[test]
fn logout_with_a_bearer_token_also_ends_its_refresh_tokens() {
    let app = spawn_app();
    let user = app.new_user();
    let login = app.password_grant(&user.email, &user.password).expect(200);
    let access = login["access_token"].as_str().unwrap();
    app.delete(LOGOUT, Some(access)).expect(200);
    app.get("/api/v1/users/me", Some(access)).expect(401);
    let refresh = app
        .refresh(login["refresh_token"].as_str().unwrap())
        .expect(400);
    assert_eq!(refresh["error"], "invalid_grant");
}

#[test]
fn global_logout_ends_every_session_but_later_logins_work() {
    let app = spawn_app();
    let user = app.new_user();
    let other = app.password_grant(&user.email, &user.password).expect(200);
    let value = cookie_login(&app, &user);
    app.delete(&format!("{LOGOUT}?scope=global"), Some(&user.token))
        .expect(200);
    app.get("/api/v1/users/me", Some(&user.token)).expect(401);
    app.get("/api/v1/users/me", other["access_token"].as_str())
        .expect(401);
    app.send(
        "GET",
        "/api/v1/users/me",
        &[("Cookie", &with_cookie(&value))],
        None,
    )
    .expect(401);
    assert_eq!(
        app.refresh(other["refresh_token"].as_str().unwrap())
            .expect(400)["error"],
        "invalid_grant"
    );
    let fresh = app.token_for(&user.email, &user.password);
    app.get("/api/v1/users/me", Some(&fresh)).expect(200);
    app.delete(&format!("{LOGOUT}?scope=everything"), Some(&fresh))
        .expect(400);
}

#[test]
fn short_sessions_expire() {
    let app = spawn_app_with(|c| c.session_duration = 1);
    let user = app.new_user();
    app.get("/api/v1/users/me", Some(&user.token)).expect(200);
    // 1 s lifetime plus the 5 s leeway granted for clock skew.
    std::thread::sleep(std::time::Duration::from_millis(7_200));
    let body = app.get("/api/v1/users/me", Some(&user.token)).expect(401);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}
