use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ClientKeys, DomainError, Scope, Scopes};

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
}

/// How a client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A secret the service generated, shown once: here its stored form, `sha256$…` (or an
    /// argon2id PHC string from before digests).
    Secret(String),
    /// `private_key_jwt`: assertions signed with one of these keys. No shared secret exists.
    Keys(ClientKeys),
}

impl Client {
    /// The stored form of its secret; `None` for a client that signs assertions instead.
    pub fn secret_hash(&self) -> Option<&str> {
        match &self.credential {
            Credential::Secret(hash) => Some(hash),
            Credential::Keys(_) => None,
        }
    }

    /// Its public keys; `None` for a client with a secret.
    pub fn keys(&self) -> Option<&ClientKeys> {
        match &self.credential {
            Credential::Keys(keys) => Some(keys),
            Credential::Secret(_) => None,
        }
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

/// The scopes a client may be registered with: `profile` means "your own account", which
/// a client does not have.
pub fn client_scopes(raw: &str) -> Result<Scopes, String> {
    let scopes = Scopes::parse(raw).map_err(|unknown| format!("unknown scope {unknown}"))?;
    if scopes.contains(Scope::Profile) {
        return Err("profile is for user tokens; clients get users:read and/or users:write".into());
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
        assert!(client_scopes("users:read users:write").is_ok());
        assert!(client_scopes("profile").is_err());
        assert!(client_scopes("admin").is_err());
        assert!(client_scopes("").is_err());
        assert!(ClientName::parse("  ").is_err());
        assert_eq!(ClientName::parse(" billing ").unwrap().as_str(), "billing");
    }
}
