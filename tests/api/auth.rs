use serde_json::json;

use super::helpers::spawn_app;

const TOKEN: &str = "/api/v1/auth/token";

#[test]
fn password_grant_returns_a_bearer_token_that_is_never_cached() {
    let app = spawn_app();
    let user = app.new_user();
    let resp = app.password_grant(&user.email.to_uppercase(), &user.password);
    let body = resp.expect(200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "profile");
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let me = app
        .get("/api/v1/users/me", body["access_token"].as_str())
        .expect(200);
    assert_eq!(me["id"], user.id.as_str());
}

#[test]
fn swagger_uis_empty_basic_client_and_a_charset_are_accepted() {
    let app = spawn_app();
    let user = app.new_user();
    let form = format!(
        "grant_type=password&username={}&password={}&client_id=",
        user.email, user.password
    );
    let mut req = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}{TOKEN}", app.base))
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .header("Authorization", "Basic Og==");
    req = req.header("Accept", "application/json");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let resp = agent.run(req.body(form).unwrap()).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn unknown_email_and_wrong_password_get_the_same_answer() {
    let app = spawn_app();
    let user = app.new_user();
    let wrong_password = app.password_grant(&user.email, "not-the-password");
    let unknown_email = app.password_grant("nobody@example.com", "not-the-password");
    let expected =
        json!({"error": "invalid_grant", "error_description": "invalid username or password"});
    assert_eq!(wrong_password.expect(400), expected);
    assert_eq!(unknown_email.expect(400), expected);
    assert_eq!(wrong_password.header("cache-control"), Some("no-store"));
}

#[test]
fn missing_parameters_are_invalid_request() {
    let app = spawn_app();
    let cases: [&[(&str, &str)]; 4] = [
        &[],
        &[("grant_type", "password"), ("password", "x")],
        &[("grant_type", "password"), ("username", "a@example.com")],
        &[
            ("grant_type", "password"),
            ("username", "a@example.com"),
            ("username", "b@example.com"),
            ("password", "x"),
        ],
    ];
    for form in cases {
        let body = app.post_form(TOKEN, form).expect(400);
        assert_eq!(body["error"], "invalid_request", "{form:?}: {body}");
        assert!(body["error_description"].is_string());
    }
}

#[test]
fn a_json_body_is_invalid_request() {
    let app = spawn_app();
    let resp = app.post_json(TOKEN, None, &json!({"grant_type": "password"}));
    assert_eq!(resp.expect(400)["error"], "invalid_request");
}

#[test]
fn other_grants_are_unsupported() {
    let app = spawn_app();
    let body = app
        .post_form(
            TOKEN,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", "x"),
            ],
        )
        .expect(400);
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[test]
fn a_scope_can_narrow_but_never_widen() {
    let app = spawn_app();
    let user = app.new_user();
    let grant = |scope: &str| {
        app.post_form(
            TOKEN,
            &[
                ("grant_type", "password"),
                ("username", &user.email),
                ("password", &user.password),
                ("scope", scope),
            ],
        )
    };
    assert_eq!(grant("users:read").expect(400)["error"], "invalid_scope");
    assert_eq!(grant("superpowers").expect(400)["error"], "invalid_scope");
    assert_eq!(grant("profile").expect(200)["scope"], "profile");

    let admin = app
        .post_form(
            TOKEN,
            &[
                ("grant_type", "password"),
                ("username", super::helpers::ADMIN_EMAIL),
                ("password", super::helpers::ADMIN_PASSWORD),
                ("scope", "users:read"),
            ],
        )
        .expect(200);
    assert_eq!(admin["scope"], "users:read");
    let narrowed = admin["access_token"].as_str();
    app.get("/api/v1/users", narrowed).expect(200);
    // users:write was not granted, so this admin token cannot delete anyone.
    app.delete(&format!("/api/v1/users/{}", user.id), narrowed)
        .expect_error(403, "Forbidden");
}
