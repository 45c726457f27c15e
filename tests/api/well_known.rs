//! JWKS and discovery, used the way another service would use them.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::helpers::spawn_app;

/// What a resource server does: fetch the JWKS once, then verify tokens offline with the
/// key named by `kid`, pinning that key's algorithm.
fn verify_offline(jwks: &Value, token: &str) -> Value {
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    assert_eq!(jwk["alg"], "EdDSA");
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["simple-api"]);
    validation.set_audience(&["simple-api"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[test]
fn another_service_verifies_tokens_with_only_the_jwks() {
    let app = spawn_app();
    let user = app.new_user();
    let resp = app.get("/.well-known/jwks.json", None);
    let jwks = resp.expect(200);
    assert!(resp
        .header("cache-control")
        .unwrap()
        .contains("max-age=600"));
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none(), "private key material published");
    }
    let claims = verify_offline(&jwks, &user.token);
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["scope"], "profile");
}

#[test]
fn the_discovery_document_is_absolute_on_public_url() {
    let app =
        super::helpers::spawn_app_with(|c| c.public_url = Some("https://auth.example.com/".into()));
    let meta = app
        .get("/.well-known/oauth-authorization-server", None)
        .expect(200);
    assert_eq!(meta["issuer"], "simple-api");
    assert_eq!(
        meta["token_endpoint"],
        "https://auth.example.com/api/v1/auth/token"
    );
    assert_eq!(
        meta["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(
        meta["revocation_endpoint"],
        "https://auth.example.com/api/v1/auth/revoke"
    );
    assert_eq!(meta["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        meta["authorization_endpoint"],
        "https://auth.example.com/api/v1/auth/authorize"
    );
    let grants = meta["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&"password".into()) && grants.contains(&"refresh_token".into()));
}

#[test]
fn without_public_url_the_discovery_document_uses_the_bound_address() {
    let app = spawn_app();
    let meta = app
        .get("/.well-known/oauth-authorization-server", None)
        .expect(200);
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/api/v1/auth/token", app.base)
    );
}
