//! Issuing tokens: the one function every grant and the cookie login go through, and the
//! refresh-token exchange that precedes a refresh grant.

use serde_json::json;
use uuid::Uuid;

use super::{AppState, ServiceError};
use crate::audit;
use crate::auth::clients::SecretVersion;
use crate::auth::{refresh, IssuedToken, Principal};
use crate::domain::{Client, Scopes, Session, User};
use crate::store::RefreshOutcome;

/// How tokens are granted, and to whom.
pub enum Grant<'a> {
    /// A password login at the token endpoint: a new session with its first refresh token.
    Password(&'a User),
    /// A refresh token exchanged (see `AppState::exchange_refresh_token`): the session goes
    /// on, with the refresh token the store has just rotated in.
    RefreshToken {
        user: &'a User,
        session_id: Uuid,
        refresh_token: String,
    },
    /// A registered client's own token: no session, no refresh token.
    ClientCredentials(&'a Client),
    /// A cookie login: a session id that "log out" can revoke; nothing is stored.
    Cookie(&'a User),
}

impl Grant<'_> {
    /// The label in metrics and logs.
    fn name(&self) -> &'static str {
        match self {
            Self::Password(_) => "password",
            Self::RefreshToken { .. } => "refresh_token",
            Self::ClientCredentials(_) => "client_credentials",
            Self::Cookie(_) => "cookie",
        }
    }
}

/// What a grant hands out.
pub struct Tokens {
    pub access: IssuedToken,
    /// User logins at the token endpoint only.
    pub refresh: Option<String>,
}

/// What presenting a refresh token gave.
pub enum Exchanged {
    /// The token was current (or within the reuse grace): the session goes on with a new
    /// refresh token; `allowed` is what the session may still be granted.
    Rotated {
        user: Box<User>,
        session_id: Uuid,
        allowed: Scopes,
        refresh_token: String,
    },
    /// A used token was presented again: the whole session is now revoked (audited).
    Reused,
    /// Unknown (not of a live family), expired or revoked.
    Invalid,
}

impl AppState {
    /// Issues the tokens of `grant` with `scopes`: the session of a password login, then
    /// the signed access token, counted in the metrics and logged. The only place an
    /// access token is issued.
    pub async fn issue(&self, grant: Grant<'_>, scopes: Scopes) -> Result<Tokens, ServiceError> {
        let user = |user: &User, sid| Principal::User {
            id: user.id,
            role: user.role,
            sid: Some(sid),
        };
        let (principal, refresh) = match &grant {
            Grant::Password(u) => {
                let family = refresh::Family::generate();
                let first = family.issue(crate::domain::now(), self.refresh_ttl());
                let id = family.session_id();
                let session = Session::new(id, u.id, scopes, family.hash(), first.stored);
                self.store.create_session(session).await?;
                (user(u, id), Some(first.token))
            }
            Grant::RefreshToken {
                user: u,
                session_id,
                refresh_token,
            } => (user(u, *session_id), Some(refresh_token.clone())),
            Grant::ClientCredentials(client) => {
                let secret_version = Some(SecretVersion::of(client));
                (
                    Principal::Client {
                        id: client.id,
                        secret_version,
                    },
                    None,
                )
            }
            Grant::Cookie(u) => (user(u, Uuid::now_v7()), None),
        };
        let access = self.tokens.issue(principal, &scopes)?;
        self.metrics.token_issued(grant.name());
        match principal {
            Principal::User { id, sid, .. } => {
                let session_id = sid.map(|s| s.to_string()).unwrap_or_default();
                tracing::info!(grant = grant.name(), user_id = %id, %session_id, scope = %scopes, "token issued")
            }
            Principal::Client { id, .. } => {
                tracing::info!(grant = grant.name(), client_id = %id, scope = %scopes, "token issued")
            }
        }
        Ok(Tokens { access, refresh })
    }

    /// Exchanges a refresh token for the next one of its session, atomically, detecting
    /// reuse (REFRESH_REUSE_GRACE): a replayed token of the session, however old, revokes
    /// the whole session.
    pub async fn exchange_refresh_token(
        &self,
        presented: &str,
        ctx: &audit::Context,
    ) -> Result<Exchanged, ServiceError> {
        let Some(presented) = refresh::parse(presented) else {
            return Ok(Exchanged::Invalid);
        };
        let new = presented
            .family
            .issue(crate::domain::now(), self.refresh_ttl());
        let grace = chrono::Duration::seconds(self.config.refresh_reuse_grace as i64);
        let outcome = self
            .store
            .refresh(presented.stored, new.stored, grace)
            .await?;
        Ok(match outcome {
            RefreshOutcome::Rotated {
                session_id,
                scope,
                user,
                benign_race,
            } => {
                tracing::info!(user_id = %user.id, %session_id, benign_race, "refresh token rotated");
                // A demoted user keeps the session but loses what the role no longer allows.
                let allowed = scope.intersect(&user.role.scopes());
                Exchanged::Rotated {
                    user: Box::new(user),
                    session_id,
                    allowed,
                    refresh_token: new.token,
                }
            }
            RefreshOutcome::Reused {
                session_id,
                user_id,
            } => {
                tracing::warn!(%user_id, %session_id, "refresh token reuse detected: session revoked");
                self.metrics
                    .refresh_reuse
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let fields = json!({ "session_id": session_id });
                self.audit.record(
                    "refresh_reuse_detected",
                    Some(&user_id.to_string()),
                    ctx,
                    fields,
                );
                Exchanged::Reused
            }
            RefreshOutcome::Invalid => Exchanged::Invalid,
        })
    }
}
