use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ClientId, Scopes, UserId};

/// An authorization code as stored (RFC 6749 §4.1.2): only its SHA-256, and everything it
/// was issued for, so the token endpoint can check that the same client, redirect URI and
/// PKCE verifier come back with it. Single use: the first exchange records the session
/// it created (`used_by`); a second presentation revokes that session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    /// SHA-256 (hex) of the code.
    pub hash: String,
    pub client_id: ClientId,
    /// The redirect URI exactly as the authorization request sent it.
    pub redirect_uri: String,
    /// PKCE (RFC 7636): base64url(SHA-256(code_verifier)); S256 is the only method.
    pub code_challenge: String,
    /// What the person granted.
    pub scope: Scopes,
    pub user_id: UserId,
    /// OpenID Connect: echoed in the ID token.
    pub nonce: Option<String>,
    /// When the person last entered their password (OIDC `auth_time`).
    pub auth_time: DateTime<Utc>,
    /// The single-sign-on session the code was issued in (the ID token's `sid`).
    pub sso_session: Uuid,
    /// How the person signed in (RFC 8176 `amr` values).
    pub amr: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// What a person allowed a third-party client, remembered so they are asked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub client_id: ClientId,
    pub scope: Scopes,
    pub granted_at: DateTime<Utc>,
}
