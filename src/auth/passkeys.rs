//! Passkeys (WebAuthn): this service as the relying party, over `webauthn-rs`, which makes
//! every check of a ceremony (client data type, challenge and origin; RP id hash; user
//! presence and verification flags; COSE key and signature; the signature counter).
//!
//! Nothing is kept between a ceremony's two halves: its state travels signed (the
//! service's `signed` values) and is used once (the store remembers the ceremony's id), so
//! a replica other than the one that began it can finish it, and no one can finish it
//! twice. The state holds no credential, only the challenge and the policy: the
//! credential is looked up when the answer comes (the account's own, by its id).

use serde_json::Value;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder,
};

pub use webauthn_rs::prelude::AuthenticationResult;

/// A ceremony's answer that is not right (its details are logged, not shown: they help
/// no one but someone probing).
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("the credential is not well-formed")]
    Malformed,
    #[error("the credential does not verify: {0}")]
    Refused(String),
}

/// The relying party: PUBLIC_URL's host is the RP id, its origin the only origin.
pub struct RelyingParty {
    webauthn: Webauthn,
    rp_id: String,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty")
            .field("rp_id", &self.rp_id)
            .finish()
    }
}

impl RelyingParty {
    /// The relying party for `public_url`. `Err` (why) when browsers would refuse it: an
    /// IP address is never an RP id (WebAuthn §5.1.3 wants a domain), so the default
    /// `http://127.0.0.1:…` needs PUBLIC_URL set to a name (`http://localhost:…` works:
    /// browsers treat localhost as a secure context).
    pub fn new(public_url: &str, name: &str) -> Result<Self, String> {
        let origin = Url::parse(public_url).map_err(|e| format!("PUBLIC_URL: {e}"))?;
        let rp_id = origin
            .domain()
            .ok_or("PUBLIC_URL's host is an IP address, which WebAuthn does not allow as a relying-party id: use a host name (http://localhost:PORT locally)")?
            .to_owned();
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name(name).build())
            .map_err(|e| format!("WebAuthn relying party for {rp_id}: {e}"))?;
        Ok(Self { webauthn, rp_id })
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// A registration for the account `user_id` (the user handle: a random UUID, no
    /// personal data), excluding the credentials it has already. Returns the options for
    /// `navigator.credentials.create` (JSON, base64url members) and the state to keep.
    ///
    /// webauthn-rs asks passkeys to be non-discoverable ("discouraged"); we ask for
    /// "preferred" instead, so that a passkey can also sign in without an email address
    /// ("Sign in with a passkey"), while security keys with little storage still work.
    pub fn start_registration(
        &self,
        user_id: uuid::Uuid,
        email: &str,
        display_name: &str,
        existing: &[Passkey],
    ) -> Result<(Value, PasskeyRegistration), PasskeyError> {
        let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user_id, email, display_name, Some(exclude))
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let mut options = serde_json::to_value(options).map_err(|_| PasskeyError::Malformed)?;
        if let Some(selection) = options.pointer_mut("/publicKey/authenticatorSelection") {
            selection["residentKey"] = "preferred".into();
        }
        Ok((options, state))
    }

    /// Checks a registration's answer (the browser's `PublicKeyCredential` as JSON)
    /// against its state: the new credential.
    pub fn finish_registration(
        &self,
        credential: &Value,
        state: &PasskeyRegistration,
    ) -> Result<Passkey, PasskeyError> {
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| PasskeyError::Malformed)?;
        self.webauthn
            .finish_passkey_registration(&credential, state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))
    }

    /// An authentication: for the credentials `allowed` (a known account: the browser
    /// offers those), or for any discoverable one (`allowed` empty: the browser offers
    /// the passkeys it holds for this site). Options for `navigator.credentials.get`
    /// and the state to keep; user verification is required either way.
    pub fn start_authentication(
        &self,
        allowed: &[Passkey],
    ) -> Result<(Value, DiscoverableAuthentication), PasskeyError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let mut options = serde_json::to_value(options).map_err(|_| PasskeyError::Malformed)?;
        if let Some(map) = options.as_object_mut() {
            // webauthn-rs asks for conditional mediation (autofill); our pages start the
            // ceremony from a button, which a modal request suits.
            map.remove("mediation");
        }
        if let Some(public_key) = options.get_mut("publicKey") {
            public_key["allowCredentials"] = allowed
                .iter()
                .map(|p| serde_json::json!({ "type": "public-key", "id": credential_id(p) }))
                .collect::<Vec<_>>()
                .into();
        }
        Ok((options, state))
    }

    /// The account (user handle) and credential id an authentication's answer names.
    pub fn identify(credential: &Value) -> Result<(Option<uuid::Uuid>, String), PasskeyError> {
        let parsed: PublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| PasskeyError::Malformed)?;
        let user = parsed
            .get_user_unique_id()
            .map(|h| uuid::Uuid::from_slice(h).map_err(|_| PasskeyError::Malformed))
            .transpose()?;
        Ok((user, encode(parsed.get_credential_id())))
    }

    /// Checks an authentication's answer against its state and the credential it names.
    pub fn finish_authentication(
        &self,
        credential: &Value,
        state: DiscoverableAuthentication,
        passkey: &Passkey,
    ) -> Result<AuthenticationResult, PasskeyError> {
        let credential: PublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| PasskeyError::Malformed)?;
        self.webauthn
            .finish_discoverable_authentication_v2(&credential, state, passkey)
            .map_err(|e| PasskeyError::Refused(e.to_string()))
    }
}

/// The signature counter of a stored credential (webauthn-rs's JSON), 0 if it has none.
pub fn counter(stored: &str) -> u32 {
    serde_json::from_str::<Value>(stored)
        .ok()
        .and_then(|v| v.pointer("/cred/counter").and_then(Value::as_u64))
        .map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX))
}

/// A credential's id, base64url: how the store and the API name it.
pub fn credential_id(passkey: &Passkey) -> String {
    encode(passkey.cred_id().as_ref())
}

fn encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 8176 methods of a passkey sign-in: the key's possession — `hwk` when it cannot
/// leave its device, `swk` when it is synced (backup eligible) — and `user`, the
/// verification (PIN or biometric) every ceremony here requires.
pub fn methods(result: &AuthenticationResult) -> [&'static str; 2] {
    [
        if result.backup_eligible() {
            "swk"
        } else {
            "hwk"
        },
        "user",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_credentials_counter_reads_back() {
        assert_eq!(counter(r#"{"cred":{"counter":7,"cred_id":"x"}}"#), 7);
        assert_eq!(counter(r#"{"cred":{}}"#), 0);
        assert_eq!(counter("not json"), 0);
    }

    #[test]
    fn an_ip_address_is_no_relying_party_id() {
        assert!(RelyingParty::new("http://127.0.0.1:5000", "x").is_err());
        assert!(RelyingParty::new("http://[::1]:5000", "x").is_err());
        let rp = RelyingParty::new("https://auth.example.com", "x").unwrap();
        assert_eq!(rp.rp_id(), "auth.example.com");
        assert_eq!(
            RelyingParty::new("http://localhost:5000", "x")
                .unwrap()
                .rp_id(),
            "localhost"
        );
    }

    #[test]
    fn registration_asks_for_a_discoverable_verified_credential() {
        let rp = RelyingParty::new("https://auth.example.com", "simple-api").unwrap();
        let id = uuid::Uuid::new_v4();
        let (options, _) = rp
            .start_registration(id, "a@example.com", "A", &[])
            .unwrap();
        let pk = &options["publicKey"];
        assert_eq!(pk["rp"]["id"], "auth.example.com");
        assert_eq!(pk["authenticatorSelection"]["residentKey"], "preferred");
        assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
        assert_eq!(pk["attestation"], "none");
        // The user handle is the account id, nothing personal.
        assert_eq!(pk["user"]["id"], encode(id.as_bytes()));
    }

    #[test]
    fn authentication_lists_the_accounts_credentials_or_none() {
        let rp = RelyingParty::new("https://auth.example.com", "simple-api").unwrap();
        let (options, _) = rp.start_authentication(&[]).unwrap();
        assert!(options.get("mediation").is_none());
        assert_eq!(
            options["publicKey"]["allowCredentials"],
            serde_json::json!([])
        );
        assert_eq!(options["publicKey"]["userVerification"], "required");
        assert!(RelyingParty::identify(&serde_json::json!({"id": 1})).is_err());
    }
}
