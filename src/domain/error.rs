/// Why a value from outside was refused. Messages are safe to show to clients.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("email missing")]
    EmailMissing,
    #[error("invalid email: {0}")]
    InvalidEmail(&'static str),
    #[error("password missing")]
    PasswordMissing,
    #[error("password must be between 8 and 256 characters")]
    PasswordLength,
    #[error("{0} must be a string of at most 100 characters without control characters")]
    InvalidName(&'static str),
    #[error("role must be \"user\" or \"admin\"")]
    InvalidRole,
    #[error("{0} must be at most 320 characters without control characters")]
    InvalidIdentifier(&'static str),
    #[error("after must be a cursor from the Link header of a previous page")]
    InvalidCursor,
    #[error("redirect URI: {0}")]
    InvalidRedirectUri(&'static str),
    #[error("public keys: {0}")]
    InvalidKeys(String),
}
