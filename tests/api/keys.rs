//! Key rotation against the running server: pre-publication, switch-over, retirement.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::helpers::{kids_of, spawn_app_with, within, TestApp};

/// The access-token keys in the JWKS (the ID-token key, RS256, rotates on its own).
fn kids(app: &TestApp) -> Vec<String> {
    let mut jwks = app.get("/.well-known/jwks.json", None).expect(200);
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["alg"] != "RS256");
    kids_of(&jwks)
}

fn header_of(token: &str) -> jsonwebtoken::Header {
    jsonwebtoken::decode_header(token).unwrap()
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    within(what, Duration::from_secs(10), done);
}

#[test]
fn rotation_drill_publish_switch_keep_verifying_retire() {
    let app = spawn_app_with(|c| c.key_publish_delay = 5);
    let user = app.new_user();
    let old_kid = header_of(&user.token).kid.unwrap();
    assert_eq!(kids(&app), vec![old_kid.clone()]);

    let rotated = app.cli(&["keys", "rotate", "--alg", "ES256"]).json();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    let rotated_at = Instant::now();
    // Published at once (the server re-reads KEYS_DIR every 2 s)...
    wait_for("the new key in the JWKS", || kids(&app).contains(&new_kid));
    assert!(kids(&app).contains(&old_kid));
    // ...but the old key still signs until the publish delay has passed.
    if rotated_at.elapsed() < Duration::from_secs(4) {
        let token = app.token_for(&user.email, &user.password);
        assert_eq!(header_of(&token).kid.unwrap(), old_kid);
    }
    std::thread::sleep(
        Duration::from_secs(5).saturating_sub(rotated_at.elapsed()) + Duration::from_millis(300),
    );
    let token = app.token_for(&user.email, &user.password);
    let header = header_of(&token);
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    app.get("/api/v1/users/me", Some(&token)).expect(200);
    // Tokens of the old key still verify.
    app.get("/api/v1/users/me", Some(&user.token)).expect(200);

    // Retiring the old key is refused while its tokens may be valid...
    let refused = app.cli(&["keys", "retire", &old_kid]);
    assert!(
        !refused.success && refused.stderr.contains("may still be valid"),
        "{}",
        refused.stderr
    );
    // ...and the signing key can never be retired.
    assert!(!app.cli(&["keys", "retire", &new_kid, "--force"]).success);
    assert!(app.cli(&["keys", "retire", &old_kid, "--force"]).success);
    wait_for("the old key to leave the JWKS", || {
        kids(&app) == vec![new_kid.clone()]
    });
    app.get("/api/v1/users/me", Some(&user.token)).expect(401);
    app.get("/api/v1/users/me", Some(&token)).expect(200);
}

#[test]
fn keys_list_reports_each_keys_status() {
    let app = spawn_app_with(|c| c.key_publish_delay = 600);
    app.cli(&["keys", "rotate"]).json();
    let listed = app.cli(&["keys", "list"]);
    assert!(listed.success, "{}", listed.stderr);
    let statuses: Vec<(String, String)> = listed
        .stdout
        .lines()
        .map(|l| {
            let key = serde_json::from_str::<Value>(l).unwrap();
            let field = |name: &str| key[name].as_str().unwrap().to_owned();
            (field("signs"), field("status"))
        })
        .collect();
    let of = |signs: &str| -> Vec<&str> {
        statuses
            .iter()
            .filter(|(s, _)| s == signs)
            .map(|(_, status)| status.as_str())
            .collect()
    };
    assert_eq!(of("access"), ["signing", "next"]);
    assert_eq!(of("id_token"), ["signing"]);
    // The ID-token key rotates on its own, with the same pre-publication.
    let rotated = app.cli(&["keys", "rotate", "--id-token"]).json();
    assert_eq!((rotated["alg"].as_str(), rotated["signs"].as_str()), (Some("RS256"), Some("id_token")));
    assert!(!app.cli(&["keys", "rotate", "--alg", "HS256"]).success);
}

#[test]
fn rsa_and_p256_keys_sign_with_their_own_algorithm() {
    for (alg, expected) in [
        ("RS256", jsonwebtoken::Algorithm::RS256),
        ("ES256", jsonwebtoken::Algorithm::ES256),
    ] {
        let app = spawn_app_with(|c| {
            // Replace the generated Ed25519 test key with one of this algorithm.
            for entry in std::fs::read_dir(&c.keys_dir).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
            let alg = simple_api::auth::keys::KeyAlgorithm::parse(alg).unwrap();
            simple_api::auth::keys::generate(&c.keys_dir, alg).unwrap();
        });
        let user = app.new_user();
        assert_eq!(header_of(&user.token).alg, expected);
        let jwks = app.get("/.well-known/jwks.json", None).expect(200);
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(expected);
        validation.set_audience(&["simple-api"]);
        jsonwebtoken::decode::<Value>(&user.token, &key, &validation).unwrap();
    }
}
