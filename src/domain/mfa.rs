/// A person's second factors (issue #18).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mfa {
    /// TOTP (RFC 6238), once enrolment has begun.
    pub totp: Option<Totp>,
    /// SHA-256 (hex) of each recovery code not used yet.
    pub recovery_codes: Vec<String>,
}

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
        self.totp.as_ref().is_some_and(|t| t.confirmed)
    }
}
