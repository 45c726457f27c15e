//! Client secrets: 256 random bits, shown once, stored as argon2id hashes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

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
}
