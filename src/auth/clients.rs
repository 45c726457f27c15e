//! Client secrets: 256 random bits, shown once, stored as argon2id hashes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Which of a client's secrets is meant: the first 8 bytes of the SHA-256 of its stored
/// hash. Written into the client's tokens and compared on every request, so a rotated
/// secret takes its tokens along at once, with no clock involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretVersion([u8; 8]);

impl SecretVersion {
    pub fn of(secret_hash: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret_hash.as_bytes());
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
    fn secret_versions_read_back_and_differ_per_secret() {
        let v = SecretVersion::of("$argon2id$one");
        assert_eq!(SecretVersion::parse(&v.to_string()), Some(v));
        assert_ne!(SecretVersion::of("$argon2id$two"), v);
        assert_eq!(SecretVersion::parse("zz"), None);
        assert_eq!(SecretVersion::parse("0123456789abcdeg"), None);
    }
}
