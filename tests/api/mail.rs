//! Accounts by mail: password reset, verifying and changing the address, through the
//! outbox (no SMTP_URL: each message an `.eml` file in DATA_DIR/outbox). Delivery over a
//! real SMTP server is `tests/mail/run.sh`'s (aiosmtpd).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::helpers::browser::Browser;
use super::helpers::{spawn_app_with, TestApp};

const RESET: &str = "/api/v1/auth/password-reset";
const CONFIRM: &str = "/api/v1/auth/password-reset/confirm";

/// The outbox's messages, oldest first, waiting up to 10 s for at least `n`.
fn messages(app: &TestApp, n: usize) -> Vec<String> {
    let dir = app.config_data_dir().join("outbox");
    let started = Instant::now();
    loop {
        let mut found: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if found.len() >= n || started.elapsed() > Duration::from_secs(10) {
            // UUIDv7 names: by name is by time.
            found.sort();
            return found.iter().map(|p| read(p)).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The outbox's messages with `subject`, oldest first, waiting up to 10 s for `n`.
fn mail_about(app: &TestApp, subject: &str, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let header = format!("Subject: {subject}\r\n");
        let found: Vec<String> = messages(app, 0)
            .into_iter()
            .filter(|m| m.contains(&header))
            .collect();
        if found.len() >= n || started.elapsed() > Duration::from_secs(10) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const RESET_SUBJECT: &str = "Reset your password";
const VERIFY_SUBJECT: &str = "Confirm your email address";

/// The code a message shows on a line of its own (26 characters of base32).
fn code_of(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 26 && l.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)))
        .unwrap_or_else(|| panic!("no code in {message}"))
        .to_owned()
}

#[test]
fn a_password_is_reset_with_the_code_from_the_message_and_every_session_ends() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let user = app.new_user();
    let resp = app.post_json(RESET, None, &json!({ "email": user.email.to_uppercase() }));
    assert_eq!((resp.status, resp.body.as_str()), (202, "{}"));
    let mail = mail_about(&app, RESET_SUBJECT, 1);
    assert_eq!(mail.len(), 1);
    let message = &mail[0];
    assert!(message.contains("Subject: Reset your password"), "{message}");
    assert!(message.contains(&format!("To: {}", user.email)));
    assert!(message.contains("multipart/alternative"));
    let code = code_of(message);
    // The store keeps a hash only.
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(!audit.contains(&code));

    let confirm = |code: &str, password: &str| {
        app.post_json(
            CONFIRM,
            None,
            &json!({ "email": user.email, "code": code, "new_password": password }),
        )
    };
    confirm("AAAAAAAAAAAAAAAAAAAAAAAAAA", "a-new-password-1").expect(400);
    confirm(&code, "short").expect(400);
    confirm(&code, "a-new-password-1").expect(200);
    // Used once; every session ended; the new password works, the old one does not.
    confirm(&code, "another-password-2").expect(400);
    app.get("/api/v1/users/me", Some(&user.token)).expect(401);
    assert_eq!(app.password_grant(&user.email, &user.password).status, 400);
    assert_eq!(app.password_grant(&user.email, "a-new-password-1").status, 200);
    // And a notice goes to the account; the code proved the address, too.
    assert_eq!(mail_about(&app, "Your password was changed", 1).len(), 1);
    let token = app.token_for(&user.email, "a-new-password-1");
    assert_eq!(app.me(&token).json()["email_verified"], true);
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    for event in ["password_reset_requested", "password_reset", "mail_sent"] {
        assert!(audit.contains(&format!("\"{event}\"")), "{event}");
    }
}

#[test]
fn an_address_without_an_account_gets_the_same_answer_and_no_message() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let resp = app.post_json(RESET, None, &json!({ "email": "nobody@example.com" }));
    assert_eq!((resp.status, resp.body.as_str()), (202, "{}"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(messages(&app, 0).is_empty());
    app.post_json(
        CONFIRM,
        None,
        &json!({ "email": "nobody@example.com", "code": "AAAAAAAAAAAAAAAAAAAAAAAAAA", "new_password": "whatever-1" }),
    )
    .expect(400);
    // Not even an address: the same answer (only what the schema forbids is a 400).
    app.post_json(RESET, None, &json!({ "email": "not an address" }))
        .expect(202);
    app.post_json(RESET, None, &json!({})).expect(400);
    app.post_json(RESET, None, &json!({ "email": "x".repeat(321) }))
        .expect(400);
    std::thread::sleep(Duration::from_millis(300));
    assert!(messages(&app, 0).is_empty());
}

#[test]
fn a_new_request_replaces_the_code_and_requests_are_limited() {
    // Three a minute: the sign-up's verification message and two resets.
    let app = spawn_app_with(|c| c.mail_limit_minute = 3);
    let user = app.new_user();
    app.post_json(RESET, None, &json!({ "email": user.email }))
        .expect(202);
    let first = code_of(&mail_about(&app, RESET_SUBJECT, 1)[0]);
    app.post_json(RESET, None, &json!({ "email": user.email }))
        .expect(202);
    let second = code_of(&mail_about(&app, RESET_SUBJECT, 2)[1]);
    assert_ne!(first, second);
    // The third within the minute: 429, Retry-After, and no message.
    let resp = app.post_json(RESET, None, &json!({ "email": user.email }));
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert!(resp.header("retry-after").is_some());
    let confirm = |code: &str| {
        app.post_json(
            CONFIRM,
            None,
            &json!({ "email": user.email, "code": code, "new_password": "a-new-password-1" }),
        )
    };
    confirm(&first).expect(400);
    // Typed loosely (lower case, spaces) it is the same code.
    confirm(&second.to_lowercase().chars().collect::<Vec<_>>().chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(" "))
        .expect(200);
    assert_eq!(messages(&app, 4).len(), 4, "verification, two codes and the notice");
}

#[test]
fn the_hosted_pages_send_the_code_and_take_it_with_the_new_password() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let signin = browser.get("/signin");
    assert!(signin.body.contains("href=\"/signin/forgot\""));
    let forgot = browser.get("/signin/forgot");
    assert_eq!(forgot.status, 200);
    let sent = browser.submit(&forgot, &[("email", &user.email)]);
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.contains("a message with a code is on its way"));
    let message = &mail_about(&app, RESET_SUBJECT, 1)[0];
    let code = code_of(message);
    // The message's link opens the page that asks for the code: opening it uses nothing.
    let link = message
        .lines()
        .find_map(|l| l.split_once("(http").map(|(_, rest)| format!("http{rest}")))
        .map(|l| l.trim_end_matches(')').to_owned())
        .expect("a link in the text part");
    assert!(link.contains("/signin/reset?email="), "{link}");
    let page = browser.get(&format!("/signin/reset?email={}", user.email));
    assert!(page.body.contains(&user.email));
    // (The helper sends hidden fields only: the prefilled email as a browser would.)
    let wrong = [
        ("email", user.email.as_str()),
        ("code", "AAAA"),
        ("new_password", "a-new-password-1"),
    ];
    assert_eq!(browser.submit(&page, &wrong).status, 400);
    let done = browser.submit(
        &page,
        &[("email", &user.email), ("code", &code), ("new_password", "a-new-password-1")],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Password changed"));
    assert_eq!(app.password_grant(&user.email, "a-new-password-1").status, 200);
}

const VERIFY: &str = "/api/v1/auth/verify-email";

/// The link a message's plain-text part gives (in parentheses), its quoted-printable
/// soft line breaks and `=3D`s undone.
fn link_of(message: &str) -> String {
    let decoded = message.replace("=\r\n", "").replace("=3D", "=");
    decoded
        .lines()
        .find_map(|l| l.split_once("(http").map(|(_, rest)| format!("http{rest}")))
        .and_then(|l| l.split(')').next().map(str::to_owned))
        .expect("a link in the text part")
}

#[test]
fn a_sign_up_sends_a_code_that_verifies_the_address_once() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let email = "Verify.Me@example.com";
    let created = app.signup(email, "a-good-password").expect(201);
    assert_eq!(created["email_verified"], false);
    let message = &mail_about(&app, VERIFY_SUBJECT, 1)[0];
    assert!(message.contains(&format!("To: {email}")), "{message}");
    let code = code_of(message);
    let link = link_of(message);
    assert!(link.contains("/signin/verify?email=") && link.contains(&format!("code={code}")), "{link}");
    let verify = |email: &str, code: &str| app.post_json(VERIFY, None, &json!({ "email": email, "code": code }));
    verify(email, "AAAAAAAAAAAAAAAAAAAAAAAAAA").expect(400);
    verify("someone-else@example.com", &code).expect(400);
    // Any case of the address, the code typed loosely.
    let body = verify(&email.to_lowercase(), &code.to_lowercase()).expect(200);
    assert_eq!(body, json!({ "result": "verified" }));
    verify(email, &code).expect(400);
    let token = app.token_for(email, "a-good-password");
    assert_eq!(app.me(&token).json()["email_verified"], true);
    // Nothing to resend now.
    app.post_json("/api/v1/users/me/verification", Some(&token), &json!({}))
        .expect_error(400, "your email address is verified already");
    let audit = std::fs::read_to_string(app.config_data_dir().join("audit.log")).unwrap();
    assert!(audit.contains("\"email_verified\"") && audit.contains("\"verification_sent\""));
    assert!(!audit.contains(&code));
}

#[test]
fn a_resent_code_replaces_the_last_and_resending_is_limited() {
    // Two a minute: the sign-up's message and one resend.
    let app = spawn_app_with(|c| c.mail_limit_minute = 2);
    let user = app.new_user();
    let first = code_of(&mail_about(&app, VERIFY_SUBJECT, 1)[0]);
    let resend = |token: &str| app.post_json("/api/v1/users/me/verification", Some(token), &json!({}));
    resend(&user.token).expect(202);
    let second = code_of(&mail_about(&app, VERIFY_SUBJECT, 2)[1]);
    assert_ne!(first, second);
    let resp = resend(&user.token);
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert!(resp.header("retry-after").is_some());
    assert_eq!(messages(&app, 0).len(), 2, "nothing more was sent");
    // No token: 401; a client token: 403.
    app.post_json("/api/v1/users/me/verification", None, &json!({}))
        .expect(401);
    let verify = |code: &str| app.post_json(VERIFY, None, &json!({ "email": user.email, "code": code }));
    verify(&first).expect(400);
    verify(&second).expect(200);
}

#[test]
fn guesses_at_codes_are_counted_before_they_are_judged() {
    let app = spawn_app_with(|c| {
        c.mail_limit_minute = 10;
        c.login_max_failures = 3;
    });
    let user = app.new_user();
    let code = code_of(&mail_about(&app, VERIFY_SUBJECT, 1)[0]);
    let verify = |code: &str| app.post_json(VERIFY, None, &json!({ "email": user.email, "code": code }));
    // A wrong code writes nothing (so it costs what it costs for an address without an
    // account): the file store's log does not grow.
    let stored = || -> u64 {
        std::fs::read_dir(app.config_data_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .filter(|e| e.file_name() != "audit.log")
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let before = stored();
    for _ in 0..3 {
        verify("AAAAAAAAAAAAAAAAAAAAAAAAAA").expect(400);
    }
    assert_eq!(stored(), before, "wrong codes write nothing");
    // Spent: even the right code waits now.
    let resp = verify(&code);
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert!(resp.header("retry-after").is_some());
}

#[test]
fn require_verified_email_refuses_tokens_until_the_code_comes_back() {
    let app = spawn_app_with(|c| {
        c.mail_limit_minute = 10;
        c.require_verified_email = true;
    });
    // The ADMIN_EMAIL account is the operator's: verified, it gets tokens.
    let admin = app.admin_token();
    assert_eq!(app.me(&admin).json()["email_verified"], true);
    let email = "late@example.com";
    app.signup(email, "a-good-password").expect(201);
    let refused = app.password_grant(email, "a-good-password");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_grant");
    assert!(refused.json()["error_description"].as_str().unwrap().contains("not verified"));
    // A wrong password says nothing about verification (and sends nothing).
    let wrong = app.password_grant(email, "not-the-password");
    assert!(!wrong.body.contains("verified"), "{}", wrong.body);
    // The cookie login refuses too; the refused sign-in sent a new code.
    let cookie = app.post_form(
        "/api/v1/auth_session/login",
        &[("email", email), ("password", "a-good-password")],
    );
    assert_eq!(cookie.status, 403, "{}", cookie.body);
    assert!(cookie.set_cookie("session_id").is_none());
    // The sign-up's, then one for each refused sign-in.
    let sent = mail_about(&app, VERIFY_SUBJECT, 3);
    assert_eq!(sent.len(), 3, "a refused sign-in sends a new code");
    let latest = code_of(sent.last().unwrap());
    app.post_json(VERIFY, None, &json!({ "email": email, "code": latest }))
        .expect(200);
    let (access, refresh) = app.tokens(email, "a-good-password");
    assert_eq!(app.me(&access).json()["email_verified"], true);
    // An admin withdrawing the vouching stops refreshes too.
    let id = app.me(&access).json()["id"].as_str().unwrap().to_owned();
    app.put_json(&format!("/api/v1/users/{id}"), Some(&admin), &json!({ "email_verified": false }))
        .expect(200);
    let refreshed = app.refresh(&refresh);
    assert_eq!(refreshed.status, 400, "{}", refreshed.body);
    assert!(refreshed.body.contains("not verified"), "{}", refreshed.body);
    // The refusal did not spend the refresh token: vouched for again, it refreshes.
    app.put_json(&format!("/api/v1/users/{id}"), Some(&admin), &json!({ "email_verified": true }))
        .expect(200);
    std::thread::sleep(Duration::from_secs(11)); // past REFRESH_REUSE_GRACE: a spent token would be reuse
    assert_eq!(app.refresh(&refresh).status, 200);
}

#[test]
fn only_an_admin_vouches_for_an_address() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let admin = app.admin_token();
    let made = app
        .post_json(
            "/api/v1/users",
            Some(&admin),
            &json!({ "email": "vouched@example.com", "password": "a-good-password", "email_verified": true }),
        )
        .expect(201);
    assert_eq!(made["email_verified"], true);
    let user = app.new_user();
    app.post_json(
        "/api/v1/users",
        None,
        &json!({ "email": "self@example.com", "password": "a-good-password", "email_verified": true }),
    )
    .expect(403);
    app.put_json("/api/v1/users/me", Some(&user.token), &json!({ "email_verified": true }))
        .expect(403);
    // The user JSON sent back as it came (email_verified unchanged) is fine.
    let mine = app.me(&user.token).json();
    app.put_json("/api/v1/users/me", Some(&user.token), &mine).expect(200);
    app.put_json("/api/v1/users/me", Some(&user.token), &json!({ "email_verified": "yes" }))
        .expect(400);
    std::thread::sleep(Duration::from_millis(300));
    let to_vouched = messages(&app, 0)
        .into_iter()
        .filter(|m| m.contains("To: vouched@example.com"))
        .count();
    assert_eq!(to_vouched, 0, "no verification message to a vouched-for address");
}

#[test]
fn an_address_changes_only_when_the_code_sent_to_it_comes_back() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let user = app.new_user();
    let change = |email: &str, password: &str| {
        app.post_json(
            "/api/v1/users/me/email",
            Some(&user.token),
            &json!({ "email": email, "current_password": password }),
        )
    };
    change("moved@example.com", "not-the-password").expect_error(400, "current password is incorrect");
    change(&user.email.to_uppercase(), &user.password).expect_error(400, "that is your email address already");
    change("not an address", &user.password).expect(400);
    change("moved@example.com", &user.password).expect(202);
    let confirm = &mail_about(&app, "Confirm your new email address", 1)[0];
    assert!(confirm.contains("To: moved@example.com"), "{confirm}");
    let notice = &mail_about(&app, "A change of your email address was asked for", 1)[0];
    assert!(notice.contains(&format!("To: {}", user.email)), "{notice}");
    assert!(notice.contains("moved@example.com"));
    let code = code_of(confirm);
    assert!(!notice.contains(&code), "the old address never sees the code");
    // Nothing changed yet.
    assert_eq!(app.me(&user.token).json()["email"], user.email.as_str());
    // The code works for the new address only.
    app.post_json(VERIFY, None, &json!({ "email": user.email, "code": code }))
        .expect(400);
    let body = app
        .post_json(VERIFY, None, &json!({ "email": "Moved@Example.com", "code": code }))
        .expect(200);
    assert_eq!(body, json!({ "result": "changed" }));
    let me = app.me(&user.token).json();
    assert_eq!((me["email"].as_str(), me["email_verified"].as_bool()), (Some("moved@example.com"), Some(true)));
    assert_eq!(app.password_grant("moved@example.com", &user.password).status, 200);
    assert_eq!(app.password_grant(&user.email, &user.password).status, 400);
    app.post_json(VERIFY, None, &json!({ "email": "moved@example.com", "code": code }))
        .expect(400);
}

#[test]
fn an_address_taken_meanwhile_is_refused_at_confirmation() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let user = app.new_user();
    // Asking reveals nothing: the address has an account, and the answer is the same.
    let taken = app.new_user();
    app.post_json(
        "/api/v1/users/me/email",
        Some(&user.token),
        &json!({ "email": taken.email, "current_password": user.password }),
    )
    .expect(202);
    let code = code_of(&mail_about(&app, "Confirm your new email address", 1)[0]);
    app.post_json(VERIFY, None, &json!({ "email": taken.email, "code": code }))
        .expect_error(409, "email already exists");
    assert_eq!(app.me(&user.token).json()["email"], user.email.as_str());

    // Free when asked, taken before the code came back: refused the same way.
    app.post_json(
        "/api/v1/users/me/email",
        Some(&user.token),
        &json!({ "email": "contested@example.com", "current_password": user.password }),
    )
    .expect(202);
    let code = code_of(&mail_about(&app, "Confirm your new email address", 2)[1]);
    app.signup("contested@example.com", "a-good-password").expect(201);
    app.post_json(VERIFY, None, &json!({ "email": "contested@example.com", "code": code }))
        .expect_error(409, "email already exists");
}

#[test]
fn changing_the_password_cancels_a_change_of_address() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let user = app.new_user();
    app.post_json(
        "/api/v1/users/me/email",
        Some(&user.token),
        &json!({ "email": "hijack@example.com", "current_password": user.password }),
    )
    .expect(202);
    let code = code_of(&mail_about(&app, "Confirm your new email address", 1)[0]);
    app.put_json(
        "/api/v1/users/me/password",
        Some(&user.token),
        &json!({ "current_password": user.password, "new_password": "a-fresh-password-2" }),
    )
    .expect(200);
    app.post_json(VERIFY, None, &json!({ "email": "hijack@example.com", "code": code }))
        .expect(400);
    assert_eq!(app.me(&user.token).json()["email"], user.email.as_str());
}

#[test]
fn the_hosted_sign_up_signs_in_and_its_message_links_to_the_confirmation_page() {
    let app = spawn_app_with(|c| c.mail_limit_minute = 10);
    let mut browser = Browser::new(&app.base);
    let signin = browser.get("/signin");
    assert!(signin.body.contains("href=\"/signup\""), "{}", signin.body);
    let page = browser.get("/signup");
    assert_eq!(page.status, 200);
    let short = browser.submit(&page, &[("email", "page@example.com"), ("password", "short")]);
    assert_eq!(short.status, 400);
    assert!(short.body.contains("value=\"page@example.com\""), "what was entered stays");
    let done = browser.submit(
        &page,
        &[("email", "page@example.com"), ("password", "a-good-password"), ("first_name", "Page")],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("You are signed in as page@example.com"), "{}", done.body);
    let again = browser.submit(&page, &[("email", "PAGE@example.com"), ("password", "a-good-password")]);
    assert_eq!(again.status, 409);
    // The account page says the address is not confirmed and resends on request.
    let account = browser.get("/account");
    assert!(account.body.contains("Not confirmed yet"), "{}", account.body);
    let message = &mail_about(&app, VERIFY_SUBJECT, 1)[0];
    let code = code_of(message);
    let link = link_of(message);
    let path = &link[link.find("/signin/verify").unwrap()..];
    // Opening the link uses nothing up; the button does.
    let form = browser.get(path);
    assert_eq!(form.status, 200);
    assert!(form.body.contains(&format!("value=\"{code}\"")));
    let confirmed = browser.submit(&form, &[("email", "page@example.com"), ("code", &code)]);
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert!(confirmed.body.contains("Your email address is confirmed"));
    let account = browser.get("/account");
    assert!(account.body.contains("<p class=\"state on\">Confirmed.</p>"), "{}", account.body);
    // A change of address from the account page.
    let asked = browser.submit_to(
        &account,
        ("action", "email-change"),
        &[("email", "page2@example.com"), ("current_password", "a-good-password")],
    );
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert!(asked.body.contains("Waiting for the code sent to <strong>page2@example.com</strong>"), "{}", asked.body);
}

#[test]
fn with_require_verified_email_the_sign_in_page_asks_for_the_code_first() {
    let app = spawn_app_with(|c| {
        c.mail_limit_minute = 10;
        c.require_verified_email = true;
    });
    app.signup("gate@example.com", "a-good-password").expect(201);
    let mut browser = Browser::new(&app.base);
    let page = browser.get("/signin");
    let refused = browser.submit(&page, &[("email", "gate@example.com"), ("password", "a-good-password")]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("Confirm your email address first"), "{}", refused.body);
    assert!(browser.get("/account").status == 303, "not signed in");
    let code = code_of(mail_about(&app, VERIFY_SUBJECT, 2).last().unwrap());
    let confirmed = browser.submit(&refused, &[("email", "gate@example.com"), ("code", &code)]);
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let page = browser.get("/signin");
    let signed_in = browser.submit(&page, &[("email", "gate@example.com"), ("password", "a-good-password")]);
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert!(signed_in.body.contains("You are signed in as gate@example.com"));
    // The hosted sign-up asks for the code its message carries, without sending another.
    let mut fresh = Browser::new(&app.base);
    let page = fresh.get("/signup");
    let made = fresh.submit(&page, &[("email", "gate2@example.com"), ("password", "a-good-password")]);
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(made.body.contains("Confirm your email address first"), "{}", made.body);
    assert!(fresh.get("/account").status == 303, "not signed in");
    std::thread::sleep(Duration::from_millis(300));
    let to_gate2 = messages(&app, 0).iter().filter(|m| m.contains("To: gate2@example.com")).count();
    assert_eq!(to_gate2, 1);
}

#[test]
fn service_name_names_the_mail_and_the_pages() {
    let app = spawn_app_with(|c| {
        c.mail_limit_minute = 10;
        c.service_name = "Acme <ID>".into();
    });
    app.signup("named@example.com", "a-good-password").expect(201);
    let message = &mail_about(&app, VERIFY_SUBJECT, 1)[0];
    // RFC 2047: "Acme <ID>" as an encoded word (base64 "QWNtZSA8SUQ+").
    assert!(message.contains("From: =?utf-8?b?QWNtZSA8SUQ+?= <no-reply@localhost>"), "{message}");
    assert!(message.contains("your Acme <ID> account"), "the text part: {message}");
    assert!(message.contains("Acme &lt;ID&gt;"), "the HTML part, escaped: {message}");
    let page = Browser::new(&app.base).get("/signin");
    assert!(page.body.contains("Acme &lt;ID&gt;"), "{}", page.body);
}
