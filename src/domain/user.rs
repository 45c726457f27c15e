use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Email, PersonName, Role};

pub type UserId = Uuid;

/// A user account. `password_hash` is an argon2id PHC string and never leaves the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    /// Whether the owner of `email` proved it (a code sent there came back), or an
    /// operator vouched for it.
    pub email_verified: bool,
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
    /// Second factors (TOTP, passkeys, recovery codes).
    pub mfa: super::Mfa,
    /// One-time codes sent by mail and not used yet.
    pub mail_codes: super::MailCodes,
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
            email_verified: false,
            first_name,
            last_name,
            role,
            password_hash,
            created_at: now,
            updated_at: now,
            tokens_valid_after: DateTime::<Utc>::UNIX_EPOCH,
            kept_session: None,
            mfa: super::Mfa::default(),
            mail_codes: super::MailCodes::default(),
        }
    }

    /// Whether a token or session of session `sid`, issued at `issued` after a sign-in
    /// whose methods were `amr`, survived the user's last "end sessions", and, if the
    /// account has a second factor, was signed in with one. The second rule closes a race
    /// the first cannot: a password-only sign-in that read the account just before its
    /// first factor was enrolled, and was issued just after. The session that enrolled
    /// (`kept_session`) is exempt from both.
    pub fn session_alive(&self, sid: Option<Uuid>, issued: DateTime<Utc>, amr: &[String]) -> bool {
        let kept = sid.is_some() && sid == self.kept_session;
        let second_factor = !self.mfa.enrolled() || amr.iter().any(|m| m == "mfa");
        kept || (issued >= self.tokens_valid_after && second_factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Mfa, PasskeyCredential, PersonName, Role};

    fn enrolled_after(user: &mut User, at: DateTime<Utc>) {
        user.mfa = Mfa {
            passkeys: vec![PasskeyCredential {
                id: Uuid::new_v4(),
                name: PersonName::passkey(),
                credential_id: "x".into(),
                credential: "{}".into(),
                created_at: at,
                last_used_at: None,
            }],
            ..Mfa::default()
        };
        user.tokens_valid_after = at;
    }

    #[test]
    fn an_enrolled_account_keeps_only_sessions_with_a_second_factor_or_the_enrolling_one() {
        let email = Email::parse("a@example.com").unwrap();
        let mut user = User::new(email, "hash".into(), Role::User, None, None);
        let t0 = crate::domain::now();
        let pwd = vec!["pwd".to_owned()];
        let mfa = vec!["pwd".to_owned(), "otp".to_owned(), "mfa".to_owned()];
        assert!(
            user.session_alive(None, t0, &pwd),
            "no second factor: the password will do"
        );
        let enrolling = Uuid::new_v4();
        enrolled_after(&mut user, t0);
        user.kept_session = Some(enrolling);
        let later = t0 + chrono::Duration::seconds(1);
        // Issued after the enrolment with the password alone (the race): dead.
        assert!(!user.session_alive(Some(Uuid::new_v4()), later, &pwd));
        assert!(!user.session_alive(None, later, &[]));
        // With a second factor: alive; before the enrolment: dead either way.
        assert!(user.session_alive(Some(Uuid::new_v4()), later, &mfa));
        assert!(!user.session_alive(
            Some(Uuid::new_v4()),
            t0 - chrono::Duration::seconds(1),
            &mfa
        ));
        // The session that enrolled goes on.
        assert!(user.session_alive(Some(enrolling), t0 - chrono::Duration::seconds(1), &pwd));
    }
}
