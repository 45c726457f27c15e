//! The one integration-test binary: every test starts the real application on port 0
//! with its own temp DATA_DIR and a freshly generated test key.

mod helpers;

mod auth;
mod clients;
mod errors;
mod hardening;
mod keys;
mod openapi;
mod postgres;
mod process;
mod refresh;
mod sessions;
mod status;
mod tokens;
mod users;
mod well_known;
