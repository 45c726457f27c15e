//! Refresh tokens: rotation, reuse detection, concurrency, expiry and revocation.

use std::time::Duration;

use serde_json::{json, Value};

use super::helpers::{spawn_app, spawn_app_with, ADMIN_EMAIL, ADMIN_PASSWORD};

fn login(app: &super::helpers::TestApp) -> (super::helpers::TestUser, Value) {
    let user = app.new_user();
    let pair = app.password_grant(&user.email, &user.password).expect(200);
    (user, pair)
}

fn refresh_token(pair: &Value) -> &str {
    pair["refresh_token"].as_str().unwrap()
}

#[test]
fn the_password_grant_returns_an_opaque_refresh_token() {
    let app = spawn_app();
    let (_, pair) = login(&app);
    let token = refresh_token(&pair);
    assert!(token.len() >= 43 && !token.contains('.'), "{token}");
}

#[test]
fn refreshing_rotates_both_tokens() {
    let app = spawn_app();
    let (user, pair) = login(&app);
    let resp = app.refresh(refresh_token(&pair));
    let next = resp.expect(200);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_ne!(next["refresh_token"], pair["refresh_token"]);
    assert_ne!(next["access_token"], pair["access_token"]);
    assert_eq!(next["scope"], "profile");
    let me = app
        .get("/api/v1/users/me", next["access_token"].as_str())
        .expect(200);
    assert_eq!(me["id"], user.id.as_str());
    // And again with the new one.
    app.refresh(refresh_token(&next)).expect(200);
}

#[test]
fn a_replay_within_the_grace_window_is_a_benign_race() {
    let app = spawn_app();
    let (_, pair) = login(&app);
    let first = app.refresh(refresh_token(&pair)).expect(200);
    let second = app.refresh(refresh_token(&pair)).expect(200);
    assert_ne!(first["refresh_token"], second["refresh_token"]);
    // Nothing was revoked: within the window both new tokens go on working (the first
    // counts as rotated since the replay, so presenting it is a benign race too).
    app.refresh(refresh_token(&first)).expect(200);
    app.refresh(refresh_token(&second)).expect(200);
}

/// Issue #15 (b): a replay within the window supersedes the earlier successor, so the
/// family never forks: once the windows have passed only the newest token rotates, and
/// presenting the earlier successor is reuse.
#[test]
fn a_replay_within_the_grace_window_supersedes_the_earlier_successor() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = 1);
    let client = app.new_client("users:read");
    let replay = |pair: &Value| {
        let earlier = app.refresh(refresh_token(pair)).expect(200);
        let replayed = app.refresh(refresh_token(pair)).expect(200);
        (earlier, replayed)
    };
    let (_, first) = login(&app);
    let (earlier, replayed) = replay(&first);
    let active = |pair: &Value| app.introspect(&client, refresh_token(pair))["active"] == true;
    assert!(!active(&earlier), "the earlier successor is no longer live");
    assert!(active(&replayed));
    let (_, second) = login(&app);
    let (earlier_2, replayed_2) = replay(&second);
    std::thread::sleep(Duration::from_millis(1_500));

    // The earlier successor, presented after its window: reuse, the family is revoked.
    let stolen = app.refresh(refresh_token(&earlier)).expect(400);
    assert_eq!(stolen["error"], "invalid_grant");
    let newest = app.refresh(refresh_token(&replayed)).expect(400);
    assert_eq!(newest["error"], "invalid_grant", "the newest token died with it");
    app.get("/api/v1/users/me", replayed["access_token"].as_str())
        .expect(401);

    // The other order: the newest rotates, then the earlier successor is reuse.
    let next = app.refresh(refresh_token(&replayed_2)).expect(200);
    app.refresh(refresh_token(&earlier_2)).expect(400);
    app.refresh(refresh_token(&next)).expect(400);
}

/// Issue #15 (a): no history limit turns theft into an unknown token. Rotating a family
/// 1,000 times (what once pushed the first token out of a session's history) and then
/// presenting its first token is still reuse, and revokes the family.
#[test]
fn a_token_a_thousand_rotations_old_is_still_reuse() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = 0);
    let (_, first) = login(&app);
    let mut newest = first.clone();
    for _ in 0..1_000 {
        newest = app.refresh(refresh_token(&newest)).expect(200);
    }
    let stolen = app.refresh(refresh_token(&first)).expect(400);
    assert_eq!(stolen["error"], "invalid_grant");
    assert_eq!(
        app.refresh(refresh_token(&newest)).expect(400)["error"],
        "invalid_grant",
        "the family is revoked, its newest token included"
    );
    app.get("/api/v1/users/me", newest["access_token"].as_str())
        .expect(401);
}

#[test]
fn revoking_any_token_of_a_family_ends_it_and_strangers_tokens_are_unknown() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = 0);
    let (user, pair) = login(&app);
    let next = app.refresh(refresh_token(&pair)).expect(200);
    // A token naming the session (anyone who saw an access token knows its `sid`) but
    // without the family's secret is nobody's: refused, and nothing is revoked.
    let forged = forged_for(next["access_token"].as_str().unwrap());
    assert_eq!(app.refresh(&forged).expect(400)["error"], "invalid_grant");
    app.revoke(&forged).expect(200);
    let next = app.refresh(refresh_token(&next)).expect(200);
    // A used token of the family revokes it all (RFC 7009).
    assert_eq!(app.revoke(refresh_token(&pair)).expect(200), json!({}));
    app.refresh(refresh_token(&next)).expect(400);
    app.get("/api/v1/users/me", next["access_token"].as_str())
        .expect(401);
    app.get("/api/v1/users/me", Some(&user.token)).expect(200);
}

#[test]
fn reuse_after_the_grace_window_revokes_the_whole_family() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = 1);
    let (user, pair) = login(&app);
    let next = app.refresh(refresh_token(&pair)).expect(200);
    std::thread::sleep(Duration::from_millis(1_500));
    let stolen = app.refresh(refresh_token(&pair)).expect(400);
    assert_eq!(stolen["error"], "invalid_grant");
    // The newest token of the family is dead too, and so are its access tokens.
    assert_eq!(
        app.refresh(refresh_token(&next)).expect(400)["error"],
        "invalid_grant"
    );
    app.get("/api/v1/users/me", next["access_token"].as_str())
        .expect(401);
    // Other sessions of the user are not affected.
    app.get("/api/v1/users/me", Some(&user.token)).expect(200);
}

#[test]
fn concurrent_refreshes_of_one_token_all_succeed_and_lose_nothing() {
    let app = spawn_app();
    let (_, pair) = login(&app);
    let token = refresh_token(&pair).to_owned();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| app.refresh(&token))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect(200))
            .collect()
    });
    let mut tokens: Vec<&str> = results
        .iter()
        .map(|r| r["refresh_token"].as_str().unwrap())
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 8, "every racer got its own new token");
    for r in &results {
        app.refresh(r["refresh_token"].as_str().unwrap())
            .expect(200);
    }
}

#[test]
fn expired_refresh_tokens_are_refused() {
    let app = spawn_app_with(|c| c.refresh_token_ttl = 1);
    let (_, pair) = login(&app);
    std::thread::sleep(Duration::from_millis(1_300));
    assert_eq!(
        app.refresh(refresh_token(&pair)).expect(400)["error"],
        "invalid_grant"
    );
}

#[test]
fn bad_refresh_requests_are_rfc_6749_errors() {
    let app = spawn_app();
    let missing = app
        .post_form("/api/v1/auth/token", &[("grant_type", "refresh_token")])
        .expect(400);
    assert_eq!(missing["error"], "invalid_request");
    assert_eq!(app.refresh("made-up").expect(400)["error"], "invalid_grant");
}

#[test]
fn a_deleted_users_refresh_tokens_die_with_them() {
    let app = spawn_app();
    let (user, pair) = login(&app);
    app.delete("/api/v1/users/me", Some(&user.token))
        .expect(200);
    assert_eq!(
        app.refresh(refresh_token(&pair)).expect(400)["error"],
        "invalid_grant"
    );
}

#[test]
fn revoking_a_refresh_token_ends_its_session() {
    let app = spawn_app();
    let (user, pair) = login(&app);
    let revoked = app.post_form(
        "/api/v1/auth/revoke",
        &[
            ("token", refresh_token(&pair)),
            ("token_type_hint", "refresh_token"),
        ],
    );
    assert_eq!(revoked.expect(200), json!({}));
    assert_eq!(
        app.refresh(refresh_token(&pair)).expect(400)["error"],
        "invalid_grant"
    );
    app.get("/api/v1/users/me", pair["access_token"].as_str())
        .expect(401);
    app.get("/api/v1/users/me", Some(&user.token)).expect(200);
}

#[test]
fn refresh_tokens_survive_a_restart_and_stay_single_use() {
    let app = spawn_app_with(|c| c.refresh_reuse_grace = 0);
    let (_, pair) = login(&app);
    let next = app.refresh(refresh_token(&pair)).expect(200);
    let app = app.restart();
    app.refresh(refresh_token(&next)).expect(200);
    assert_eq!(
        app.refresh(refresh_token(&pair)).expect(400)["error"],
        "invalid_grant"
    );
}

#[test]
fn a_refresh_can_narrow_the_scope_and_a_demotion_narrows_it() {
    let app = spawn_app();
    let pair = app.password_grant(ADMIN_EMAIL, ADMIN_PASSWORD).expect(200);
    let narrowed = app
        .post_form(
            "/api/v1/auth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token(&pair)),
                ("scope", "users:read"),
            ],
        )
        .expect(200);
    assert_eq!(narrowed["scope"], "users:read");
    // A user promoted to admin and demoted again keeps only what the role allows.
    let user = app.new_user();
    let admin = pair["access_token"].as_str();
    let path = format!("/api/v1/users/{}", user.id);
    app.put_json(&path, admin, &json!({"role": "admin"}))
        .expect(200);
    let promoted = app.password_grant(&user.email, &user.password).expect(200);
    assert_eq!(promoted["scope"], "profile users:read users:write");
    app.put_json(&path, admin, &json!({"role": "user"}))
        .expect(200);
    assert_eq!(
        app.refresh(refresh_token(&promoted)).expect(200)["scope"],
        "profile"
    );
}

/// A refresh token in this service's format naming the session of `access_token`, with
/// made-up secrets.
fn forged_for(access_token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let claims = access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    let sid = uuid::Uuid::parse_str(claims["sid"].as_str().unwrap()).unwrap();
    let mut bytes = sid.as_bytes().to_vec();
    bytes.extend([0x5a; 64]);
    URL_SAFE_NO_PAD.encode(bytes)
}
