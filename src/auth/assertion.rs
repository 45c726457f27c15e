//! Client assertions: `private_key_jwt` client authentication (RFC 7523 §2.2 with RFC 7521
//! §4.2, as OpenID Connect Core §9 defines it). A client registered with public keys
//! proves who it is with a short-lived JWT signed by one of them, so no shared secret ever
//! exists. The checks that need no state are here; that each `jti` is used once is the
//! store's (`Store::use_assertion`), called by the service after these pass.
//!
//! The JWS is taken apart here rather than by `jsonwebtoken::decode`: client libraries now
//! name Ed25519 signatures `Ed25519` (RFC 9864; openid-client and jose do by default),
//! which that crate cannot parse, and the claim checks give the client precise reasons.
//! The signature itself is checked by `jsonwebtoken::crypto::verify` (aws-lc).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::DecodingKey;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::keys::jwt_algorithm;
use crate::domain::{ClientKeys, KeyAlgorithm, KeyMaterial, PublicKey, LEEWAY_SECS};

/// The only `client_assertion_type` (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far ahead an assertion's `exp` may be. Client libraries default to an hour (Authlib,
/// Spring, nimbus): a shorter cap would break them, and every `jti` is remembered until
/// its `exp`, so a longer one would only cost memory.
pub const MAX_LIFETIME_SECS: i64 = 3600;
/// A `jti` is stored (as a digest) until `exp`: long ones are refused rather than hashed.
const MAX_JTI_CHARS: usize = 256;
/// Larger assertions are refused before any parsing (an RSA-8192 signature is ~1.4 kB).
const MAX_ASSERTION_BYTES: usize = 8 * 1024;

/// Why an assertion was refused. The `Display` is for the audit log; clients are told
/// more only once the signature proved the assertion theirs (`is_signed_by_client`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssertionError {
    #[error("not a JWS whose iss and sub are the same client id")]
    Malformed,
    #[error("alg {0} is not one client keys have (EdDSA or Ed25519, ES256, RS256)")]
    UnsupportedAlg(String),
    #[error("no registered key of the client has this kid and alg")]
    NoSuchKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("{0}")]
    Claims(String),
}

impl AssertionError {
    /// Whether the signature was verified (so only the key's holder sees the reason).
    pub fn is_signed_by_client(&self) -> bool {
        matches!(self, Self::Claims(_))
    }
}

/// What a verified assertion tells the store: the `jti` to use up, and its `exp`.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Extensions the signer says must be understood: none are, so any is refused.
    crit: Option<serde_json::Value>,
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims looked at; NumericDates may have fractions (RFC 7519 §2).
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    jti: Option<String>,
}

/// The three parts of a JWS in compact form.
fn parts(assertion: &str) -> Result<[&str; 3], AssertionError> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(AssertionError::Malformed);
    }
    let mut parts = assertion.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(claims), Some(signature), None) => Ok([header, claims, signature]),
        _ => Err(AssertionError::Malformed),
    }
}

/// A base64url JSON part.
fn json_of<T: DeserializeOwned>(part: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// The client an assertion claims to come from (`iss` = `sub`, a client id), read without
/// checking anything, to find the keys that will check it.
pub fn claimed_client(assertion: &str) -> Result<Uuid, AssertionError> {
    let [_, claims, _] = parts(assertion)?;
    let claims: Claims = json_of(claims).ok_or(AssertionError::Malformed)?;
    match (claims.iss, claims.sub) {
        (Some(iss), Some(sub)) if iss == sub => {
            Uuid::parse_str(&iss).map_err(|_| AssertionError::Malformed)
        }
        _ => Err(AssertionError::Malformed),
    }
}

/// The `alg`s an assertion may be signed with, as the metadata lists them: each key
/// algorithm by its JOSE name, and Ed25519 also by its RFC 9864 name.
pub const SIGNING_ALGS: [&str; 4] = ["EdDSA", "Ed25519", "ES256", "RS256"];

/// The key algorithm a header's `alg` names (one of `SIGNING_ALGS`; case-sensitive, unlike
/// an operator's `KeyAlgorithm::parse`).
fn key_alg(alg: &str) -> Result<KeyAlgorithm, AssertionError> {
    match alg {
        "EdDSA" | "Ed25519" => Ok(KeyAlgorithm::EdDsa),
        "ES256" => Ok(KeyAlgorithm::Es256),
        "RS256" => Ok(KeyAlgorithm::Rs256),
        other => Err(AssertionError::UnsupportedAlg(
            other.chars().take(32).collect(),
        )),
    }
}

fn decoding_key(key: &PublicKey) -> Option<DecodingKey> {
    match &key.material {
        KeyMaterial::Okp { x, .. } => DecodingKey::from_ed_components(x).ok(),
        KeyMaterial::Ec { x, y, .. } => DecodingKey::from_ec_components(x, y).ok(),
        KeyMaterial::Rsa { n, e } => DecodingKey::from_rsa_components(n, e).ok(),
    }
}

/// Every check of an assertion that needs no state: signed by one of `keys` with that
/// key's own algorithm (the header's `alg` only selects among them), `iss` = `sub` =
/// `client`, `aud` naming one of `audiences`, `exp` not past (with the leeway) and at most
/// `MAX_LIFETIME_SECS` (plus leeway) ahead, `nbf` and `iat` not in the future, a `jti`.
pub fn verify(
    assertion: &str,
    client: Uuid,
    keys: &ClientKeys,
    audiences: &[&str],
    now: DateTime<Utc>,
) -> Result<Checked, AssertionError> {
    let [header_part, claims_part, signature] = parts(assertion)?;
    let header: Header = json_of(header_part).ok_or(AssertionError::Malformed)?;
    if header.crit.is_some() {
        return Err(AssertionError::Malformed);
    }
    let alg = key_alg(&header.alg)?;
    // The key named by `kid` (or, without one, each key) — and only if it is of the
    // header's algorithm: an RSA key never checks an HS256 "signature" made with its
    // public half, and `none` names no key at all.
    let mut candidates = keys
        .keys()
        .iter()
        .filter(|k| k.alg == alg && header.kid.as_deref().is_none_or(|kid| kid == k.kid))
        .peekable();
    if candidates.peek().is_none() {
        return Err(AssertionError::NoSuchKey);
    }
    let signed = &assertion[..header_part.len() + 1 + claims_part.len()];
    let verified = candidates.any(|key| {
        decoding_key(key).is_some_and(|decoding| {
            jsonwebtoken::crypto::verify(
                signature,
                signed.as_bytes(),
                &decoding,
                jwt_algorithm(key.alg),
            )
            .unwrap_or(false)
        })
    });
    if !verified {
        return Err(AssertionError::BadSignature);
    }
    // From here on the client's own key vouches for the assertion: say what is wrong.
    let refuse = |reason: &str| {
        Err(AssertionError::Claims(format!(
            "the client assertion's {reason}"
        )))
    };
    let Some(claims) = json_of::<Claims>(claims_part) else {
        return refuse("claims are not a JSON object of the registered claims' types");
    };
    let id = client.to_string();
    if claims.iss.as_deref() != Some(id.as_str()) || claims.sub.as_deref() != Some(id.as_str()) {
        return refuse("iss and sub must both be the client id");
    }
    let named = match &claims.aud {
        Some(Audience::One(aud)) => audiences.contains(&aud.as_str()),
        Some(Audience::Many(auds)) => auds.iter().any(|aud| audiences.contains(&aud.as_str())),
        None => return refuse("aud is missing"),
    };
    if !named {
        return refuse("aud names neither this endpoint, the token endpoint nor the issuer");
    }
    let now = now.timestamp() as f64;
    let leeway = LEEWAY_SECS as f64;
    let Some(exp) = claims.exp else {
        return refuse("exp is missing");
    };
    if exp < now - leeway {
        return refuse("exp has passed");
    }
    if exp > now + (MAX_LIFETIME_SECS as f64) + leeway {
        return refuse(&format!(
            "exp is more than {MAX_LIFETIME_SECS} seconds ahead"
        ));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return refuse("nbf is in the future");
    }
    if claims.iat.is_some_and(|iat| iat > now + leeway) {
        return refuse("iat is in the future");
    }
    let Some(jti) = claims.jti.filter(|jti| !jti.is_empty()) else {
        return refuse("jti is missing");
    };
    if jti.chars().count() > MAX_JTI_CHARS {
        return refuse(&format!("jti is longer than {MAX_JTI_CHARS} characters"));
    }
    let Some(expires_at) = DateTime::from_timestamp(exp.ceil() as i64, 0) else {
        return refuse("exp is out of range");
    };
    Ok(Checked { jti, expires_at })
}

/// How many used assertions each client has in the replay history, as this process
/// recorded them, so that no client can grow the history without bound. Every used `jti`
/// is remembered until its `exp` plus a margin (up to an hour and 65 s; the caller passes
/// the instant the store forgets it): a client, or a
/// thief of its key, signing hour-long assertions as fast as it can would otherwise hold
/// memory (the file store keeps the history in memory) or rows (PostgreSQL) in proportion
/// to its rate, for an hour. Only an assertion whose signature verified is counted, so
/// only a holder of the client's key (or of one assertion it signed, for the moment its
/// replay takes) can fill a client's allowance. Counted before the store records the use,
/// under one lock, so concurrent uses cannot overshoot; taken back when the store answers
/// that it already had the use (a replay). The bound is the store's to within its pruning:
/// the store forgets a use up to a minute after this count does. The count restarts with
/// the process, and each PostgreSQL replica counts its own uses.
pub struct AssertionHistory {
    cap: usize,
    clients: Mutex<HashMap<Uuid, Remembered>>,
}

/// One client's remembered uses, by the second they are forgotten.
#[derive(Default)]
struct Remembered {
    total: usize,
    until: BTreeMap<i64, usize>,
}

impl Remembered {
    fn forget_through(&mut self, now: i64) {
        while let Some(first) = self.until.first_entry() {
            if *first.key() > now {
                break;
            }
            self.total -= first.remove();
        }
    }
}

impl AssertionHistory {
    /// At most `cap` remembered uses per client (MAX_CLIENT_ASSERTIONS).
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            clients: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Remembered>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more use of `client`'s, remembered until `until`, unless it already has
    /// `cap` remembered at `now`: then how long until the first of them is forgotten.
    pub fn reserve(
        &self,
        client: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), std::time::Duration> {
        let mut clients = self.lock();
        let remembered = clients.entry(client).or_default();
        remembered.forget_through(now.timestamp());
        if remembered.total >= self.cap {
            let first = remembered.until.keys().next().copied().unwrap_or(0);
            let wait = (first - now.timestamp()).max(1) as u64;
            return Err(std::time::Duration::from_secs(wait));
        }
        remembered.total += 1;
        *remembered.until.entry(until.timestamp()).or_default() += 1;
        Ok(())
    }

    /// Takes back a use `reserve` counted that the store already had (a replay).
    pub fn release(&self, client: Uuid, until: DateTime<Utc>) {
        let mut clients = self.lock();
        let Some(remembered) = clients.get_mut(&client) else {
            return;
        };
        let second = until.timestamp();
        if let Some(count) = remembered.until.get_mut(&second) {
            *count -= 1;
            remembered.total -= 1;
            if *count == 0 {
                remembered.until.remove(&second);
            }
        }
        if remembered.total == 0 {
            clients.remove(&client);
        }
    }

    /// Drops what is forgotten by `now`, and the clients left with nothing remembered.
    pub fn sweep(&self, now: DateTime<Utc>) {
        self.lock().retain(|_, remembered| {
            remembered.forget_through(now.timestamp());
            remembered.total > 0
        });
    }

    /// Uses counted for `client`.
    #[cfg(test)]
    fn remembered(&self, client: Uuid) -> usize {
        self.lock().get(&client).map_or(0, |r| r.total)
    }
}

/// A public key in PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo, as `openssl
/// pkey -pubout` writes it): Ed25519, P-256 or RSA, as the JWK a client is registered with.
pub fn public_key_from_pem(pem_text: &[u8]) -> Result<PublicKey, String> {
    use simple_asn1::ASN1Block::{BitString, Integer, ObjectIdentifier, Sequence};

    let block = pem::parse(pem_text).map_err(|e| format!("not PEM: {e}"))?;
    match block.tag() {
        "PUBLIC KEY" => {}
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            return Err(
                "this is a private key: register its public half (openssl pkey -in KEY -pubout)"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "expected a \"PUBLIC KEY\" PEM block, found \"{other}\""
            ))
        }
    }
    let unsupported = || "not an Ed25519, P-256 or RSA public key".to_string();
    let der = simple_asn1::from_der(block.contents()).map_err(|_| unsupported())?;
    // SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { algorithm OID, parameters }, BIT STRING }
    let [Sequence(_, spki)] = der.as_slice() else {
        return Err(unsupported());
    };
    let [Sequence(_, algorithm), BitString(_, _, public)] = spki.as_slice() else {
        return Err(unsupported());
    };
    let oid = |block: Option<&simple_asn1::ASN1Block>| match block {
        Some(ObjectIdentifier(_, oid)) => oid.as_vec::<u64>().ok(),
        _ => None,
    };
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let material =
        match oid(algorithm.first()).as_deref() {
            Some([1, 3, 101, 112]) if public.len() == 32 => KeyMaterial::Okp {
                crv: "Ed25519".into(),
                x: b64(public),
            },
            Some([1, 2, 840, 10045, 2, 1])
                if oid(algorithm.get(1)).as_deref() == Some(&[1, 2, 840, 10045, 3, 1, 7][..])
                    && public.len() == 65
                    && public[0] == 4 =>
            {
                KeyMaterial::Ec {
                    crv: "P-256".into(),
                    x: b64(&public[1..33]),
                    y: b64(&public[33..65]),
                }
            }
            Some([1, 2, 840, 10045, 2, 1]) => return Err(
                "EC keys must be on P-256 (ES256), their point uncompressed (as openssl writes it)"
                    .into(),
            ),
            Some([1, 2, 840, 113549, 1, 1, 1]) => {
                let rsa = simple_asn1::from_der(public).map_err(|_| unsupported())?;
                let [Sequence(_, members)] = rsa.as_slice() else {
                    return Err(unsupported());
                };
                let [Integer(_, n), Integer(_, e)] = members.as_slice() else {
                    return Err(unsupported());
                };
                KeyMaterial::Rsa {
                    n: b64(&n.to_bytes_be().1),
                    e: b64(&e.to_bytes_be().1),
                }
            }
            _ => return Err(unsupported()),
        };
    // The JWK's own checks (RSA size, lengths) apply to a PEM key too.
    let jwk = serde_json::to_string(&PublicKey::new(material, None).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    ClientKeys::parse_jwks(&jwk)
        .map(|keys| keys.keys()[0].clone())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const AUD: &str = "http://auth.test/api/v1/auth/token";

    /// A client key pair made the way `keys generate` makes ours: the private half signs
    /// test assertions, the public half is registered.
    fn pair(alg: KeyAlgorithm) -> (EncodingKey, PublicKey, Algorithm) {
        let dir = tempfile::tempdir().unwrap();
        let path = keys::generate(dir.path(), alg).unwrap();
        let key = keys::Key::from_pem(
            &std::fs::read(&path).unwrap(),
            &path,
            std::time::SystemTime::now(),
        )
        .unwrap();
        let jwk = serde_json::to_string(&json!({
            "kty": key.jwk.kty, "crv": key.jwk.crv, "x": key.jwk.x, "y": key.jwk.y,
            "n": key.jwk.n, "e": key.jwk.e,
        }))
        .unwrap();
        let public = ClientKeys::parse_jwks(&jwk).unwrap().keys()[0].clone();
        (key.encoding, public, key.algorithm)
    }

    fn sign(
        key: &EncodingKey,
        alg: Algorithm,
        kid: Option<&str>,
        claims: serde_json::Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn claims(client: Uuid, now: i64) -> serde_json::Value {
        json!({ "iss": client.to_string(), "sub": client.to_string(), "aud": AUD,
                "exp": now + 60, "iat": now, "jti": Uuid::new_v4().to_string() })
    }

    #[test]
    fn an_assertion_signed_with_a_registered_key_passes_for_each_algorithm() {
        for alg in [
            KeyAlgorithm::EdDsa,
            KeyAlgorithm::Es256,
            KeyAlgorithm::Rs256,
        ] {
            let (signing, public, jwt_alg) = pair(alg);
            let keys = ClientKeys::new(vec![public.clone()]).unwrap();
            let client = Uuid::new_v4();
            let now = Utc::now();
            let body = claims(client, now.timestamp());
            let assertion = sign(&signing, jwt_alg, Some(&public.kid), body.clone());
            assert_eq!(claimed_client(&assertion), Ok(client));
            let checked = verify(&assertion, client, &keys, &["x", AUD], now).unwrap();
            assert_eq!(checked.jti, body["jti"].as_str().unwrap());
            // Without a kid, every key of the right algorithm is tried.
            let unnamed = sign(&signing, jwt_alg, None, claims(client, now.timestamp()));
            assert!(
                verify(&unnamed, client, &keys, &[AUD], now).is_ok(),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn public_key_pems_become_the_same_jwks_as_their_private_halves() {
        for alg in [
            KeyAlgorithm::EdDsa,
            KeyAlgorithm::Es256,
            KeyAlgorithm::Rs256,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = keys::generate(dir.path(), alg).unwrap();
            let private = std::fs::read(&path).unwrap();
            let key = keys::Key::from_pem(&private, &path, std::time::SystemTime::now()).unwrap();
            let public = key.public_pem();
            let jwk = public_key_from_pem(public.as_bytes()).unwrap();
            // The kid is the RFC 7638 thumbprint, the same one our own JWKS publishes.
            assert_eq!(jwk.kid, key.kid, "{alg:?}");
            assert!(public_key_from_pem(&private)
                .unwrap_err()
                .contains("private key"));
        }
        assert!(public_key_from_pem(b"nonsense")
            .unwrap_err()
            .contains("PEM"));
    }

    #[test]
    fn wrong_keys_audiences_clients_and_times_are_refused() {
        let (signing, public, alg) = pair(KeyAlgorithm::EdDsa);
        let (other, other_public, _) = pair(KeyAlgorithm::EdDsa);
        let keys = ClientKeys::new(vec![public.clone()]).unwrap();
        let client = Uuid::new_v4();
        let now = Utc::now();
        let t = now.timestamp();
        let check = |assertion: &str| verify(assertion, client, &keys, &[AUD], now);
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut body = claims(client, t);
            change(&mut body);
            sign(&signing, alg, Some(&public.kid), body)
        };
        // Another key, under our kid or its own.
        let forged = sign(&other, alg, Some(&public.kid), claims(client, t));
        assert_eq!(check(&forged), Err(AssertionError::BadSignature));
        let foreign = sign(&other, alg, Some(&other_public.kid), claims(client, t));
        assert_eq!(check(&foreign), Err(AssertionError::NoSuchKey));
        // An HMAC "signature" keyed with public material is never tried.
        let hs = sign(
            &EncodingKey::from_secret(public.kid.as_bytes()),
            Algorithm::HS256,
            Some(&public.kid),
            claims(client, t),
        );
        assert_eq!(
            check(&hs),
            Err(AssertionError::UnsupportedAlg("HS256".into()))
        );
        // Nor an unsigned one, nor one whose header demands extensions.
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let body = part(claims(client, t));
        let none = format!("{}.{body}.", part(json!({"alg": "none"})));
        assert_eq!(
            check(&none),
            Err(AssertionError::UnsupportedAlg("none".into()))
        );
        let signed = sign(&signing, alg, Some(&public.kid), claims(client, t));
        let sig = signed.rsplit('.').next().unwrap();
        let crit = format!(
            "{}.{body}.{sig}",
            part(json!({"alg": "EdDSA", "crit": ["b64"]}))
        );
        assert_eq!(check(&crit), Err(AssertionError::Malformed));
        // RFC 9864's name for the same algorithm, as openid-client and jose now send it.
        let header = part(json!({"alg": "Ed25519", "kid": public.kid}));
        let message = format!("{header}.{body}");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &signing, alg).unwrap();
        assert!(check(&format!("{message}.{signature}")).is_ok());
        let tampered = format!("{header}.{}.{signature}", part(claims(client, t)));
        assert_eq!(check(&tampered), Err(AssertionError::BadSignature));
        let refused = |a: &str| check(a).unwrap_err().is_signed_by_client();
        assert!(refused(&with(
            &|c| c["aud"] = json!("http://elsewhere/token")
        )));
        assert!(check(&with(&|c| c["aud"] = json!(["x", AUD]))).is_ok());
        assert!(refused(&with(&|c| c["exp"] = json!(t - 60))));
        assert!(refused(&with(&|c| c["exp"] = json!(t + 3700))));
        assert!(check(&with(&|c| c["exp"] = json!(t + 3600))).is_ok());
        assert!(check(&with(&|c| c["exp"] = json!(t as f64 + 30.5))).is_ok());
        assert!(refused(&with(&|c| c["exp"] = json!("soon"))));
        assert!(refused(&with(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        })));
        assert!(refused(&with(&|c| c["nbf"] = json!(t + 60))));
        assert!(refused(&with(&|c| c["iat"] = json!(t + 60))));
        assert!(refused(&with(&|c| c
            .as_object_mut()
            .unwrap()
            .remove("jti")
            .map(drop)
            .unwrap_or(()))));
        assert!(refused(&with(&|c| c
            .as_object_mut()
            .unwrap()
            .remove("exp")
            .map(drop)
            .unwrap_or(()))));
        assert!(refused(&with(&|c| c["jti"] = json!("j".repeat(257)))));
        // Signed, but for another client.
        let elsewhere = Uuid::new_v4().to_string();
        assert!(refused(&with(&|c| {
            c["iss"] = json!(elsewhere);
            c["sub"] = json!(elsewhere);
        })));
        assert_eq!(
            claimed_client(&with(&|c| c["sub"] = json!("someone"))),
            Err(AssertionError::Malformed)
        );
        assert_eq!(claimed_client("not.a.jwt"), Err(AssertionError::Malformed));
        assert_eq!(
            claimed_client(&"a".repeat(9000)),
            Err(AssertionError::Malformed)
        );
    }

    #[test]
    fn the_history_holds_at_most_cap_uses_per_client_until_they_are_forgotten() {
        let history = AssertionHistory::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let at = |secs: i64| now + chrono::Duration::seconds(secs);
        history.reserve(a, at(10), now).unwrap();
        history.reserve(a, at(20), now).unwrap();
        // Full: the wait is until the first use is forgotten.
        assert_eq!(
            history.reserve(a, at(30), now),
            Err(std::time::Duration::from_secs(10))
        );
        // Another client has its own allowance.
        history.reserve(b, at(30), now).unwrap();
        // A use the store did not remember (a replay) frees its place at once.
        history.release(a, at(20));
        history.reserve(a, at(30), now).unwrap();
        assert_eq!(history.remembered(a), 2);
        // Forgotten at its second: room again.
        history.reserve(a, at(40), at(10)).unwrap();
        assert_eq!(history.remembered(a), 2);
        history.sweep(at(40));
        assert_eq!((history.remembered(a), history.remembered(b)), (0, 0));
        assert!(history.lock().is_empty());
    }

    #[test]
    fn releasing_what_time_or_a_sweep_already_forgot_changes_nothing() {
        let history = AssertionHistory::new(1);
        let client = Uuid::new_v4();
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let at = |secs: i64| now + chrono::Duration::seconds(secs);
        // A client never seen.
        history.release(client, at(10));
        assert_eq!(history.remembered(client), 0);
        history.reserve(client, at(10), now).unwrap();
        // Forgotten by time when the next use comes; then the late release of the first.
        history.reserve(client, at(20), at(10)).unwrap();
        history.release(client, at(10));
        assert_eq!(history.remembered(client), 1);
        assert!(history.reserve(client, at(30), at(11)).is_err());
        // Swept away, then released.
        history.sweep(at(20));
        history.release(client, at(20));
        assert_eq!(history.remembered(client), 0);
        history.reserve(client, at(30), at(20)).unwrap();
    }

    #[test]
    fn concurrent_uses_never_overshoot_the_cap() {
        let history = std::sync::Arc::new(AssertionHistory::new(100));
        let client = Uuid::new_v4();
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(60);
        let accepted: usize = (0..8)
            .map(|_| {
                let history = history.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| history.reserve(client, until, now).is_ok())
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(accepted, 100);
        assert_eq!(history.remembered(client), 100);
    }
}
