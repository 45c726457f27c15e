//! Service clients: the CLI lifecycle against a running server, client_credentials with
//! both authentication methods, enforced scopes, introspection and client revocation.

use base64::Engine;
use serde_json::json;

use std::time::Duration;

use super::helpers::{form, spawn_app, within, FORM};

const TOKEN: &str = "/api/v1/auth/token";

#[test]
fn a_client_created_while_the_server_runs_gets_scoped_tokens() {
    let app = spawn_app();
    let (id, secret) = app.new_client("users:read");
    let resp = app.client_grant(&id, &secret, None);
    let body = resp.expect(200);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "users:read");
    assert!(
        body.get("refresh_token").is_none(),
        "clients get no refresh token"
    );
    let token = body["access_token"].as_str();
    app.get("/api/v1/users", token).expect(200);
    app.get("/api/v1/stats", token).expect(200);
    // users:read does not write, and a client has no `me`.
    let user = app.new_user();
    app.delete(&format!("/api/v1/users/{}", user.id), token)
        .expect_error(403, "Forbidden");
    app.get("/api/v1/users/me", token)
        .expect_error(403, "Forbidden");
    app.put_json("/api/v1/users/me/password", token, &json!({}))
        .expect_error(403, "Forbidden");
    assert_eq!(
        app.get(&format!("/api/v1/users/{}", user.id), token)
            .expect(200)["id"],
        user.id.as_str()
    );
    let listed = app.cli(&["clients", "list"]);
    assert!(
        listed.stdout.contains(&id) && !listed.stdout.contains(&secret),
        "{}",
        listed.stdout
    );
}

#[test]
fn client_secret_post_works_too_and_one_method_at_a_time() {
    let app = spawn_app();
    let (id, secret) = app.new_client("users:read users:write");
    let fields = [
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let body = app.post_form(TOKEN, &fields).expect(200);
    assert_eq!(body["scope"], "users:read users:write");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    );
    let both = app.send(
        "POST",
        TOKEN,
        &[("Authorization", &basic), ("Content-Type", FORM)],
        Some(form(&fields)),
    );
    assert_eq!(both.expect(400)["error"], "invalid_request");
}

#[test]
fn bad_client_credentials_are_invalid_client_with_a_basic_challenge() {
    let app = spawn_app();
    let (id, _) = app.new_client("users:read");
    for (client, secret) in [
        (id.as_str(), "wrong-secret"),
        ("00000000-0000-4000-8000-000000000000", "x"),
        ("not-a-uuid", "x"),
    ] {
        let resp = app.client_grant(client, secret, None);
        assert_eq!(resp.expect(401)["error"], "invalid_client");
        assert!(resp
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic"));
    }
    let anonymous = app.post_form(TOKEN, &[("grant_type", "client_credentials")]);
    assert_eq!(anonymous.expect(401)["error"], "invalid_client");
}

#[test]
fn a_scope_narrows_a_client_token_and_more_is_invalid_scope() {
    let app = spawn_app();
    let (id, secret) = app.new_client("users:read users:write");
    let narrowed = app
        .client_grant(&id, &secret, Some("users:read"))
        .expect(200);
    assert_eq!(narrowed["scope"], "users:read");
    let user = app.new_user();
    app.delete(
        &format!("/api/v1/users/{}", user.id),
        narrowed["access_token"].as_str(),
    )
    .expect_error(403, "Forbidden");
    let (reader, reader_secret) = app.new_client("users:read");
    assert_eq!(
        app.client_grant(&reader, &reader_secret, Some("users:write"))
            .expect(400)["error"],
        "invalid_scope"
    );
    assert_eq!(
        app.client_grant(&reader, &reader_secret, Some("profile"))
            .expect(400)["error"],
        "invalid_scope"
    );
}

#[test]
fn a_writer_client_manages_users() {
    let app = spawn_app_closed();
    let (id, secret) = app.new_client("users:write");
    let token = app.client_grant(&id, &secret, None).expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = app
        .post_json("/api/v1/users", Some(&token), &json!({"email": "svc-made@example.com", "password": "a-good-password", "role": "admin"}))
        .expect(201);
    assert_eq!(created["role"], "admin");
    let path = format!("/api/v1/users/{}", created["id"].as_str().unwrap());
    app.put_json(&path, Some(&token), &json!({"first_name": "Made"}))
        .expect(200);
    // users:write alone does not read.
    app.get(&path, Some(&token)).expect_error(403, "Forbidden");
    app.delete(&path, Some(&token)).expect(200);
}

fn spawn_app_closed() -> super::helpers::TestApp {
    super::helpers::spawn_app_with(|c| c.signup_enabled = false)
}

#[test]
fn rotating_a_secret_and_deleting_a_client_take_effect_at_once() {
    let app = spawn_app();
    let (id, old_secret) = app.new_client("users:read");
    let token = app.client_grant(&id, &old_secret, None).expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = app.cli(&["clients", "rotate-secret", &id]).json();
    let new_secret = rotated["client_secret"].as_str().unwrap();
    // At once on the file store (the CLI waits for the server to apply it); on PostgreSQL
    // as soon as the replica hears the database's change notification (milliseconds).
    within("the old secret to be refused", Duration::from_secs(1), || {
        app.client_grant(&id, &old_secret, None).status == 401
    });
    assert_eq!(
        app.client_grant(&id, &old_secret, None).expect(401)["error"],
        "invalid_client"
    );
    let fresh = app.client_grant(&id, new_secret, None).expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Tokens minted with the old secret (a leaked one) end with it; the new one's work.
    app.get("/api/v1/users", Some(&token)).expect(401);
    app.get("/api/v1/users", Some(&fresh)).expect(200);
    assert!(app.cli(&["clients", "delete", &id]).success);
    within("the deleted client to be refused", Duration::from_secs(1), || {
        app.client_grant(&id, new_secret, None).status == 401
    });
    app.get("/api/v1/users", Some(&token)).expect(401);
    assert_eq!(
        app.client_grant(&id, new_secret, None).expect(401)["error"],
        "invalid_client"
    );
    let missing = app.cli(&["clients", "delete", &id]);
    assert!(
        !missing.success && missing.stderr.contains("no client"),
        "{}",
        missing.stderr
    );
    assert!(
        !app.cli(&["clients", "create", "--name", "x", "--scope", "profile"])
            .success
    );
}

#[test]
fn introspection_answers_registered_clients_with_the_live_state_of_a_token() {
    let app = spawn_app();
    let client = app.new_client("users:read");
    let user = app.new_user();
    let active = app.introspect(&client, &user.token);
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], user.id.as_str());
    assert_eq!(active["scope"], "profile");
    assert_eq!(active["iss"], "simple-api");
    assert!(active["exp"].is_i64() && active["iat"].is_i64());

    let client_token = app.client_grant(&client.0, &client.1, None).expect(200);
    let own = app.introspect(
        &client,
        client_token["access_token"].as_str().unwrap(),
    );
    assert_eq!(
        (own["active"].as_bool(), own["client_id"].as_str()),
        (Some(true), Some(client.0.as_str()))
    );

    let pair = app.password_grant(&user.email, &user.password).expect(200);
    let refresh = app.introspect(&client, pair["refresh_token"].as_str().unwrap());
    assert_eq!(
        (refresh["active"].as_bool(), refresh["token_type"].as_str()),
        (Some(true), Some("refresh_token"))
    );

    app.delete("/api/v1/auth_session/logout", Some(&user.token))
        .expect(200);
    assert_eq!(
        app.introspect(&client, &user.token),
        json!({"active": false})
    );
    assert_eq!(
        app.introspect(&client, "garbage"),
        json!({"active": false})
    );

    let anonymous = app.post_form(
        "/api/v1/auth/introspect",
        &[("token", pair["access_token"].as_str().unwrap())],
    );
    assert_eq!(anonymous.expect(401)["error"], "invalid_client");
}

#[test]
fn an_authenticated_client_revokes_only_its_own_tokens() {
    let app = spawn_app();
    let client = app.new_client("users:read");
    let user = app.new_user();
    let own = app.client_grant(&client.0, &client.1, None).expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in [user.token.as_str(), own.as_str()] {
        let fields = [
            ("token", token),
            ("client_id", client.0.as_str()),
            ("client_secret", client.1.as_str()),
        ];
        assert_eq!(
            app.post_form("/api/v1/auth/revoke", &fields).expect(200),
            json!({})
        );
    }
    app.get("/api/v1/users/me", Some(&user.token)).expect(200);
    app.get("/api/v1/users", Some(&own)).expect(401);
}

#[test]
fn discovery_lists_every_grant_and_endpoint() {
    let app = spawn_app();
    let meta = app
        .get("/.well-known/oauth-authorization-server", None)
        .expect(200);
    assert_eq!(
        meta["grant_types_supported"],
        json!([
            "authorization_code",
            "password",
            "refresh_token",
            "client_credentials"
        ])
    );
    assert_eq!(
        meta["introspection_endpoint"],
        format!("{}/api/v1/auth/introspect", app.base)
    );
    let methods = meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(
        methods.contains(&json!("client_secret_basic"))
            && methods.contains(&json!("client_secret_post"))
    );
}
