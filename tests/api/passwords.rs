//! Passwords: changing one (which ends the other sessions) and upgrading a stored hash.

use serde_json::json;

use super::helpers::{form, spawn_app, FORM};

#[test]
fn changing_the_password_ends_every_other_session() {
    let app = spawn_app();
    let user = app.new_user();
    let mine = app.password_grant(&user.email, &user.password).expect(200);
    let my_access = mine["access_token"].as_str().unwrap();
    let other = app.password_grant(&user.email, &user.password).expect(200);
    let path = format!("/api/v1/users/{}/password", user.id);
    let change = json!({"current_password": user.password, "new_password": "a-brand-new-password"});
    assert_eq!(
        app.put_json(&path, Some(my_access), &change).expect(200),
        json!({})
    );

    app.get("/api/v1/users/me", other["access_token"].as_str())
        .expect(401);
    app.get("/api/v1/users/me", Some(&user.token)).expect(401);
    assert_eq!(
        app.refresh(other["refresh_token"].as_str().unwrap())
            .expect(400)["error"],
        "invalid_grant"
    );
    // The session that made the change goes on, refresh included.
    app.get("/api/v1/users/me", Some(my_access)).expect(200);
    let renewed = app
        .refresh(mine["refresh_token"].as_str().unwrap())
        .expect(200);
    app.get("/api/v1/users/me", renewed["access_token"].as_str())
        .expect(200);
    // Old password out, new one in.
    assert_eq!(
        app.password_grant(&user.email, &user.password).expect(400)["error"],
        "invalid_grant"
    );
    app.token_for(&user.email, "a-brand-new-password");
}

#[test]
fn password_change_accepts_a_form_and_checks_its_input() {
    let app = spawn_app();
    let user = app.new_user();
    let path = "/api/v1/users/me/password";
    let put_form = |fields: &[(&str, &str)]| {
        let auth = format!("Bearer {}", user.token);
        app.send(
            "PUT",
            path,
            &[("Authorization", &auth), ("Content-Type", FORM)],
            Some(form(fields)),
        )
    };
    put_form(&[("new_password", "a-brand-new-password")])
        .expect_error(400, "current_password missing");
    put_form(&[("current_password", &user.password)]).expect_error(400, "new_password missing");
    put_form(&[
        ("current_password", "wrong-one"),
        ("new_password", "a-brand-new-password"),
    ])
    .expect_error(400, "current password is incorrect");
    put_form(&[
        ("current_password", &user.password),
        ("new_password", "short"),
    ])
    .expect_error(400, "password must be between 8 and 256 characters");
    app.request(
        "PUT",
        path,
        Some(&user.token),
        Some("application/json"),
        Some(b"[1]".to_vec()),
    )
    .expect_error(400, "Wrong format");
    assert_eq!(
        put_form(&[
            ("current_password", &user.password),
            ("new_password", "a-brand-new-password")
        ])
        .expect(200),
        json!({})
    );
}

#[test]
fn nobody_changes_someone_elses_password() {
    let app = spawn_app();
    let user = app.new_user();
    let admin = app.admin_token();
    let change =
        json!({"current_password": "whatever-it-is", "new_password": "a-brand-new-password"});
    app.put_json(
        &format!("/api/v1/users/{}/password", user.id),
        Some(&admin),
        &change,
    )
    .expect_error(403, "Forbidden");
    app.put_json("/api/v1/users/me/password", None, &change)
        .expect(401);
}

#[test]
fn a_login_upgrades_a_hash_made_with_older_parameters() {
    let app = spawn_app();
    let user = app.new_user();
    let hash_params = |app: &super::helpers::TestApp, email: &str| -> String {
        app.stored_hash(email).split('$').nth(3).unwrap().to_owned()
    };
    assert_eq!(hash_params(&app, &user.email), "m=1024,t=1,p=1");
    let app = app.restart_with(|c| c.argon2_m_kib = 2048);
    app.token_for(&user.email, &user.password);
    assert_eq!(
        hash_params(&app, &user.email),
        "m=2048,t=1,p=1",
        "the hash was upgraded at login"
    );
    app.token_for(&user.email, &user.password);
}
