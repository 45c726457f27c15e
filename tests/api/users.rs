use serde_json::{json, Value};

use super::helpers::{spawn_app, spawn_app_with, ADMIN_EMAIL};

const USERS: &str = "/api/v1/users";

pub fn assert_user_json(user: &Value) {
    let keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "created_at",
            "email",
            "email_verified",
            "first_name",
            "id",
            "last_name",
            "role",
            "updated_at"
        ],
        "user JSON has exactly the contract's fields"
    );
    assert!(
        !user.to_string().contains("argon2"),
        "a hash leaked: {user}"
    );
    for ts in ["created_at", "updated_at"] {
        chrono::DateTime::parse_from_rfc3339(user[ts].as_str().unwrap()).unwrap();
    }
}

#[test]
fn signup_returns_the_user_without_secrets() {
    let app = spawn_app();
    let resp = app.post_json(
        USERS,
        None,
        &json!({"email": "  Ada@Example.com ", "password": "a-good-password", "first_name": "Ada", "last_name": "Lovelace"}),
    );
    let user = resp.expect(201);
    assert_user_json(&user);
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(
        (user["first_name"].as_str(), user["last_name"].as_str()),
        (Some("Ada"), Some("Lovelace"))
    );
    assert_eq!(user["role"], "user");
    assert!(!user.to_string().contains("a-good-password"));
    let plain = app
        .signup("grace@example.com", "a-good-password")
        .expect(201);
    assert_eq!(plain["first_name"], Value::Null);
    assert_eq!(plain["last_name"], Value::Null);
}

#[test]
fn signup_reports_missing_fields_with_the_contracts_messages() {
    let app = spawn_app();
    app.post_json(USERS, None, &json!({"password": "a-good-password"}))
        .expect_error(400, "email missing");
    app.post_json(
        USERS,
        None,
        &json!({"email": "", "password": "a-good-password"}),
    )
    .expect_error(400, "email missing");
    app.post_json(USERS, None, &json!({"email": "a@example.com"}))
        .expect_error(400, "password missing");
    app.post_json(
        USERS,
        None,
        &json!({"email": "a@example.com", "password": ""}),
    )
    .expect_error(400, "password missing");
}

#[test]
fn signup_refuses_what_is_not_a_json_object() {
    let app = spawn_app();
    let json_ct = Some("application/json");
    for body in ["not json", "[1, 2]", "null", "\"text\"", ""] {
        app.request("POST", USERS, None, json_ct, Some(body.as_bytes().to_vec()))
            .expect_error(400, "Wrong format");
    }
    let form = b"email=a%40example.com&password=a-good-password".to_vec();
    app.request(
        "POST",
        USERS,
        None,
        Some("application/x-www-form-urlencoded"),
        Some(form),
    )
    .expect_error(400, "Wrong format");
    app.request(
        "POST",
        USERS,
        None,
        None,
        Some(br#"{"email":"a@example.com"}"#.to_vec()),
    )
    .expect_error(400, "Wrong format");
}

#[test]
fn signup_validates_email_and_password_policy() {
    let app = spawn_app();
    for email in ["plain", "a@b", "two@@example.com", "sp ace@example.com"] {
        let body = app.signup(email, "a-good-password").expect(400);
        assert!(
            body["error"].as_str().unwrap().starts_with("invalid email"),
            "{email}: {body}"
        );
    }
    app.signup("short@example.com", "1234567")
        .expect_error(400, "password must be between 8 and 256 characters");
    app.signup("long@example.com", &"x".repeat(257))
        .expect_error(400, "password must be between 8 and 256 characters");
    app.signup("exact@example.com", &"x".repeat(256))
        .expect(201);
    let body = app
        .post_json(USERS, None, &json!({"email": 5, "password": 6}))
        .expect(400);
    assert_eq!(body["error"], "email must be a string");
}

#[test]
fn emails_are_unique_regardless_of_case_and_spaces() {
    let app = spawn_app();
    app.signup("dup@example.com", "a-good-password").expect(201);
    app.signup("DUP@Example.COM", "a-good-password")
        .expect_error(409, "email already exists");
    app.signup("  dup@example.com ", "a-good-password")
        .expect_error(409, "email already exists");
}

#[test]
fn only_an_admin_may_set_a_role() {
    let app = spawn_app();
    let body = json!({"email": "boss@example.com", "password": "a-good-password", "role": "admin"});
    app.post_json(USERS, None, &body)
        .expect_error(403, "Forbidden");
    let user = app.new_user();
    app.post_json(USERS, Some(&user.token), &body)
        .expect_error(403, "Forbidden");
    let admin = app.admin_token();
    assert_eq!(
        app.post_json(USERS, Some(&admin), &body).expect(201)["role"],
        "admin"
    );
    let bad = json!({"email": "x@example.com", "password": "a-good-password", "role": "root"});
    app.post_json(USERS, Some(&admin), &bad).expect(400);
}

#[test]
fn with_signup_disabled_only_admins_create_users() {
    let app = spawn_app_with(|c| c.signup_enabled = false);
    let resp = app.signup("x@example.com", "a-good-password");
    resp.expect_error(401, "Unauthorized");
    assert!(resp.header("www-authenticate").is_some());
    let admin = app.admin_token();
    let body = json!({"email": "x@example.com", "password": "a-good-password"});
    app.post_json(USERS, Some(&admin), &body).expect(201);
    let user_token = app.token_for("x@example.com", "a-good-password");
    let other = json!({"email": "y@example.com", "password": "a-good-password"});
    app.post_json(USERS, Some(&user_token), &other)
        .expect_error(403, "Forbidden");
}

#[test]
fn admins_list_users_in_creation_order_with_paging() {
    let app = spawn_app();
    let created: Vec<String> = (0..4).map(|_| app.new_user().id).collect();
    let admin = app.admin_token();
    let all = app
        .get(&format!("{USERS}?limit=1000"), Some(&admin))
        .expect(200);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        ids[1..],
        created.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    let times: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by_key(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap());
    assert_eq!(times, sorted);
    let page = app
        .get(&format!("{USERS}?limit=2&offset=1"), Some(&admin))
        .expect(200);
    let page_ids: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(page_ids, ids[1..3]);
    assert_eq!(
        app.get(&format!("{USERS}?offset=99"), Some(&admin))
            .expect(200),
        json!([])
    );
}

/// The ids of a users page.
fn ids_of(page: &Value) -> Vec<String> {
    let users = page.as_array().unwrap();
    users.iter().for_each(assert_user_json);
    users
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The path of the `rel="next"` page a list response names (RFC 8288), absolute on the
/// server's URL; `None` on the last page.
fn next_page(resp: &super::helpers::Resp, base: &str) -> Option<String> {
    let link = resp.header("link")?;
    let url = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("not a next link: {link}"));
    let path = url
        .strip_prefix(base)
        .unwrap_or_else(|| panic!("{url} is not on {base}"));
    assert!(path.starts_with(&format!("{USERS}?after=")), "{path}");
    Some(path.to_owned())
}

/// Every page from `first` on, following `Link` (with `between` run before each next
/// page); the ids in the order received.
fn follow(
    app: &super::helpers::TestApp,
    admin: &str,
    first: &str,
    mut between: impl FnMut(&[String]),
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = Some(first.to_owned());
    while let Some(p) = path {
        let resp = app.get(&p, Some(admin));
        pages.push(ids_of(&resp.expect(200)));
        path = next_page(&resp, &app.base);
        if path.is_some() {
            between(pages.last().unwrap());
        }
        assert!(pages.len() < 100, "paging does not end");
    }
    pages
}

fn all_ids(app: &super::helpers::TestApp, admin: &str) -> Vec<String> {
    ids_of(&app.get(&format!("{USERS}?limit=1000"), Some(admin)).expect(200))
}

/// An app with the admin and `n` more users, and an admin token.
fn app_with_users(n: usize) -> (super::helpers::TestApp, String) {
    let app = spawn_app();
    for _ in 0..n {
        app.new_user();
    }
    let admin = app.admin_token();
    (app, admin)
}

#[test]
fn paging_with_after_returns_every_user_once_in_order() {
    let (app, admin) = app_with_users(7);
    let all = all_ids(&app, &admin);
    assert_eq!(all.len(), 8);
    // 8 users by 3: two full pages with a next link, then the last 2 without.
    let pages = follow(&app, &admin, &format!("{USERS}?limit=3"), |_| {});
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 2]);
    assert_eq!(pages.concat(), all);
    // A last page that is exactly full has no next link either.
    let pages = follow(&app, &admin, &format!("{USERS}?limit=4"), |_| {});
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4]);
    assert_eq!(pages.concat(), all);
    let one_page = app.get(&format!("{USERS}?limit=8"), Some(&admin));
    assert_eq!(ids_of(&one_page.expect(200)), all);
    assert_eq!(one_page.header("link"), None);
    // The next link keeps the page size, and follows an offset page where it ended.
    let resp = app.get(&format!("{USERS}?limit=2&offset=3"), Some(&admin));
    assert_eq!(ids_of(&resp.expect(200)), all[3..5]);
    let next = next_page(&resp, &app.base).expect("more follow");
    assert!(next.ends_with("&limit=2"), "{next}");
    assert_eq!(ids_of(&app.get(&next, Some(&admin)).expect(200)), all[5..7]);
}

#[test]
fn paging_with_after_survives_users_deleted_and_created_between_pages() {
    let (app, admin) = app_with_users(9);
    // Every user in listing order, the ones created while paging included (they are the
    // newest); and the deleted ones.
    let mut order = all_ids(&app, &admin);
    assert_eq!(order.len(), 10);
    let (mut deleted, mut deleted_unseen) = (Vec::new(), Vec::new());
    let pages = follow(&app, &admin, &format!("{USERS}?limit=3"), |page| {
        // Between pages: delete the user the next page starts after (the cursor's) and
        // the one that would come first on it; sign a new user up.
        let last = page.last().unwrap().clone();
        let at = order.iter().position(|id| *id == last).unwrap();
        let first_next = order[at + 1..]
            .iter()
            .find(|id| !deleted.contains(*id))
            .cloned();
        app.delete(&format!("{USERS}/{last}"), Some(&admin))
            .expect(200);
        deleted.push(last);
        if let Some(id) = first_next {
            app.delete(&format!("{USERS}/{id}"), Some(&admin))
                .expect(200);
            deleted.push(id.clone());
            deleted_unseen.push(id);
        }
        order.push(app.new_user().id);
    });
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert_eq!(deleted_unseen.len(), 3);
    // Every user that was there when its page was read, once, in order: none skipped
    // for the deleted cursor, none repeated; the new users after the others.
    let want: Vec<String> = order
        .into_iter()
        .filter(|id| !deleted_unseen.contains(id))
        .collect();
    assert_eq!(pages.concat(), want);
}

#[test]
fn after_refuses_a_malformed_cursor_and_offset_beside_it() {
    let (app, admin) = app_with_users(2);
    let resp = app.get(&format!("{USERS}?limit=1"), Some(&admin));
    resp.expect(200);
    let next = next_page(&resp, &app.base).unwrap();
    let cursor = next
        .strip_prefix(&format!("{USERS}?after="))
        .and_then(|rest| rest.split('&').next())
        .unwrap()
        .to_owned();
    const BAD: &str = "after must be a cursor from the Link header of a previous page";
    for bad in ["", "nonsense", "AAAA", &cursor[..cursor.len() - 1], &format!("{cursor}A")] {
        app.get(&format!("{USERS}?after={bad}"), Some(&admin))
            .expect_error(400, BAD);
    }
    for offset in ["0", "1"] {
        app.get(&format!("{USERS}?after={cursor}&offset={offset}"), Some(&admin))
            .expect_error(400, "after and offset cannot be used together");
    }
    app.get(&format!("{USERS}?after={cursor}"), Some(&admin))
        .expect(200);
    // Still only for admins.
    let user = app.new_user();
    app.get(&format!("{USERS}?after={cursor}"), Some(&user.token))
        .expect_error(403, "Forbidden");
}

#[test]
fn plain_users_cannot_list_users() {
    let app = spawn_app();
    let user = app.new_user();
    app.get(USERS, Some(&user.token))
        .expect_error(403, "Forbidden");
    app.get(USERS, None).expect_error(401, "Unauthorized");
}

#[test]
fn users_read_themselves_by_id_and_by_me() {
    let app = spawn_app();
    let user = app.new_user();
    for path in [format!("{USERS}/me"), format!("{USERS}/{}", user.id)] {
        let me = app.get(&path, Some(&user.token)).expect(200);
        assert_user_json(&me);
        assert_eq!(me["id"], user.id.as_str());
    }
}

#[test]
fn users_get_403_for_anyone_else_existing_or_not() {
    let app = spawn_app();
    let (a, b) = (app.new_user(), app.new_user());
    app.get(&format!("{USERS}/{}", b.id), Some(&a.token))
        .expect_error(403, "Forbidden");
    let unknown = uuid::Uuid::new_v4();
    app.get(&format!("{USERS}/{unknown}"), Some(&a.token))
        .expect_error(403, "Forbidden");
    app.put_json(
        &format!("{USERS}/{}", b.id),
        Some(&a.token),
        &json!({"first_name": "X"}),
    )
    .expect_error(403, "Forbidden");
    app.delete(&format!("{USERS}/{}", b.id), Some(&a.token))
        .expect_error(403, "Forbidden");
    app.get(&format!("{USERS}/{}", b.id), Some(&b.token))
        .expect(200);
}

#[test]
fn admins_read_anyone_and_get_404_for_unknown_ids() {
    let app = spawn_app();
    let user = app.new_user();
    let admin = app.admin_token();
    assert_eq!(
        app.get(&format!("{USERS}/{}", user.id), Some(&admin))
            .expect(200)["email"],
        user.email.as_str()
    );
    app.get(&format!("{USERS}/{}", uuid::Uuid::new_v4()), Some(&admin))
        .expect_error(404, "Not found");
    app.get(&format!("{USERS}/not-a-uuid"), Some(&admin))
        .expect_error(404, "Not found");
    assert_eq!(
        app.get(&format!("{USERS}/me"), Some(&admin)).expect(200)["email"],
        ADMIN_EMAIL
    );
}

#[test]
fn put_updates_names_and_persists_them() {
    let app = spawn_app();
    let user = app.new_user();
    let before = app
        .get(&format!("{USERS}/me"), Some(&user.token))
        .expect(200);
    let updated = app
        .put_json(
            &format!("{USERS}/{}", user.id),
            Some(&user.token),
            &json!({"first_name": "Grace", "last_name": "Hopper", "email": "ignored@example.com"}),
        )
        .expect(200);
    assert_eq!(
        (
            updated["first_name"].as_str(),
            updated["last_name"].as_str()
        ),
        (Some("Grace"), Some("Hopper"))
    );
    assert_eq!(updated["email"], user.email.as_str());
    assert!(
        updated["updated_at"].as_str() > before["updated_at"].as_str()
            || updated["updated_at"] != before["updated_at"]
    );
    let stored = app
        .get(&format!("{USERS}/me"), Some(&user.token))
        .expect(200);
    assert_eq!(stored["first_name"], "Grace");
    // Only the fields sent change; null clears.
    let cleared = app
        .put_json(
            &format!("{USERS}/me"),
            Some(&user.token),
            &json!({"last_name": null}),
        )
        .expect(200);
    assert_eq!(cleared["first_name"], "Grace");
    assert_eq!(cleared["last_name"], Value::Null);
}

#[test]
fn put_refuses_what_is_not_a_json_object() {
    let app = spawn_app();
    let user = app.new_user();
    let path = format!("{USERS}/{}", user.id);
    app.request(
        "PUT",
        &path,
        Some(&user.token),
        Some("application/json"),
        Some(b"not json".to_vec()),
    )
    .expect_error(400, "Wrong format");
    app.put_json(&path, Some(&user.token), &json!(["Grace", "Hopper"]))
        .expect_error(400, "Wrong format");
    let admin = app.admin_token();
    app.put_json(
        &format!("{USERS}/{}", uuid::Uuid::new_v4()),
        Some(&admin),
        &json!({"first_name": "X"}),
    )
    .expect_error(404, "Not found");
    // 404 wins over a malformed body, as in the classic API.
    app.request(
        "PUT",
        &format!("{USERS}/{}", uuid::Uuid::new_v4()),
        Some(&admin),
        Some("application/json"),
        Some(b"{".to_vec()),
    )
    .expect_error(404, "Not found");
}

#[test]
fn only_admins_change_roles() {
    let app = spawn_app();
    let user = app.new_user();
    let path = format!("{USERS}/{}", user.id);
    app.put_json(&path, Some(&user.token), &json!({"role": "admin"}))
        .expect_error(403, "Forbidden");
    // Restating the current role is harmless.
    app.put_json(&path, Some(&user.token), &json!({"role": "user"}))
        .expect(200);
    let admin = app.admin_token();
    assert_eq!(
        app.put_json(&path, Some(&admin), &json!({"role": "admin"}))
            .expect(200)["role"],
        "admin"
    );
    // The promotion counts at once, even for the token issued before it with the profile scope only:
    // listing still needs users:read in the token, so a new login is needed for admin work.
    app.get(USERS, Some(&user.token))
        .expect_error(403, "Forbidden");
    let fresh = app.token_for(&user.email, &user.password);
    app.get(USERS, Some(&fresh)).expect(200);
}

#[test]
fn deleting_yourself_ends_your_tokens_at_once() {
    let app = spawn_app();
    let user = app.new_user();
    assert_eq!(
        app.delete(&format!("{USERS}/{}", user.id), Some(&user.token))
            .expect(200),
        json!({})
    );
    app.get(&format!("{USERS}/me"), Some(&user.token))
        .expect(401);
    let admin = app.admin_token();
    app.get(&format!("{USERS}/{}", user.id), Some(&admin))
        .expect_error(404, "Not found");
    app.delete(&format!("{USERS}/{}", user.id), Some(&admin))
        .expect_error(404, "Not found");
    // The email is free again.
    app.signup(&user.email, "another-password").expect(201);
}

#[test]
fn admins_delete_other_users() {
    let app = spawn_app();
    let user = app.new_user();
    let admin = app.admin_token();
    app.delete(&format!("{USERS}/{}", user.id), Some(&admin))
        .expect(200);
    assert_eq!(
        app.get("/api/v1/stats", Some(&admin)).expect(200),
        json!({"users": 1})
    );
}

#[test]
fn users_and_tokens_survive_a_restart() {
    let app = spawn_app();
    let user = app.new_user();
    let app = app.restart();
    let me = app.get("/api/v1/users/me", Some(&user.token)).expect(200);
    assert_eq!(me["id"], user.id.as_str());
    app.token_for(&user.email, &user.password);
}
