//! Issuing tokens: the one function every grant and the cookie login go through, and the
//! refresh-token exchange that precedes a refresh grant.

use serde_json::json;
use uuid::Uuid;

use super::{AppState, ServiceError};
use crate::audit;
use crate::auth::clients::SecretVersion;
use crate::auth::id_token::IdClaims;
use crate::auth::{refresh, Authentication, IssuedToken, Principal};
use crate::domain::{AuthCode, Client, Scope, Scopes, Session, User};
use crate::store::RefreshOutcome;

/// How tokens are granted, and to whom.
pub enum Grant<'a> {
    /// A password login at the token endpoint (with a second factor if `authn` says so):
    /// a new session with its first refresh token.
    Password {
        user: &'a User,
        authn: Authentication,
    },
    /// A refresh token exchanged (see `AppState::exchange_refresh_token`): the session goes
    /// on, with the refresh token the store has just rotated in.
    RefreshToken {
        user: &'a User,
        session_id: Uuid,
        refresh_token: String,
        client: Option<crate::domain::ClientId>,
        /// How the session began (none for sessions from before it was kept).
        authn: Option<Authentication>,
    },
    /// A registered client's own token: no session, no refresh token.
    ClientCredentials(&'a Client),
    /// A cookie login: a session id that "log out" can revoke; nothing is stored.
    Cookie {
        user: &'a User,
        authn: Authentication,
    },
    /// An authorization code exchanged by `client` (browser sign-in): a new session of
    /// the person's, granted to the client, created before the code is marked used
    /// (`session`, from `AppState::new_family`), so a replay always finds it to revoke.
    AuthorizationCode {
        user: &'a User,
        client: &'a Client,
        code: &'a AuthCode,
        session: &'a refresh::Family,
    },
}

impl Grant<'_> {
    /// The person tokens are granted to (none for a client's own token).
    fn user(&self) -> Option<&User> {
        match self {
            Self::Password { user, .. }
            | Self::RefreshToken { user, .. }
            | Self::Cookie { user, .. }
            | Self::AuthorizationCode { user, .. } => Some(user),
            Self::ClientCredentials(_) => None,
        }
    }

    /// The label in metrics and logs.
    fn name(&self) -> &'static str {
        match self {
            Self::Password { .. } => "password",
            Self::RefreshToken { .. } => "refresh_token",
            Self::ClientCredentials(_) => "client_credentials",
            Self::Cookie { .. } => "cookie",
            Self::AuthorizationCode { .. } => "authorization_code",
        }
    }
}

/// What a grant hands out.
pub struct Tokens {
    pub access: IssuedToken,
    /// User logins at the token endpoint only.
    pub refresh: Option<String>,
    /// OpenID Connect: the authorization code grant with `openid`.
    pub id_token: Option<String>,
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
        /// The client the session was granted to (the authorization code flow).
        client: Option<crate::domain::ClientId>,
        /// How the session began, if it was kept.
        authn: Option<Authentication>,
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
        // REQUIRE_VERIFIED_EMAIL holds for every grant, refreshes and codes included (the
        // callers that can say more, and send a new code, ask `refuse_unverified` first).
        let unverified = grant.user().is_some_and(|u| !u.email_verified);
        if unverified && self.config.require_verified_email {
            return Err(ServiceError::EmailNotVerified);
        }
        let user = |user: &User, sid, client| Principal::User {
            id: user.id,
            role: user.role,
            sid: Some(sid),
            client,
        };
        let (principal, refresh) = match &grant {
            Grant::Password { user: u, authn } => {
                let family = refresh::Family::generate();
                let (id, first) = self
                    .create_session(&family, u, scopes, None, &authn.amr)
                    .await?;
                (user(u, id, None), Some(first))
            }
            Grant::AuthorizationCode {
                user: u,
                client,
                session,
                code,
            } => {
                let (id, first) = self
                    .create_session(session, u, scopes, Some(client.id), &code.amr)
                    .await?;
                // A refresh token only when asked for (offline_access) or to the
                // operator's own application (OIDC Core §11).
                let refresh = scopes.contains(Scope::OfflineAccess) || client.sign_in.first_party;
                (user(u, id, Some(client.id)), refresh.then_some(first))
            }
            Grant::RefreshToken {
                user: u,
                session_id,
                refresh_token,
                client,
                ..
            } => (user(u, *session_id, *client), Some(refresh_token.clone())),
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
            Grant::Cookie { user: u, .. } => (user(u, Uuid::now_v7(), None), None),
        };
        let authn = match &grant {
            Grant::Password { authn, .. } | Grant::Cookie { authn, .. } => Some(authn.clone()),
            Grant::RefreshToken { authn, .. } => authn.clone(),
            Grant::AuthorizationCode { code, .. } => Some(Authentication {
                amr: code.amr.clone(),
                auth_time: code.auth_time,
            }),
            Grant::ClientCredentials(_) => None,
        };
        let access = self.tokens.issue_with(principal, &scopes, authn.as_ref())?;
        let id_token = match &grant {
            Grant::AuthorizationCode {
                user, client, code, ..
            } if scopes.contains(Scope::OpenId) => {
                Some(self.id_token(user, client, code, scopes, &access.token)?)
            }
            _ => None,
        };
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
        Ok(Tokens {
            access,
            refresh,
            id_token,
        })
    }

    /// A new session (a refresh-token family) of `user` with its first token.
    async fn create_session(
        &self,
        family: &refresh::Family,
        user: &User,
        scopes: Scopes,
        client: Option<crate::domain::ClientId>,
        amr: &[String],
    ) -> Result<(Uuid, String), ServiceError> {
        let first = family.issue(crate::domain::now(), self.refresh_ttl());
        let id = family.session_id();
        let mut session = Session::new(id, user.id, scopes, family.hash(), first.stored);
        session.client_id = client;
        session.amr = amr.to_vec();
        self.store.create_session(session).await?;
        Ok((id, first.token))
    }

    /// The ID token of a code exchange (OIDC Core §3.1.3.6), about `user`, for `client`.
    fn id_token(
        &self,
        user: &User,
        client: &Client,
        code: &AuthCode,
        scopes: Scopes,
        access_token: &str,
    ) -> Result<String, ServiceError> {
        let now = crate::domain::now().timestamp();
        let released = super::released_claims(user, scopes);
        let text = |name: &str| {
            released
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let claims = IdClaims {
            iss: String::new(),
            sub: user.id.to_string(),
            aud: client.id.to_string(),
            exp: now + self.config.session_duration as i64,
            iat: now,
            auth_time: code.auth_time.timestamp(),
            nonce: code.nonce.clone(),
            sid: code.sso_session.to_string(),
            amr: code.amr.clone(),
            acr: code
                .amr
                .iter()
                .any(|m| m == "mfa")
                .then(|| "mfa".to_owned()),
            at_hash: None,
            azp: client.id.to_string(),
            email: text("email"),
            email_verified: released.get("email_verified").and_then(|v| v.as_bool()),
            name: text("name"),
            given_name: text("given_name"),
            family_name: text("family_name"),
        };
        Ok(self.tokens.issue_id_token(claims, access_token)?)
    }

    /// Exchanges a refresh token for the next one of its session, atomically, detecting
    /// reuse (REFRESH_REUSE_GRACE): a replayed token of the session, however old, revokes
    /// the whole session.
    pub async fn exchange_refresh_token(
        &self,
        presented: &str,
        ctx: &audit::Context,
    ) -> Result<Exchanged, ServiceError> {
        // Refused before the rotation, which would otherwise spend the token: the person
        // verifies and refreshes with it then.
        if self.config.require_verified_email {
            if let Some((session, _)) = self.session_of_refresh_token(presented).await? {
                let user = self.store.user(session.user_id).await?;
                if user.is_some_and(|u| !u.email_verified) {
                    return Err(ServiceError::EmailNotVerified);
                }
            }
        }
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
                client,
                amr,
                began,
            } => {
                tracing::info!(user_id = %user.id, %session_id, benign_race, "refresh token rotated");
                // A demoted user keeps the session but loses what the role no longer allows
                // (who they are, the OpenID scopes, stays theirs to grant).
                let allowed = scope.intersect(&user.role.grantable());
                Exchanged::Rotated {
                    user: Box::new(user),
                    session_id,
                    allowed,
                    refresh_token: new.token,
                    client,
                    authn: (!amr.is_empty()).then_some(Authentication {
                        amr,
                        auth_time: began,
                    }),
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
