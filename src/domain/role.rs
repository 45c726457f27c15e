use super::DomainError;

/// What a signed-in person may do: `user` reaches their own record, `admin` every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw {
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            _ => Err(DomainError::InvalidRole),
        }
    }

    /// The scopes a token of this role may carry.
    pub fn scopes(self) -> super::Scopes {
        use super::Scope::*;
        match self {
            Self::User => super::Scopes::of([Profile]),
            Self::Admin => super::Scopes::of([Profile, UsersRead, UsersWrite]),
        }
    }

    /// What a person of this role may grant a client in browser sign-in, and what their
    /// tokens may keep: the role's scopes and who they are (the OpenID scopes).
    pub fn grantable(self) -> super::Scopes {
        self.scopes().union(&super::Scopes::IDENTITY)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_nothing_else_parses() {
        for role in [Role::User, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert_eq!(Role::parse("Admin"), Err(DomainError::InvalidRole));
    }
}
