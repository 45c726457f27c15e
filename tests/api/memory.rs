//! Memory under load with the real argon2 parameters.

use super::helpers::process::start_logged;
use super::helpers::{form, FORM};

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
