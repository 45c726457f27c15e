//! Token revocation (RFC 7009) of access tokens; refresh tokens: `refresh.rs`, a client's
//! own tokens: `clients.rs`.

use serde_json::json;

use super::helpers::spawn_app;

#[test]
fn revoking_an_access_token_kills_it_until_it_expires_even_across_a_restart() {
    let app = spawn_app();
    let user = app.new_user();
    assert_eq!(
        app.post_form("/api/v1/auth/revoke", &[("token", &user.token)])
            .expect(200),
        json!({})
    );
    app.get("/api/v1/users/me", Some(&user.token)).expect(401);
    let app = app.restart();
    app.get("/api/v1/users/me", Some(&user.token)).expect(401);
    app.token_for(&user.email, &user.password);
}

#[test]
fn revoke_answers_200_for_unknown_tokens_and_400_without_one() {
    let app = spawn_app();
    for token in ["not-a-token", "a.b.c", ""] {
        let resp = app.post_form(
            "/api/v1/auth/revoke",
            &[("token", token), ("token_type_hint", "refresh_token")],
        );
        if token.is_empty() {
            assert_eq!(resp.expect(400)["error"], "invalid_request");
        } else {
            assert_eq!(resp.expect(200), json!({}));
        }
    }
}
