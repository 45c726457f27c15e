//! Opaque refresh tokens: 256 random bits, base64url, stored only as their SHA-256.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};

use crate::domain::RefreshToken;

/// A refresh token to hand out once, and its stored form.
pub struct NewRefreshToken {
    pub token: String,
    pub stored: RefreshToken,
}

pub fn generate(now: DateTime<Utc>, ttl: Duration) -> NewRefreshToken {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let stored = RefreshToken {
        hash: hash(&token),
        issued_at: now,
        expires_at: now + ttl,
        rotated_at: None,
    };
    NewRefreshToken { token, stored }
}

/// The stored form of a presented token. A fast hash is right here: the token has 256
/// bits of entropy, so there is nothing to brute-force.
pub fn hash(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_only_as_hashes() {
        let a = generate(crate::domain::now(), Duration::seconds(60));
        let b = generate(crate::domain::now(), Duration::seconds(60));
        assert_eq!(a.token.len(), 43);
        assert_ne!(a.token, b.token);
        assert_eq!(a.stored.hash, hash(&a.token));
        assert_eq!(a.stored.hash.len(), 64);
        assert!(!a.stored.hash.contains(&a.token));
    }
}
