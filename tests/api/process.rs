//! The binary itself: start-up errors, the lock, the CLI, and crash safety under kill -9.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

pub const BIN: &str = env!("CARGO_BIN_EXE_simple-api");
const CONTRACT_VARS: &[&str] = &[
    "API_HOST",
    "API_PORT",
    "DATA_DIR",
    "DATABASE_URL",
    "KEYS_DIR",
    "SESSION_DURATION",
    "REFRESH_TOKEN_TTL",
    "SESSION_NAME",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "PUBLIC_URL",
    "SIGNUP_ENABLED",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "COOKIE_SECURE",
    "REFRESH_REUSE_GRACE",
    "KEY_PUBLISH_DELAY",
    "MAX_BODY_BYTES",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW",
    "ARGON2_M_KIB",
    "ARGON2_T",
    "ARGON2_P",
    "TRUSTED_PROXIES",
    "AUDIT_LOG",
];

pub fn command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in CONTRACT_VARS {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir)
        .env("DATA_DIR", dir.join("data"))
        .env("KEYS_DIR", dir.join("keys"))
        .env("ARGON2_M_KIB", "1024")
        .env("ARGON2_T", "1")
        .env("API_PORT", "0")
        .env("ADMIN_EMAIL", "admin@example.com")
        .env("ADMIN_PASSWORD", "admin-password-1")
        .stdin(Stdio::null());
    cmd
}

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

pub struct Server(pub std::process::Child, pub u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &std::path::Path) -> Server {
    start_logged(dir, &[]).0
}

fn wait_ready(port: u16) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let url = format!("http://127.0.0.1:{port}/api/v1/status");
        if agent.get(url).call().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not start");
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
    let kid = |port: u16| {
        let body = ureq::get(format!("http://127.0.0.1:{port}/.well-known/jwks.json"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["keys"][0]["kid"].clone()
    };
    let first = {
        let server = start(dir.path());
        kid(server.1)
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
    assert_eq!(kid(server.1), first);
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
    let form = "grant_type=password&username=root%40example.com&password=root-password-1";
    let mut resp = ureq::post(format!("http://127.0.0.1:{}/api/v1/auth/token", server.1))
        .content_type("application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["scope"], "profile users:read users:write");
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
fn admin_email_promotes_an_existing_account_only_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = "root@example.com";
    {
        let port = free_port();
        let child = command(dir.path())
            .env_remove("ADMIN_EMAIL")
            .env_remove("ADMIN_PASSWORD")
            .env("API_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _server = Server(child, port);
        wait_ready(port);
        let resp = ureq::post(format!("http://127.0.0.1:{port}/api/v1/users"))
            .content_type("application/json")
            .send(json!({"email": squatter, "password": "squatter-password"}).to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
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
fn sighup_reloads_the_keys_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = command(dir.path())
        .env("API_PORT", port.to_string())
        .env("RELOAD_INTERVAL", "3600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child, port);
    wait_ready(port);
    let jwks = || {
        let mut resp = ureq::get(format!("http://127.0.0.1:{port}/.well-known/jwks.json"))
            .call()
            .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
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
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while jwks() != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload KEYS_DIR");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn start_logged(dir: &std::path::Path, extra: &[(&str, &str)]) -> (Server, std::path::PathBuf) {
    let port = free_port();
    let log = dir.join(format!("server-{port}.log"));
    let mut cmd = command(dir);
    cmd.env("API_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let server = Server(cmd.spawn().unwrap(), port);
    wait_ready(port);
    (server, log)
}

#[test]
fn sigterm_drains_and_exits_zero_releasing_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _) = start_logged(dir.path(), &[]);
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
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
    let (server, _) = start_logged(
        dir.path(),
        &[
            ("ARGON2_M_KIB", "19456"),
            ("ARGON2_T", "2"),
            ("LOGIN_MAX_FAILURES", "100000"),
        ],
    );
    let port = server.1;
    let before = peak_rss_kib(server.0.id());
    let results: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                s.spawn(move || {
                    let body = format!("grant_type=password&username=storm{i}%40example.com&password=wrong-password");
                    let agent = ureq::Agent::new_with_config(
                        ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .timeout_global(Some(Duration::from_secs(60)))
                            .build(),
                    );
                    agent
                        .post(format!("http://127.0.0.1:{port}/api/v1/auth/token"))
                        .content_type("application/x-www-form-urlencoded")
                        .send(body)
                        .map(|r| r.status().as_u16())
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
    let peak = peak_rss_kib(server.0.id());
    // One hashing thread per core (two here), each reusing its 19 MiB: ~40 MiB on top of
    // the base, where one buffer per concurrent request would be gigabytes.
    assert!(
        peak < before + 100 * 1024,
        "peak RSS grew from {before} KiB to {peak} KiB"
    );
}

/// Sign-ups race a SIGKILL, three times; every sign-up answered 201 must survive.
#[test]
fn repeated_kill_9_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let (mut server, _) = start_logged(dir.path(), &[]);
        let port = server.1;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let agent = ureq::Agent::new_with_config(
                        ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .timeout_global(Some(Duration::from_secs(5)))
                            .build(),
                    );
                    for i in 0.. {
                        let email = format!("r{round}w{w}n{i}@example.com");
                        let body =
                            json!({"email": email, "password": "a-good-password"}).to_string();
                        match agent
                            .post(format!("http://127.0.0.1:{port}/api/v1/users"))
                            .content_type("application/json")
                            .send(body)
                        {
                            Ok(r) if r.status().as_u16() == 201 => {
                                acked.lock().unwrap().push(email)
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        for w in workers {
            w.join().unwrap();
        }
        acknowledged.extend(acked.lock().unwrap().iter().cloned());
    }
    let stored: std::collections::HashSet<String> = simple_api_emails(dir.path());
    for email in &acknowledged {
        assert!(stored.contains(email), "{email} was acknowledged but lost");
    }
    assert!(
        acknowledged.len() > 30,
        "only {} writes",
        acknowledged.len()
    );
}

/// Every email in the store, as a fresh server sees it (through the admin API).
fn simple_api_emails(dir: &std::path::Path) -> std::collections::HashSet<String> {
    let server = start(dir);
    let base = format!("http://127.0.0.1:{}", server.1);
    let form = "grant_type=password&username=admin%40example.com&password=admin-password-1";
    let mut resp = ureq::post(format!("{base}/api/v1/auth/token"))
        .content_type("application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    let token: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let mut emails = std::collections::HashSet::new();
    for page in 0.. {
        let mut resp = ureq::get(format!(
            "{base}/api/v1/users?limit=1000&offset={}",
            page * 1000
        ))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
        let users: Vec<serde_json::Value> =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        if users.is_empty() {
            break;
        }
        emails.extend(
            users
                .into_iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
    }
    emails
}

#[test]
fn a_torn_tail_is_dropped_loaded_around_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let _server = start(dir.path());
        let port = _server.1;
        let resp = ureq::post(format!("http://127.0.0.1:{port}/api/v1/users"))
            .content_type("application/json")
            .send(json!({"email": "kept@example.com", "password": "a-good-password"}).to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    let log = dir.path().join("data/store.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"0badc0de {\"op\":\"user_put\",\"user\":{\"id\":\"tru")
        .unwrap();
    drop(f);
    let (server, server_log) = start_logged(dir.path(), &[]);
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
    let (server, _) = start_logged(dir.path(), &[]);
    let base = format!("http://127.0.0.1:{}", server.1);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let signup = |email: &str| {
        let mut resp = agent
            .post(format!("{base}/api/v1/users"))
            .content_type("application/json")
            .send(json!({"email": email, "password": "a-good-password"}).to_string())
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    };
    assert_eq!(signup("before@example.com").0, 201);
    let form = "grant_type=password&username=before%40example.com&password=a-good-password";
    let mut resp = agent
        .post(format!("{base}/api/v1/auth/token"))
        .content_type("application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    let token: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    // Fill the disk.
    let filler = data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    // The log's last page may still have room for a record or two: write until it is full.
    let mut refused = None;
    for i in 0..100 {
        let (status, body) = signup(&format!("fill{i}@example.com"));
        if status != 201 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the full disk never refused a write");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("{\"error\""), "{body}");
    let mut me = agent
        .get(format!("{base}/api/v1/users/me"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(me.status().as_u16(), 200, "reads keep working");
    assert!(me
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("before@example.com"));
    // Space back: writes work again, nothing was lost or half-written.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(signup("after@example.com").0, 201);
    drop(server);
    let emails = simple_api_emails(dir.path());
    assert!(emails.contains("before@example.com") && emails.contains("after@example.com"));
}

#[test]
fn calibrate_suggests_parameters_for_a_target_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["passwords", "calibrate", "--target-ms", "5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let suggestion: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(suggestion["ARGON2_M_KIB"].as_u64().unwrap() >= 19_456);
    assert!(suggestion["ARGON2_T"].as_u64().unwrap() >= 1);
    assert!(suggestion["measured_ms"].as_f64().unwrap() >= 5.0);
    assert!(suggestion["current_ms"].as_f64().unwrap() > 0.0);
}
