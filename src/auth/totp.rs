//! Second factors without HTTP: TOTP codes (RFC 6238, with totp-rs), the sealing of TOTP
//! secrets at rest (AES-256-GCM with a key kept in KEYS_DIR), the enrolment's otpauth URI
//! and QR code, and recovery codes.

use std::fs;
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use totp_rs::{Algorithm, Secret, TOTP};
use uuid::Uuid;

use super::keys::KeyError;

/// Seconds per TOTP time step, and digits per code (what every authenticator app uses).
pub const STEP_SECS: u64 = 30;
pub const DIGITS: usize = 6;
/// Steps of clock drift accepted either way.
pub const DRIFT_STEPS: i64 = 1;
/// The file in KEYS_DIR holding the key that seals TOTP secrets (not a `*.pem`: it signs
/// nothing and is never published).
pub const SEAL_KEY_FILE: &str = "mfa-seal.key";

/// The key TOTP secrets are sealed with: lose it and every TOTP enrolment must be redone
/// (recovery codes still work), so it lives and is backed up with the signing keys.
pub struct SealKey(LessSafeKey);

impl SealKey {
    /// Loads KEYS_DIR's seal key, generating it (mode 0600) if there is none.
    pub fn load_or_generate(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(SEAL_KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            let _lock = super::keys::generation_lock(dir)?;
            if !path.exists() {
                let mut bytes = [0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
                super::keys::write_private(
                    dir,
                    SEAL_KEY_FILE,
                    URL_SAFE_NO_PAD.encode(bytes).as_bytes(),
                )?;
                tracing::info!(path = %path.display(), "generated the key that seals TOTP secrets");
            }
        }
        let text = fs::read_to_string(&path).map_err(io)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| KeyError::Invalid {
                path: path.display().to_string(),
                reason: "expected 32 bytes, base64url".into(),
            })?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes make an AES-256 key");
        Ok(Self(LessSafeKey::new(key)))
    }

    /// `secret` sealed for `user` (the user id is authenticated data: a sealed secret
    /// copied onto another account does not open there).
    pub fn seal(&self, user: Uuid, secret: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system CSPRNG is available");
        let mut sealed = secret.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(user.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The secret `sealed` holds for `user`; `None` if it was sealed with another key or
    /// for another account, or altered.
    pub fn open(&self, user: Uuid, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut rest = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(user.as_bytes()), &mut rest)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// A new TOTP secret: 160 random bits (RFC 4226 §4 recommends them).
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 20];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
    bytes
}

/// The secret as people type it into an authenticator app: base32, no padding.
pub fn encoded(secret: &[u8]) -> String {
    Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

fn totp(secret: &[u8], digits: usize) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, digits, 0, STEP_SECS, secret.to_vec())
}

/// The code of time step `step` (RFC 6238: HMAC-SHA1, 6 digits).
pub fn code_at_step(secret: &[u8], step: i64) -> String {
    totp(secret, DIGITS).generate(step.max(0) as u64 * STEP_SECS)
}

/// The time step of Unix time `secs`.
pub fn step_of(secs: i64) -> i64 {
    secs.div_euclid(STEP_SECS as i64)
}

/// The step `code` is right for, within ±`DRIFT_STEPS` of `now_secs`, and later than
/// `last_step` (each code is accepted once); compared in constant time.
pub fn accepted_step(secret: &[u8], code: &str, now_secs: i64, last_step: i64) -> Option<i64> {
    // Apps show codes as "123 456".
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let code = code.as_str();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(now_secs);
    (now - DRIFT_STEPS..=now + DRIFT_STEPS)
        .filter(|&step| step > last_step)
        .find(|&step| {
            super::clients::same_bytes(code_at_step(secret, step).as_bytes(), code.as_bytes())
        })
}

/// The `otpauth://` URI authenticator apps read (Google Authenticator's key URI format).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| {
        form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        encoded(secret),
        enc(issuer)
    )
}

/// `text` as a QR code, an SVG image (black modules on white, a 4-module quiet zone).
pub fn qr_svg(text: &str) -> String {
    use qrcodegen::{QrCode, QrCodeEcc};
    let Ok(qr) = QrCode::encode_text(text, QrCodeEcc::Medium) else {
        return String::new();
    };
    let border = 4;
    let size = qr.size() + border * 2;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    )
}

/// How many recovery codes an enrolment gets.
pub const RECOVERY_CODES: usize = 10;

/// New recovery codes, shown once: 80 random bits each, base32 in four groups
/// (`ABCD-EFGH-IJKL-MNOP`).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
            let text = encoded(&bytes);
            text.as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).expect("base32 is ASCII"))
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// What a recovery code is stored as: SHA-256 (hex) of its letters, whatever the case,
/// dashes and spaces it is typed with (80 random bits need no slow hash).
pub fn recovery_code_hash(code: &str) -> String {
    let letters: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    super::refresh::sha256_hex(letters.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the seed "12345678901234567890", 8 digits.
    #[test]
    fn codes_match_the_rfc_6238_appendix_b_vectors() {
        let seed = b"12345678901234567890";
        for (time, code) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(totp(seed, 8).generate(time), code, "T = {time}");
        }
        // Six digits are the last six of the same value.
        assert_eq!(code_at_step(seed, 59 / 30), "287082");
    }

    #[test]
    fn a_code_is_accepted_within_one_step_of_drift_and_only_once() {
        let secret = new_secret();
        let now = 1_800_000_015;
        let step = step_of(now);
        let code = code_at_step(&secret, step);
        assert_eq!(accepted_step(&secret, &code, now, 0), Some(step));
        assert_eq!(accepted_step(&secret, &code, now, step), None, "used");
        let previous = code_at_step(&secret, step - 1);
        assert_eq!(accepted_step(&secret, &previous, now, 0), Some(step - 1));
        let too_old = code_at_step(&secret, step - 2);
        assert_eq!(accepted_step(&secret, &too_old, now, 0), None);
        assert_eq!(accepted_step(&secret, "12345", now, 0), None);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(accepted_step(&secret, &spaced, now, 0), Some(step));
        assert_eq!(accepted_step(&secret, "abcdef", now, 0), None);
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_account_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::load_or_generate(dir.path()).unwrap();
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(ada, b"secret bytes");
        assert!(!sealed.contains("secret"));
        assert_eq!(
            key.open(ada, &sealed).as_deref(),
            Some(&b"secret bytes"[..])
        );
        assert_eq!(key.open(bob, &sealed), None);
        // The same key after a restart; another directory's key opens nothing.
        let again = SealKey::load_or_generate(dir.path()).unwrap();
        assert!(again.open(ada, &sealed).is_some());
        let other = tempfile::tempdir().unwrap();
        assert!(SealKey::load_or_generate(other.path())
            .unwrap()
            .open(ada, &sealed)
            .is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(SEAL_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn recovery_codes_are_distinct_and_typed_loosely() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(code.len(), 19, "{code}");
        let loose = code.to_lowercase().replace('-', " ");
        assert_eq!(recovery_code_hash(&loose), recovery_code_hash(code));
    }

    #[test]
    fn the_enrolment_uri_and_qr_code_are_well_formed() {
        let uri = otpauth_uri("simple-api", "ada@example.com", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/simple-api:ada%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=simple-api&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(&uri);
        assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M"));
    }
}
