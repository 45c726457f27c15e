use super::DomainError;

/// A first or last name: trimmed, at most 100 characters, no control characters.
/// An empty name is no name (`null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str, field: &'static str) -> Result<Option<Self>, DomainError> {
        // Checked as sent, so the spec's maxLength/pattern say exactly what is accepted.
        if raw.chars().count() > Self::MAX_CHARS || raw.chars().any(char::is_control) {
            return Err(DomainError::InvalidName(field));
        }
        let name = raw.trim();
        Ok((!name.is_empty()).then(|| Self(name.to_owned())))
    }

    /// The name a passkey gets when its owner gives none.
    pub fn passkey() -> Self {
        Self("Passkey".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_blank_means_none() {
        assert_eq!(
            PersonName::parse(" Ada ", "first_name")
                .unwrap()
                .unwrap()
                .as_str(),
            "Ada"
        );
        assert_eq!(PersonName::parse("  ", "first_name"), Ok(None));
    }

    #[test]
    fn long_or_control_names_are_refused() {
        assert!(PersonName::parse(&"x".repeat(101), "last_name").is_err());
        assert!(PersonName::parse("a\u{0}b", "last_name").is_err());
    }
}
