use std::fmt;

/// What a token may be used for. User tokens get the scopes their role allows; a client
/// gets the scopes it was registered with. A `scope` request parameter can only narrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read and change your own account.
    Profile,
    /// List and read every user, and the stats.
    UsersRead,
    /// Create, update and delete any user.
    UsersWrite,
    /// OpenID Connect: an ID token about the signed-in person (authorization code flow).
    OpenId,
    /// OpenID Connect: the person's email address in the ID token and userinfo.
    Email,
    /// A refresh token from the authorization code flow.
    OfflineAccess,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::OpenId,
        Scope::Profile,
        Scope::Email,
        Scope::OfflineAccess,
        Scope::UsersRead,
        Scope::UsersWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::UsersRead => "users:read",
            Self::UsersWrite => "users:write",
            Self::OpenId => "openid",
            Self::Email => "email",
            Self::OfflineAccess => "offline_access",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Profile => "Read and change your own account (a third-party application: read it, and your name in OpenID Connect)",
            Self::UsersRead => "List and read every user, and the stats (admins and clients)",
            Self::UsersWrite => "Create, update and delete any user (admins and clients)",
            Self::OpenId => "Sign in with OpenID Connect: an ID token saying who you are",
            Self::Email => "Your email address (OpenID Connect)",
            Self::OfflineAccess => "Stay signed in: a refresh token (authorization code flow)",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes in its RFC 6749 form: space-separated, in a stable order. A bit per
/// scope: every authenticated request computes one, so it must not allocate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

// One bit per scope in a u8: a ninth scope must widen `Scopes` first.
const _: () = assert!(Scope::ALL.len() <= 8);

impl Scope {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl Scopes {
    /// The OpenID Connect scopes every person may grant a client in the authorization
    /// code flow, whatever their role: they say who the person is, not what they may do.
    pub const IDENTITY: Scopes = Scopes(
        1 << (Scope::OpenId as u8) | 1 << (Scope::Email as u8) | 1 << (Scope::OfflineAccess as u8),
    );

    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Parses a space-separated list; `Err` names the first unknown scope.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| Scope::parse(s).ok_or_else(|| s.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::of)
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    /// The scopes in either set.
    pub fn union(&self, other: &Scopes) -> Scopes {
        Self(self.0 | other.0)
    }

    /// The scopes in both sets.
    pub fn intersect(&self, other: &Scopes) -> Scopes {
        Self(self.0 & other.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// In `Scope::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        Scope::ALL.into_iter().filter(|s| self.contains(*s))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print_in_a_stable_order() {
        let scopes = Scopes::parse("users:write  profile").unwrap();
        assert_eq!(scopes.to_string(), "profile users:write");
        assert_eq!(Scopes::parse("profile admin"), Err("admin".to_owned()));
        assert!(Scopes::parse("profile").unwrap().is_subset(&scopes));
        assert!(!Scopes::parse("users:read").unwrap().is_subset(&scopes));
        assert_eq!(
            scopes.intersect(&Scopes::of([Scope::UsersWrite, Scope::UsersRead])),
            Scopes::of([Scope::UsersWrite])
        );
        assert!(Scopes::default().is_empty() && !scopes.is_empty());
        assert!(scopes.contains(Scope::Profile) && !scopes.contains(Scope::UsersRead));
    }
}
