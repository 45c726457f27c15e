//! Accounts by mail: password reset, through the outbox (no SMTP_URL: each message an
//! `.eml` file in DATA_DIR/outbox). Delivery over a real SMTP server is
//! `tests/mail/run.sh`'s (aiosmtpd).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::helpers::browser::Browser;
use super::helpers::{spawn_app, spawn_app_with, TestApp};

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
    let app = spawn_app();
    let user = app.new_user();
    let resp = app.post_json(RESET, None, &json!({ "email": user.email.to_uppercase() }));
    assert_eq!((resp.status, resp.body.as_str()), (202, "{}"));
    let mail = messages(&app, 1);
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
    // And a notice goes to the account.
    let mail = messages(&app, 2);
    assert!(mail[1].contains("Subject: Your password was changed"), "{}", mail[1]);
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
    let app = spawn_app_with(|c| c.mail_limit_minute = 2);
    let user = app.new_user();
    app.post_json(RESET, None, &json!({ "email": user.email }))
        .expect(202);
    let first = code_of(&messages(&app, 1)[0]);
    app.post_json(RESET, None, &json!({ "email": user.email }))
        .expect(202);
    let second = code_of(&messages(&app, 2)[1]);
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
    assert_eq!(messages(&app, 3).len(), 3, "two codes and the notice");
}

#[test]
fn the_hosted_pages_send_the_code_and_take_it_with_the_new_password() {
    let app = spawn_app();
    let user = app.new_user();
    let mut browser = Browser::new(&app.base);
    let signin = browser.get("/signin");
    assert!(signin.body.contains("href=\"/signin/forgot\""));
    let forgot = browser.get("/signin/forgot");
    assert_eq!(forgot.status, 200);
    let sent = browser.submit(&forgot, &[("email", &user.email)]);
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.contains("a message with a code is on its way"));
    let message = &messages(&app, 1)[0];
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
