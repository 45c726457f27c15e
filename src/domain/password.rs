use secrecy::{ExposeSecret, SecretString};

use super::DomainError;

/// A password that meets the policy (8..=256 characters). Never printed, zeroized on drop.
pub struct NewPassword(SecretString);

impl NewPassword {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 256;

    pub fn parse(raw: SecretString) -> Result<Self, DomainError> {
        let chars = raw.expose_secret().chars().count();
        if chars == 0 {
            return Err(DomainError::PasswordMissing);
        }
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars) {
            return Err(DomainError::PasswordLength);
        }
        Ok(Self(raw))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NewPassword, DomainError> {
        NewPassword::parse(SecretString::from(s))
    }

    #[test]
    fn policy_bounds_are_inclusive_and_count_characters() {
        assert!(parse("12345678").is_ok());
        assert!(parse(&"é".repeat(256)).is_ok());
        assert_eq!(parse("1234567").err(), Some(DomainError::PasswordLength));
        assert_eq!(
            parse(&"x".repeat(257)).err(),
            Some(DomainError::PasswordLength)
        );
        assert_eq!(parse("").err(), Some(DomainError::PasswordMissing));
    }
}
