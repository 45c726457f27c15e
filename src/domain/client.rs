use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ClientKeys, DomainError, RedirectUri, Scope, Scopes};

pub type ClientId = Uuid;

/// A service that calls the API with its own credentials (client_credentials grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: ClientId,
    pub name: ClientName,
    /// The most a token of this client may carry.
    pub scope: Scopes,
    /// How it proves who it is.
    pub credential: Credential,
    pub created_at: DateTime<Utc>,
    /// When its credential (secret or keys) was last set: creation or rotation.
    pub secret_rotated_at: DateTime<Utc>,
    /// Browser sign-in (authorization code flow): where it may send people back.
    pub sign_in: SignIn,
}

/// A client's browser sign-in settings; empty for a service that only calls the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignIn {
    /// Where the authorization endpoint may redirect: matched exactly (loopback IPs: any
    /// port). None: the client cannot use the authorization code flow.
    pub redirect_uris: Vec<RedirectUri>,
    /// Where RP-initiated logout may send the person afterwards.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// The operator's own application: no consent screen, and a refresh token without
    /// `offline_access`.
    pub first_party: bool,
}

/// How a client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A secret the service generated, shown once: here its stored form, `sha256$…` (or an
    /// argon2id PHC string from before digests).
    Secret(String),
    /// `private_key_jwt`: assertions signed with one of these keys. No shared secret exists.
    Keys(ClientKeys),
    /// A public client (a browser or mobile app, RFC 6749 §2.1): it cannot keep a secret,
    /// so it proves nothing about itself (token endpoint auth `none`) and PKCE binds its
    /// codes. It can use only the authorization code flow.
    Public,
}

impl Client {
    /// The stored form of its secret; `None` for a client that signs assertions instead.
    pub fn secret_hash(&self) -> Option<&str> {
        match &self.credential {
            Credential::Secret(hash) => Some(hash),
            Credential::Keys(_) | Credential::Public => None,
        }
    }

    /// Its public keys; `None` for a client with a secret.
    pub fn keys(&self) -> Option<&ClientKeys> {
        match &self.credential {
            Credential::Keys(keys) => Some(keys),
            Credential::Secret(_) | Credential::Public => None,
        }
    }

    pub fn is_public(&self) -> bool {
        self.credential == Credential::Public
    }

    /// The registered redirect URI `presented` matches, if any.
    pub fn redirect_uri(&self, presented: &str) -> Option<&RedirectUri> {
        self.sign_in
            .redirect_uris
            .iter()
            .find(|uri| uri.matches(presented))
    }
}

/// A client's display name: 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName(String);

impl ClientName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(DomainError::InvalidName("client name"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The scopes a client may be registered with. For its own tokens (client credentials)
/// that is `users:read` and/or `users:write`; a client that signs people in
/// (`signs_in_people`: it has redirect URIs) may also ask them for `openid`, `profile`,
/// `email` and `offline_access`, which mean nothing without a person.
pub fn client_scopes(raw: &str, signs_in_people: bool) -> Result<Scopes, String> {
    let scopes = Scopes::parse(raw).map_err(|unknown| format!("unknown scope {unknown}"))?;
    let personal = Scopes::IDENTITY.union(&Scopes::of([Scope::Profile]));
    if !signs_in_people && !scopes.intersect(&personal).is_empty() {
        return Err(format!(
            "{} are for people signing in: give the client a --redirect-uri, or only users:read and/or users:write",
            scopes.intersect(&personal)
        ));
    }
    if scopes.is_empty() {
        return Err("give the client at least one scope".into());
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_scopes_exclude_profile_and_unknown_names() {
        assert!(client_scopes("users:read users:write", false).is_ok());
        assert!(client_scopes("profile", false).is_err());
        assert!(client_scopes("openid", false).is_err());
        assert!(client_scopes("openid profile email offline_access", true).is_ok());
        assert!(client_scopes("admin", true).is_err());
        assert!(client_scopes("", true).is_err());
        assert!(ClientName::parse("  ").is_err());
        assert_eq!(ClientName::parse(" billing ").unwrap().as_str(), "billing");
    }
}
