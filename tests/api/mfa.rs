//! Second factors: TOTP enrolment (RFC 6238), recovery codes, and that an enrolled account
//! gets no token with its password alone, through any endpoint.

use serde_json::{json, Value};
use simple_api::auth::totp::{code_at_step, step_of};

use super::helpers::browser::{claims_of, pkce, query_of, Browser};
use super::helpers::{spawn_app, spawn_app_with, TestApp, TestUser};

const TOKEN: &str = "/api/v1/auth/token";
const CALLBACK: &str = "http://127.0.0.1:7777/callback";

/// An enrolled user: their TOTP secret and recovery codes. Enrolment confirmed with the
/// code of the current step, so the next step's code is the next one accepted.
struct Enrolled {
    user: TestUser,
    secret: Vec<u8>,
    recovery: Vec<String>,
}

impl Enrolled {
    fn code(&self, steps_ahead: i64) -> String {
        code_at_step(&self.secret, step_of(chrono::Utc::now().timestamp()) + steps_ahead)
    }
}

fn enrol(app: &TestApp) -> Enrolled {
    let user = app.new_user();
    // Starting needs the password (a stolen token must not enrol its thief's app).
    app.post_json("/api/v1/users/me/mfa/totp", Some(&user.token), &json!({}))
        .expect(400);
    let wrong = json!({ "current_password": "not the password" });
    app.post_json("/api/v1/users/me/mfa/totp", Some(&user.token), &wrong)
        .expect(400);
    let begun = app
        .post_json("/api/v1/users/me/mfa/totp", Some(&user.token), &with_password(&user))
        .expect(200);
    let encoded = begun["secret"].as_str().unwrap().to_owned();
    assert!(begun["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/simple-api:"));
    assert!(begun["qr_svg"].as_str().unwrap().starts_with("<svg"));
    let secret = totp_rs::Secret::Encoded(encoded).to_bytes().unwrap();
    let code = code_at_step(&secret, step_of(chrono::Utc::now().timestamp()));
    let confirmed = app
        .post_json(
            "/api/v1/users/me/mfa/totp/confirm",
            Some(&user.token),
            &json!({ "code": code }),
        )
        .expect(200);
    let recovery: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    Enrolled {
        user,
        secret,
        recovery,
    }
}

/// A first-party public client that signs people in (no consent page), its id.
fn first_party_app(app: &TestApp) -> String {
    let out = app
        .cli(&[
            "clients", "create", "--name", "Notes", "--scope", "openid", "--first-party",
            "--public", "--redirect-uri", CALLBACK,
        ])
        .json();
    out["client_id"].as_str().unwrap().to_owned()
}

fn with_password(user: &TestUser) -> Value {
    json!({ "current_password": user.password })
}

fn password_grant(app: &TestApp, user: &TestUser, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut fields = vec![
        ("grant_type", "password"),
        ("username", user.email.as_str()),
        ("password", user.password.as_str()),
    ];
    fields.extend_from_slice(extra);
    let resp = app.post_form(TOKEN, &fields);
    (resp.status, resp.json())
}

#[test]
fn an_enrolled_account_gets_no_token_with_its_password_alone() {
    let app = spawn_app();
    let e = enrol(&app);
    let status = app
        .get("/api/v1/users/me/mfa", Some(&e.user.token))
        .expect(200);
    assert_eq!(
        status,
        json!({ "enrolled": true, "totp": true, "passkeys": [], "recovery_codes_left": 10, "passkeys_available": false })
    );

    // Password grant: refused with a clear description, then a wrong code, then the code.
    let (status, body) = password_grant(&app, &e.user, &[]);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("second factor is required"));
    let (status, _) = password_grant(&app, &e.user, &[("otp", "000000")]);
    assert_eq!(status, 400);
    let code = e.code(1);
    let (status, body) = password_grant(&app, &e.user, &[("otp", &code)]);
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert!(claims["auth_time"].is_i64());
    // The same code again: refused (each code once).
    let (status, body) = password_grant(&app, &e.user, &[("otp", &code)]);
    assert_eq!(status, 400, "{body}");

    // Refreshed tokens keep saying how the session began.
    let refresh = body_refresh(&app, &e);
    let refreshed = app.refresh(&refresh).expect(200);
    assert_eq!(
        claims_of(refreshed["access_token"].as_str().unwrap())["amr"],
        json!(["pwd", "otp", "mfa"])
    );

    // Cookie login: the same rule.
    let cookie = app.post_form(
        "/api/v1/auth_session/login",
        &[("email", &e.user.email), ("password", &e.user.password)],
    );
    assert_eq!(cookie.status, 401);
    assert!(cookie.body.contains("second factor is required"));

    // A recovery code works once, typed loosely.
    let loose = e.recovery[0].to_lowercase().replace('-', " ");
    let (status, _) = password_grant(&app, &e.user, &[("recovery_code", &loose)]);
    assert_eq!(status, 200);
    let (status, _) = password_grant(&app, &e.user, &[("recovery_code", &e.recovery[0])]);
    assert_eq!(status, 400);
    let status = app
        .get("/api/v1/users/me/mfa", Some(&e.user.token))
        .expect(200);
    // Used: [9] for the refresh token above, and [0].
    assert_eq!(status["recovery_codes_left"], 8);
    let cookie = app.post_form(
        "/api/v1/auth_session/login",
        &[
            ("email", e.user.email.as_str()),
            ("password", e.user.password.as_str()),
            ("recovery_code", e.recovery[1].as_str()),
        ],
    );
    assert_eq!(cookie.status, 200, "{}", cookie.body);
}

/// A refresh token of a login with a recovery code.
fn body_refresh(app: &TestApp, e: &Enrolled) -> String {
    let (status, body) = password_grant(app, &e.user, &[("recovery_code", &e.recovery[9])]);
    assert_eq!(status, 200, "{body}");
    body["refresh_token"].as_str().unwrap().to_owned()
}

#[test]
fn second_factor_guesses_are_throttled_per_account() {
    let app = spawn_app_with(|c| c.login_max_failures = 3);
    let e = enrol(&app);
    for _ in 0..3 {
        let (status, _) = password_grant(&app, &e.user, &[("otp", "000000")]);
        assert_eq!(status, 400);
    }
    let (status, body) = password_grant(&app, &e.user, &[("otp", &e.code(1))]);
    assert_eq!(status, 429, "{body}");
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"mfa_failed\"") && audit.contains("\"mfa_enrolled\""));
    assert!(!audit.contains(&e.code(1)) && !audit.contains(&e.recovery[0]));
}

#[test]
fn the_hosted_sign_in_page_asks_for_the_code_and_the_id_token_says_mfa() {
    let app = spawn_app();
    let client_id = first_party_app(&app);
    let e = enrol(&app);
    let (verifier, challenge) = pkce();
    let authorize = format!(
        "/api/v1/auth/authorize?response_type=code&client_id={client_id}&redirect_uri={CALLBACK}\
         &scope=openid&code_challenge={challenge}&code_challenge_method=S256&acr_values=mfa"
    );
    let mut browser = Browser::new(&app.base);
    let to_signin = Browser::location(&browser.get(&authorize));
    let signin = browser.get(&to_signin);
    let second = browser.submit(
        &signin,
        &[("email", &e.user.email), ("password", &e.user.password)],
    );
    assert_eq!(second.status, 200, "{}", second.body);
    assert!(second.body.contains("Two-step verification"));
    assert!(second.set_cookie("simple_api_sso").is_none(), "not signed in yet");
    let wrong = browser.submit(&second, &[("otp", "000000")]);
    assert_eq!(wrong.status, 401);
    let done = browser.submit(&second, &[("otp", &e.code(1))]);
    let callback = Browser::location(&done);
    assert!(callback.starts_with(CALLBACK), "{callback}");
    let tokens = app
        .exchange_code(&callback, CALLBACK, &client_id, &verifier)
        .expect(200);
    let id = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(id["acr"], "mfa");
    assert_eq!(claims_of(tokens["access_token"].as_str().unwrap())["amr"], id["amr"]);

    // acr_values=mfa from an account without a second factor: it cannot be met.
    let plain = app.new_user();
    let mut browser = Browser::new(&app.base);
    let to_signin = Browser::location(&browser.get(&authorize));
    let signin = browser.get(&to_signin);
    let after = browser.submit(&signin, &[("email", &plain.email), ("password", &plain.password)]);
    let back = Browser::location(&after);
    assert_eq!(query_of(&back)["error"], "unmet_authentication_requirements", "{back}");
}

#[test]
fn removing_the_authenticator_needs_a_fresh_proof() {
    let app = spawn_app();
    let e = enrol(&app);
    let token = e.user.token.clone();
    let remove = |body: Value| {
        app.request(
            "DELETE",
            "/api/v1/users/me/mfa/totp",
            Some(&token),
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    };
    remove(json!({})).expect(400);
    remove(json!({ "current_password": "not it at all" })).expect(400);
    // A second enrolment is refused while one is confirmed.
    app.post_json("/api/v1/users/me/mfa/totp", Some(&token), &with_password(&e.user))
        .expect(409);
    // New recovery codes, with the password: the old ones stop working.
    let renewed = app
        .post_json(
            "/api/v1/users/me/mfa/recovery-codes",
            Some(&token),
            &json!({ "current_password": e.user.password }),
        )
        .expect(200);
    let fresh = renewed["recovery_codes"][0].as_str().unwrap().to_owned();
    let (status, _) = password_grant(&app, &e.user, &[("recovery_code", &e.recovery[0])]);
    assert_eq!(status, 400);
    let (status, _) = password_grant(&app, &e.user, &[("recovery_code", &fresh)]);
    assert_eq!(status, 200);
    remove(json!({ "current_password": e.user.password })).expect(200);
    let (status, body) = password_grant(&app, &e.user, &[]);
    assert_eq!(status, 200, "the password alone again: {body}");
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["amr"], json!(["pwd"]));
}

#[test]
fn totp_secrets_are_sealed_at_rest() {
    let app = spawn_app();
    let user = app.new_user();
    let begun = app
        .post_json("/api/v1/users/me/mfa/totp", Some(&user.token), &with_password(&user))
        .expect(200);
    let secret = begun["secret"].as_str().unwrap();
    let raw = totp_rs::Secret::Encoded(secret.to_owned()).to_bytes().unwrap();
    let stored = match app.database_url() {
        Some(url) => {
            let url = url.to_owned();
            let id = app.me(&user.token).expect(200)["id"].as_str().unwrap().to_owned();
            tokio::runtime::Runtime::new().unwrap().block_on(async move {
                let db = simple_api::store::postgres::connect(&url).await.unwrap();
                let row = db
                    .query_one("SELECT mfa FROM users WHERE id = $1::text::uuid", &[&id])
                    .await
                    .unwrap();
                row.get::<_, String>(0)
            })
        }
        None => std::fs::read_to_string(app.config_data_dir().join("store.log")).unwrap(),
    };
    assert!(stored.contains("sealed_secret"), "{stored:.300}");
    assert!(!stored.contains(secret), "the base32 secret is stored in clear");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!stored.contains(&hex));
}

#[test]
fn an_operator_resets_the_second_factors_of_a_person_who_lost_them() {
    let app = spawn_app();
    // The users CLI works on the store directly: on the file store only while no server
    // holds it, so this runs on PostgreSQL, where it may run beside the servers.
    if app.database_url().is_none() {
        return;
    }
    let e = enrol(&app);
    let out = app
        .cli(&["users", "mfa", "reset", "--email", &e.user.email])
        .json();
    assert_eq!(out["reset"], true);
    // The server's cache hears of the change; the password alone signs in again.
    super::helpers::within("the reset to reach the server", std::time::Duration::from_secs(5), || {
        password_grant(&app, &e.user, &[]).0 == 200
    });
    let again = app.cli(&["users", "mfa", "reset", "--email", &e.user.email]).json();
    assert_eq!(again["reset"], false);
    assert!(!app.cli(&["users", "mfa", "reset", "--email", "nobody@example.com"]).success);
}

#[test]
fn a_browser_signed_in_before_enrolment_signs_in_again_with_the_code() {
    let app = spawn_app();
    let client_id = first_party_app(&app);
    let user = app.new_user();
    let (_, challenge) = pkce();
    let authorize = format!(
        "/api/v1/auth/authorize?response_type=code&client_id={client_id}&redirect_uri={CALLBACK}\
         &scope=openid&code_challenge={challenge}&code_challenge_method=S256"
    );
    let mut browser = Browser::new(&app.base);
    let to_signin = Browser::location(&browser.get(&authorize));
    let signin = browser.get(&to_signin);
    let after = browser.submit(&signin, &[("email", &user.email), ("password", &user.password)]);
    assert!(Browser::location(&after).starts_with(CALLBACK));
    // Another login with the password alone, elsewhere.
    let (elsewhere, elsewhere_refresh) = app.tokens(&user.email, &user.password);
    // Signed in with the password alone, then the person enrols a second factor.
    let begun = app
        .post_json("/api/v1/users/me/mfa/totp", Some(&user.token), &with_password(&user))
        .expect(200);
    let secret = totp_rs::Secret::Encoded(begun["secret"].as_str().unwrap().to_owned())
        .to_bytes()
        .unwrap();
    let code = code_at_step(&secret, step_of(chrono::Utc::now().timestamp()));
    app.post_json("/api/v1/users/me/mfa/totp/confirm", Some(&user.token), &json!({ "code": code }))
        .expect(200);
    // The old browser session no longer authorizes on its own, and the other login's
    // tokens are over; the session that confirmed goes on.
    let asked = Browser::location(&browser.get(&authorize));
    assert!(asked.starts_with("/signin?"), "{asked}");
    app.me(&elsewhere).expect(401);
    app.refresh(&elsewhere_refresh).expect(400);
    app.me(&user.token).expect(200);
}
