//! Client secrets: 256 random bits, shown once, stored as a SHA-256 digest (argon2id
//! hashes from before are still accepted, and replaced at their next success).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::domain::Client;

/// Which of a client's secrets is meant: 8 bytes of the SHA-256 of the client's id and the
/// instant its secret was last set (`secret_rotated_at`, changed by every rotation and by
/// nothing else: not by upgrading how the secret is stored). Written into the client's
/// tokens and compared for equality on every request, so a rotated secret takes its tokens
/// along at once, with no clock comparison involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretVersion([u8; 8]);

impl SecretVersion {
    pub fn of(client: &Client) -> Self {
        let material = format!(
            "{}:{}",
            client.id,
            client.secret_rotated_at.timestamp_micros()
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material.as_bytes());
        let mut version = [0u8; 8];
        version.copy_from_slice(&digest.as_ref()[..8]);
        Self(version)
    }

    /// From its hex form in a token; `None` for anything else.
    pub fn parse(hex: &str) -> Option<Self> {
        if hex.len() != 16 {
            return None;
        }
        let mut version = [0u8; 8];
        for (i, byte) in version.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(version))
    }
}

impl std::fmt::Display for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// How a client secret is stored now: this prefix and the base64url SHA-256 of the secret.
/// A secret is 256 random bits the service generated, so one hash is as hard to reverse as
/// argon2, and costs microseconds instead of milliseconds per authentication.
pub const DIGEST_PREFIX: &str = "sha256$";

/// The stored form of a new secret.
pub fn hash_secret(secret: &str) -> String {
    format!("{DIGEST_PREFIX}{}", URL_SAFE_NO_PAD.encode(digest(secret)))
}

fn digest(secret: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A stored client secret, by how it was stored.
pub enum StoredSecret<'a> {
    /// `sha256$…`: checked with one hash, compared in constant time.
    Digest(&'a str),
    /// An argon2 PHC string from before digests: checked with the password hasher, and
    /// replaced by a digest at its next successful authentication.
    Argon2,
}

impl<'a> StoredSecret<'a> {
    pub fn of(stored: &'a str) -> Self {
        match stored.strip_prefix(DIGEST_PREFIX) {
            Some(digest) => Self::Digest(digest),
            None => Self::Argon2,
        }
    }
}

/// Whether `presented` is the secret of the digest `stored` (the part after the prefix),
/// in constant time. `None` (no such client) compares against nothing real, in the same
/// time, and is never a match.
pub fn digest_matches(stored: Option<&str>, presented: &str) -> bool {
    let presented = URL_SAFE_NO_PAD.encode(digest(presented));
    let expected = stored.unwrap_or("an unknown client has no digest; this one never matches");
    stored.is_some() && same_bytes(presented.as_bytes(), expected.as_bytes())
}

/// Whether two secrets (or their digests) are equal, in time that depends on their
/// lengths only (which are public).
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Client secrets verified right in the last few seconds, by a SHA-256 of the client id and
/// the presented secret (never the secret itself). A secret presented again within that
/// time skips the attempt count, which on PostgreSQL costs two commits on one row per
/// address: a resource server introspecting every request would otherwise be bound by
/// that row. A hit is still compared with the client's stored digest as the store has it
/// now, so a rotation or a deletion takes effect at once (on every replica: the store's
/// client reads follow its change notifications). Only right secrets are ever remembered,
/// so a guess can never hit.
pub struct RecentSecrets {
    remembered: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
    ttl: std::time::Duration,
}

/// Entries at most; beyond that the expired go, and then everything (a miss costs only
/// the attempt count).
const RECENT_MAX: usize = 4096;

impl RecentSecrets {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            remembered: Default::default(),
            ttl,
        }
    }

    /// The key a presented id and secret are remembered by.
    pub fn key(id: &str, secret: &str) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(id.as_bytes());
        ctx.update(&[0]);
        ctx.update(secret.as_bytes());
        ctx.finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes")
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], std::time::Instant>> {
        self.remembered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` was verified right within the last `ttl`.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    pub fn insert(&self, key: [u8; 32]) {
        let mut remembered = self.lock();
        if remembered.len() >= RECENT_MAX {
            let ttl = self.ttl;
            remembered.retain(|_, at| at.elapsed() < ttl);
            if remembered.len() >= RECENT_MAX {
                remembered.clear();
            }
        }
        remembered.insert(key, std::time::Instant::now());
    }
}

pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `client_id:client_secret` from an HTTP Basic header (RFC 6749 §2.3.1: each part is
/// form-urlencoded before base64). `None` for anything that is not Basic.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .ok()
    };
    Some((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded_and_unescaped() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my%20id:s%3Acret")
        );
        assert_eq!(
            parse_basic(&header),
            Some(("my id".into(), "s:cret".into()))
        );
        assert_eq!(
            parse_basic("Basic Og=="),
            Some((String::new(), String::new()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(generate_secret().len(), 43);
    }

    #[test]
    fn secret_versions_follow_rotations_not_how_the_secret_is_stored() {
        let mut client = Client {
            id: uuid::Uuid::new_v4(),
            name: crate::domain::ClientName::parse("billing").unwrap(),
            scope: crate::domain::Scopes::of([crate::domain::Scope::UsersRead]),
            credential: crate::domain::Credential::Secret("$argon2id$old".into()),
            created_at: crate::domain::now(),
            secret_rotated_at: crate::domain::now(),
            sign_in: Default::default(),
        };
        let v = SecretVersion::of(&client);
        assert_eq!(SecretVersion::parse(&v.to_string()), Some(v));
        client.credential =
            crate::domain::Credential::Secret(hash_secret("the same secret, stored anew"));
        assert_eq!(SecretVersion::of(&client), v);
        client.secret_rotated_at += chrono::Duration::microseconds(1);
        assert_ne!(SecretVersion::of(&client), v);
        assert_eq!(SecretVersion::parse("zz"), None);
        assert_eq!(SecretVersion::parse("0123456789abcdeg"), None);
    }

    #[test]
    fn recent_secrets_are_remembered_for_their_time_and_stay_bounded() {
        let recent = RecentSecrets::new(std::time::Duration::from_millis(50));
        let key = RecentSecrets::key("client", "secret");
        assert_ne!(key, RecentSecrets::key("client", "secreT"));
        assert_ne!(key, RecentSecrets::key("clients", "ecret"));
        assert!(!recent.contains(&key));
        recent.insert(key);
        assert!(recent.contains(&key));
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(!recent.contains(&key));
        for i in 0..(RECENT_MAX + 10) {
            recent.insert(RecentSecrets::key(&i.to_string(), "s"));
        }
        assert!(recent.lock().len() <= RECENT_MAX);
    }

    #[test]
    fn secrets_are_stored_as_digests_and_compared_whole() {
        let secret = generate_secret();
        let stored = hash_secret(&secret);
        let StoredSecret::Digest(digest) = StoredSecret::of(&stored) else {
            panic!("{stored}");
        };
        assert!(digest_matches(Some(digest), &secret));
        assert!(!digest_matches(Some(digest), &format!("{secret}x")));
        assert!(!digest_matches(Some(digest), ""));
        assert!(!digest_matches(None, &secret));
        assert!(matches!(
            StoredSecret::of("$argon2id$v=19$x"),
            StoredSecret::Argon2
        ));
    }
}
