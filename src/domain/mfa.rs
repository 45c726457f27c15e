use chrono::{DateTime, Utc};

use super::PersonName;

/// A person's second factors (issue #18).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mfa {
    /// TOTP (RFC 6238), once enrolment has begun.
    pub totp: Option<Totp>,
    /// SHA-256 (hex) of each recovery code not used yet.
    pub recovery_codes: Vec<String>,
    /// Registered passkeys (WebAuthn credentials), oldest first.
    pub passkeys: Vec<PasskeyCredential>,
}

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyCredential {
    /// Our id for it (the API's), not the credential's own.
    pub id: uuid::Uuid,
    /// The name its owner gave it ("Laptop", "YubiKey").
    pub name: PersonName,
    /// The WebAuthn credential id, base64url (unique within the account).
    pub credential_id: String,
    /// The credential as webauthn-rs keeps it (public key, counter, flags), JSON: opaque
    /// outside `auth::passkeys`, and no secret (a public key).
    pub credential: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The most passkeys an account may have (a bound on its record and on the credential
/// list every sign-in offers).
pub const MAX_PASSKEYS: usize = 10;

/// A TOTP enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totp {
    /// The shared secret, sealed (AES-256-GCM with the key in KEYS_DIR, base64url): never
    /// stored in clear.
    pub sealed_secret: String,
    /// A first right code confirmed it: only then does it count as a second factor.
    pub confirmed: bool,
    /// The last time step a code was accepted for (Unix time / 30): each code once.
    pub last_step: i64,
}

impl Mfa {
    /// Whether the account has a second factor: its password alone gets no token.
    pub fn enrolled(&self) -> bool {
        self.totp_enrolled() || !self.passkeys.is_empty()
    }

    /// Whether a confirmed TOTP authenticator is there.
    pub fn totp_enrolled(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.confirmed)
    }
}
