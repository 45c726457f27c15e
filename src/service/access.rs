//! Checking an access token: the stateless checks (`TokenService::verify`) and the
//! stateful ones (revocations, the subject as the store has it now) behind one function,
//! which the bearer extractor, the session cookie and introspection all call.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{AppState, ServiceError};
use crate::auth::{AccessClaims, Principal, TokenError};
use crate::domain::{Client, Scopes, User};
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
        let (account, allowed) = match claims.principal()? {
            Principal::User { id, sid, .. } => {
                // A revoked session (logout, revocation, refresh-token theft) takes its
                // access tokens with it, not only its refresh tokens.
                let user = match self.store.user_token(&claims.jti, id, sid).await? {
                    TokenStanding::Live(user) => user,
                    TokenStanding::Revoked => return Err(TokenError::Revoked.into()),
                    TokenStanding::NoUser => {
                        return Err(TokenError::Invalid("the user no longer exists").into())
                    }
                };
                if !user.session_alive(sid, issued_instant(&claims)) {
                    return Err(TokenError::Revoked.into());
                }
                let allowed = user.role.scopes();
                (Account::User(user), allowed)
            }
            Principal::Client { id } => {
                if self.store.is_jti_revoked(&claims.jti).await? {
                    return Err(TokenError::Revoked.into());
                }
                let client = self
                    .store
                    .client(id)
                    .await?
                    .ok_or(TokenError::Invalid("the client no longer exists"))?;
                let allowed = client.scope;
                (Account::Client(client), allowed)
            }
        };
        let scopes = claims.scopes().intersect(&allowed);
        Ok(Verified {
            claims,
            scopes,
            account,
        })
    }
}
