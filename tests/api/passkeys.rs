//! Passkeys (WebAuthn): registration through the API and the hosted page, "Sign in with a
//! passkey", a passkey as the second factor after the password, proofs, removal, and
//! every way an answer must be refused. The authenticator is `helpers::passkey`'s
//! software one; Chromium's virtual authenticator does the same in `tests/browser`.

use serde_json::{json, Value};

use super::helpers::browser::{claims_of, passkey_form, pkce, Browser};
use super::helpers::passkey::SoftPasskey;
use super::helpers::{spawn_app, spawn_app_with, TestApp, TestUser};

/// The origin the tests' "browser" is at: PUBLIC_URL (a host name, as WebAuthn needs).
const ORIGIN: &str = "http://localhost:8443";
const TOKEN: &str = "/api/v1/auth/token";
const CALLBACK: &str = "http://127.0.0.1:7777/callback";
const PASSKEYS: &str = "/api/v1/users/me/mfa/passkeys";

fn passkey_app() -> TestApp {
    spawn_app_with(|c| c.public_url = Some(ORIGIN.into()))
}

/// Registers a passkey named `name` for `user` through the API: the passkey and the
/// answer's body.
fn register(app: &TestApp, user: &TestUser, name: &str) -> (SoftPasskey, Value) {
    let begun = app
        .post_json(
            PASSKEYS,
            Some(&user.token),
            &json!({ "current_password": user.password, "name": name }),
        )
        .expect(200);
    let (credential, passkey) = SoftPasskey::register(&begun["options"], ORIGIN);
    let added = app
        .post_json(
            &format!("{PASSKEYS}/confirm"),
            Some(&user.token),
            &json!({ "ceremony": begun["ceremony"], "credential": credential }),
        )
        .expect(201);
    (passkey, added)
}

fn password_grant(app: &TestApp, user: &TestUser) -> (u16, Value) {
    let resp = app.post_form(
        TOKEN,
        &[
            ("grant_type", "password"),
            ("username", &user.email),
            ("password", &user.password),
        ],
    );
    (resp.status, resp.json())
}

#[test]
fn a_passkey_is_registered_with_the_password_and_then_the_password_alone_gets_nothing() {
    let app = passkey_app();
    let user = app.new_user();
    let status = app.get("/api/v1/users/me/mfa", Some(&user.token)).expect(200);
    assert_eq!(
        status,
        json!({ "enrolled": false, "totp": false, "passkeys": [], "recovery_codes_left": 0, "passkeys_available": true })
    );
    // Starting needs the password.
    app.post_json(PASSKEYS, Some(&user.token), &json!({})).expect(400);
    app.post_json(
        PASSKEYS,
        Some(&user.token),
        &json!({ "current_password": "not it" }),
    )
    .expect(400);
    let resp = app.request(
        "POST",
        PASSKEYS,
        Some(&user.token),
        Some("application/json"),
        Some(
            json!({ "current_password": user.password, "name": "Laptop" })
                .to_string()
                .into_bytes(),
        ),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let begun = resp.json();
    let pk = &begun["options"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");

    // An answer made for another site is refused, and leaves the ceremony usable.
    let (elsewhere, _) = SoftPasskey::register(&begun["options"], "http://localhost.evil:8443");
    let confirm = format!("{PASSKEYS}/confirm");
    app.post_json(
        &confirm,
        Some(&user.token),
        &json!({ "ceremony": begun["ceremony"], "credential": elsewhere }),
    )
    .expect(400);
    // A ceremony that is not one: refused; in JSON the credential is an object, not text.
    let (credential, _passkey) = SoftPasskey::register(&begun["options"], ORIGIN);
    app.post_json(
        &confirm,
        Some(&user.token),
        &json!({ "ceremony": begun["ceremony"], "credential": credential.to_string() }),
    )
    .expect(400);
    app.post_json(
        &confirm,
        Some(&user.token),
        &json!({ "ceremony": "x.y.z", "credential": credential }),
    )
    .expect(400);
    let added = app
        .post_json(
            &confirm,
            Some(&user.token),
            &json!({ "ceremony": begun["ceremony"], "credential": credential }),
        )
        .expect(201);
    assert_eq!(added["passkey"]["name"], "Laptop");
    assert_eq!(added["recovery_codes"].as_array().unwrap().len(), 10);
    // The same ceremony twice: refused.
    app.post_json(
        &confirm,
        Some(&user.token),
        &json!({ "ceremony": begun["ceremony"], "credential": credential }),
    )
    .expect(400);

    let status = app.get("/api/v1/users/me/mfa", Some(&user.token)).expect(200);
    assert_eq!(status["enrolled"], true);
    assert_eq!(status["totp"], false);
    assert_eq!(status["passkeys"][0]["name"], "Laptop");
    assert_eq!(status["recovery_codes_left"], 10);

    // The password alone: no token from the password grant, none from the cookie login.
    let (status, body) = password_grant(&app, &user);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("second factor is required"));
    let cookie = app.post_form(
        "/api/v1/auth_session/login",
        &[("email", &user.email), ("password", &user.password)],
    );
    assert_eq!(cookie.status, 401);

    // A second passkey: no new recovery codes (the first ones stand).
    let (_, second) = register(&app, &user, "Phone");
    assert_eq!(second["recovery_codes"], json!([]));
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"mfa_enrolled\"") && audit.contains("\"passkey\""));
}

#[test]
fn sign_in_with_a_passkey_on_the_hosted_page_and_the_id_token_says_hwk() {
    let app = passkey_app();
    let user = app.new_user();
    let (passkey, _) = register(&app, &user, "Laptop");
    let client_id = app
        .cli(&[
            "clients", "create", "--name", "Notes", "--scope", "openid", "--first-party",
            "--public", "--redirect-uri", CALLBACK,
        ])
        .json()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (verifier, challenge) = pkce();
    let authorize = format!(
        "/api/v1/auth/authorize?response_type=code&client_id={client_id}&redirect_uri={CALLBACK}\
         &scope=openid&code_challenge={challenge}&code_challenge_method=S256"
    );
    let mut browser = Browser::new(&app.base);
    let to_signin = Browser::location(&browser.get(&authorize));
    let signin = browser.get(&to_signin);
    assert!(signin.body.contains("Sign in with a passkey"));
    assert!(signin.body.contains("<script src=\"/signin/passkey.js\""));
    assert!(signin
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    let (options, ceremony) = passkey_form(&signin.body);
    // Any passkey of this site may answer: the browser offers those it holds.
    assert_eq!(options["publicKey"]["allowCredentials"], json!([]));
    // Counter 0, as synced passkeys answer: only the ceremony's single use stops a replay.
    let answer = passkey.assert_with(options["publicKey"]["challenge"].as_str().unwrap(), ORIGIN, 0);
    let done = browser.submit_to(
        &signin,
        ("passkey_ceremony", ""),
        &[("passkey_credential", &answer.to_string())],
    );
    let callback = Browser::location(&done);
    let tokens = app
        .exchange_code(&callback, CALLBACK, &client_id, &verifier)
        .expect(200);
    let id = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["amr"], json!(["hwk", "user", "mfa"]));
    assert_eq!(id["acr"], "mfa");
    assert_eq!(claims_of(tokens["access_token"].as_str().unwrap())["amr"], id["amr"]);

    // The same answer again (a replay): refused, the ceremony is used.
    let mut other = Browser::new(&app.base);
    let page = other.get("/signin");
    let replay = other.submit_to(
        &page,
        ("passkey_ceremony", ""),
        &[
            ("passkey_ceremony", &ceremony),
            ("passkey_credential", &answer.to_string()),
        ],
    );
    assert_eq!(replay.status, 401, "{}", replay.body);
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"via\":\"passkey\""));
    let status = app.get("/api/v1/users/me/mfa", Some(&user.token)).expect(200);
    assert!(status["passkeys"][0]["last_used_at"].is_string());
}

#[test]
fn a_passkey_is_the_second_factor_after_the_password() {
    let app = passkey_app();
    let user = app.new_user();
    let (mut passkey, _) = register(&app, &user, "Key");
    let other = app.new_user();
    let (mut others_key, _) = register(&app, &other, "Theirs");

    let mut browser = Browser::new(&app.base);
    let signin = browser.get("/signin");
    let second = browser.submit(&signin, &[("email", &user.email), ("password", &user.password)]);
    assert_eq!(second.status, 200, "{}", second.body);
    assert!(second.body.contains("Use a passkey"));
    assert!(!second.body.contains("name=\"otp\""), "no TOTP to ask for");
    let (options, _) = passkey_form(&second.body);
    // Only this account's credentials are offered.
    let allowed = options["publicKey"]["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1);

    // Someone else's passkey does not stand in for this account's.
    let wrong = others_key.answer(&options);
    let refused = browser.submit_to(
        &second,
        ("passkey_ceremony", ""),
        &[("passkey_credential", &wrong.to_string())],
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    // This account's passkey with another account's user handle: refused.
    let mut handle_of_another = passkey.assert_with(
        options["publicKey"]["challenge"].as_str().unwrap(),
        ORIGIN,
        2,
    );
    handle_of_another["response"]["userHandle"] = wrong["response"]["userHandle"].clone();
    let refused = browser.submit_to(
        &second,
        ("passkey_ceremony", ""),
        &[("passkey_credential", &handle_of_another.to_string())],
    );
    assert_eq!(refused.status, 401, "{}", refused.body);
    // This account's passkey, its signature counter at 7.
    let right = passkey.assert_with(
        options["publicKey"]["challenge"].as_str().unwrap(),
        ORIGIN,
        7,
    );
    let signed_in = browser.submit_to(
        &second,
        ("passkey_ceremony", ""),
        &[("passkey_credential", &right.to_string())],
    );
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert!(signed_in.body.contains("You are signed in as"));
    let sso = browser.cookies["simple_api_sso"].clone();
    let claims = claims_of(&sso);
    assert_eq!(claims["amr"], json!(["pwd", "hwk", "user", "mfa"]));
    // An answer whose counter is below the last one accepted is a cloned key's: refused.
    let mut again = Browser::new(&app.base);
    let signin = again.get("/signin");
    let second = again.submit(&signin, &[("email", &user.email), ("password", &user.password)]);
    let (options, _) = passkey_form(&second.body);
    let cloned = passkey.assert_with(
        options["publicKey"]["challenge"].as_str().unwrap(),
        ORIGIN,
        3,
    );
    let refused = again.submit_to(
        &second,
        ("passkey_ceremony", ""),
        &[("passkey_credential", &cloned.to_string())],
    );
    assert_eq!(refused.status, 401);
    // A ceremony begun for "Sign in with a passkey" is not a second factor's.
    let unbound = passkey_form(&signin.body);
    let answer = passkey.answer(&unbound.0);
    let refused = again.submit_to(
        &second,
        ("passkey_ceremony", ""),
        &[
            ("passkey_ceremony", &unbound.1),
            ("passkey_credential", &answer.to_string()),
        ],
    );
    assert_eq!(refused.status, 401);
    // Nor is a proof's (the API's challenge, for removing a factor), though it is this
    // account's: an answer counts only for what its ceremony was begun for.
    let challenge = app
        .post_json(&format!("{PASSKEYS}/challenge"), Some(&user.token), &json!({}))
        .expect(200);
    let proof = passkey.assert_with(
        challenge["options"]["publicKey"]["challenge"].as_str().unwrap(),
        ORIGIN,
        20,
    );
    let refused = again.submit_to(
        &second,
        ("passkey_ceremony", ""),
        &[
            ("passkey_ceremony", challenge["ceremony"].as_str().unwrap()),
            ("passkey_credential", &proof.to_string()),
        ],
    );
    assert_eq!(refused.status, 401);
    // The same answer is a proof where it belongs.
    let status = app.get("/api/v1/users/me/mfa", Some(&user.token)).expect(200);
    let id = status["passkeys"][0]["id"].as_str().unwrap();
    let removed = app.request(
        "DELETE",
        &format!("{PASSKEYS}/{id}"),
        Some(&user.token),
        Some("application/json"),
        Some(
            json!({ "passkey_ceremony": challenge["ceremony"], "passkey_credential": proof })
                .to_string()
                .into_bytes(),
        ),
    );
    assert_eq!(removed.status, 200, "{}", removed.body);
}

#[test]
fn removing_a_passkey_needs_a_fresh_proof_which_a_passkey_can_give() {
    let app = passkey_app();
    let user = app.new_user();
    let (first, added) = register(&app, &user, "First");
    let first_id = added["passkey"]["id"].as_str().unwrap().to_owned();
    let (_, added) = register(&app, &user, "Second");
    let second_id = added["passkey"]["id"].as_str().unwrap().to_owned();
    let remove = |id: &str, body: Value| {
        app.request(
            "DELETE",
            &format!("{PASSKEYS}/{id}"),
            Some(&user.token),
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    };
    assert_eq!(remove(&first_id, json!({})).status, 400);
    assert_eq!(
        remove(&first_id, json!({ "current_password": "wrong" })).status,
        400
    );
    assert_eq!(
        remove(&uuid::Uuid::new_v4().to_string(), json!({ "current_password": user.password })).status,
        404
    );
    // A passkey's answer to a challenge for this account proves it is them.
    let challenge = app
        .post_json(&format!("{PASSKEYS}/challenge"), Some(&user.token), &json!({}))
        .expect(200);
    assert_eq!(
        challenge["options"]["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let answer = first.assert_with(
        challenge["options"]["publicKey"]["challenge"].as_str().unwrap(),
        ORIGIN,
        0,
    );
    let proof = json!({ "passkey_ceremony": challenge["ceremony"], "passkey_credential": answer });
    assert_eq!(remove(&second_id, proof.clone()).status, 200);
    // Used once.
    assert_eq!(remove(&first_id, proof).status, 400);
    // Renewing recovery codes with the password; removing the last passkey ends them.
    app.post_json(
        "/api/v1/users/me/mfa/recovery-codes",
        Some(&user.token),
        &json!({ "current_password": user.password }),
    )
    .expect(200);
    assert_eq!(
        remove(&first_id, json!({ "current_password": user.password })).status,
        200
    );
    let status = app.get("/api/v1/users/me/mfa", Some(&user.token)).expect(200);
    assert_eq!(status["enrolled"], false);
    assert_eq!(status["recovery_codes_left"], 0);
    let (status, _) = password_grant(&app, &user);
    assert_eq!(status, 200, "the password alone works again");
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"mfa_removed\""));
}

#[test]
fn an_account_has_at_most_ten_passkeys() {
    let app = passkey_app();
    let user = app.new_user();
    for n in 0..9 {
        register(&app, &user, &format!("Key {n}"));
    }
    // The tenth as a form would send it: the credential as JSON text.
    let begun = app
        .post_json(
            PASSKEYS,
            Some(&user.token),
            &json!({ "current_password": user.password }),
        )
        .expect(200);
    let (credential, _) = SoftPasskey::register(&begun["options"], ORIGIN);
    let fields = [
        ("ceremony", begun["ceremony"].as_str().unwrap()),
        ("credential", &credential.to_string()),
    ];
    app.request(
        "POST",
        &format!("{PASSKEYS}/confirm"),
        Some(&user.token),
        Some("application/x-www-form-urlencoded"),
        Some(super::helpers::form(&fields)),
    )
    .expect(201);
    let resp = app.post_json(
        PASSKEYS,
        Some(&user.token),
        &json!({ "current_password": user.password }),
    );
    assert_eq!(resp.status, 409, "{}", resp.body);
}

#[test]
fn without_a_host_name_passkeys_are_unavailable_and_the_rest_works() {
    // The default PUBLIC_URL is http://127.0.0.1:PORT: no WebAuthn RP id can be an IP.
    let app = spawn_app();
    let user = app.new_user();
    let resp = app.post_json(
        PASSKEYS,
        Some(&user.token),
        &json!({ "current_password": user.password }),
    );
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.body.contains("PUBLIC_URL"));
    let status = app.get("/api/v1/users/me/mfa", Some(&user.token)).expect(200);
    assert_eq!(status["passkeys_available"], false);
    let mut browser = Browser::new(&app.base);
    let signin = browser.get("/signin");
    assert!(!signin.body.contains("passkey"), "{}", signin.body);
}

#[test]
fn the_account_page_sets_up_an_authenticator_app_and_a_passkey() {
    let app = passkey_app();
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    // Not signed in: to the sign-in page.
    assert_eq!(Browser::location(&browser.get("/account")), "/signin");
    let signin = browser.get("/signin");
    let home = browser.submit(&signin, &[("email", &user.email), ("password", &user.password)]);
    assert!(home.body.contains("href=\"/account\""));
    let page = browser.get("/account");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Your account"));

    // An authenticator app: the password, then a QR code and a first code.
    let wrong = browser.submit_to(&page, ("action", "totp-begin"), &[("current_password", "nope")]);
    assert_eq!(wrong.status, 400);
    let setup = browser.submit_to(
        &page,
        ("action", "totp-begin"),
        &[("current_password", &user.password)],
    );
    assert_eq!(setup.status, 200, "{}", setup.body);
    assert!(setup.body.contains("<svg"));
    let key = setup.body.split("<code>").nth(1).unwrap().split('<').next().unwrap();
    let secret = totp_rs::Secret::Encoded(key.to_owned()).to_bytes().unwrap();
    let code = simple_api::auth::totp::code_at_step(
        &secret,
        simple_api::auth::totp::step_of(chrono::Utc::now().timestamp()),
    );
    let codes = browser.submit_to(&setup, ("action", "totp-confirm"), &[("code", &code)]);
    assert_eq!(codes.status, 200, "{}", codes.body);
    assert_eq!(codes.body.matches("<li><code>").count(), 10);
    // This browser stays signed in; the API token of before does not (password only).
    let page = browser.get("/account");
    assert!(page.body.contains("On: sign-ins ask for a 6-digit code."));
    app.get("/api/v1/users/me", Some(&user.token)).expect(401);

    // A passkey: name and password, then the browser creates it.
    let create = browser.submit_to(
        &page,
        ("action", "passkey-begin"),
        &[("name", "Laptop"), ("current_password", &user.password)],
    );
    assert_eq!(create.status, 200, "{}", create.body);
    assert!(create.body.contains("data-passkey=\"create\""));
    let (options, _) = passkey_form(&create.body);
    let (credential, _) = SoftPasskey::register(&options, ORIGIN);
    let added = browser.submit_to(
        &create,
        ("action", "passkey-confirm"),
        &[("passkey_credential", &credential.to_string())],
    );
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains("The passkey is added."), "{}", added.body);
    assert!(added.body.contains("Laptop"));
}
