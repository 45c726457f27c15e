//! Browser sign-in: the authorization code flow with PKCE, the hosted pages, OpenID
//! Connect (ID tokens, userinfo, discovery, RP-initiated logout) and consent, driven as a
//! browser and a relying party would.

use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{json, Value};

use super::helpers::browser::{claims_of, pkce, query_of, Browser};
use super::helpers::{form, spawn_app, spawn_app_with, TestApp, TestUser, FORM};

const TOKEN: &str = "/api/v1/auth/token";
const CALLBACK: &str = "http://127.0.0.1:7777/callback";
const ALL: &str = "openid profile email offline_access";

/// A registered relying party: its id, secret (none if public) and flags.
struct Rp {
    id: String,
    secret: Option<String>,
}

fn register(app: &TestApp, extra: &[&str], scope: &str) -> Rp {
    let mut args = vec![
        "clients",
        "create",
        "--name",
        "Acme Notes",
        "--scope",
        scope,
        "--redirect-uri",
        CALLBACK,
    ];
    args.extend_from_slice(extra);
    let out = app.cli(&args).json();
    Rp {
        id: out["client_id"].as_str().unwrap().to_owned(),
        secret: out["client_secret"].as_str().map(str::to_owned),
    }
}

/// An authorization request's URL, with `params` added to or replacing the defaults.
fn authorize_url(rp: &Rp, challenge: &str, params: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &rp.id),
        ("redirect_uri", CALLBACK),
        ("scope", ALL),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in params {
        all.retain(|(n, _)| n != name);
        if !value.is_empty() {
            all.push((name, value));
        }
    }
    format!(
        "/api/v1/auth/authorize?{}",
        String::from_utf8(form(&all)).unwrap()
    )
}

/// Signs `user` in on the page the browser was sent to, answering consent with `allow`
/// if asked; returns the callback URL.
fn sign_in(browser: &mut Browser, start: &str, user: &TestUser, allow: bool) -> String {
    let to_signin = browser.get(start);
    let signin = browser.get(&Browser::location(&to_signin));
    assert_eq!(signin.status, 200, "{}", signin.body);
    let after = browser.submit(&signin, &[("email", &user.email), ("password", &user.password)]);
    let next = Browser::location(&after);
    if next.starts_with("/signin/consent") {
        let consent = browser.get(&next);
        assert_eq!(consent.status, 200, "{}", consent.body);
        let decision = if allow { "allow" } else { "deny" };
        return Browser::location(&browser.submit(&consent, &[("decision", decision)]));
    }
    next
}

/// Exchanges the code of `callback` at the token endpoint.
fn exchange(app: &TestApp, rp: &Rp, callback: &str, verifier: &str) -> (u16, Value) {
    let code = query_of(callback)["code"].clone();
    let mut fields = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", verifier),
        ("client_id", rp.id.as_str()),
    ];
    if let Some(secret) = &rp.secret {
        fields.push(("client_secret", secret));
    }
    let resp = app.post_form(TOKEN, &fields);
    (resp.status, resp.json())
}

/// A whole flow for a new user: the callback, the verifier and the user.
fn authorized(app: &TestApp, rp: &Rp, params: &[(&str, &str)]) -> (String, String, TestUser) {
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let (verifier, challenge) = pkce();
    let callback = sign_in(&mut browser, &authorize_url(rp, &challenge, params), &user, true);
    (callback, verifier, user)
}

/// The ID token's claims, its signature checked with the published key named by `kid`
/// (RS256) and its audience with the client's id.
fn verified_id_token(app: &TestApp, id_token: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks = app.get("/.well-known/jwks.json", None).expect(200);
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| Some(k["kid"].as_str().unwrap()) == header.kid.as_deref())
        .expect("the ID token's key is published");
    let key = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["simple-api"]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap()
        .claims
}

#[test]
fn a_person_signs_in_allows_a_client_and_the_client_gets_tokens_an_id_token_and_userinfo() {
    let app = spawn_app();
    let rp = register(&app, &[], ALL);
    let (callback, verifier, user) = authorized(&app, &rp, &[]);
    assert!(callback.starts_with(CALLBACK), "{callback}");
    let q = query_of(&callback);
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], "simple-api", "RFC 9207");

    let (status, tokens) = exchange(&app, &rp, &callback, &verifier);
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], ALL);
    let refresh = tokens["refresh_token"].as_str().expect("offline_access: a refresh token");
    let access = tokens["access_token"].as_str().unwrap();
    let id = verified_id_token(&app, tokens["id_token"].as_str().unwrap(), &rp.id);
    let me = app.me(access).expect(200);
    assert_eq!(id["sub"], me["id"]);
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["email"], user.email.as_str());
    assert_eq!(id["amr"], json!(["pwd"]));
    assert_eq!(id["azp"], rp.id.as_str());
    assert!(id["auth_time"].as_i64().unwrap() <= id["iat"].as_i64().unwrap());
    assert!(id["sid"].is_string());
    assert_eq!(
        id["at_hash"],
        simple_api::auth::id_token::at_hash(access),
        "OIDC Core §3.1.3.6"
    );
    // The access token is the person's, issued to the client (RFC 9068 client_id).
    assert_eq!(claims_of(access)["client_id"], rp.id.as_str());

    let info = app.get("/api/v1/auth/userinfo", Some(access)).expect(200);
    assert_eq!(info["sub"], me["id"]);
    assert_eq!(info["email"], user.email.as_str());
    assert_eq!(info["email_verified"], false);
    let posted = app.request("POST", "/api/v1/auth/userinfo", Some(access), None, None);
    assert_eq!(posted.expect(200)["sub"], me["id"]);

    // The refresh token is the client's: it refreshes with the client's credentials only.
    let mut fields = vec![("grant_type", "refresh_token"), ("refresh_token", refresh)];
    app.post_form(TOKEN, &fields).expect(400);
    let secret = rp.secret.clone().unwrap();
    fields.extend([("client_id", rp.id.as_str()), ("client_secret", secret.as_str())]);
    let refreshed = app.post_form(TOKEN, &fields).expect(200);
    assert_eq!(refreshed["scope"], ALL, "the OpenID scopes survive a refresh");
    let renewed = refreshed["access_token"].as_str().unwrap();
    assert_eq!(claims_of(renewed)["client_id"], rp.id.as_str());
    app.get("/api/v1/auth/userinfo", Some(renewed)).expect(200);
    // The client may revoke what it was granted.
    let next = refreshed["refresh_token"].as_str().unwrap();
    let revoke = [
        ("token", next),
        ("client_id", rp.id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    app.post_form("/api/v1/auth/revoke", &revoke).expect(200);
    app.get("/api/v1/auth/userinfo", Some(renewed)).expect(401);
}

#[test]
fn a_code_is_single_use_and_bound_to_its_client_redirect_and_verifier() {
    let app = spawn_app();
    let rp = register(&app, &[], ALL);
    let other = register(&app, &[], ALL);
    let (callback, verifier, _) = authorized(&app, &rp, &[]);
    let code = query_of(&callback)["code"].clone();
    let secret = rp.secret.clone().unwrap();
    let attempt = |client: &Rp, redirect: &str, verifier: &str| {
        let secret = client.secret.clone().unwrap();
        app.post_form(
            TOKEN,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", verifier),
                ("client_id", &client.id),
                ("client_secret", &secret),
            ],
        )
    };
    let wrong_verifier = pkce().0;
    for (client, redirect, verifier) in [
        (&other, CALLBACK, verifier.as_str()),
        (&rp, "http://127.0.0.1:7777/other", verifier.as_str()),
        (&rp, CALLBACK, wrong_verifier.as_str()),
        (&rp, CALLBACK, "short"),
    ] {
        let refused = attempt(client, redirect, verifier).expect(400);
        assert_eq!(refused["error"], "invalid_grant", "{refused}");
    }
    // Without the client's secret: invalid_client.
    let anonymous = app.post_form(
        TOKEN,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", &verifier),
            ("client_id", &rp.id),
        ],
    );
    assert_eq!(anonymous.expect(401)["error"], "invalid_client");
    // Those failures did not use the code up; the right exchange works once.
    let first = attempt(&rp, CALLBACK, &verifier).expect(200);
    let access = first["access_token"].as_str().unwrap();
    app.get("/api/v1/auth/userinfo", Some(access)).expect(200);
    // A second use is refused and revokes what the first issued (RFC 6749 §4.1.2).
    let replay = attempt(&rp, CALLBACK, &verifier).expect(400);
    assert_eq!(replay["error"], "invalid_grant");
    app.get("/api/v1/auth/userinfo", Some(access)).expect(401);
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", first["refresh_token"].as_str().unwrap()),
        ("client_id", rp.id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    app.post_form(TOKEN, &refresh).expect(400);
}

#[test]
fn concurrent_exchanges_of_one_code_give_tokens_at_most_once() {
    let app = spawn_app();
    let rp = register(&app, &[], ALL);
    let (callback, verifier, _) = authorized(&app, &rp, &[]);
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..6)
            .map(|_| s.spawn(|| exchange(&app, &rp, &callback, &verifier)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let granted: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
    // The first to mark the code used gets tokens; every other is a replay...
    assert_eq!(granted.len(), 1, "{answers:?}");
    // ...and revokes what the first was granted.
    for tokens in granted {
        let access = tokens["access_token"].as_str().unwrap();
        app.get("/api/v1/auth/userinfo", Some(access)).expect(401);
    }
}

#[test]
fn an_unknown_client_or_redirect_uri_is_an_error_page_and_never_a_redirect() {
    let app = spawn_app();
    let rp = register(&app, &[], ALL);
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&app.base);
    let unknown = Rp {
        id: uuid::Uuid::new_v4().to_string(),
        secret: None,
    };
    for url in [
        authorize_url(&unknown, &challenge, &[]),
        authorize_url(&rp, &challenge, &[("redirect_uri", "https://evil.example/cb")]),
        authorize_url(&rp, &challenge, &[("redirect_uri", "")]),
        authorize_url(&rp, &challenge, &[("client_id", "")]),
    ] {
        let page = browser.get(&url);
        assert_eq!(page.status, 400, "{url}: {}", page.body);
        assert!(page.header("location").is_none());
        assert!(page.header("content-type").unwrap().starts_with("text/html"));
        assert!(page.body.contains("class=\"error\""), "{}", page.body);
    }
    // An API caller gets the contract's JSON error instead.
    let json = app.get(&authorize_url(&unknown, &challenge, &[]), None);
    assert_eq!(json.status, 400);
    assert!(json.json()["error"].is_string());
}

#[test]
fn other_bad_requests_go_back_to_the_client_with_the_error_state_and_iss() {
    let app = spawn_app();
    let rp = register(&app, &[], "openid email");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&app.base);
    for (params, error) in [
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("scope", "nonsense")], "invalid_scope"),
        (vec![("scope", "users:write")], "invalid_scope"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("max_age", "soon")], "invalid_request"),
        (vec![("request", "eyJ")], "request_not_supported"),
        (vec![("prompt", "none")], "login_required"),
    ] {
        let resp = browser.get(&authorize_url(&rp, &challenge, &params));
        let location = Browser::location(&resp);
        assert!(location.starts_with(CALLBACK), "{location}");
        let q = query_of(&location);
        assert_eq!(q["error"], error, "{params:?}: {location}");
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], "simple-api");
    }
    // Scopes the client may not have, or nobody knows, are dropped, not granted.
    let (callback, verifier, _) =
        authorized(&app, &rp, &[("scope", "openid email profile phone")]);
    let (status, tokens) = exchange(&app, &rp, &callback, &verifier);
    assert_eq!(status, 200);
    assert_eq!(tokens["scope"], "openid email");
    assert!(tokens.get("refresh_token").is_none(), "no offline_access");
}

#[test]
fn consent_is_asked_once_remembered_and_can_be_withdrawn() {
    let app = spawn_app();
    let rp = register(&app, &[], ALL);
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let (verifier, challenge) = pkce();
    // Denied: access_denied, nothing remembered.
    let denied = sign_in(&mut browser, &authorize_url(&rp, &challenge, &[]), &user, false);
    assert_eq!(query_of(&denied)["error"], "access_denied");
    // Signed in already (single sign-on): straight to the consent page.
    let again = browser.get(&authorize_url(&rp, &challenge, &[]));
    let consent_url = Browser::location(&again);
    assert!(consent_url.starts_with("/signin/consent"), "{consent_url}");
    let consent = browser.get(&consent_url);
    assert!(consent.body.contains("Acme Notes") && consent.body.contains("offline_access"));
    let callback = Browser::location(&browser.submit(&consent, &[("decision", "allow")]));
    assert_eq!(exchange(&app, &rp, &callback, &verifier).0, 200);
    // Remembered: no page, straight back with a code; prompt=consent asks again.
    let remembered = Browser::location(&browser.get(&authorize_url(&rp, &challenge, &[])));
    assert!(remembered.starts_with(CALLBACK) && query_of(&remembered).contains_key("code"));
    let forced = Browser::location(&browser.get(&authorize_url(&rp, &challenge, &[("prompt", "consent")])));
    assert!(forced.starts_with("/signin/consent"), "{forced}");
    // Listed, then withdrawn: asked again.
    let token = user.token.as_str();
    let listed = app.get("/api/v1/users/me/consents", Some(token)).expect(200);
    assert_eq!(listed[0]["client_id"], rp.id.as_str());
    assert_eq!(listed[0]["scope"], ALL);
    let path = format!("/api/v1/users/me/consents/{}", rp.id);
    assert_eq!(app.delete(&path, Some(token)).expect(200), json!({}));
    app.delete(&path, Some(token)).expect(404);
    let asked = Browser::location(&browser.get(&authorize_url(&rp, &challenge, &[("prompt", "none")])));
    assert_eq!(query_of(&asked)["error"], "consent_required");
}

#[test]
fn a_first_party_public_client_gets_no_consent_screen_and_proves_itself_with_pkce_alone() {
    let app = spawn_app();
    let rp = register(&app, &["--public", "--first-party"], "openid profile");
    assert!(rp.secret.is_none(), "a public client has no secret");
    let (callback, verifier, _) = authorized(&app, &rp, &[("scope", "openid")]);
    assert!(callback.starts_with(CALLBACK), "no consent page: {callback}");
    let (status, tokens) = exchange(&app, &rp, &callback, &verifier);
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["refresh_token"].is_string(), "first-party: a refresh token");
    assert!(tokens["id_token"].is_string());
    // A public client cannot use the client credentials grant: it has nothing to prove.
    let grant = app.post_form(TOKEN, &[("grant_type", "client_credentials"), ("client_id", &rp.id)]);
    assert_eq!(grant.expect(401)["error"], "invalid_client");
    // Its refresh token is refreshed by naming it.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let fields = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", rp.id.as_str()),
    ];
    app.post_form(TOKEN, &fields).expect(200);
}

#[test]
fn a_loopback_redirect_may_use_any_port() {
    let app = spawn_app();
    let out = app
        .cli(&[
            "clients", "create", "--name", "CLI tool", "--scope", "openid", "--public",
            "--redirect-uri", "http://127.0.0.1/callback",
        ])
        .json();
    let rp = Rp {
        id: out["client_id"].as_str().unwrap().to_owned(),
        secret: None,
    };
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&app.base);
    let url = authorize_url(&rp, &challenge, &[("redirect_uri", "http://127.0.0.1:49152/callback")]);
    assert!(Browser::location(&browser.get(&url)).starts_with("/signin"));
    let other_path = authorize_url(&rp, &challenge, &[("redirect_uri", "http://127.0.0.1:49152/x")]);
    assert_eq!(browser.get(&other_path).status, 400);
}

#[test]
fn prompt_login_and_max_age_ask_for_the_password_again() {
    let app = spawn_app();
    let rp = register(&app, &["--first-party"], ALL);
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let (_, challenge) = pkce();
    sign_in(&mut browser, &authorize_url(&rp, &challenge, &[]), &user, true);
    // Signed in: no page.
    let sso = Browser::location(&browser.get(&authorize_url(&rp, &challenge, &[])));
    assert!(sso.starts_with(CALLBACK));
    // At once, in the same second as the sign-in: still asked.
    for params in [[("prompt", "login")], [("max_age", "0")]] {
        let url = authorize_url(&rp, &challenge, &params);
        let asked = Browser::location(&browser.get(&url));
        assert!(asked.starts_with("/signin?"), "{params:?}: {asked}");
        // Signing in for the request satisfies it (no loop back to the page).
        let done = sign_in(&mut browser, &url, &user, true);
        assert!(done.starts_with(CALLBACK), "{params:?}: {done}");
    }
    // The hint fills in the email.
    let hinted = authorize_url(&rp, &challenge, &[("prompt", "login"), ("login_hint", "ada@example.com")]);
    let to_signin = Browser::location(&browser.get(&hinted));
    let page = browser.get(&to_signin);
    assert!(page.body.contains("value=\"ada@example.com\""), "{}", page.body);
}

#[test]
fn the_sign_in_page_is_throttled_audited_and_guarded_against_csrf_and_framing() {
    let app = spawn_app_with(|c| c.login_max_failures = 3);
    let rp = register(&app, &[], ALL);
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let (_, challenge) = pkce();
    let signin_url = Browser::location(&browser.get(&authorize_url(&rp, &challenge, &[])));
    let page = browser.get(&signin_url);
    for (name, value) in [
        ("content-security-policy", "frame-ancestors 'none'"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert!(page.header(name).unwrap_or_default().contains(value), "{name}");
    }
    assert!(!page.body.contains("<script"));
    // Without the CSRF cookie (another site's form): refused, nothing judged.
    let mut stranger = Browser::new(&app.base);
    let forged = stranger.submit(&page, &[("email", &user.email), ("password", &user.password)]);
    assert_eq!(forged.status, 403);
    // Wrong passwords: the form again with an error, then 429 with Retry-After.
    for _ in 0..3 {
        let wrong = browser.submit(&page, &[("email", &user.email), ("password", "wrong-password")]);
        assert_eq!(wrong.status, 401);
        assert!(wrong.body.contains("Wrong email or password."));
    }
    let throttled = browser.submit(&page, &[("email", &user.email), ("password", &user.password)]);
    assert_eq!(throttled.status, 429);
    assert!(throttled.header("retry-after").is_some());
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"login_failed\"") && audit.contains("\"via\":\"signin\""));
    assert!(!audit.contains("wrong-password"));
}

#[test]
fn rp_initiated_logout_ends_the_single_sign_on_session_and_returns_to_the_client() {
    let app = spawn_app();
    let logout_to = "https://notes.example/bye";
    let rp = register(&app, &["--post-logout-redirect-uri", logout_to], ALL);
    let (_, challenge) = pkce();
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let callback = sign_in(&mut browser, &authorize_url(&rp, &challenge, &[]), &user, true);
    assert!(callback.starts_with(CALLBACK));
    // An unregistered place to go afterwards: an error page, not a redirect.
    let bad = format!(
        "/api/v1/auth/logout?client_id={}&post_logout_redirect_uri=https://evil.example/",
        rp.id
    );
    assert_eq!(browser.get(&bad).status, 400);
    let url = format!(
        "/api/v1/auth/logout?client_id={}&post_logout_redirect_uri={logout_to}&state=s-9",
        rp.id
    );
    let confirm = browser.get(&url);
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("Sign out"));
    let done = browser.submit(&confirm, &[]);
    assert_eq!(Browser::location(&done), format!("{logout_to}?state=s-9"));
    // Signed out: the next authorization asks for the password again.
    let asked = Browser::location(&browser.get(&authorize_url(&rp, &challenge, &[])));
    assert!(asked.starts_with("/signin?"), "{asked}");
    // Not signed in: straight to where the client asked.
    assert_eq!(Browser::location(&browser.get(&url)), format!("{logout_to}?state=s-9"));
}

#[test]
fn signing_out_everywhere_from_the_logout_page_ends_every_session_of_the_person() {
    let app = spawn_app();
    let rp = register(&app, &[], ALL);
    let (callback, verifier, user) = authorized(&app, &rp, &[]);
    let (_, tokens) = exchange(&app, &rp, &callback, &verifier);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let mut browser = Browser::new(&app.base);
    let (_, challenge) = pkce();
    sign_in(&mut browser, &authorize_url(&rp, &challenge, &[]), &user, true);
    let id_token = tokens["id_token"].as_str().unwrap();
    let confirm = browser.get(&format!("/api/v1/auth/logout?id_token_hint={id_token}"));
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let done = browser.submit(&confirm, &[("everywhere", "1")]);
    assert_eq!(done.status, 200, "no redirect asked: the signed-out page");
    app.get("/api/v1/auth/userinfo", Some(&access)).expect(401);
    app.me(&user.token).expect(401);
}

#[test]
fn discovery_describes_the_openid_provider() {
    let app = spawn_app();
    let doc = app.get("/.well-known/openid-configuration", None).expect(200);
    let base = &app.base;
    assert_eq!(doc["issuer"], "simple-api");
    assert_eq!(doc["authorization_endpoint"], format!("{base}/api/v1/auth/authorize"));
    assert_eq!(doc["userinfo_endpoint"], format!("{base}/api/v1/auth/userinfo"));
    assert_eq!(doc["end_session_endpoint"], format!("{base}/api/v1/auth/logout"));
    assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    for claim in ["sub", "email", "email_verified", "name", "at_hash", "sid", "amr", "auth_time", "nonce"] {
        assert!(doc["claims_supported"].as_array().unwrap().contains(&json!(claim)), "{claim}");
    }
    for scope in ["openid", "profile", "email", "offline_access"] {
        assert!(doc["scopes_supported"].as_array().unwrap().contains(&json!(scope)), "{scope}");
    }
    // Everything the RFC 8414 document has.
    let oauth = app.get("/.well-known/oauth-authorization-server", None).expect(200);
    for (name, value) in oauth.as_object().unwrap() {
        assert_eq!(&doc[name], value, "{name}");
    }
    assert!(oauth.get("userinfo_endpoint").is_none());
}

#[test]
fn userinfo_needs_a_person_token_with_openid() {
    let app = spawn_app();
    let user = app.new_user();
    let userinfo = "/api/v1/auth/userinfo";
    app.get(userinfo, None).expect(401);
    // A password-grant token has no openid scope.
    app.get(userinfo, Some(&user.token)).expect(403);
    let (id, secret) = app.new_client("users:read");
    let client = app.client_token(&id, &secret);
    app.get(userinfo, Some(&client)).expect(403);
    let form_body = form(&[("x", "1")]);
    let posted = app.request("POST", userinfo, None, Some(FORM), Some(form_body));
    assert_eq!(posted.status, 401);
}

#[test]
fn the_cli_registers_only_safe_redirect_uris_and_lists_them() {
    let app = spawn_app();
    for bad in [
        vec!["--redirect-uri", "http://notes.example/cb"],
        vec!["--redirect-uri", "https://notes.example/cb#x"],
        vec!["--public"],
        vec!["--first-party"],
    ] {
        let mut args = vec!["clients", "create", "--name", "x", "--scope", "openid"];
        args.extend(bad.iter());
        let out = app.cli(&args);
        assert!(!out.success, "{args:?} was accepted");
    }
    // OpenID scopes only for a client that signs people in.
    let out = app.cli(&["clients", "create", "--name", "x", "--scope", "openid users:read"]);
    assert!(!out.success && out.stderr.contains("--redirect-uri"), "{}", out.stderr);
    let rp = register(&app, &["--public", "--post-logout-redirect-uri", "https://n.example/bye"], ALL);
    let listed = app.cli(&["clients", "list"]);
    let line: Value = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|c| c["client_id"] == rp.id.as_str())
        .unwrap();
    assert_eq!(line["redirect_uris"], json!([CALLBACK]));
    assert_eq!(line["post_logout_redirect_uris"], json!(["https://n.example/bye"]));
    assert_eq!(line["token_endpoint_auth_method"], "none");
    assert_eq!(line["first_party"], false);
    assert!(app.cli(&["clients", "rotate-secret", &rp.id]).stderr.contains("public"));
}

#[test]
fn a_private_key_jwt_client_exchanges_its_code_with_a_signed_assertion() {
    use simple_api::auth::keys::{self, Key, KeyAlgorithm};
    let app = spawn_app();
    let dir = tempfile::tempdir().unwrap();
    let path = keys::generate(dir.path(), KeyAlgorithm::Es256).unwrap();
    let key = Key::from_pem(&std::fs::read(&path).unwrap(), &path, std::time::SystemTime::now()).unwrap();
    let public = dir.path().join("client.pub.pem");
    std::fs::write(&public, key.public_pem()).unwrap();
    let rp = register(&app, &["--public-key", public.to_str().unwrap()], ALL);
    assert!(rp.secret.is_none());
    let (callback, verifier, _) = authorized(&app, &rp, &[]);
    let code = query_of(&callback)["code"].clone();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": rp.id, "sub": rp.id, "aud": format!("{}{TOKEN}", app.base),
        "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let mut header = jsonwebtoken::Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    let assertion = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
    let exchange = |assertion: Option<&str>| {
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier.as_str()),
            ("client_id", rp.id.as_str()),
        ];
        if let Some(assertion) = assertion {
            fields.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"));
            fields.push(("client_assertion", assertion));
        }
        app.post_form(TOKEN, &fields)
    };
    // Naming itself is not enough for a client with keys.
    assert_eq!(exchange(None).expect(401)["error"], "invalid_client");
    let tokens = exchange(Some(&assertion)).expect(200);
    let id = verified_id_token(&app, tokens["id_token"].as_str().unwrap(), &rp.id);
    assert_eq!(id["aud"], rp.id.as_str());
}

#[test]
fn a_third_party_client_reads_the_account_but_never_changes_it_and_its_tokens_end_with_it() {
    let app = spawn_app();
    let third = register(&app, &[], ALL);
    let (callback, verifier, user) = authorized(&app, &third, &[]);
    let (_, tokens) = exchange(&app, &third, &callback, &verifier);
    let access = tokens["access_token"].as_str().unwrap();
    app.me(access).expect(200);
    let rename = json!({ "first_name": "Mallory" });
    app.put_json("/api/v1/users/me", Some(access), &rename).expect(403);
    app.delete("/api/v1/users/me", Some(access)).expect(403);
    app.get("/api/v1/users/me/consents", Some(access)).expect(403);
    let change = json!({ "current_password": user.password, "new_password": "taken-over-1" });
    app.put_json("/api/v1/users/me/password", Some(access), &change).expect(403);
    // The person's own application may.
    let own = register(&app, &["--first-party"], ALL);
    let (callback, verifier, user) = authorized(&app, &own, &[]);
    let (_, tokens) = exchange(&app, &own, &callback, &verifier);
    let own_access = tokens["access_token"].as_str().unwrap();
    app.put_json("/api/v1/users/me", Some(own_access), &rename).expect(200);
    // Deleting the client ends the tokens it got.
    assert!(app.cli(&["clients", "delete", &own.id]).success);
    app.me(own_access).expect(401);
    app.me(&user.token).expect(200);
}

#[test]
fn behind_https_the_page_cookies_are_secure_and_host_only() {
    let app = spawn_app_with(|c| c.cookie_secure = true);
    let rp = register(&app, &[], ALL);
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let (_, challenge) = pkce();
    let to_signin = Browser::location(&browser.get(&authorize_url(&rp, &challenge, &[])));
    let signin = browser.get(&to_signin);
    let csrf = signin.set_cookie("__Host-simple_api_csrf").expect("a __Host- CSRF cookie");
    assert!(csrf.contains("; Secure") && csrf.contains("Path=/") && !csrf.contains("Domain"));
    let after = browser.submit(&signin, &[("email", &user.email), ("password", &user.password)]);
    let sso = after.set_cookie("__Host-simple_api_sso").expect("a __Host- SSO cookie");
    assert!(sso.contains("; Secure") && sso.contains("SameSite=Lax") && sso.contains("HttpOnly"));
    // A cookie without the prefix (planted by a sibling subdomain) is not the session.
    let mut planted = Browser::new(&app.base);
    let value = browser.cookies["__Host-simple_api_sso"].clone();
    planted.cookies.insert("simple_api_sso".into(), value);
    let asked = Browser::location(&planted.get(&authorize_url(&rp, &challenge, &[])));
    assert!(asked.starts_with("/signin?"), "{asked}");
}

#[test]
fn a_person_who_signs_up_from_a_client_goes_back_to_it_and_the_id_token_tells_verified() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let rp = register(&app, &["--first-party"], ALL);
    let mut browser = Browser::new(&app.base);
    let (verifier, challenge) = pkce();
    let to_signin = browser.get(&authorize_url(&rp, &challenge, &[]));
    let signin = browser.get(&Browser::location(&to_signin));
    // "Create an account" carries the authorization along.
    let link = signin
        .body
        .split("href=\"")
        .find_map(|rest| rest.split('"').next().filter(|h| h.starts_with("/signup?request=")))
        .expect("a sign-up link carrying the request")
        .replace("&amp;", "&");
    let page = browser.get(&link);
    assert!(page.body.contains("to continue to <strong>Acme Notes</strong>"), "{}", page.body);
    let done = browser.submit(&page, &[("email", "joiner@example.com"), ("password", "a-good-password")]);
    let callback = Browser::location(&done);
    assert!(callback.starts_with(CALLBACK), "{callback}");
    let (status, tokens) = exchange(&app, &rp, &callback, &verifier);
    assert_eq!(status, 200, "{tokens}");
    let claims = verified_id_token(&app, tokens["id_token"].as_str().unwrap(), &rp.id);
    assert_eq!((claims["email"].as_str(), claims["email_verified"].as_bool()), (Some("joiner@example.com"), Some(false)));
    // Verified by the code in the message: userinfo says so at once.
    let outbox = app.config_data_dir().join("outbox");
    let started = std::time::Instant::now();
    let message = loop {
        let found = std::fs::read_dir(&outbox)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .find(|m| m.contains("To: joiner@example.com"));
        match found {
            Some(message) => break message,
            None if started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            None => panic!("no verification message in {}", outbox.display()),
        }
    };
    let code = message
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 26 && l.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)))
        .unwrap()
        .to_owned();
    app.post_json("/api/v1/auth/verify-email", None, &json!({ "email": "joiner@example.com", "code": code }))
        .expect(200);
    let access = tokens["access_token"].as_str().unwrap();
    let info = app.get("/api/v1/auth/userinfo", Some(access)).expect(200);
    assert_eq!(info["email_verified"], true);
}
