//! `private_key_jwt` clients (RFC 7523 §2.2), by hand: registered with a public key (PEM or
//! JWKS) for each algorithm, authenticated at the token, introspection and revocation
//! endpoints with signed assertions; replayed, expired, far-future, wrong-audience,
//! wrong-key and wrong-client assertions refused; key replacement and the metadata.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use simple_api::auth::keys::{self, Key, KeyAlgorithm};

use super::helpers::{spawn_app, Resp, TestApp};

const TOKEN: &str = "/api/v1/auth/token";
const INTROSPECT: &str = "/api/v1/auth/introspect";
const REVOKE: &str = "/api/v1/auth/revoke";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's own key pair, made in `dir` as `keys generate` would make one.
fn client_key(dir: &Path, alg: KeyAlgorithm) -> Key {
    let path = keys::generate(dir, alg).unwrap();
    Key::from_pem(&std::fs::read(&path).unwrap(), &path, std::time::SystemTime::now()).unwrap()
}

/// A registered private_key_jwt client and the key it signs with.
struct KeyClient {
    id: String,
    key: Key,
}

impl KeyClient {
    /// Registered with `--public-key` (its PEM).
    fn with_pem(app: &TestApp, dir: &Path, alg: KeyAlgorithm, scope: &str) -> KeyClient {
        let key = client_key(dir, alg);
        let pem = dir.join(format!("{}.pub.pem", key.kid));
        std::fs::write(&pem, key.public_pem()).unwrap();
        let out = app
            .cli(&["clients", "create", "--name", "svc", "--scope", scope, "--public-key", pem.to_str().unwrap()])
            .json();
        assert!(out.get("client_secret").is_none(), "{out}");
        assert_eq!(out["token_endpoint_auth_method"], "private_key_jwt");
        assert_eq!(out["kids"], json!([key.kid]));
        KeyClient {
            id: out["client_id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    /// An assertion for `aud` with these claims changed, signed with `key`.
    fn signed_by(&self, key: &EncodingKey, alg: Algorithm, aud: &str, change: impl FnOnce(&mut Value)) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "iss": self.id, "sub": self.id, "aud": aud,
            "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
        });
        change(&mut claims);
        let mut header = Header::new(alg);
        header.kid = Some(self.key.kid.clone());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn assertion(&self, aud: &str, change: impl FnOnce(&mut Value)) -> String {
        self.signed_by(&self.key.encoding, self.key.algorithm, aud, change)
    }
}

fn with_assertion<'a>(assertion: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![("client_assertion_type", ASSERTION_TYPE), ("client_assertion", assertion)];
    fields.extend_from_slice(more);
    fields
}

fn grant(app: &TestApp, assertion: &str) -> Resp {
    app.post_form(TOKEN, &with_assertion(assertion, &[("grant_type", "client_credentials")]))
}

/// The statuses of `client_credentials` grants with these assertions, all sent at once.
fn grants_at_once(app: &Arc<TestApp>, assertions: Vec<String>) -> Vec<u16> {
    let threads: Vec<_> = assertions
        .into_iter()
        .map(|assertion| {
            let app = Arc::clone(app);
            std::thread::spawn(move || grant(&app, &assertion).status)
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn refused(resp: &Resp) -> String {
    let body = resp.expect(401);
    assert_eq!(body["error"], "invalid_client", "{body}");
    body["error_description"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn each_algorithm_authenticates_at_the_token_introspection_and_revocation_endpoints() {
    let app = spawn_app();
    let dir = tempfile::tempdir().unwrap();
    let token_url = format!("{}{TOKEN}", app.base);
    for alg in [KeyAlgorithm::EdDsa, KeyAlgorithm::Es256, KeyAlgorithm::Rs256] {
        let client = KeyClient::with_pem(&app, dir.path(), alg, "users:read");
        let resp = grant(&app, &client.assertion(&token_url, |_| {}));
        let body = resp.expect(200);
        assert_eq!(body["scope"], "users:read", "{alg:?}");
        assert_eq!(resp.header("cache-control"), Some("no-store"));
        let token = body["access_token"].as_str().unwrap().to_owned();
        app.get("/api/v1/users", Some(&token)).expect(200);
        // Introspection: the audience may be the endpoint called, or the issuer.
        let at_introspect = client.assertion(&format!("{}{INTROSPECT}", app.base), |_| {});
        let fields = with_assertion(&at_introspect, &[("token", &token)]);
        let body = app.post_form(INTROSPECT, &fields).expect(200);
        assert_eq!(body["active"], true, "{alg:?}: {body}");
        assert_eq!(body["client_id"], client.id.as_str());
        // Revocation of its own token, with the issuer as the audience.
        let at_issuer = client.assertion("simple-api", |_| {});
        app.post_form(REVOKE, &with_assertion(&at_issuer, &[("token", &token)]))
            .expect(200);
        app.get("/api/v1/users", Some(&token)).expect(401);
    }
}

#[test]
fn replayed_expired_far_future_misaddressed_and_forged_assertions_are_invalid_client() {
    let app = spawn_app();
    let dir = tempfile::tempdir().unwrap();
    let client = KeyClient::with_pem(&app, dir.path(), KeyAlgorithm::EdDsa, "users:read");
    let token_url = format!("{}{TOKEN}", app.base);
    let now = chrono::Utc::now().timestamp();

    let once = client.assertion(&token_url, |_| {});
    grant(&app, &once).expect(200);
    assert!(refused(&grant(&app, &once)).contains("used before"));

    let expired = client.assertion(&token_url, |c| c["exp"] = json!(now - 60));
    assert!(refused(&grant(&app, &expired)).contains("exp"));
    let far = client.assertion(&token_url, |c| c["exp"] = json!(now + 3700));
    assert!(refused(&grant(&app, &far)).contains("3600"));
    // An hour ahead, as client libraries make them by default, is fine.
    let hour = client.assertion(&token_url, |c| c["exp"] = json!(now + 3600));
    grant(&app, &hour).expect(200);
    let elsewhere = client.assertion("https://other.example/token", |_| {});
    assert!(refused(&grant(&app, &elsewhere)).contains("aud"));
    let no_jti = client.assertion(&token_url, |c| {
        c.as_object_mut().unwrap().remove("jti");
    });
    assert!(refused(&grant(&app, &no_jti)).contains("jti"));
    // The introspection URL is no audience for the token endpoint.
    let misdirected = client.assertion(&format!("{}{INTROSPECT}", app.base), |_| {});
    assert!(refused(&grant(&app, &misdirected)).contains("aud"));

    // Signed with a key that is not the client's: told nothing more.
    let stranger = client_key(dir.path(), KeyAlgorithm::EdDsa);
    let forged = client.signed_by(&stranger.encoding, stranger.algorithm, &token_url, |_| {});
    assert_eq!(refused(&grant(&app, &forged)), "client authentication failed");
    // A client that does not exist, and one with a secret instead of keys.
    let ghost = KeyClient {
        id: uuid::Uuid::new_v4().to_string(),
        key: client_key(dir.path(), KeyAlgorithm::EdDsa),
    };
    assert_eq!(refused(&grant(&app, &ghost.assertion(&token_url, |_| {}))), "client authentication failed");
    let (secret_id, _) = app.new_client("users:read");
    let pretender = KeyClient { id: secret_id, key: client_key(dir.path(), KeyAlgorithm::EdDsa) };
    refused(&grant(&app, &pretender.assertion(&token_url, |_| {})));
    // iss and sub must agree.
    let split = client.assertion(&token_url, |c| c["sub"] = json!(uuid::Uuid::new_v4().to_string()));
    refused(&grant(&app, &split));
    assert!(refused(&grant(&app, "not-a-jwt")).contains("failed"));

    // The assertion type must be the JWT bearer one.
    let fresh = client.assertion(&token_url, |_| {});
    let wrong_type = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
        ("client_assertion", fresh.as_str()),
    ];
    refused(&app.post_form(TOKEN, &wrong_type));
    // A client_id beside the assertion must name the same client.
    let other_id = uuid::Uuid::new_v4().to_string();
    let fields = with_assertion(&fresh, &[("grant_type", "client_credentials"), ("client_id", &other_id)]);
    refused(&app.post_form(TOKEN, &fields));
    let fresh = client.assertion(&token_url, |_| {});
    let fields = with_assertion(&fresh, &[("grant_type", "client_credentials"), ("client_id", &client.id)]);
    app.post_form(TOKEN, &fields).expect(200);
    // One method at a time: an assertion and a secret together are a bad request.
    let fresh = client.assertion(&token_url, |_| {});
    let fields = with_assertion(&fresh, &[("grant_type", "client_credentials"), ("client_secret", "x")]);
    assert_eq!(app.post_form(TOKEN, &fields).expect(400)["error"], "invalid_request");
    // A private_key_jwt client has no secret to present.
    let basic = app.client_grant(&client.id, "", None);
    assert_eq!(basic.expect(401)["error"], "invalid_client");

    // Every refusal is audited, without the assertion.
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"client_auth_failed\""), "{audit}");
    assert!(!audit.contains(&once), "no assertion in the audit log");
}

#[test]
fn concurrent_presentations_of_one_assertion_let_exactly_one_in() {
    let app = Arc::new(spawn_app());
    let dir = tempfile::tempdir().unwrap();
    let client = KeyClient::with_pem(&app, dir.path(), KeyAlgorithm::Es256, "users:read");
    let assertion = client.assertion(&format!("{}{TOKEN}", app.base), |_| {});
    let statuses = grants_at_once(&app, vec![assertion; 8]);
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200 || s == 401), "{statuses:?}");
}

#[test]
fn a_jwks_registers_several_keys_and_set_keys_replaces_them_ending_earlier_tokens() {
    let app = spawn_app();
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec) = (client_key(dir.path(), KeyAlgorithm::Rs256), client_key(dir.path(), KeyAlgorithm::Es256));
    let jwk = |k: &Key| json!({"kty": k.jwk.kty, "crv": k.jwk.crv, "x": k.jwk.x, "y": k.jwk.y, "n": k.jwk.n, "e": k.jwk.e, "kid": k.kid, "alg": k.jwk.alg});
    let jwks = dir.path().join("client.jwks");
    std::fs::write(&jwks, json!({ "keys": [jwk(&rsa), jwk(&ec)] }).to_string()).unwrap();
    let out = app
        .cli(&["clients", "create", "--name", "svc", "--scope", "users:read", "--jwks", jwks.to_str().unwrap()])
        .json();
    let id = out["client_id"].as_str().unwrap().to_owned();
    assert_eq!(out["kids"], json!([rsa.kid, ec.kid]));
    let listed = app.cli(&["clients", "list"]).stdout;
    assert!(listed.contains("private_key_jwt") && listed.contains(&ec.kid), "{listed}");
    let token_url = format!("{}{TOKEN}", app.base);
    let as_rsa = KeyClient { id: id.clone(), key: rsa };
    let as_ec = KeyClient { id: id.clone(), key: ec };
    grant(&app, &as_rsa.assertion(&token_url, |_| {})).expect(200);
    let token = grant(&app, &as_ec.assertion(&token_url, |_| {})).expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A private key is never accepted for registration.
    let private = dir.path().join("private.pem");
    std::fs::write(&private, std::fs::read(&as_ec.key.path).unwrap()).unwrap();
    let refused_cli = app.cli(&["clients", "set-keys", &id, "--public-key", private.to_str().unwrap()]);
    assert!(!refused_cli.success && refused_cli.stderr.contains("private key"), "{}", refused_cli.stderr);
    // A keys client has no secret to rotate.
    let rotate = app.cli(&["clients", "rotate-secret", &id]);
    assert!(!rotate.success && rotate.stderr.contains("set-keys"), "{}", rotate.stderr);

    // Only the EC key from now on: RSA assertions fail, the earlier token ends.
    let pem = dir.path().join("ec.pub.pem");
    std::fs::write(&pem, as_ec.key.public_pem()).unwrap();
    let replaced = app.cli(&["clients", "set-keys", &id, "--public-key", pem.to_str().unwrap()]);
    assert!(replaced.success, "{}", replaced.stderr);
    super::helpers::within("the new keys to apply", std::time::Duration::from_secs(10), || {
        grant(&app, &as_rsa.assertion(&token_url, |_| {})).status == 401
    });
    app.get("/api/v1/users", Some(&token)).expect(401);
    grant(&app, &as_ec.assertion(&token_url, |_| {})).expect(200);
}

#[test]
fn the_metadata_advertises_private_key_jwt_and_its_algorithms() {
    let app = spawn_app();
    let meta = app.get("/.well-known/oauth-authorization-server", None).expect(200);
    for endpoint in ["token_endpoint", "introspection_endpoint", "revocation_endpoint"] {
        let methods = &meta[format!("{endpoint}_auth_methods_supported")];
        assert!(methods.as_array().unwrap().contains(&json!("private_key_jwt")), "{endpoint}: {methods}");
        assert_eq!(meta[format!("{endpoint}_auth_signing_alg_values_supported")], json!(["EdDSA", "Ed25519", "ES256", "RS256"]));
    }
}

#[test]
fn a_client_credentials_grant_writes_nothing_to_the_store() {
    let app = spawn_app();
    if app.database_url().is_some() {
        // The file store's log is what is measured; the grant path is the same code.
        return;
    }
    let (id, secret) = app.new_client("users:read");
    app.client_grant(&id, &secret, None).expect(200);
    let log = app.config_data_dir().join("store.log");
    let before = std::fs::metadata(&log).unwrap().len();
    for _ in 0..20 {
        app.client_grant(&id, &secret, None).expect(200);
    }
    assert_eq!(std::fs::metadata(&log).unwrap().len(), before);
}

#[test]
fn a_used_assertion_stays_refused_to_the_last_instant_it_would_be_accepted() {
    let app = spawn_app();
    let dir = tempfile::tempdir().unwrap();
    let client = KeyClient::with_pem(&app, dir.path(), KeyAlgorithm::EdDsa, "users:read");
    let token_url = format!("{}{TOKEN}", app.base);
    let seconds = || chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let sleep_until = |t: f64| {
        let wait = t - seconds();
        if wait > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(wait));
        }
    };
    // Just after a second begins: `exp` 4 s ago is inside the 5 s leeway.
    let second = seconds().floor() + 1.0;
    sleep_until(second + 0.05);
    let exp = second as i64 - 4;
    let late = client.assertion(&token_url, |c| {
        c["exp"] = json!(exp);
        c["iat"] = json!(exp - 60);
    });
    grant(&app, &late).expect(200);
    // exp + 5.3 s: the verifier still accepts it (whole seconds), so the store must
    // still remember it.
    sleep_until(second + 1.3);
    assert!(refused(&grant(&app, &late)).contains("used before"));
}

#[test]
fn an_address_sending_forged_assertions_is_held_up_after_its_failures() {
    let app = super::helpers::spawn_app_with(|c| c.login_max_failures = 1);
    let dir = tempfile::tempdir().unwrap();
    let client = KeyClient::with_pem(&app, dir.path(), KeyAlgorithm::EdDsa, "users:read");
    let token_url = format!("{}{TOKEN}", app.base);
    // A right assertion is not counted.
    grant(&app, &client.assertion(&token_url, |_| {})).expect(200);
    let stranger = client_key(dir.path(), KeyAlgorithm::EdDsa);
    let forge = || client.signed_by(&stranger.encoding, stranger.algorithm, &token_url, |_| {});
    // Each forgery costs signature checks: LOGIN_MAX_FAILURES × 10 per address and window.
    for _ in 0..10 {
        refused(&grant(&app, &forge()));
    }
    let held = grant(&app, &forge());
    held.expect(429);
    assert!(held.header("retry-after").is_some());
}

#[test]
fn a_client_holds_at_most_max_client_assertions_unexpired_uses_even_when_concurrent() {
    let app = Arc::new(super::helpers::spawn_app_with(|c| c.max_client_assertions = 3));
    let dir = tempfile::tempdir().unwrap();
    let client = KeyClient::with_pem(&app, dir.path(), KeyAlgorithm::EdDsa, "users:read");
    let other = KeyClient::with_pem(&app, dir.path(), KeyAlgorithm::EdDsa, "users:read");
    let token_url = format!("{}{TOKEN}", app.base);
    // A replay is not remembered twice: it takes no place in the allowance.
    let first = client.assertion(&token_url, |_| {});
    grant(&app, &first).expect(200);
    refused(&grant(&app, &first));
    // Eight fresh assertions at once for the two places left: exactly two get in.
    let fresh = (0..8).map(|_| client.assertion(&token_url, |_| {})).collect();
    let statuses = grants_at_once(&app, fresh);
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 2, "{statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200 || s == 429), "{statuses:?}");
    let full = grant(&app, &client.assertion(&token_url, |_| {}));
    let body = full.expect(429);
    assert_eq!(body["error"], "too_many_requests", "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("shorter exp"), "{body}");
    // Until the first use (exp 300 s, plus the margin) is forgotten.
    let wait: u64 = full.header("retry-after").unwrap().parse().unwrap();
    assert!((300..=400).contains(&wait), "{wait}");
    // Another client has an allowance of its own.
    grant(&app, &other.assertion(&token_url, |_| {})).expect(200);
    // Assertions that expire sooner free their places sooner: that is the advice.
    let app2 = super::helpers::spawn_app_with(|c| {
        c.max_client_assertions = 1;
        c.login_max_failures = 1;
    });
    let short = KeyClient::with_pem(&app2, dir.path(), KeyAlgorithm::EdDsa, "users:read");
    let url2 = format!("{}{TOKEN}", app2.base);
    let now = chrono::Utc::now().timestamp();
    grant(&app2, &short.assertion(&url2, |c| c["exp"] = json!(now + 1))).expect(200);
    let full = grant(&app2, &short.assertion(&url2, |_| {}));
    assert_eq!(full.expect(429)["error"], "too_many_requests");
    let wait: u64 = full.header("retry-after").unwrap().parse().unwrap();
    assert!(wait <= 70, "{wait}");
    // Each such answer counts against the address like a refusal (the cap is checked before
    // the replay check, so replays of a captured assertion must not be free): after
    // LOGIN_MAX_FAILURES x 10 of them the address waits.
    let description = |resp: &Resp| resp.expect(429)["error_description"].as_str().unwrap().to_owned();
    for _ in 1..10 {
        assert!(description(&grant(&app2, &short.assertion(&url2, |_| {}))).contains("shorter exp"));
    }
    let held = description(&grant(&app2, &short.assertion(&url2, |_| {})));
    assert!(held.contains("failed"), "{held}");
}
