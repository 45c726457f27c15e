//! Signals to the running binary: SIGHUP reloads the keys, SIGTERM drains and exits.

use std::time::Duration;

use super::helpers::process::{start, start_logged};
use super::helpers::within;

#[test]
fn sighup_reloads_the_keys_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_logged(dir.path(), &[("RELOAD_INTERVAL", "3600")]);
    let jwks = || {
        let body = server.get("/.well-known/jwks.json", None).expect(200);
        body["keys"].as_array().unwrap().len()
    };
    assert_eq!(jwks(), 2, "the signing key and the ID-token key");
    simple_api::auth::keys::generate(
        &dir.path().join("keys"),
        simple_api::auth::keys::KeyAlgorithm::Es256,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(jwks(), 2, "no periodic reload within the hour");
    server.signal("HUP");
    within("SIGHUP to reload KEYS_DIR", Duration::from_secs(5), || {
        jwks() == 3
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
