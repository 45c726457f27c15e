//! CLI commands run with no server (those run beside a server are with the feature they
//! manage: `clients.rs`, `keys.rs`; `openapi` is in `openapi.rs`).

use std::io::Write;
use std::process::Stdio;

use super::helpers::cli;
use super::helpers::process::{command, start};

#[test]
fn users_create_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .args(["users", "create", "--email", "root@example.com", "--admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"root-password-1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["role"], "admin");

    let server = start(dir.path());
    let body = server
        .password_grant("root@example.com", "root-password-1")
        .expect(200);
    assert_eq!(body["scope"], "profile users:read users:write");
}

#[test]
fn calibrate_suggests_parameters_for_a_target_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli::run(
        &mut command(dir.path()),
        &["passwords", "calibrate", "--target-ms", "5"],
    );
    let suggestion = out.json();
    assert!(suggestion["ARGON2_M_KIB"].as_u64().unwrap() >= 19_456);
    assert!(suggestion["ARGON2_T"].as_u64().unwrap() >= 1);
    assert!(suggestion["measured_ms"].as_f64().unwrap() >= 5.0);
    assert!(suggestion["current_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn help_never_prints_a_secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("--help")
        .env("DATABASE_URL", "postgres://app:hunter2-db@db.internal/auth")
        .env("ADMIN_PASSWORD", "hunter2-admin")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("DATABASE_URL"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}
