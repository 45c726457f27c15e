//! Values the service signs for itself and reads back later: the single-sign-on cookie of
//! the hosted pages and the authorization and logout requests carried through them. Each
//! is a JWT with its own `typ` (so none passes for another, or for an access token, whose
//! `typ` is `at+jwt`), signed by the access-token key, and addressed to the issuer itself.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::keys::KeyPurpose;
use super::{TokenError, TokenService};
use crate::domain::LEEWAY_SECS;

/// What every signed value carries besides its own claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(flatten)]
    pub value: T,
}

impl TokenService {
    /// Signs `value` as a `typ` JWT living `ttl_secs`.
    pub fn sign_value<T: Serialize>(
        &self,
        typ: &str,
        value: T,
        ttl_secs: i64,
    ) -> Result<String, TokenError> {
        let now = crate::domain::now().timestamp();
        let envelope = Envelope {
            iss: self.issuer().to_owned(),
            aud: self.issuer().to_owned(),
            iat: now,
            exp: now + ttl_secs,
            value,
        };
        let keys = self.keys().read().unwrap_or_else(|e| e.into_inner());
        let key = keys.signer();
        let mut header = Header::new(key.algorithm);
        header.typ = Some(typ.to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &envelope, &key.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Reads back a value signed by `sign_value` with this `typ`: the key named by `kid`
    /// (access-token line) and its own algorithm only, `exp`, `iss` and `aud`.
    pub fn verify_value<T: DeserializeOwned>(
        &self,
        typ: &str,
        token: &str,
    ) -> Result<Envelope<T>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.typ.as_deref() != Some(typ) {
            return Err(TokenError::WrongType);
        }
        if header.crit.is_some() {
            return Err(TokenError::Invalid("unsupported crit header"));
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let keys = self.keys().read().unwrap_or_else(|e| e.into_inner());
        let key = keys
            .get(kid)
            .filter(|k| k.purpose == KeyPurpose::Access)
            .ok_or(TokenError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[self.issuer()]);
        validation.set_audience(&[self.issuer()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        jsonwebtoken::decode::<Envelope<T>>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Malformed,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    use super::*;
    use crate::auth::KeySet;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Note {
        n: u32,
    }

    #[test]
    fn a_value_reads_back_only_with_its_own_type_and_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeySet::load_or_generate(dir.path(), Duration::ZERO).unwrap();
        let svc = TokenService::new(
            Arc::new(RwLock::new(keys)),
            "iss".into(),
            "aud".into(),
            Duration::from_secs(60),
        );
        let signed = svc.sign_value("note+jwt", Note { n: 7 }, 60).unwrap();
        let back = svc.verify_value::<Note>("note+jwt", &signed).unwrap();
        assert_eq!(back.value, Note { n: 7 });
        assert_eq!(
            svc.verify_value::<Note>("other+jwt", &signed).err(),
            Some(TokenError::WrongType)
        );
        // Not an access token either.
        assert!(svc.verify(&signed).is_err());
        let mut tampered = signed.clone();
        tampered.pop();
        tampered.push(if signed.ends_with('A') { 'B' } else { 'A' });
        assert!(svc.verify_value::<Note>("note+jwt", &tampered).is_err());
        let expired = svc.sign_value("note+jwt", Note { n: 1 }, -60).unwrap();
        assert_eq!(
            svc.verify_value::<Note>("note+jwt", &expired).err(),
            Some(TokenError::Expired)
        );
    }
}
