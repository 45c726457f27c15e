//! The one harness of the tests, for the application started in the test process
//! (`app`) and for the binary started as a process of its own (`process`): one HTTP
//! client (`http`), one way to run the CLI (`cli`), and PostgreSQL (`database`).

// Some helpers serve only the PostgreSQL tests (replicas, outages), which a build without
// PostgreSQL leaves out.
#![cfg_attr(no_postgres, allow(dead_code))]

pub mod app;
pub mod browser;
pub mod cli;
#[cfg(not(no_postgres))]
pub mod database;
pub mod http;
pub mod passkey;
pub mod process;

use std::time::{Duration, Instant};

use serde_json::Value;

pub use app::*;
pub use http::*;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// The `kid`s of a JWK Set, in order.
pub fn kids_of(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `check` until it holds, for at most `limit` (else panics saying `what`); returns
/// how long it took.
pub fn within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
