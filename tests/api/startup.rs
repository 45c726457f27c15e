//! Starting the binary: the first start, and every start-up error (one line naming what
//! to fix).

use std::process::Command;

use serde_json::json;

use super::helpers::process::{command, start, start_logged, start_with};

/// Runs `cmd`, which must fail: its one error line, the last line of stderr.
fn one_line_failure(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Log lines may come first; the failure itself is exactly one line, the last.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    errors[0].to_owned()
}

#[test]
fn bad_values_stop_start_up_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("API_PORT", "abc"),
        ("SESSION_DURATION", "-5"),
        ("SIGNUP_ENABLED", "maybe"),
        ("MAX_BODY_BYTES", "lots"),
        ("ARGON2_M_KIB", "1"),
    ] {
        let line = one_line_failure(command(dir.path()).env(var, value));
        assert!(
            line.contains(var) || line.contains(&var.to_lowercase().replace('_', "-")),
            "{var}: {line}"
        );
    }
    let line = one_line_failure(command(dir.path()).env_remove("ADMIN_PASSWORD"));
    assert!(line.contains("ADMIN_PASSWORD"), "{line}");
    // Mail settings are checked at start, not at the first message.
    for (var, value) in [
        ("MAIL_FROM", "not an address"),
        ("SMTP_URL", "smtp://mail.example.com?tls=none"),
        ("SMTP_URL", "http://mail.example.com"),
    ] {
        let line = one_line_failure(command(dir.path()).env(var, value));
        assert!(line.contains(var), "{var}: {line}");
    }
}

#[test]
fn an_unreadable_key_file_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/broken.pem"),
        "-----BEGIN NOTHING-----",
    )
    .unwrap();
    let line = one_line_failure(&mut command(dir.path()));
    assert!(
        line.contains("broken.pem") && line.contains("KEYS_DIR"),
        "{line}"
    );
}

#[test]
fn a_second_process_on_the_same_data_dir_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start(dir.path());
    let line = one_line_failure(&mut command(dir.path()));
    assert!(
        line.contains("DATA_DIR") && line.contains("in use"),
        "{line}"
    );
}

#[test]
fn a_port_in_use_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let line = one_line_failure(command(dir.path()).env("API_PORT", port));
    assert!(line.contains("API_PORT"), "{line}");
}

#[test]
fn first_start_generates_a_private_ed25519_key_and_reuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let kid = |server: &super::helpers::process::Server| {
        server.get("/.well-known/jwks.json", None).expect(200)["keys"][0]["kid"].clone()
    };
    let first = {
        let server = start(dir.path());
        kid(&server)
    };
    let pems: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("id-token-")
        })
        .collect();
    assert_eq!(pems.len(), 1);
    let pem = std::fs::read_to_string(&pems[0]).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        std::fs::metadata(&pems[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let server = start(dir.path());
    assert_eq!(kid(&server), first);
}

#[test]
fn admin_email_promotes_an_existing_account_only_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = "root@example.com";
    {
        let server = start_with(
            dir.path(),
            command(dir.path())
                .env_remove("ADMIN_EMAIL")
                .env_remove("ADMIN_PASSWORD"),
        );
        let resp = server.post_json(
            "/api/v1/users",
            None,
            &json!({"email": squatter, "password": "squatter-password"}),
        );
        assert_eq!(resp.status, 201);
    }
    let line = one_line_failure(
        command(dir.path())
            .env("ADMIN_EMAIL", squatter)
            .env("ADMIN_PASSWORD", "operator-password"),
    );
    assert!(line.contains("ADMIN_EMAIL"), "{line}");
    // With the account's own password it is the operator's account: promote it.
    let _server = start_logged(
        dir.path(),
        &[
            ("ADMIN_EMAIL", squatter),
            ("ADMIN_PASSWORD", "squatter-password"),
        ],
    );
}
