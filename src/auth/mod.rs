//! Credentials: signing keys, access tokens and password hashes. No HTTP types here.

pub mod assertion;
pub mod clients;
pub mod id_token;
pub mod keys;
pub mod passkeys;
pub mod passwords;
pub mod refresh;
pub mod signed;
pub mod throttle;
pub mod tokens;
pub mod totp;

pub use keys::{KeyError, KeySet};
pub use passwords::{PasswordError, PasswordHasher};
pub use tokens::{AccessClaims, Authentication, IssuedToken, Principal, TokenError, TokenService};
