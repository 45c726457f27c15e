//! Domain types: valid by construction, parsed once at the edge.

mod authorization;
mod client;
mod cursor;
mod email;
mod error;
mod identifier;
mod jwk;
mod mail;
mod mfa;
mod names;
mod password;
mod redirect;
mod role;
mod scope;
mod session;
mod user;

pub use authorization::{AuthCode, Consent};
pub use client::{client_scopes, Client, ClientId, ClientName, Credential, SignIn};
pub use cursor::UserCursor;
pub use email::Email;
pub use error::DomainError;
pub use identifier::{Identifier, MAX_IDENTIFIER_CHARS};
pub use jwk::{thumbprint, ClientKeys, KeyAlgorithm, KeyMaterial, PublicKey};
pub use mail::{EmailChange, MailCode, MailCodes, QueuedMail};
pub use mfa::{Mfa, PasskeyCredential, Totp, MAX_PASSKEYS};
pub use names::PersonName;
pub use password::NewPassword;
pub use redirect::{with_query, RedirectUri};
pub use role::Role;
pub use scope::{Scope, Scopes};
pub use session::{PresentedRefresh, RefreshToken, Session};
pub use user::{User, UserId};

/// The current time at the precision every store keeps (PostgreSQL's `timestamptz` holds
/// microseconds): a record reads back exactly as it was created, whichever the store.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// Clock skew tolerated on `exp`/`nbf` between this service and its verifiers.
pub const LEEWAY_SECS: u64 = 5;
