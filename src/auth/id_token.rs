//! OpenID Connect ID tokens (OIDC Core §2): signed by the ID-token key (RS256), about a
//! person, for one client.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::KeyPurpose;
use super::{TokenError, TokenService};

/// The claims of an ID token. `email`/`email_verified` with the `email` scope, the names
/// with `profile`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    /// The client's id.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// When the person last entered their password.
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The single-sign-on session (what RP-initiated logout ends).
    pub sid: String,
    /// How the person signed in (RFC 8176).
    pub amr: Vec<String>,
    /// `mfa` when a second factor was used (what `acr_values=mfa` asks for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The left half of SHA-256 of the access token issued with it (OIDC Core §3.1.3.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// The client it was issued to (OIDC Core §2).
    pub azp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
}

/// `at_hash` of `access_token` for an ID token signed with RS256 or ES256: the left half
/// of its SHA-256, base64url (OIDC Core §3.1.3.6).
pub fn at_hash(access_token: &str) -> String {
    at_hash_for(access_token, jsonwebtoken::Algorithm::RS256)
}

/// `at_hash` for an ID token signed with `algorithm`: the left half of the hash its
/// signature uses (SHA-512 for EdDSA with Ed25519, SHA-256 otherwise).
pub fn at_hash_for(access_token: &str, algorithm: jsonwebtoken::Algorithm) -> String {
    let hash = match algorithm {
        jsonwebtoken::Algorithm::EdDSA => &aws_lc_rs::digest::SHA512,
        _ => &aws_lc_rs::digest::SHA256,
    };
    let digest = aws_lc_rs::digest::digest(hash, access_token.as_bytes());
    let half = digest.as_ref().len() / 2;
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..half])
}

impl TokenService {
    /// Signs `claims` (whose `iss` this sets, and `at_hash` from `access_token`, by the
    /// signing key's algorithm) with the ID-token key.
    pub fn issue_id_token(
        &self,
        mut claims: IdClaims,
        access_token: &str,
    ) -> Result<String, TokenError> {
        claims.iss = self.issuer().to_owned();
        let keys = self.keys().read().unwrap_or_else(|e| e.into_inner());
        let key = keys.id_token_signer();
        claims.at_hash = Some(at_hash_for(access_token, key.algorithm));
        let mut header = Header::new(key.algorithm);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// The ID-token algorithms published in discovery: the ID-token line's (RS256), or
    /// the access-token key's when KEYS_DIR has no ID-token key.
    pub fn id_token_algorithm(&self) -> &'static str {
        let keys = self.keys().read().unwrap_or_else(|e| e.into_inner());
        keys.id_token_signer().jwk.alg
    }

    /// Reads an `id_token_hint` (OIDC RP-Initiated Logout §2): one of our ID tokens,
    /// signature and issuer checked, expired or not (a hint may outlive its token).
    pub fn read_id_token_hint(&self, token: &str) -> Result<IdClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let keys = self.keys().read().unwrap_or_else(|e| e.into_inner());
        let key = keys.get(kid).ok_or(TokenError::UnknownKey)?;
        // An ID token comes from the ID-token line, or from the access-token key when
        // there is none (`id_token_signer`), and says `typ: JWT` (never `at+jwt`, nor the
        // types of the service's own signed values).
        if header.typ.as_deref() != Some("JWT") {
            return Err(TokenError::WrongType);
        }
        let id_line = keys.keys().iter().any(|k| k.purpose == KeyPurpose::IdToken);
        if id_line && key.purpose != KeyPurpose::IdToken {
            return Err(TokenError::UnknownKey);
        }
        if header.alg != key.algorithm {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["iss", "sub", "aud"]);
        jsonwebtoken::decode::<IdClaims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid("not an ID token of this service"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_openid_connect_example() {
        // OIDC Core A.3 / A.4 example: access_token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
        // has at_hash "77QmUPtjPfzWtF2AnpK9RQ" (RS256).
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
