//! Every check of the contract's "Access tokens" section, against the running server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::helpers::{claims_for, spawn_app, TestApp};

fn assert_rejected(app: &TestApp, token: &str) {
    let resp = app.get("/api/v1/users/me", Some(token));
    let body = resp.expect(401);
    assert!(
        body["error"].as_str().unwrap().starts_with("Invalid token"),
        "{body}"
    );
    let challenge = resp.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"simple-api\", error=\"invalid_token\""),
        "{challenge}"
    );
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn a_correctly_forged_token_is_accepted_so_the_rejections_below_mean_something() {
    let app = spawn_app();
    let user = app.new_user();
    let token = app.sign(app.header(), &claims_for(&user.id));
    app.get("/api/v1/users/me", Some(&token)).expect(200);
}

#[test]
fn expired_tokens_are_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let mut claims = claims_for(&user.id);
    let past = chrono::Utc::now().timestamp() - 60;
    claims["exp"] = json!(past);
    claims["iat"] = json!(past - 300);
    claims["nbf"] = json!(past - 300);
    assert_rejected(&app, &app.sign(app.header(), &claims));
}

#[test]
fn a_validly_signed_token_living_longer_than_the_service_issues_is_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let mut claims = claims_for(&user.id);
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 30 * 86_400);
    assert_rejected(&app, &app.sign(app.header(), &claims));
}

#[test]
fn not_yet_valid_tokens_are_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let mut claims = claims_for(&user.id);
    claims["nbf"] = json!(chrono::Utc::now().timestamp() + 120);
    assert_rejected(&app, &app.sign(app.header(), &claims));
}

#[test]
fn wrong_issuer_and_wrong_audience_are_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    for (claim, value) in [("iss", "someone-else"), ("aud", "another-service")] {
        let mut claims = claims_for(&user.id);
        claims[claim] = json!(value);
        assert_rejected(&app, &app.sign(app.header(), &claims));
    }
}

#[test]
fn tokens_missing_a_required_claim_are_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    for claim in ["exp", "iss", "aud", "sub", "nbf", "iat", "jti"] {
        let mut claims = claims_for(&user.id);
        claims.as_object_mut().unwrap().remove(claim);
        assert_rejected(&app, &app.sign(app.header(), &claims));
    }
}

#[test]
fn alg_none_is_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": app.kid()});
    let token = format!("{}.{}.", b64(&header), b64(&claims_for(&user.id)));
    assert_rejected(&app, &token);
}

#[test]
fn hs256_signed_with_the_public_key_is_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let jwks = app.get("/.well-known/jwks.json", None).json();
    let public = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(app.kid());
    for secret in [
        public.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(&public).unwrap(),
    ] {
        let token = jsonwebtoken::encode(
            &header,
            &claims_for(&user.id),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_rejected(&app, &token);
    }
}

#[test]
fn a_tampered_payload_is_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let parts: Vec<&str> = user.token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    claims["scope"] = json!("profile users:read users:write");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_rejected(&app, &forged);
}

#[test]
fn an_unknown_kid_is_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let mut header = app.header();
    header.kid = Some("not-a-key-of-this-service".into());
    assert_rejected(&app, &app.sign(header, &claims_for(&user.id)));
}

#[test]
fn a_token_signed_by_another_key_with_our_kid_is_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let other = tempfile::tempdir().unwrap();
    let path = simple_api::auth::keys::generate_ed25519(other.path()).unwrap();
    let key = EncodingKey::from_ed_pem(&std::fs::read(path).unwrap()).unwrap();
    let token = jsonwebtoken::encode(&app.header(), &claims_for(&user.id), &key).unwrap();
    assert_rejected(&app, &token);
}

#[test]
fn a_token_without_the_access_token_type_is_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let mut header = app.header();
    header.typ = Some("JWT".into());
    assert_rejected(&app, &app.sign(header, &claims_for(&user.id)));
}

#[test]
fn garbage_is_rejected() {
    let app = spawn_app();
    for token in ["garbage", "a.b.c", "...."] {
        assert_rejected(&app, token);
    }
}

#[test]
fn a_deleted_users_token_is_rejected_at_once() {
    let app = spawn_app();
    let user = app.new_user();
    let admin = app.admin_token();
    app.delete(&format!("/api/v1/users/{}", user.id), Some(&admin))
        .expect(200);
    assert_rejected(&app, &user.token);
}

#[test]
fn other_authorization_schemes_count_as_no_token() {
    let app = spawn_app();
    let resp = app.request("GET", "/api/v1/users/me", None, None, None);
    resp.expect_error(401, "Unauthorized");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let resp = agent
        .get(format!("{}/api/v1/users/me", app.base))
        .header("Authorization", "Basic YTpi")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[test]
fn the_role_comes_from_the_store_not_the_token() {
    let app = spawn_app();
    let user = app.new_user();
    // A validly signed token claiming admin powers for a plain user.
    let mut claims = claims_for(&user.id);
    claims["role"] = json!("admin");
    claims["scope"] = json!("profile users:read users:write");
    let token = app.sign(app.header(), &claims);
    app.get("/api/v1/users", Some(&token))
        .expect_error(403, "Forbidden");
}

#[test]
fn unknown_critical_headers_and_future_iat_are_rejected() {
    let app = spawn_app();
    let user = app.new_user();
    let mut header = app.header();
    header.crit = Some(vec!["exp-extension".into()]);
    assert_rejected(&app, &app.sign(header, &claims_for(&user.id)));
    let mut claims = claims_for(&user.id);
    claims["iat"] = json!(chrono::Utc::now().timestamp() + 3600);
    assert_rejected(&app, &app.sign(app.header(), &claims));
}

#[test]
fn two_authorization_headers_are_refused() {
    let app = spawn_app();
    let user = app.new_user();
    let bearer = format!("Bearer {}", user.token);
    let resp = app.send(
        "GET",
        "/api/v1/users/me",
        &[
            ("Authorization", &bearer),
            ("Authorization", "Bearer other"),
        ],
        None,
    );
    assert_eq!(resp.status, 401);
}
