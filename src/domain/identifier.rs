use super::DomainError;

/// The longest identifier accepted from a request, in characters: no email address can be
/// longer (RFC 5321: 64 + 1 + 255). Counted in characters, as the spec's `maxLength` counts
/// them (so a generated client knows the rule exactly); that bounds it to 1,280 bytes.
pub const MAX_IDENTIFIER_CHARS: usize = 320;

/// An identifier as presented to log in or authenticate (an email, a client id), before
/// anything is done with it: bounded and free of control characters, so that it costs the
/// throttle, the hashing queue and the audit log no more than a real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identifier<'a>(&'a str);

impl<'a> Identifier<'a> {
    /// `field` names the form field in the error.
    pub fn parse(raw: &'a str, field: &'static str) -> Result<Self, DomainError> {
        let too_long =
            raw.len() > MAX_IDENTIFIER_CHARS && raw.chars().count() > MAX_IDENTIFIER_CHARS;
        if too_long || raw.chars().any(char::is_control) {
            return Err(DomainError::InvalidIdentifier(field));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_bounded_and_plain() {
        assert!(Identifier::parse("ada@example.com", "username").is_ok());
        assert!(Identifier::parse(&"a".repeat(320), "username").is_ok());
        assert!(Identifier::parse(&"é".repeat(320), "username").is_ok());
        assert!(Identifier::parse(&"é".repeat(321), "username").is_err());
        assert_eq!(
            Identifier::parse(&"a".repeat(321), "username"),
            Err(DomainError::InvalidIdentifier("username"))
        );
        assert!(Identifier::parse("ada\n@example.com", "username").is_err());
        assert!(Identifier::parse("\u{7}", "client_id").is_err());
        assert!(Identifier::parse("\u{85}x", "email").is_err());
    }
}
