use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{Scopes, UserId};

/// One login: a family of refresh tokens, each used once and replaced by the next.
///
/// Every token of the family names the session and carries the family's secret (see
/// `auth::refresh`), so a token is recognised as the family's however many rotations ago
/// it was replaced, without a history of its predecessors: the session keeps the secret's
/// hash, its current token and the tokens superseded so recently that presenting one may
/// still be a benign race.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: UserId,
    /// What the login was granted; refreshes can only narrow it.
    pub scope: Scopes,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// SHA-256 (hex) of the family secret its tokens carry. `None` for a session stored by
    /// a version before families: its tokens carry no secret and are refused, so it is
    /// kept only for its revocation and expiry (with its newest token alone).
    pub family: Option<String>,
    /// The client the login was granted to (the authorization code flow), which may revoke
    /// it; `None` for the service's own logins (password grant).
    pub client_id: Option<super::ClientId>,
    /// How the person signed in (RFC 8176 `amr`: `pwd`, `otp`, `mfa`…), for the access
    /// tokens its refreshes issue; empty for logins from before it was kept.
    pub amr: Vec<String>,
    /// The current token last; before it, oldest first, the tokens it superseded that are
    /// kept for the grace window (see `rotate`).
    pub tokens: Vec<RefreshToken>,
}

/// A refresh token as stored: only its SHA-256, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub hash: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When it stopped being the current token: it was exchanged, or a replay of its
    /// predecessor within the grace window superseded it. Presenting it again after that
    /// is reuse (or, within the grace window, a benign race).
    pub rotated_at: Option<DateTime<Utc>>,
}

/// A presented refresh token as a store judges it: the session it names, and the SHA-256
/// (hex) of the family secret it carries and of the whole token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedRefresh {
    pub session_id: Uuid,
    pub family: String,
    pub hash: String,
}

impl Session {
    /// Superseded tokens kept at most, however fast a family rotates. Dropping one early
    /// only makes a replay of it reuse rather than a benign race: never an unknown token.
    pub const MAX_SUPERSEDED: usize = 100;

    pub fn new(
        id: Uuid,
        user_id: UserId,
        scope: Scopes,
        family: String,
        first: RefreshToken,
    ) -> Self {
        Self {
            id,
            user_id,
            scope,
            created_at: first.issued_at,
            revoked_at: None,
            family: Some(family),
            client_id: None,
            amr: Vec::new(),
            tokens: vec![first],
        }
    }

    /// Still usable at `now`: not revoked and its newest token not expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.tokens.last().is_some_and(|t| t.expires_at > now)
    }

    /// Whether `presented` is a token of this family (current or not): it names this
    /// session and carries its secret.
    pub fn is_family_of(&self, presented: &PresentedRefresh) -> bool {
        self.id == presented.session_id && self.family.as_ref() == Some(&presented.family)
    }

    /// The token a refresh exchanges without a race: the newest, unless it was rotated.
    pub fn current(&self) -> Option<&RefreshToken> {
        self.tokens.last().filter(|t| t.rotated_at.is_none())
    }

    /// Makes `new` the current token at `now`. The token it replaces (the one presented,
    /// or the successor an earlier replay got) counts as rotated from `now`, so the family
    /// has one live token. Superseded tokens are kept while a replay of them may be a
    /// benign race: for twice `grace` (a store reads `now` before its lock, so two
    /// presentations may be judged a little out of order), at most `MAX_SUPERSEDED`;
    /// without a record a token of the family is reuse. Returns the hashes dropped.
    pub fn rotate(
        &mut self,
        new: RefreshToken,
        now: DateTime<Utc>,
        grace: Duration,
    ) -> Vec<String> {
        if let Some(replaced) = self.tokens.last_mut() {
            replaced.rotated_at.get_or_insert(now);
        }
        let recent = |t: &RefreshToken| {
            grace > Duration::zero() && t.rotated_at.is_some_and(|at| now - at <= grace * 2)
        };
        let mut dropped = Vec::new();
        let mut kept = Vec::new();
        for token in std::mem::take(&mut self.tokens).into_iter().rev() {
            if kept.len() < Self::MAX_SUPERSEDED && recent(&token) {
                kept.push(token);
            } else {
                dropped.push(token.hash);
            }
        }
        kept.reverse();
        kept.push(new);
        self.tokens = kept;
        dropped
    }
}

#[cfg(test)]
mod tests {
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

    fn session(first: RefreshToken) -> Session {
        Session::new(
            Uuid::now_v7(),
            Uuid::now_v7(),
            Scopes::default(),
            "f".into(),
            first,
        )
    }

    fn hashes(s: &Session) -> Vec<&str> {
        s.tokens.iter().map(|t| t.hash.as_str()).collect()
    }

    #[test]
    fn a_session_lives_until_revoked_or_its_newest_token_expires() {
        let now = crate::domain::now();
        let mut s = session(token("a", -1));
        assert!(!s.is_live(now));
        s.rotate(token("b", 60), now, Duration::seconds(10));
        assert!(s.is_live(now));
        s.revoked_at = Some(now);
        assert!(!s.is_live(now));
    }

    #[test]
    fn a_rotation_leaves_one_current_token_and_supersedes_the_one_before() {
        let now = crate::domain::now();
        let grace = Duration::seconds(10);
        let mut s = session(token("a", 60));
        assert!(s.rotate(token("b", 60), now, grace).is_empty());
        // A replay of `a` within the window: `b` counts as rotated from this moment.
        let later = now + Duration::seconds(3);
        assert!(s.rotate(token("c", 60), later, grace).is_empty());
        assert_eq!(hashes(&s), ["a", "b", "c"]);
        assert_eq!(
            s.tokens[0].rotated_at,
            Some(now),
            "its first rotation stays"
        );
        assert_eq!(s.tokens[1].rotated_at, Some(later));
        assert_eq!(s.current().map(|t| t.hash.as_str()), Some("c"));
    }

    #[test]
    fn superseded_tokens_are_kept_only_while_a_replay_may_be_benign() {
        let now = crate::domain::now();
        let grace = Duration::seconds(10);
        let mut s = session(token("a", 60));
        s.rotate(token("b", 60), now, grace);
        // Twice the window later `a` is still kept; just past it, it is dropped.
        s.rotate(token("c", 60), now + grace * 2, grace);
        assert_eq!(hashes(&s), ["a", "b", "c"]);
        let dropped = s.rotate(
            token("d", 60),
            now + grace * 2 + Duration::milliseconds(1),
            grace,
        );
        assert_eq!(dropped, ["a"]);
        assert_eq!(hashes(&s), ["b", "c", "d"]);
        // Without a grace window nothing superseded is worth keeping.
        let dropped = s.rotate(token("e", 60), now + grace * 2, Duration::zero());
        assert_eq!(dropped, ["d", "c", "b"]);
        assert_eq!(hashes(&s), ["e"]);
    }

    #[test]
    fn however_fast_a_family_rotates_it_keeps_a_bounded_number_of_tokens() {
        let now = crate::domain::now();
        let mut s = session(token("0", 60));
        for i in 1..=Session::MAX_SUPERSEDED + 5 {
            s.rotate(token(&i.to_string(), 60), now, Duration::seconds(10));
        }
        assert_eq!(s.tokens.len(), Session::MAX_SUPERSEDED + 1);
        assert_eq!(s.tokens[0].hash, "5", "the oldest went first");
        assert_eq!(
            s.current().unwrap().hash,
            (Session::MAX_SUPERSEDED + 5).to_string()
        );
    }
}
