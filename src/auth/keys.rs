//! Signing keys from KEYS_DIR: PKCS#8 PEM files (Ed25519, P-256 or RSA ≥ 2048), each
//! pinned to its own algorithm and published by its RFC 7638 thumbprint.
//!
//! Rotation without downtime: a new key file is published in the JWKS as soon as it
//! appears, but signs only once it is KEY_PUBLISH_DELAY old (its file's mtime), so every
//! verifier that caches the JWKS for at most that long already knows it.
//!
//! Two lines of keys, each rotated this way: access tokens are signed by the keys of
//! KEYS_DIR (Ed25519 by default), OpenID Connect ID tokens by the RSA keys whose file name
//! starts with `id-token-` (RS256: OIDC Core §15.1 says every relying party supports it).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::domain::thumbprint;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("KEYS_DIR {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// The public half of a key as a JWK (RFC 7517).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    pub kty: &'static str,
    pub kid: String,
    pub alg: &'static str,
    /// OKP and EC keys.
    pub crv: Option<&'static str>,
    pub x: Option<String>,
    /// EC keys.
    pub y: Option<String>,
    /// RSA keys.
    pub n: Option<String>,
    pub e: Option<String>,
}

pub use crate::domain::KeyAlgorithm;

/// The `jsonwebtoken` algorithm a key of `algorithm` signs and verifies with.
pub fn jwt_algorithm(algorithm: KeyAlgorithm) -> Algorithm {
    match algorithm {
        KeyAlgorithm::EdDsa => Algorithm::EdDSA,
        KeyAlgorithm::Es256 => Algorithm::ES256,
        KeyAlgorithm::Rs256 => Algorithm::RS256,
    }
}

/// One key: the private half signs, the public half verifies, and only with `algorithm`.
pub struct Key {
    pub kid: String,
    pub algorithm: Algorithm,
    pub jwk: PublicJwk,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public half as SubjectPublicKeyInfo DER (what `public_pem` armours).
    pub public_der: Vec<u8>,
    pub path: PathBuf,
    /// When the key was published: it signs from `modified + publish delay` on.
    pub modified: SystemTime,
    /// Which tokens it signs.
    pub purpose: KeyPurpose,
}

/// Which tokens a key signs (every key verifies what it signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Access tokens and the service's own signed values.
    Access,
    /// OpenID Connect ID tokens: an RSA key in a file named `id-token-*.pem`.
    IdToken,
}

impl KeyPurpose {
    /// File names of ID-token keys start with this.
    pub const ID_TOKEN_PREFIX: &'static str = "id-token-";

    fn of(path: &Path) -> Self {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(Self::ID_TOKEN_PREFIX) {
            Self::IdToken
        } else {
            Self::Access
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::IdToken => "id_token",
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Key {
    /// Parses a PKCS#8 PEM private key: Ed25519 (v1 or v2), P-256 or RSA of 2048+ bits.
    pub fn from_pem(pem_text: &[u8], path: &Path, modified: SystemTime) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let block = pem::parse(pem_text).map_err(|e| invalid(format!("not PEM: {e}")))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(invalid(format!(
                "expected a PKCS#8 \"PRIVATE KEY\" PEM block, found \"{}\"",
                block.tag()
            )));
        }
        let der = block.contents();
        let jwt_err = |e: jsonwebtoken::errors::Error| invalid(e.to_string());
        let spki = |der: Result<aws_lc_rs::encoding::PublicKeyX509Der<'static>, _>| {
            der.map(|d| d.as_ref().to_vec())
                .map_err(|_| invalid("its public key cannot be encoded".into()))
        };
        let (algorithm, jwk, encoding, decoding, public_der) = if let Ok(pair) =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        {
            let x = b64(pair.public_key().as_ref());
            let kid = thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &x)]);
            let decoding = DecodingKey::from_ed_components(&x).map_err(jwt_err)?;
            let jwk = PublicJwk {
                kty: "OKP",
                kid,
                alg: "EdDSA",
                crv: Some("Ed25519"),
                x: Some(x),
                y: None,
                n: None,
                e: None,
            };
            (
                KeyAlgorithm::EdDsa,
                jwk,
                EncodingKey::from_ed_der(der),
                decoding,
                spki(pair.public_key().as_der())?,
            )
        } else if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
            let point = pair.public_key().as_ref();
            let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
            let kid = thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &x), ("y", &y)]);
            let decoding = DecodingKey::from_ec_components(&x, &y).map_err(jwt_err)?;
            let jwk = PublicJwk {
                kty: "EC",
                kid,
                alg: "ES256",
                crv: Some("P-256"),
                x: Some(x),
                y: Some(y),
                n: None,
                e: None,
            };
            (
                KeyAlgorithm::Es256,
                jwk,
                EncodingKey::from_ec_der(der),
                decoding,
                spki(pair.public_key().as_der())?,
            )
        } else if let Ok(pair) = aws_lc_rs::rsa::KeyPair::from_pkcs8(der) {
            if pair.public_modulus_len() < 256 {
                return Err(invalid("RSA keys must have at least 2048 bits".into()));
            }
            let public = pair.public_key();
            let n = b64(public.modulus().big_endian_without_leading_zero());
            let e = b64(public.exponent().big_endian_without_leading_zero());
            let kid = thumbprint(&[("e", &e), ("kty", "RSA"), ("n", &n)]);
            let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(jwt_err)?;
            let encoding = EncodingKey::from_rsa_pem(pem_text).map_err(jwt_err)?;
            let jwk = PublicJwk {
                kty: "RSA",
                kid,
                alg: "RS256",
                crv: None,
                x: None,
                y: None,
                n: Some(n),
                e: Some(e),
            };
            let public_der = spki(public.as_der())?;
            (KeyAlgorithm::Rs256, jwk, encoding, decoding, public_der)
        } else {
            return Err(invalid(
                "not an Ed25519, P-256 or RSA PKCS#8 private key".into(),
            ));
        };
        let purpose = KeyPurpose::of(path);
        if purpose == KeyPurpose::IdToken && algorithm != KeyAlgorithm::Rs256 {
            return Err(invalid(
                "an id-token-*.pem key signs ID tokens with RS256: it must be an RSA key".into(),
            ));
        }
        Ok(Self {
            purpose,
            kid: jwk.kid.clone(),
            algorithm: jwt_algorithm(algorithm),
            jwk,
            encoding,
            decoding,
            public_der,
            path: path.to_owned(),
            modified,
        })
    }
}

impl Key {
    /// The public half as a `PUBLIC KEY` PEM, as `openssl pkey -pubout` writes it.
    pub fn public_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.public_der.clone()))
    }
}

/// What a key is doing at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Published, not signing yet: it will sign once it has been published long enough.
    Next,
    /// Signs new tokens.
    Signing,
    /// Published only, so the tokens it signed still verify.
    Previous,
}

/// Every key in KEYS_DIR, oldest first.
pub struct KeySet {
    keys: Vec<Key>,
    publish_delay: Duration,
    /// Names and mtimes of the files, to notice changes cheaply.
    fingerprint: Vec<(PathBuf, SystemTime)>,
}

impl KeySet {
    /// Loads every `*.pem` in `dir`; generates an Ed25519 key (mode 0600) when there is none,
    /// and an RSA key for ID tokens when there is none of those (a key directory that
    /// cannot be written keeps working: ID tokens are then signed by the access-token key).
    pub fn load_or_generate(dir: &Path, publish_delay: Duration) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.display().to_string(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        // Replicas sharing a KEYS_DIR may start at the same instant: one generates each
        // missing key, the others wait on the lock and then find it.
        let lacks_signing_key = |files: &[(PathBuf, SystemTime)]| {
            !files
                .iter()
                .any(|(p, _)| KeyPurpose::of(p) == KeyPurpose::Access)
        };
        if lacks_signing_key(&fingerprint(dir)?) {
            let _lock = generation_lock(dir)?;
            if lacks_signing_key(&fingerprint(dir)?) {
                let path = generate(dir, KeyAlgorithm::EdDsa)?;
                tracing::info!(path = %path.display(), "generated a new Ed25519 signing key");
            }
        }
        let lacks_id_key = |files: &[(PathBuf, SystemTime)]| {
            !files
                .iter()
                .any(|(p, _)| KeyPurpose::of(p) == KeyPurpose::IdToken)
        };
        if lacks_id_key(&fingerprint(dir)?) {
            let _lock = generation_lock(dir)?;
            if lacks_id_key(&fingerprint(dir)?) {
                match generate_id_token_key(dir) {
                    Ok(path) => {
                        tracing::info!(path = %path.display(), "generated an RSA key for OpenID Connect ID tokens")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot add an RSA key for ID tokens to KEYS_DIR; ID tokens are signed by the access-token key")
                    }
                }
            }
        }
        Self::load(dir, publish_delay)
    }

    /// Loads every `*.pem` in `dir`; there must be at least one.
    pub fn load(dir: &Path, publish_delay: Duration) -> Result<Self, KeyError> {
        let fingerprint = fingerprint(dir)?;
        let mut keys = Vec::new();
        for (path, modified) in &fingerprint {
            let io = |source| KeyError::Io {
                path: path.display().to_string(),
                source,
            };
            let meta = fs::metadata(path).map_err(io)?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "private key file is readable by group or others; chmod 600 it");
            }
            let text = fs::read(path).map_err(io)?;
            keys.push(Key::from_pem(&text, path, *modified)?);
        }
        if !keys.iter().any(|k| k.purpose == KeyPurpose::Access) {
            return Err(KeyError::Refused(format!(
                "KEYS_DIR {}: no *.pem key that signs access tokens (id-token-*.pem keys sign ID tokens only)",
                dir.display()
            )));
        }
        keys.sort_by_key(|k| k.modified);
        Ok(Self {
            keys,
            publish_delay,
            fingerprint,
        })
    }

    /// Whether the files in `dir` changed since this set was loaded.
    pub fn is_stale(&self, dir: &Path) -> bool {
        fingerprint(dir).is_ok_and(|now| now != self.fingerprint)
    }

    /// The key that signs access tokens at `now` (`signer_of`; `load` makes sure there is
    /// one).
    pub fn signer_at(&self, now: SystemTime) -> &Key {
        self.signer_of(KeyPurpose::Access, now)
            .expect("a key set has an access-token key")
    }

    /// The key of `purpose` that signs at `now`: the newest one published for at least the
    /// delay, or, when none is that old (a first start, a fresh deployment), the oldest.
    fn signer_of(&self, purpose: KeyPurpose, now: SystemTime) -> Option<&Key> {
        let ready =
            |k: &&Key| now.duration_since(k.modified).unwrap_or_default() >= self.publish_delay;
        let mut line = self.keys.iter().filter(|k| k.purpose == purpose);
        let oldest = line.next()?;
        Some(
            self.keys
                .iter()
                .rev()
                .filter(|k| k.purpose == purpose)
                .find(ready)
                .unwrap_or(oldest),
        )
    }

    pub fn signer(&self) -> &Key {
        self.signer_at(SystemTime::now())
    }

    /// The key that signs ID tokens now: the ID-token line's signer, or the access-token
    /// signer when KEYS_DIR has no ID-token key.
    pub fn id_token_signer(&self) -> &Key {
        let now = SystemTime::now();
        self.signer_of(KeyPurpose::IdToken, now)
            .unwrap_or_else(|| self.signer_at(now))
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn status(&self, key: &Key, now: SystemTime) -> KeyStatus {
        let Some(signer) = self.signer_of(key.purpose, now) else {
            return KeyStatus::Previous;
        };
        if signer.kid == key.kid {
            KeyStatus::Signing
        } else if key.modified > signer.modified {
            KeyStatus::Next
        } else {
            KeyStatus::Previous
        }
    }

    /// When `key` stopped signing (`None` while it signs or has not signed yet).
    pub fn stopped_signing_at(&self, key: &Key, now: SystemTime) -> Option<SystemTime> {
        if self.status(key, now) != KeyStatus::Previous {
            return None;
        }
        // It signed until the next newer key of its line became ready to sign.
        let successor = self
            .keys
            .iter()
            .find(|k| k.purpose == key.purpose && k.modified > key.modified)?;
        Some(successor.modified + self.publish_delay)
    }

    pub fn jwks(&self) -> Vec<PublicJwk> {
        self.keys.iter().map(|k| k.jwk.clone()).collect()
    }

    /// Stops publishing `kid` by renaming its file to `*.pem.retired`. Refused while a
    /// token it signed may still be valid (`token_ttl` after it stopped signing), unless
    /// `force`; always refused for the only key or the signing key.
    pub fn retire(&self, kid: &str, token_ttl: Duration, force: bool) -> Result<PathBuf, KeyError> {
        let key = self
            .get(kid)
            .ok_or_else(|| KeyError::Refused(format!("no key with kid {kid}")))?;
        let now = SystemTime::now();
        match self.status(key, now) {
            KeyStatus::Signing => {
                return Err(KeyError::Refused(format!(
                    "key {kid} is the signing key; rotate first and wait until the new key signs"
                )))
            }
            KeyStatus::Previous | KeyStatus::Next => {}
        }
        if !force {
            let safe_from = self.stopped_signing_at(key, now).map(|stopped| {
                stopped + token_ttl + Duration::from_secs(crate::domain::LEEWAY_SECS)
            });
            if let Some(safe_from) = safe_from.filter(|t| *t > now) {
                let wait = safe_from.duration_since(now).unwrap_or_default().as_secs() + 1;
                return Err(KeyError::Refused(format!(
                    "tokens signed by key {kid} may still be valid for {wait} s; retire it later or use --force"
                )));
            }
        }
        let retired = key.path.with_extension("pem.retired");
        fs::rename(&key.path, &retired).map_err(|source| KeyError::Io {
            path: key.path.display().to_string(),
            source,
        })?;
        Ok(retired)
    }
}

/// The lock key generation in `dir` holds, released when dropped. `None` on a read-only
/// mount, which has no lock file to make (and where no key can be generated anyway).
pub(crate) fn generation_lock(dir: &Path) -> Result<Option<fs::File>, KeyError> {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(".generate.lock"));
    match lock {
        Ok(lock) => {
            lock.lock().map_err(|source| KeyError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            Ok(Some(lock))
        }
        Err(_) => Ok(None),
    }
}

fn fingerprint(dir: &Path) -> Result<Vec<(PathBuf, SystemTime)>, KeyError> {
    let io = |source| KeyError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let modified = fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((path, modified));
    }
    files.sort();
    Ok(files)
}

/// Writes a new access-token key as PKCS#8 v1 PEM (the form OpenSSL writes and every JOSE
/// library reads), atomically and with mode 0600 from the first byte.
pub fn generate(dir: &Path, algorithm: KeyAlgorithm) -> Result<PathBuf, KeyError> {
    generate_named(dir, algorithm, "")
}

/// Writes a new RSA-2048 key for ID tokens (`id-token-rs256-….pem`).
pub fn generate_id_token_key(dir: &Path) -> Result<PathBuf, KeyError> {
    generate_named(dir, KeyAlgorithm::Rs256, KeyPurpose::ID_TOKEN_PREFIX)
}

fn generate_named(dir: &Path, algorithm: KeyAlgorithm, prefix: &str) -> Result<PathBuf, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: dir.display().to_string(),
        reason,
    };
    let fail = |e: aws_lc_rs::error::Unspecified| invalid(format!("key generation failed: {e}"));
    let der: Vec<u8> = match algorithm {
        KeyAlgorithm::EdDsa => Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(fail)?
            .as_ref()
            .to_vec(),
        KeyAlgorithm::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .map_err(fail)?
            .as_ref()
            .to_vec(),
        KeyAlgorithm::Rs256 => aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map_err(fail)?
            .as_ref()
            .to_vec(),
    };
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
    let key = Key::from_pem(text.as_bytes(), dir, SystemTime::now())?;
    let name = format!(
        "{prefix}{}-{}.pem",
        algorithm.jose().to_lowercase(),
        &key.kid[..16]
    );
    write_private(dir, &name, text.as_bytes())
}

/// Writes `bytes` to `dir/name` atomically (a temp file renamed into place, both synced)
/// and with mode 0600 from the first byte: how every secret in KEYS_DIR is written. A
/// temp file left by a crash is replaced, never reused with whatever mode it had.
pub(crate) fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, KeyError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(path)
}

/// An Ed25519 key, the default (kept for callers that need no choice).
pub fn generate_ed25519(dir: &Path) -> Result<PathBuf, KeyError> {
    generate(dir, KeyAlgorithm::EdDsa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_8037_appendix_a3() {
        // RFC 8037 A.3: the Ed25519 example key's thumbprint.
        let kid = thumbprint(&[
            ("crv", "Ed25519"),
            ("kty", "OKP"),
            ("x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
        ]);
        assert_eq!(kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn thumbprint_matches_rfc_7638_section_3_1() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let kid = thumbprint(&[("e", "AQAB"), ("kty", "RSA"), ("n", n)]);
        assert_eq!(kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn a_generated_key_is_private_and_loads_back_as_the_signer() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeySet::load_or_generate(dir.path(), Duration::from_secs(600)).unwrap();
        let signer = keys.signer();
        assert_eq!(
            fs::metadata(&signer.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = KeySet::load_or_generate(dir.path(), Duration::from_secs(600)).unwrap();
        assert_eq!(again.signer().kid, signer.kid);
        assert_eq!(signer.jwk.alg, "EdDSA");
        // Beside it, the RSA key that signs ID tokens.
        assert_eq!(again.jwks().len(), 2);
        let id = again.id_token_signer();
        assert_eq!((id.jwk.alg, id.purpose), ("RS256", KeyPurpose::IdToken));
    }

    #[test]
    fn every_algorithm_generates_loads_and_is_pinned() {
        for alg in [
            KeyAlgorithm::EdDsa,
            KeyAlgorithm::Es256,
            KeyAlgorithm::Rs256,
        ] {
            let dir = tempfile::tempdir().unwrap();
            generate(dir.path(), alg).unwrap();
            let keys = KeySet::load(dir.path(), Duration::ZERO).unwrap();
            let key = keys.signer();
            assert_eq!(key.jwk.alg, alg.jose());
            assert_eq!(key.algorithm, jwt_algorithm(alg));
        }
    }

    #[test]
    fn a_new_key_is_published_at_once_but_signs_only_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate(dir.path(), KeyAlgorithm::EdDsa).unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        generate(dir.path(), KeyAlgorithm::Es256).unwrap();
        let keys = KeySet::load(dir.path(), Duration::from_secs(600)).unwrap();
        assert_eq!(keys.jwks().len(), 2);
        let now = SystemTime::now();
        assert_eq!(keys.signer_at(now).jwk.alg, "EdDSA");
        assert_eq!(
            keys.signer_at(now + Duration::from_secs(601)).jwk.alg,
            "ES256"
        );
        let new = &keys.keys()[1];
        assert_eq!(keys.status(new, now), KeyStatus::Next);
        // The old key still signs: retiring it is refused.
        let old_kid = keys.keys()[0].kid.clone();
        assert!(keys
            .retire(&old_kid, Duration::from_secs(900), false)
            .is_err());
    }

    #[test]
    fn each_line_of_keys_rotates_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        let age = |path: &Path| {
            fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(past)
                .unwrap()
        };
        age(&generate(dir.path(), KeyAlgorithm::EdDsa).unwrap());
        age(&generate_id_token_key(dir.path()).unwrap());
        // A new ID-token key, newer than everything: it does not take over access tokens,
        // and signs ID tokens only after the delay.
        generate_id_token_key(dir.path()).unwrap();
        let keys = KeySet::load(dir.path(), Duration::from_secs(600)).unwrap();
        let now = SystemTime::now();
        assert_eq!(keys.signer_at(now).jwk.alg, "EdDSA");
        let later = now + Duration::from_secs(601);
        assert_eq!(keys.signer_at(later).jwk.alg, "EdDSA");
        let old_id = keys.id_token_signer().kid.clone();
        let new_id = keys.signer_of(KeyPurpose::IdToken, later).unwrap();
        assert_ne!(new_id.kid, old_id);
        assert_eq!(
            keys.status(keys.get(&old_id).unwrap(), now),
            KeyStatus::Signing
        );
        assert_eq!(keys.status(new_id, now), KeyStatus::Next);
        // An ID-token file must hold an RSA key.
        let bad = dir.path().join("id-token-bad.pem");
        fs::copy(&keys.signer().path, &bad).unwrap();
        assert!(KeySet::load(dir.path(), Duration::ZERO).is_err());
    }

    #[test]
    fn a_non_key_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
        let err = KeySet::load_or_generate(dir.path(), Duration::ZERO)
            .err()
            .unwrap();
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }
}
