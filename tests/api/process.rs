//! The binary itself: start-up errors, the lock, the CLI, signals, memory, and crash
//! safety under kill -9.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::helpers::cli;
use super::helpers::process::{command, signups_until_killed, start, start_logged, start_with};
use super::helpers::{form, within, FORM};

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
fn the_openapi_command_prints_the_committed_spec() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("openapi").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        simple_api::api::spec_json()
    );
    assert!(
        !dir.path().join("data").exists(),
        "printing the spec touches no state"
    );
}

#[test]
fn sighup_reloads_the_keys_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_logged(dir.path(), &[("RELOAD_INTERVAL", "3600")]);
    let jwks = || {
        let body = server.get("/.well-known/jwks.json", None).expect(200);
        body["keys"].as_array().unwrap().len()
    };
    assert_eq!(jwks(), 1);
    simple_api::auth::keys::generate(
        &dir.path().join("keys"),
        simple_api::auth::keys::KeyAlgorithm::Es256,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(jwks(), 1, "no periodic reload within the hour");
    server.signal("HUP");
    within("SIGHUP to reload KEYS_DIR", Duration::from_secs(5), || {
        jwks() == 2
    });
}

#[test]
fn sigterm_drains_and_exits_zero_releasing_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    server.signal("TERM");
    let mut status = None;
    within("an exit after SIGTERM", Duration::from_secs(15), || {
        status = server.child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert!(status.success(), "{status:?}");
    // The lock is free again: a new server starts on the same DATA_DIR.
    let _again = start(dir.path());
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_login_storm_with_real_argon2_parameters_keeps_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // The OWASP parameters (19 MiB per hash): 200 concurrent logins would need ~3.8 GiB if
    // every hash ran at once.
    let server = start_logged(
        dir.path(),
        &[
            ("ARGON2_M_KIB", "19456"),
            ("ARGON2_T", "2"),
            ("LOGIN_MAX_FAILURES", "100000"),
        ],
    );
    let before = peak_rss_kib(server.child.id());
    let results: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    let email = format!("storm{i}@example.com");
                    let body = form(&[
                        ("grant_type", "password"),
                        ("username", &email),
                        ("password", "wrong-password"),
                    ]);
                    let headers = [("Content-Type", FORM)];
                    server
                        .try_send("POST", "/api/v1/auth/token", &headers, Some(body))
                        .map(|r| r.status)
                        .unwrap_or(0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        results.iter().all(|s| *s == 400 || *s == 503),
        "{results:?}"
    );
    let peak = peak_rss_kib(server.child.id());
    // One hashing thread per core (two here), each reusing its 19 MiB: ~40 MiB on top of
    // the base, where one buffer per concurrent request would be gigabytes.
    assert!(
        peak < before + 100 * 1024,
        "peak RSS grew from {before} KiB to {peak} KiB"
    );
}

/// Every email in the store, as a fresh server sees it (through the admin API).
fn simple_api_emails(dir: &Path) -> HashSet<String> {
    let server = start(dir);
    let token = server.admin_token();
    let mut emails = HashSet::new();
    for page in 0.. {
        let path = format!("/api/v1/users?limit=1000&offset={}", page * 1000);
        let users = server.get(&path, Some(&token)).expect(200);
        let users = users.as_array().unwrap();
        if users.is_empty() {
            break;
        }
        emails.extend(
            users
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
    }
    emails
}

/// Sign-ups race a SIGKILL, three times; every sign-up answered 201 must survive.
#[test]
fn repeated_kill_9_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let mut server = start(dir.path());
        let tag = format!("r{round}");
        let acked = signups_until_killed(
            &mut server,
            &tag,
            "a-good-password",
            Duration::from_millis(400),
        );
        acknowledged.extend(acked);
    }
    let stored = simple_api_emails(dir.path());
    for email in &acknowledged {
        assert!(stored.contains(email), "{email} was acknowledged but lost");
    }
    assert!(
        acknowledged.len() > 30,
        "only {} writes",
        acknowledged.len()
    );
}

#[test]
fn a_torn_tail_is_dropped_loaded_around_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = start(dir.path());
        let resp = server.signup("kept@example.com", "a-good-password");
        assert_eq!(resp.status, 201);
    }
    let log = dir.path().join("data/store.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"0badc0de {\"op\":\"user_put\",\"user\":{\"id\":\"tru")
        .unwrap();
    drop(f);
    let server = start(dir.path());
    let server_log = server.log.clone();
    let emails = {
        drop(server);
        simple_api_emails(dir.path())
    };
    assert!(emails.contains("kept@example.com"));
    let text = std::fs::read_to_string(server_log).unwrap();
    assert!(text.contains("dropping a torn record"), "{text}");
}

#[test]
fn a_full_disk_makes_writes_503_while_reads_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED a_full_disk_makes_writes_503_while_reads_keep_working: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    let server = start_logged(dir.path(), &[]);
    let signup = |email: &str| server.signup(email, "a-good-password");
    assert_eq!(signup("before@example.com").status, 201);
    let token = server.token_for("before@example.com", "a-good-password");
    // Fill the disk.
    let filler = data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    // The log's last page may still have room for a record or two: write until it is full.
    let mut refused = None;
    for i in 0..100 {
        let resp = signup(&format!("fill{i}@example.com"));
        if resp.status != 201 {
            refused = Some((resp.status, resp.body));
            break;
        }
    }
    let (status, body) = refused.expect("the full disk never refused a write");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("{\"error\""), "{body}");
    let me = server.me(&token);
    assert_eq!(me.status, 200, "reads keep working");
    assert!(me.body.contains("before@example.com"));
    // Space back: writes work again, nothing was lost or half-written.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(signup("after@example.com").status, 201);
    drop(server);
    let emails = simple_api_emails(dir.path());
    assert!(emails.contains("before@example.com") && emails.contains("after@example.com"));
}
