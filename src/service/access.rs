//! Checking tokens: an access token's stateless checks (`TokenService::verify`) and
//! stateful ones (revocations, the subject as the store has it now) behind one function,
//! which the bearer extractor, the session cookie and introspection all call; whether a
//! refresh token is active (introspection); and revoking either kind (RFC 7009).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use serde_json::json;

use super::{AppState, ServiceError};
use crate::audit;
use crate::auth::clients::SecretVersion;
use crate::auth::{refresh, AccessClaims, Principal, TokenError};
use crate::domain::{Client, ClientId, PresentedRefresh, Scopes, Session, User, UserId};
use crate::store::TokenStanding;

/// Who is behind a verified token, as the store has them now.
pub enum Account {
    User(Arc<User>),
    Client(Client),
}

/// A token that passed every check.
pub struct Verified {
    pub claims: Arc<AccessClaims>,
    /// The token's scopes, narrowed to what the account may still have today.
    pub scopes: Scopes,
    pub account: Account,
    /// A person's token held by a third-party client (the authorization code flow): it
    /// may read the person's record, not change or delete the account.
    pub delegated: bool,
}

/// When the token was issued, to the millisecond: the jti is a UUIDv7, whose timestamp is
/// finer than `iat`'s whole seconds, so "log out everywhere" does not also kill tokens
/// issued later in the same second.
fn issued_instant(claims: &AccessClaims) -> DateTime<Utc> {
    uuid::Uuid::parse_str(&claims.jti)
        .ok()
        .and_then(|jti| jti.get_timestamp())
        .and_then(|ts| {
            let (secs, nanos) = ts.to_unix();
            DateTime::from_timestamp(secs as i64, nanos)
        })
        .unwrap_or_else(|| claims.issued_at())
}

impl AppState {
    /// Every check of an access token, in the contract's order: signature with the key
    /// named by `kid` and its own algorithm, `exp`/`nbf`, `iss`, `aud` (all in
    /// `TokenService::verify`), then the revoked `jti`s and the store: the subject still
    /// exists, the token is newer than the user's last "end sessions", its session is not
    /// revoked. A refused token is `ServiceError::Token`.
    pub async fn verify_access_token(&self, token: &str) -> Result<Verified, ServiceError> {
        let claims = self.tokens.verify(token)?;
        let mut delegated = false;
        let (account, allowed) = match claims.principal()? {
            Principal::User {
                id, sid, client, ..
            } => {
                // A revoked session (logout, revocation, refresh-token theft) takes its
                // access tokens with it, not only its refresh tokens.
                let user = match self.store.user_token(&claims.jti, id, sid).await? {
                    TokenStanding::Live(user) => user,
                    TokenStanding::Revoked => return Err(TokenError::Revoked.into()),
                    TokenStanding::NoUser => {
                        return Err(TokenError::Invalid("the user no longer exists").into())
                    }
                };
                let amr = claims.amr.as_deref().unwrap_or_default();
                if !user.session_alive(sid, issued_instant(&claims), amr) {
                    return Err(TokenError::Revoked.into());
                }
                // What the role allows, and who they are (the OpenID scopes)...
                let mut allowed = user.role.grantable();
                // ...and, for a token a client got through the authorization code flow,
                // what that client may still have: none once it is deleted.
                if let Some(client) = client {
                    let client = self
                        .sign_in_client(client)
                        .await?
                        .ok_or(TokenError::Invalid("the client no longer exists"))?;
                    allowed = allowed.intersect(&client.scope);
                    delegated = !client.sign_in.first_party;
                }
                (Account::User(user), allowed)
            }
            Principal::Client { id, secret_version } => {
                if self.store.is_jti_revoked(&claims.jti).await? {
                    return Err(TokenError::Revoked.into());
                }
                let client = self
                    .store
                    .client(id)
                    .await?
                    .ok_or(TokenError::Invalid("the client no longer exists"))?;
                // A rotated secret takes the tokens minted with the old one along: by the
                // secret's version, which no clock can blur (tokens from before versions
                // were written: by the time of the rotation).
                let current = SecretVersion::of(&client);
                let minted_before = match secret_version {
                    Some(version) => version != current,
                    None => issued_instant(&claims) < client.secret_rotated_at,
                };
                if minted_before {
                    return Err(TokenError::Revoked.into());
                }
                let allowed = client.scope;
                (Account::Client(client), allowed)
            }
        };
        let scopes = claims.scopes().intersect(&allowed);
        Ok(Verified {
            claims,
            scopes,
            account,
            delegated,
        })
    }
}

/// An active refresh token, as introspection shows it.
pub struct ActiveRefresh {
    pub user_id: UserId,
    pub scope: Scopes,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl AppState {
    /// A refresh token is active while it is its session's current one, unexpired, in a
    /// live session of a user who has not ended it.
    pub async fn active_refresh_token(
        &self,
        token: &str,
    ) -> Result<Option<ActiveRefresh>, ServiceError> {
        let Some((session, presented)) = self.session_of_refresh_token(token).await? else {
            return Ok(None);
        };
        let now = crate::domain::now();
        let current = session
            .current()
            .filter(|t| t.hash == presented.hash && t.expires_at > now);
        let user = self.store.user(session.user_id).await?;
        let alive = user
            .is_some_and(|u| u.session_alive(Some(session.id), session.created_at, &session.amr));
        Ok(current
            .filter(|_| alive && session.is_live(now))
            .map(|t| ActiveRefresh {
                user_id: session.user_id,
                scope: session.scope,
                issued_at: t.issued_at,
                expires_at: t.expires_at,
            }))
    }

    /// The client a refresh token's session was granted to (the authorization code flow),
    /// and that client as it is now (`None` if it was deleted); `None` for the service's
    /// own logins and for anything not a refresh token of ours.
    pub async fn refresh_token_client(
        &self,
        token: &str,
    ) -> Result<Option<(ClientId, Option<Client>)>, ServiceError> {
        let Some((session, _)) = self.session_of_refresh_token(token).await? else {
            return Ok(None);
        };
        let Some(id) = session.client_id else {
            return Ok(None);
        };
        Ok(Some((id, self.sign_in_client(id).await?)))
    }

    /// The session whose family `token` is a token of (current or not), and the token as
    /// the store knows it; `None` for anything else.
    pub(super) async fn session_of_refresh_token(
        &self,
        token: &str,
    ) -> Result<Option<(Session, PresentedRefresh)>, ServiceError> {
        let Some(presented) = refresh::parse(token) else {
            return Ok(None);
        };
        let session = self.store.session(presented.stored.session_id).await?;
        Ok(session
            .filter(|s| s.is_family_of(&presented.stored))
            .map(|s| (s, presented.stored)))
    }

    /// Revokes `token` (RFC 7009): an access token's `jti` until it expires, a refresh
    /// token's whole session (any token of the family, current or not). Unknown, expired
    /// and foreign tokens are left alone, silently: the answer must not tell them apart.
    /// `client`: the authenticated client, which may revoke only tokens issued to it (its
    /// own tokens, and people's tokens it got through the authorization code flow).
    pub async fn revoke_token(
        &self,
        token: &str,
        client: Option<&Client>,
        ctx: &audit::Context,
    ) -> Result<(), ServiceError> {
        let issued_to_caller = |token_client: Option<&str>| match client {
            None => true,
            Some(client) => token_client == Some(client.id.to_string().as_str()),
        };
        if token.contains('.') {
            // Only a token this service signed, and that is still valid, needs revoking.
            if let Ok(claims) = self.tokens.verify(token) {
                if issued_to_caller(claims.client_id.as_deref()) {
                    let (jti, exp) = (claims.jti.clone(), claims.expires_at());
                    self.store.revoke_jti(jti, exp).await?;
                    let fields = json!({ "kind": "access_token", "jti": claims.jti });
                    self.audit
                        .record("token_revoked", Some(&claims.sub), ctx, fields);
                }
            }
        } else if let Some((session, _)) = self.session_of_refresh_token(token).await? {
            let granted_to = session.client_id.map(|c| c.to_string());
            if issued_to_caller(granted_to.as_deref()) {
                self.store.revoke_session(session.id).await?;
                let fields = json!({ "kind": "refresh_token", "session_id": session.id });
                let subject = session.user_id.to_string();
                self.audit
                    .record("token_revoked", Some(&subject), ctx, fields);
            }
        }
        Ok(())
    }

    /// Ends the session of `claims` (its access token and, for a password-grant login, its
    /// refresh tokens); `global` also ends every other session of the user: all tokens
    /// issued before now.
    pub async fn log_out(
        &self,
        user_id: UserId,
        claims: &AccessClaims,
        global: bool,
        ctx: &audit::Context,
    ) -> Result<(), ServiceError> {
        self.store
            .revoke_jti(claims.jti.clone(), claims.expires_at())
            .await?;
        if let Some(sid) = claims.session_id() {
            self.store.revoke_session(sid).await?;
        }
        if global {
            self.store
                .update_user(
                    user_id,
                    Box::new(|u| {
                        u.tokens_valid_after = crate::domain::now();
                        u.kept_session = None;
                    }),
                )
                .await?;
        }
        let fields = json!({ "global": global });
        self.audit
            .record("logout", Some(&user_id.to_string()), ctx, fields);
        Ok(())
    }
}
