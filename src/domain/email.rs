use std::fmt;

use super::DomainError;

/// An email address as the user typed it (trimmed); compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Trims, then checks the practical shape of an address (RFC 5321 lengths, one `@`,
    /// a dotted domain). Deliverability is not our business; unambiguity is.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let email = raw.trim();
        if email.is_empty() {
            return Err(DomainError::EmailMissing);
        }
        if email.chars().count() > 254 {
            return Err(DomainError::InvalidEmail("too long"));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DomainError::InvalidEmail(
                "contains spaces or control characters",
            ));
        }
        let (local, domain) = email
            .split_once('@')
            .ok_or(DomainError::InvalidEmail("no @"))?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(DomainError::InvalidEmail("bad local part"));
        }
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if !domain.contains('.') || !labels_ok {
            return Err(DomainError::InvalidEmail("bad domain"));
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uniqueness key: two addresses differing only in case are one account.
    pub fn key(&self) -> String {
        Self::key_of(&self.0)
    }

    /// The uniqueness key of a raw login name, without validating it.
    pub fn key_of(raw: &str) -> String {
        raw.trim().to_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_addresses_are_trimmed_and_keep_their_case() {
        let email = Email::parse("  Ada.Lovelace@Example.com ").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@Example.com");
        assert_eq!(email.key(), "ada.lovelace@example.com");
    }

    #[test]
    fn empty_or_blank_is_missing() {
        assert_eq!(Email::parse("   "), Err(DomainError::EmailMissing));
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@-x.com",
            "a@x..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long = format!("a@{}.com", "b".repeat(260));
        assert!(Email::parse(&long).is_err());
    }
}
