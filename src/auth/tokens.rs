//! The one place access tokens are issued and verified.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::KeySet;
use crate::domain::{Role, Scopes, UserId};

/// RFC 9068 media type of a JWT access token, carried in the `typ` header.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
pub use crate::domain::LEEWAY_SECS;

/// The claims of an access token (RFC 9068).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub scope: String,
    /// Present on user tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The login session (user tokens): what "log out" and "end other sessions" act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The client the token was issued to (client_credentials tokens; RFC 9068).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Client tokens: which of the client's secrets minted it (`clients::secret_version`),
    /// so that rotating the secret ends its tokens whatever the clocks say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<String>,
    /// User tokens: when the person signed in (OIDC `auth_time`, Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// User tokens: how the person signed in (RFC 8176: `pwd`, `otp`, `mfa`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
}

/// How and when a person signed in, as their tokens say it (`auth_time`, `amr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// RFC 8176 values: `pwd`; `otp`, or a passkey's `hwk`/`swk` + `user`; `mfa` with two
    /// factors.
    pub amr: Vec<String>,
    pub auth_time: DateTime<Utc>,
}

impl Authentication {
    /// A password just entered, with a one-time code (`otp`) if `second_factor`.
    pub fn now(second_factor: bool) -> Self {
        Self::with_methods(if second_factor { &["otp"] } else { &[] }, true)
    }

    /// A sign-in just now by `methods` (RFC 8176), after the password if `password`;
    /// `mfa` is added when they are more than one factor (a password and a code, or a
    /// passkey's key and the verification that unlocked it).
    pub fn with_methods(methods: &[&str], password: bool) -> Self {
        let mut amr: Vec<String> = password.then(|| "pwd".to_owned()).into_iter().collect();
        amr.extend(methods.iter().map(|m| (*m).to_owned()));
        if amr.len() > 1 {
            amr.push("mfa".to_owned());
        }
        Self {
            amr,
            auth_time: crate::domain::now(),
        }
    }

    /// Whether a second factor was used.
    pub fn is_mfa(&self) -> bool {
        self.amr.iter().any(|m| m == "mfa")
    }
}

impl AccessClaims {
    pub fn scopes(&self) -> Scopes {
        // Unknown names are ignored: a token can only lose power by it.
        Scopes::of(
            self.scope
                .split(' ')
                .filter_map(crate::domain::Scope::parse),
        )
    }

    pub fn session_id(&self) -> Option<Uuid> {
        self.sid.as_deref().and_then(|s| Uuid::parse_str(s).ok())
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn issued_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.iat, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    /// Who the token speaks for: a user (it has a `role`) or a client (`client_id` = `sub`).
    pub fn principal(&self) -> Result<Principal, TokenError> {
        let id = Uuid::parse_str(&self.sub).map_err(|_| TokenError::Invalid("sub is not an id"))?;
        match (self.role, self.client_id.as_deref()) {
            // A user's token; `client_id` names the client it was issued to through the
            // authorization code flow (RFC 9068 §2.2), if any.
            (Some(role), client) => Ok(Principal::User {
                id,
                role,
                sid: self.session_id(),
                client: match client {
                    None => None,
                    Some(c) => Some(
                        Uuid::parse_str(c)
                            .map_err(|_| TokenError::Invalid("client_id is not an id"))?,
                    ),
                },
            }),
            (None, Some(client)) if client == self.sub => Ok(Principal::Client {
                id,
                secret_version: self
                    .secret_version
                    .as_deref()
                    .and_then(super::clients::SecretVersion::parse),
            }),
            _ => Err(TokenError::Invalid(
                "token is neither a user's nor a client's",
            )),
        }
    }
}

/// Whom a token speaks for: what is written into a token when it is issued, and read
/// back from its claims when it is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A user, in login session `sid`; `client`: the client it was issued to (the
    /// authorization code flow).
    User {
        id: UserId,
        role: Role,
        sid: Option<Uuid>,
        client: Option<crate::domain::ClientId>,
    },
    /// A client, with the version of the secret it authenticated with (absent in tokens
    /// minted before versions were written).
    Client {
        id: crate::domain::ClientId,
        secret_version: Option<super::clients::SecretVersion>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is not an access token (typ must be at+jwt)")]
    WrongType,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    WrongAlgorithm,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the token is invalid: {0}")]
    Invalid(&'static str),
    #[error("the token has been revoked")]
    Revoked,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A freshly signed token and what the client needs to know about it.
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub claims: AccessClaims,
}

pub struct TokenService {
    keys: Arc<RwLock<KeySet>>,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// Tokens whose signature and claims already passed, by SHA-256 of the whole token:
    /// the signature check is most of the cost of an authenticated request. Only the
    /// stateless checks are cached; revocation and the store are checked every time.
    verified: RwLock<HashMap<[u8; 32], Arc<AccessClaims>>>,
}

/// Verified tokens remembered at most; a full cache is emptied of expired tokens first.
pub const VERIFIED_CACHE: usize = 50_000;

impl TokenService {
    pub fn new(keys: Arc<RwLock<KeySet>>, issuer: String, audience: String, ttl: Duration) -> Self {
        Self {
            keys,
            issuer,
            audience,
            ttl,
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the key set (KEYS_DIR changed). Cached verifications go with the old set:
    /// a token of a retired key must fail at once.
    pub fn replace_keys(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        self.verified
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> &RwLock<KeySet> {
        &self.keys
    }

    pub fn issue(&self, principal: Principal, scope: &Scopes) -> Result<IssuedToken, TokenError> {
        self.issue_with(principal, scope, None)
    }

    /// An access token for `principal`, saying how its person signed in (`authn`).
    pub fn issue_with(
        &self,
        principal: Principal,
        scope: &Scopes,
        authn: Option<&Authentication>,
    ) -> Result<IssuedToken, TokenError> {
        let (sub, role, sid, client_id, secret_version) = match principal {
            Principal::User {
                id,
                role,
                sid,
                client,
            } => (
                id.to_string(),
                Some(role),
                sid,
                client.map(|c| c.to_string()),
                None,
            ),
            Principal::Client { id, secret_version } => (
                id.to_string(),
                None,
                None,
                Some(id.to_string()),
                secret_version.map(|v| v.to_string()),
            ),
        };
        let now = crate::domain::now().timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::now_v7().to_string(),
            scope: scope.to_string(),
            role,
            sid: sid.map(|s| s.to_string()),
            client_id,
            secret_version,
            auth_time: authn.map(|a| a.auth_time.timestamp()),
            amr: authn.map(|a| a.amr.clone()),
        };
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = keys.signer();
        let mut header = Header::new(key.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
            claims,
        })
    }

    /// Checks, in order: the key named by `kid` and that key's own algorithm only, the
    /// signature, `exp`/`nbf` (with a small leeway), `iss` and `aud`. The caller then checks
    /// revocation and the store.
    pub fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        let now = crate::domain::now().timestamp();
        let cached = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(claims) = cached {
            // The one stateless check that changes with time.
            if now <= claims.exp + LEEWAY_SECS as i64 {
                return Ok(claims);
            }
            self.verified
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            return Err(TokenError::Expired);
        }
        let claims = Arc::new(self.verify_uncached(token)?);
        let mut cache = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_CACHE {
            cache.retain(|_, c| now <= c.exp + LEEWAY_SECS as i64);
            if cache.len() >= VERIFIED_CACHE {
                cache.clear();
            }
        }
        cache.insert(key, Arc::clone(&claims));
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == ACCESS_TOKEN_TYP || t == "application/at+jwt"
        });
        if !typ_ok {
            return Err(TokenError::WrongType);
        }
        // RFC 7515 §4.1.11: we understand no critical extension, so any is a rejection.
        if header.crit.is_some() {
            return Err(TokenError::Invalid("unsupported crit header"));
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        // Only the access-token line: an ID-token key never signs an access token.
        let key = keys
            .get(kid)
            .filter(|k| k.purpose == super::keys::KeyPurpose::Access)
            .ok_or(TokenError::UnknownKey)?;
        // Never let the token choose the algorithm: the key decides.
        if header.alg != key.algorithm {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                ErrorKind::MissingRequiredClaim(_) => {
                    TokenError::Invalid("a required claim is missing")
                }
                _ => TokenError::Malformed,
            })?;
        if data.claims.jti.is_empty() {
            return Err(TokenError::Invalid("jti is empty"));
        }
        if data.claims.iat > crate::domain::now().timestamp() + LEEWAY_SECS as i64 {
            return Err(TokenError::Invalid("iat is in the future"));
        }
        // This service issues nothing that lives longer than SESSION_DURATION: a signed
        // token that does (a key used elsewhere, a forged lifetime) is not one of ours.
        let lifetime = data.claims.exp.saturating_sub(data.claims.iat);
        if lifetime > self.ttl.as_secs() as i64 + LEEWAY_SECS as i64 {
            return Err(TokenError::Invalid("lifetime longer than SESSION_DURATION"));
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey};

    use super::*;
    use crate::domain::Scope;

    fn service(dir: &std::path::Path, ttl: u64) -> TokenService {
        let keys = KeySet::load_or_generate(dir, Duration::ZERO).unwrap();
        TokenService::new(
            Arc::new(RwLock::new(keys)),
            "simple-api".into(),
            "simple-api".into(),
            Duration::from_secs(ttl),
        )
    }

    fn user() -> Principal {
        Principal::User {
            id: Uuid::now_v7(),
            role: Role::User,
            sid: None,
            client: None,
        }
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn issued_tokens_verify_and_carry_every_claim() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 900);
        let issued = svc.issue(user(), &Scopes::of([Scope::Profile])).unwrap();
        let claims = svc.verify(&issued.token).unwrap();
        assert_eq!(*claims, issued.claims);
        assert_eq!(claims.exp - claims.iat, 900);
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::EdDSA);
    }

    #[test]
    fn a_token_from_another_service_instance_is_rejected() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let token = service(a.path(), 60)
            .issue(user(), &Scopes::default())
            .unwrap()
            .token;
        assert_eq!(
            service(b.path(), 60).verify(&token),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn alg_none_and_hmac_with_the_public_key_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 60);
        let issued = svc.issue(user(), &Scopes::default()).unwrap();
        let key_kid = svc.keys.read().unwrap().signer().kid.clone();
        let claims = serde_json::to_value(&issued.claims).unwrap();
        let payload = b64(&claims);

        let none = format!(
            "{}.{payload}.",
            b64(&serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": key_kid}))
        );
        assert_eq!(svc.verify(&none), Err(TokenError::Malformed));

        // Algorithm confusion: HS256 keyed with the public key's bytes.
        let x = svc.keys.read().unwrap().signer().jwk.x.clone().unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key_kid);
        let hs = jsonwebtoken::encode(
            &header,
            &issued.claims,
            &EncodingKey::from_secret(x.as_bytes()),
        )
        .unwrap();
        assert_eq!(svc.verify(&hs), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 60);
        let token = svc.issue(user(), &Scopes::default()).unwrap().token;
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["role"] = "admin".into();
        parts[1] = b64(&claims);
        assert_eq!(svc.verify(&parts.join(".")), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_cached_token_still_expires_and_a_key_change_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 60);
        let mut claims = svc.issue(user(), &Scopes::default()).unwrap().claims;
        let now = crate::domain::now().timestamp();
        claims.exp = now + 2 - LEEWAY_SECS as i64;
        let token = {
            let keys = svc.keys.read().unwrap();
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = Some("at+jwt".into());
            header.kid = Some(keys.signer().kid.clone());
            jsonwebtoken::encode(&header, &claims, &keys.signer().encoding).unwrap()
        };
        assert!(svc.verify(&token).is_ok());
        assert!(svc.verify(&token).is_ok(), "from the cache");
        std::thread::sleep(std::time::Duration::from_millis(3100));
        assert_eq!(svc.verify(&token), Err(TokenError::Expired));

        let fresh = svc.issue(user(), &Scopes::default()).unwrap().token;
        assert!(svc.verify(&fresh).is_ok());
        let other = tempfile::tempdir().unwrap();
        svc.replace_keys(KeySet::load_or_generate(other.path(), Duration::ZERO).unwrap());
        assert_eq!(svc.verify(&fresh), Err(TokenError::UnknownKey));
    }

    #[test]
    fn expired_tokens_fail_after_the_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), 60);
        let mut claims = svc.issue(user(), &Scopes::default()).unwrap().claims;
        claims.exp = crate::domain::now().timestamp() - LEEWAY_SECS as i64 - 2;
        let keys = svc.keys.read().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(keys.signer().kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &keys.signer().encoding).unwrap();
        drop(keys);
        assert_eq!(svc.verify(&token), Err(TokenError::Expired));
    }
}
