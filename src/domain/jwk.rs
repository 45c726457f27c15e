//! Public keys as JWKs (RFC 7517): the keys a `private_key_jwt` client signs its
//! assertions with. Checked here once, structurally (types, curves, lengths, no private
//! members), so every store holds only usable public keys; the signature checks that use
//! them are `auth::assertion`'s.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::DomainError;

/// Keys a client may register at most (enough for a rollover with room to spare).
pub const MAX_CLIENT_KEYS: usize = 10;
/// A `kid` longer than this is refused (it is stored and compared, never trusted).
const MAX_KID_CHARS: usize = 200;

/// The signature algorithms keys may have (this service's signing keys and clients'
/// registered keys), serialized by their JOSE names; each key is pinned to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "RS256")]
    Rs256,
}

impl KeyAlgorithm {
    /// A name as an operator types it (`keys generate --alg`): the JOSE name, RFC 9864's
    /// `Ed25519`, or either in lower case.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "EdDSA" | "Ed25519" | "ed25519" => Some(Self::EdDsa),
            "ES256" | "es256" => Some(Self::Es256),
            "RS256" | "rs256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The JOSE name (`alg`).
    pub fn jose(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

/// The key itself, by type (`kty`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum KeyMaterial {
    /// Ed25519: `x` is the 32-byte public key.
    #[serde(rename = "OKP")]
    Okp { crv: String, x: String },
    /// P-256: the point's coordinates, 32 bytes each.
    #[serde(rename = "EC")]
    Ec { crv: String, x: String, y: String },
    /// RSA of at least 2048 bits.
    #[serde(rename = "RSA")]
    Rsa { n: String, e: String },
}

/// One public key, as stored and as shown: `kid`, `alg`, `use: "sig"` and its members.
/// Its serde form is the JWK of RFC 7517 itself, a standard that will not drift with this
/// service, which is why a domain type may be stored as it is (see `ClientKeys::to_jwks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub kid: String,
    pub alg: KeyAlgorithm,
    #[serde(rename = "use")]
    pub use_: String,
    #[serde(flatten)]
    pub material: KeyMaterial,
}

/// A client's registered public keys: 1 to `MAX_CLIENT_KEYS`, distinct `kid`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeys(Vec<PublicKey>);

/// A JWK as it comes from outside: anything may be missing or extra.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    /// Present in private keys only (all three types).
    d: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawKeys {
    Set { keys: Vec<RawJwk> },
    One(Box<RawJwk>),
}

fn invalid(reason: impl Into<String>) -> DomainError {
    DomainError::InvalidKeys(reason.into())
}

/// The bytes of a base64url member, or why not.
fn bytes(member: &Option<String>, name: &str) -> Result<Vec<u8>, DomainError> {
    let raw = member
        .as_deref()
        .ok_or_else(|| invalid(format!("member {name} missing")))?;
    URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid(format!("member {name} is not base64url without padding")))
}

fn exactly(member: &Option<String>, name: &str, len: usize) -> Result<String, DomainError> {
    let decoded = bytes(member, name)?;
    if decoded.len() != len {
        return Err(invalid(format!("member {name} must be {len} bytes")));
    }
    Ok(member.clone().unwrap_or_default())
}

impl PublicKey {
    /// Builds a key from its members; `kid` defaults to the RFC 7638 thumbprint.
    pub fn new(material: KeyMaterial, kid: Option<String>) -> Result<Self, DomainError> {
        let alg = match &material {
            KeyMaterial::Okp { .. } => KeyAlgorithm::EdDsa,
            KeyMaterial::Ec { .. } => KeyAlgorithm::Es256,
            KeyMaterial::Rsa { .. } => KeyAlgorithm::Rs256,
        };
        let kid = match kid {
            Some(kid) => kid,
            None => thumbprint(&material.thumbprint_members()),
        };
        if kid.is_empty()
            || kid.chars().count() > MAX_KID_CHARS
            || kid.chars().any(char::is_control)
        {
            return Err(invalid(format!(
                "kid must be 1 to {MAX_KID_CHARS} characters without control characters"
            )));
        }
        Ok(Self {
            kid,
            alg,
            use_: "sig".into(),
            material,
        })
    }

    fn parse(raw: RawJwk) -> Result<Self, DomainError> {
        if raw.d.is_some() {
            return Err(invalid(
                "this is a private key (it has a \"d\" member): register its public half",
            ));
        }
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(invalid("use must be \"sig\""));
        }
        let material = match raw.kty.as_deref() {
            Some("OKP") => {
                if raw.crv.as_deref() != Some("Ed25519") {
                    return Err(invalid("OKP keys must have crv Ed25519"));
                }
                KeyMaterial::Okp {
                    crv: "Ed25519".into(),
                    x: exactly(&raw.x, "x", 32)?,
                }
            }
            Some("EC") => {
                if raw.crv.as_deref() != Some("P-256") {
                    return Err(invalid("EC keys must have crv P-256 (ES256)"));
                }
                KeyMaterial::Ec {
                    crv: "P-256".into(),
                    x: exactly(&raw.x, "x", 32)?,
                    y: exactly(&raw.y, "y", 32)?,
                }
            }
            Some("RSA") => {
                let n = bytes(&raw.n, "n")?;
                let e = bytes(&raw.e, "e")?;
                let significant = |b: &[u8]| b.iter().skip_while(|&&byte| byte == 0).count();
                if significant(&n) < 256 {
                    return Err(invalid("RSA keys must have at least 2048 bits"));
                }
                if significant(&n) > 1024 {
                    return Err(invalid("RSA keys may have at most 8192 bits"));
                }
                // aws-lc verifies with exponents of at most 33 bits (65537 is the usual).
                if !(1..=4).contains(&significant(&e)) {
                    return Err(invalid("member e is not a usable RSA exponent"));
                }
                KeyMaterial::Rsa {
                    n: raw.n.unwrap_or_default(),
                    e: raw.e.unwrap_or_default(),
                }
            }
            Some(other) => {
                return Err(invalid(format!(
                    "kty {other} is not supported (OKP Ed25519, EC P-256 or RSA)"
                )))
            }
            None => return Err(invalid("member kty missing")),
        };
        let key = Self::new(material, raw.kid)?;
        if let Some(alg) = raw.alg.as_deref() {
            if alg != key.alg.jose() {
                return Err(invalid(format!(
                    "alg {alg} does not fit this key (its algorithm is {})",
                    key.alg.jose()
                )));
            }
        }
        Ok(key)
    }
}

impl KeyMaterial {
    /// RFC 7638's required members, in lexicographic order.
    fn thumbprint_members(&self) -> Vec<(&str, &str)> {
        match self {
            Self::Okp { crv, x } => vec![("crv", crv), ("kty", "OKP"), ("x", x)],
            Self::Ec { crv, x, y } => vec![("crv", crv), ("kty", "EC"), ("x", x), ("y", y)],
            Self::Rsa { n, e } => vec![("e", e), ("kty", "RSA"), ("n", n)],
        }
    }
}

impl ClientKeys {
    pub fn new(keys: Vec<PublicKey>) -> Result<Self, DomainError> {
        if keys.is_empty() || keys.len() > MAX_CLIENT_KEYS {
            return Err(invalid(format!(
                "a client has 1 to {MAX_CLIENT_KEYS} public keys"
            )));
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(invalid(format!("kid {} appears twice", key.kid)));
            }
        }
        Ok(Self(keys))
    }

    /// A JWK Set (`{"keys": [...]}`) or a single JWK, as a client publishes it.
    pub fn parse_jwks(json: &str) -> Result<Self, DomainError> {
        let raw: RawKeys = serde_json::from_str(json)
            .map_err(|e| invalid(format!("not a JWK or JWK Set: {e}")))?;
        let raw = match raw {
            RawKeys::Set { keys } => keys,
            RawKeys::One(key) => vec![*key],
        };
        Self::new(
            raw.into_iter()
                .map(PublicKey::parse)
                .collect::<Result<_, _>>()?,
        )
    }

    /// The stored form: a JWK Set, which `parse_jwks` reads back to the same keys.
    pub fn to_jwks(&self) -> String {
        serde_json::json!({ "keys": self.0 }).to_string()
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.0
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace,
/// base64url. The members are base64url or fixed names, so they need no JSON escaping.
pub fn thumbprint(members: &[(&str, &str)]) -> String {
    let canonical = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{{{canonical}}}").as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    #[test]
    fn a_single_jwk_or_a_set_is_read_and_stored_back_as_a_set() {
        let keys = ClientKeys::parse_jwks(ED).unwrap();
        assert_eq!(keys.keys().len(), 1);
        // RFC 8037 Appendix A.3.
        assert_eq!(
            keys.keys()[0].kid,
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(keys.keys()[0].alg, KeyAlgorithm::EdDsa);
        assert_eq!(ClientKeys::parse_jwks(&keys.to_jwks()).unwrap(), keys);
        let set = format!(r#"{{"keys":[{}]}}"#, ED.replace('{', r#"{"kid":"a","#));
        assert_eq!(ClientKeys::parse_jwks(&set).unwrap().keys()[0].kid, "a");
    }

    #[test]
    fn unusable_keys_are_refused_with_a_reason() {
        let refused = |json: &str| ClientKeys::parse_jwks(json).unwrap_err().to_string();
        assert!(refused(&ED.replace('}', r#","d":"x"}"#)).contains("private key"));
        assert!(refused(&ED.replace("Ed25519", "X25519")).contains("Ed25519"));
        assert!(
            refused(&ED.replace("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "AQAB"))
                .contains("32 bytes")
        );
        assert!(refused(&ED.replace("11qY", "11q")).contains("base64url"));
        assert!(refused(&ED.replace('}', r#","alg":"RS256"}"#)).contains("does not fit"));
        assert!(refused(&ED.replace('}', r#","use":"enc"}"#)).contains("sig"));
        assert!(refused(r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#).contains("2048"));
        assert!(refused(r#"{"kty":"oct","k":"AQAB"}"#).contains("not supported"));
        assert!(refused(r#"{"keys":[]}"#).contains("1 to"));
        assert!(refused("[1]").contains("not a JWK"));
        let twice = format!(r#"{{"keys":[{ED},{ED}]}}"#);
        assert!(refused(&twice).contains("twice"));
    }
}
