//! The application layer: the state every request shares and the use cases built on it
//! (checking a secret, issuing tokens, checking an access token, account changes). `api`
//! adapts HTTP to these and the CLI calls them directly; below are the credentials
//! (`auth`) and the store. No HTTP types here.

mod access;
mod accounts;
mod address;
mod clients;
mod issue;
mod login;
mod mail;
mod mfa;
mod passkeys;
mod reset;
mod signin;
mod state;

pub use access::{Account, ActiveRefresh, Verified};
pub use accounts::NewAccount;
pub use address::{AddressChange, Confirmed};
pub use clients::{ClientCredential, ClientVerdict, RECENT_SECRET_TTL};
pub use issue::{Exchanged, Grant, Tokens};
pub use login::{Attempt, Verdict};
pub use mail::{run_mail_worker, CodeRefusal, Letter, MailRequested, Mailer, CODE_TTL};
pub use mfa::{
    CeremonyUse, FactorCheck, MfaRefusal, PasskeyAnswer, Proof, SecondFactor, TotpEnrolment,
    MAX_OTP_CHARS,
};
pub use passkeys::{Ceremony, PasskeySignIn};
pub use signin::s256;
pub use signin::{
    released_claims, AuthRequest, AuthorizeError, AuthorizeParams, LogoutParams, LogoutRequest,
    Next, PendingSignIn, Sso, DOCS_CLIENT_ID,
};
pub use state::{open_file_store, AppState};

use crate::auth::{PasswordError, TokenError};
use crate::store::StoreError;

/// Why a use case could not be carried out, or (`Token`) why a presented token was
/// refused. Refused credentials are not errors but a `Verdict`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A token was refused, or could not be signed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A message cannot be composed or queued (a template, or no seal key).
    #[error("mail: {0}")]
    Mail(String),
    /// REQUIRE_VERIFIED_EMAIL is on and the account's address is not verified.
    #[error("the account's email address is not verified")]
    EmailNotVerified,
}
