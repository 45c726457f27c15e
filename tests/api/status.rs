use serde_json::json;

use super::helpers::spawn_app;

#[test]
fn status_is_ok_without_a_token_with_or_without_a_trailing_slash() {
    let app = spawn_app();
    assert_eq!(
        app.get("/api/v1/status", None).expect(200),
        json!({"status": "OK"})
    );
    assert_eq!(
        app.get("/api/v1/status/", None).expect(200),
        json!({"status": "OK"})
    );
}

#[test]
fn stats_needs_a_token_and_answers_a_bearer_challenge() {
    let app = spawn_app();
    let resp = app.get("/api/v1/stats", None);
    resp.expect_error(401, "Unauthorized");
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Bearer realm=\"simple-api\"")
    );
}

#[test]
fn stats_counts_users_for_admins_only() {
    let app = spawn_app();
    let admin = app.admin_token();
    assert_eq!(
        app.get("/api/v1/stats", Some(&admin)).expect(200),
        json!({"users": 1})
    );
    let user = app.new_user();
    assert_eq!(
        app.get("/api/v1/stats", Some(&admin)).expect(200),
        json!({"users": 2})
    );
    app.get("/api/v1/stats", Some(&user.token))
        .expect_error(403, "Forbidden");
}
