//! Opaque refresh tokens. Each is the base64url of 80 bytes: the session id (16), the
//! family secret every token of the session carries (32) and a secret of its own (32),
//! 107 characters without a `.` (so never mistaken for a JWT). The store keeps only
//! SHA-256 hashes: of the family secret (once per session) and of the current token.
//!
//! The family secret is what makes any earlier token of a session recognisable as its
//! own, however many rotations ago it was replaced, with no history to outgrow: a token
//! naming the session and carrying its secret, but not current, is reuse. Knowing a
//! session id (every access token's `sid`) is not enough to pass for one of its tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::domain::{PresentedRefresh, RefreshToken};

const SECRET: usize = 32;
const TOKEN: usize = 16 + 2 * SECRET;

/// A refresh token to hand out once, and its stored form.
pub struct NewRefreshToken {
    pub token: String,
    pub stored: RefreshToken,
}

/// A session's family: its id and the secret all its tokens carry.
pub struct Family {
    session_id: Uuid,
    secret: [u8; SECRET],
}

impl Family {
    /// The family of a new session, with a new session id.
    pub fn generate() -> Self {
        Self {
            session_id: Uuid::now_v7(),
            secret: random(),
        }
    }

    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// What the session stores of the secret.
    pub fn hash(&self) -> String {
        sha256_hex(&self.secret)
    }

    /// A new token of this family, the session's next.
    pub fn issue(&self, now: DateTime<Utc>, ttl: Duration) -> NewRefreshToken {
        let mut bytes = Vec::with_capacity(TOKEN);
        bytes.extend_from_slice(self.session_id.as_bytes());
        bytes.extend_from_slice(&self.secret);
        bytes.extend_from_slice(&random::<SECRET>());
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let stored = RefreshToken {
            hash: hash(&token),
            issued_at: now,
            expires_at: now + ttl,
            rotated_at: None,
        };
        NewRefreshToken { token, stored }
    }
}

/// A presented token: its family (to issue its successor) and what the store judges.
pub struct Presented {
    pub family: Family,
    pub stored: PresentedRefresh,
}

/// Reads a presented token; `None` if it is not one this service issues (a token from
/// before families, 43 characters, is not: it is refused as unknown).
pub fn parse(token: &str) -> Option<Presented> {
    // Strict base64url (no padding, no stray bits): one spelling per token, so a token's
    // hash is the same whichever way it is sent.
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let bytes: &[u8; TOKEN] = bytes.as_slice().try_into().ok()?;
    let session_id = Uuid::from_slice(&bytes[..16]).ok()?;
    let secret: [u8; SECRET] = bytes[16..16 + SECRET].try_into().ok()?;
    let family = Family { session_id, secret };
    let stored = PresentedRefresh {
        session_id,
        family: family.hash(),
        hash: hash(token),
    };
    Some(Presented { family, stored })
}

/// The stored form of a token. A fast hash is right here: the token has 512 bits of
/// secrets, so there is nothing to brute-force.
fn hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// SHA-256 of `bytes`, lower-case hex: how refresh tokens, family secrets and
/// authorization codes are stored.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(family: &Family) -> NewRefreshToken {
        family.issue(crate::domain::now(), Duration::seconds(60))
    }

    #[test]
    fn tokens_are_long_random_and_stored_only_as_hashes() {
        let family = Family::generate();
        let (a, b) = (issue(&family), issue(&family));
        assert_eq!(a.token.len(), 107);
        assert!(!a.token.contains('.'), "never taken for a JWT");
        assert_ne!(a.token, b.token);
        assert_eq!(a.stored.hash.len(), 64);
        assert!(!a.stored.hash.contains(&a.token));
        assert_eq!(family.hash().len(), 64);
    }

    #[test]
    fn a_presented_token_names_its_session_and_family() {
        let family = Family::generate();
        let token = issue(&family);
        let presented = parse(&token.token).expect("parses");
        assert_eq!(presented.stored.session_id, family.session_id());
        assert_eq!(presented.stored.family, family.hash());
        assert_eq!(presented.stored.hash, token.stored.hash);
        // Its successor is of the same family.
        let next = presented
            .family
            .issue(crate::domain::now(), Duration::seconds(60));
        let next = parse(&next.token).unwrap();
        assert_eq!(next.stored.family, family.hash());
        assert_ne!(next.stored.hash, token.stored.hash);
        // Another family with the same session id is not this one.
        let forged = Family {
            session_id: family.session_id(),
            secret: random(),
        };
        assert_ne!(
            parse(&issue(&forged).token).unwrap().stored.family,
            family.hash()
        );
    }

    #[test]
    fn anything_else_is_not_a_refresh_token() {
        let token = issue(&Family::generate()).token;
        let legacy = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let mut stray_bits = token.clone();
        stray_bits.pop();
        stray_bits.push('B'); // the last character's unused bits set
        for bad in [
            "",
            "made-up",
            legacy.as_str(),
            &token[1..],
            &format!("{token}A"),
            &format!("{token}="),
            stray_bits.as_str(),
            "a.b.c",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
