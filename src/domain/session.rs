use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Scopes, UserId};

/// One login: a family of refresh tokens, each used once and replaced by the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: UserId,
    /// What the login was granted; refreshes can only narrow it.
    pub scope: Scopes,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Every refresh token of the family, oldest first (capped at `MAX_HISTORY`).
    pub tokens: Vec<RefreshToken>,
}

/// A refresh token as stored: only its SHA-256, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub hash: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When it was exchanged for its successor; presenting it again after that is reuse.
    pub rotated_at: Option<DateTime<Utc>>,
}

impl Session {
    /// Rotated hashes kept for reuse detection. At one refresh per 15-minute access token
    /// that is over ten days of history; older tokens are simply unknown (invalid_grant).
    pub const MAX_HISTORY: usize = 1000;

    pub fn new(user_id: UserId, scope: Scopes, first: RefreshToken) -> Self {
        Self {
            id: Uuid::now_v7(),
            user_id,
            scope,
            created_at: first.issued_at,
            revoked_at: None,
            tokens: vec![first],
        }
    }

    /// Still usable at `now`: not revoked and its newest token not expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.tokens.last().is_some_and(|t| t.expires_at > now)
    }

    pub fn push(&mut self, token: RefreshToken) {
        self.tokens.push(token);
        if self.tokens.len() > Self::MAX_HISTORY {
            self.tokens.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn token(hash: &str, ttl_secs: i64) -> RefreshToken {
        let now = crate::domain::now();
        RefreshToken {
            hash: hash.into(),
            issued_at: now,
            expires_at: now + Duration::seconds(ttl_secs),
            rotated_at: None,
        }
    }

    #[test]
    fn a_session_lives_until_revoked_or_its_newest_token_expires() {
        let mut s = Session::new(Uuid::now_v7(), Scopes::default(), token("a", -1));
        assert!(!s.is_live(crate::domain::now()));
        s.push(token("b", 60));
        assert!(s.is_live(crate::domain::now()));
        s.revoked_at = Some(crate::domain::now());
        assert!(!s.is_live(crate::domain::now()));
    }

    #[test]
    fn history_is_capped() {
        let mut s = Session::new(Uuid::now_v7(), Scopes::default(), token("0", 60));
        for i in 1..=Session::MAX_HISTORY + 5 {
            s.push(token(&i.to_string(), 60));
        }
        assert_eq!(s.tokens.len(), Session::MAX_HISTORY);
        assert_eq!(
            s.tokens.last().unwrap().hash,
            (Session::MAX_HISTORY + 5).to_string()
        );
    }
}
