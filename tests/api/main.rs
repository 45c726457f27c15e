//! The one integration-test binary: every test starts the real application on port 0
//! with its own temp DATA_DIR and a freshly generated test key.
//!
//! The contract's tests are written once and compiled twice (issue #9): in `file_store`
//! against the file store, in `postgres_store` against PostgreSQL. Each copy gets a
//! `helpers` whose `spawn_app`/`spawn_app_with` start the app on its backend.

// Loading each test file twice, once per backend, is the point (one set of bodies).
#![allow(clippy::duplicate_mod)]

/// The same test bodies, once per store (expanded in `file_store.rs` and
/// `postgres_store.rs`, so that the paths below are beside them).
macro_rules! suite {
    ($backend:expr) => {
        /// The shared helpers, with the app started on this backend.
        mod helpers {
            pub use crate::helpers::*;

            pub fn spawn_app() -> TestApp {
                spawn_app_on($backend, |_| {})
            }

            pub fn spawn_app_with(change: impl FnOnce(&mut simple_api::config::Config)) -> TestApp {
                spawn_app_on($backend, change)
            }
        }

        #[path = "auth.rs"]
        mod auth;
        #[path = "clients.rs"]
        mod clients;
        #[path = "errors.rs"]
        mod errors;
        #[path = "hardening.rs"]
        mod hardening;
        #[path = "keys.rs"]
        mod keys;
        #[path = "openapi.rs"]
        mod openapi;
        #[path = "passwords.rs"]
        mod passwords;
        #[path = "refresh.rs"]
        mod refresh;
        #[path = "revoke.rs"]
        mod revoke;
        #[path = "sessions.rs"]
        mod sessions;
        #[path = "status.rs"]
        mod status;
        #[path = "tokens.rs"]
        mod tokens;
        #[path = "users.rs"]
        mod users;
        #[path = "well_known.rs"]
        mod well_known;
    };
}

#[cfg(not(no_postgres))]
mod database;
mod helpers;
#[cfg(not(no_postgres))]
mod postgres;
mod process;
#[cfg(not(no_postgres))]
mod replicas;

mod file_store;
#[cfg(not(no_postgres))]
mod postgres_store;

/// Without PostgreSQL (no binaries, no DATABASE_URL when this was built) half the suite
/// cannot run: say so where nobody can miss it, and fail where it must run.
#[cfg(no_postgres)]
#[test]
fn postgresql_suite_skipped() {
    assert!(
        std::env::var_os("REQUIRE_POSTGRES").is_none(),
        "REQUIRE_POSTGRES is set but this build found no PostgreSQL (no binaries under \
         /usr/lib/postgresql, no DATABASE_URL): install postgresql and rebuild"
    );
    eprintln!(
        "\n*** SKIPPED: the PostgreSQL half of the suite and the replica tests were not built: \
         no binaries under /usr/lib/postgresql and no DATABASE_URL (apt-get install \
         postgresql, then cargo test again) ***\n"
    );
}
