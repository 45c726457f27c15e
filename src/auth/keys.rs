//! Signing keys from KEYS_DIR: PKCS#8 PEM files, each pinned to its own algorithm and
//! published by its RFC 7638 thumbprint.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::Serialize;

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
}

/// The public half of a key as a JWK (RFC 7517), with the members RFC 7638 hashes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublicJwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
}

/// One key: the private half signs, the public half verifies, and only with `algorithm`.
pub struct Key {
    pub kid: String,
    pub algorithm: Algorithm,
    pub jwk: PublicJwk,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub path: PathBuf,
    pub modified: SystemTime,
}

impl Key {
    /// Parses a PKCS#8 PEM private key (Ed25519; v1 or v2 encoding).
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
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| invalid(format!("not a usable Ed25519 PKCS#8 key: {e}")))?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let kid = thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &x)]);
        let decoding = DecodingKey::from_ed_components(&x).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            jwk: PublicJwk {
                kty: "OKP",
                crv: "Ed25519",
                x,
                kid: kid.clone(),
                alg: "EdDSA",
                use_: "sig",
            },
            kid,
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der),
            decoding,
            path: path.to_owned(),
            modified,
        })
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
/// The members here are base64url or fixed names, so they need no JSON escaping.
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

/// Every key in KEYS_DIR, and the one that signs.
pub struct KeySet {
    keys: Vec<Key>,
    signer: usize,
}

impl KeySet {
    /// Loads every `*.pem` in `dir`; generates an Ed25519 key (mode 0600) when there is none.
    ///
    /// The signer is the newest key that has been published for at least `publish_delay`
    /// (so verifiers caching the JWKS already know it); when no key is that old, as on a
    /// first start or a fresh deployment, the oldest key signs at once.
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
        let mut keys = Self::read_dir(dir)?;
        if keys.is_empty() {
            let path = generate_ed25519(dir)?;
            tracing::info!(path = %path.display(), "generated a new Ed25519 signing key");
            keys = Self::read_dir(dir)?;
        }
        keys.sort_by_key(|k| k.modified);
        let now = SystemTime::now();
        let signer = keys
            .iter()
            .rposition(|k| now.duration_since(k.modified).unwrap_or_default() >= publish_delay)
            .unwrap_or(0);
        Ok(Self { keys, signer })
    }

    fn read_dir(dir: &Path) -> Result<Vec<Key>, KeyError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| KeyError::Io { path, source }
        };
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let meta = fs::metadata(&path).map_err(io(&path))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "private key file is readable by group or others; chmod 600 it");
            }
            let text = fs::read(&path).map_err(io(&path))?;
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            keys.push(Key::from_pem(&text, &path, modified)?);
        }
        Ok(keys)
    }

    pub fn signer(&self) -> &Key {
        &self.keys[self.signer]
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn jwks(&self) -> Vec<PublicJwk> {
        self.keys.iter().map(|k| k.jwk.clone()).collect()
    }
}

/// Writes a new Ed25519 key as PKCS#8 v1 PEM (the form OpenSSL writes and every JOSE
/// library reads), atomically and with mode 0600 from the first byte.
pub fn generate_ed25519(dir: &Path) -> Result<PathBuf, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: dir.display().to_string(),
        reason,
    };
    let pair =
        Ed25519KeyPair::generate().map_err(|e| invalid(format!("key generation failed: {e}")))?;
    let der = pair
        .to_pkcs8v1()
        .map_err(|e| invalid(format!("PKCS#8 encoding failed: {e}")))?;
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let kid = thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &x)]);
    let name = format!("ed25519-{}.pem", &kid[..16]);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(path)
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
        assert_eq!(again.jwks().len(), 1);
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
