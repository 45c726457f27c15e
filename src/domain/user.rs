use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Email, PersonName, Role};

pub type UserId = Uuid;

/// A user account. `password_hash` is an argon2id PHC string and never leaves the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Tokens and sessions issued before this instant are dead ("log out everywhere",
    /// password change)...
    pub tokens_valid_after: DateTime<Utc>,
    /// ...except this session: the one that changed the password.
    pub kept_session: Option<Uuid>,
    /// Second factors (TOTP, recovery codes).
    pub mfa: super::Mfa,
}

impl User {
    /// A new account; ids are UUIDv7 so they sort by creation time.
    pub fn new(
        email: Email,
        password_hash: String,
        role: Role,
        first_name: Option<PersonName>,
        last_name: Option<PersonName>,
    ) -> Self {
        let now = crate::domain::now();
        Self {
            id: Uuid::now_v7(),
            email,
            first_name,
            last_name,
            role,
            password_hash,
            created_at: now,
            updated_at: now,
            tokens_valid_after: DateTime::<Utc>::UNIX_EPOCH,
            kept_session: None,
            mfa: super::Mfa::default(),
        }
    }

    /// Whether a token or session of session `sid`, issued at `issued`, survived the
    /// user's last "end sessions".
    pub fn session_alive(&self, sid: Option<Uuid>, issued: DateTime<Utc>) -> bool {
        issued >= self.tokens_valid_after || (sid.is_some() && sid == self.kept_session)
    }
}
