use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use secrecy::SecretString;

use chrono::Utc;

use super::body::{BodyError, Form, FormFields};
use super::error::{OAuthError, OAuthErrorCode};
use super::{ApiError, ApiTags};
use crate::auth::refresh;
use crate::auth::tokens::IssuedToken;
use crate::domain::{Scopes, Session, User};
use crate::startup::AppState;
use crate::store::RefreshOutcome;

pub struct AuthApi {
    state: Option<Arc<AppState>>,
}

impl AuthApi {
    pub fn new(state: Option<Arc<AppState>>) -> Self {
        Self { state }
    }
}

/// Which grant: `password` or `refresh_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum GrantType {
    /// Resource owner password credentials (RFC 6749 §4.3): email and password.
    Password,
    /// Exchange a refresh token for a new access token and a new refresh token (§6).
    RefreshToken,
}

/// An OAuth2 token request (RFC 6749), form-encoded.
#[derive(Object)]
pub struct TokenRequest {
    pub grant_type: GrantType,
    /// password grant: the account's email.
    pub username: Option<String>,
    /// password grant: the account's password.
    pub password: Option<Password>,
    /// refresh_token grant: the refresh token. It is single-use: keep the new one.
    pub refresh_token: Option<String>,
    /// Space-separated scopes to narrow the token to (default: everything the account may do).
    pub scope: Option<String>,
    /// Public clients (such as Swagger UI) may send their id; it is accepted and not checked.
    pub client_id: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Object)]
pub struct TokenBody {
    /// The access token: a JWT signed with a key from `/.well-known/jwks.json`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// User logins only: exchange it at this endpoint (`grant_type=refresh_token`) for a
    /// new pair before it expires. Single-use; presenting a used one again (after a short
    /// grace window) revokes the whole session.
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
}

/// An RFC 7009 revocation request.
#[derive(Object)]
pub struct RevokeRequest {
    /// The refresh token or access token to revoke.
    pub token: String,
    /// `refresh_token` or `access_token`; only a hint, the token's shape decides.
    pub token_type_hint: Option<String>,
}

#[derive(ApiResponse)]
pub enum RevokeResponse {
    /// The token is revoked, or was unknown, expired or already revoked (RFC 7009 §2.2).
    #[oai(status = 200)]
    Ok(Json<super::users::Empty>),
}

#[derive(ApiResponse)]
pub enum TokenResponse {
    /// A new access token. Never cache it.
    #[oai(status = 200)]
    Ok(
        Json<TokenBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

fn granted(token: IssuedToken, refresh_token: Option<String>) -> TokenResponse {
    TokenResponse::Ok(
        Json(TokenBody {
            access_token: token.token,
            token_type: "Bearer".into(),
            expires_in: token.expires_in,
            scope: token.claims.scope,
            refresh_token,
        }),
        "no-store".into(),
        "no-cache".into(),
    )
}

/// The scopes to grant: all of `allowed`, or the requested subset of it.
fn narrow(requested: Option<&str>, allowed: Scopes) -> Result<Scopes, OAuthError> {
    let Some(raw) = requested else {
        return Ok(allowed);
    };
    let requested = Scopes::parse(raw).map_err(|unknown| {
        OAuthError::new(
            OAuthErrorCode::InvalidScope,
            format!("unknown scope {unknown}"),
        )
    })?;
    if requested.is_empty() {
        return Ok(allowed);
    }
    if !requested.is_subset(&allowed) {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidScope,
            format!("this account may be granted at most: {allowed}"),
        ));
    }
    Ok(requested)
}

impl AuthApi {
    async fn password_grant(
        &self,
        state: &AppState,
        form: &Form,
    ) -> Result<TokenResponse, OAuthError> {
        let username = form
            .get("username")
            .ok_or_else(|| OAuthError::invalid_request("username missing"))?;
        let password = SecretString::from(
            form.get("password")
                .ok_or_else(|| OAuthError::invalid_request("password missing"))?,
        );
        let user = state
            .check_credentials(username, &password)
            .await
            .map_err(ApiError::from)?;
        let Some(user) = user else {
            tracing::info!("password grant refused");
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidGrant,
                "invalid username or password",
            ));
        };
        let scopes = narrow(form.get("scope"), user.role.scopes())?;
        self.rehash_if_outdated(state, &user, &password).await;
        let refresh = refresh::generate(Utc::now(), refresh_ttl(state));
        let session = Session::new(user.id, scopes.clone(), refresh.stored);
        state
            .store
            .create_session(session.clone())
            .await
            .map_err(ApiError::from)?;
        let token = state
            .tokens
            .issue(
                user.id.to_string(),
                &scopes,
                Some(user.role),
                Some(session.id),
            )
            .map_err(ApiError::from)?;
        tracing::info!(user_id = %user.id, session_id = %session.id, "password grant: logged in");
        Ok(granted(token, Some(refresh.token)))
    }

    async fn refresh_grant(
        &self,
        state: &AppState,
        form: &Form,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("refresh_token missing"))?;
        let new = refresh::generate(Utc::now(), refresh_ttl(state));
        let grace = chrono::Duration::seconds(state.config.refresh_reuse_grace as i64);
        let outcome = state
            .store
            .refresh(refresh::hash(presented), new.stored, grace)
            .await
            .map_err(ApiError::from)?;
        match outcome {
            RefreshOutcome::Rotated {
                session_id,
                scope,
                user,
                benign_race,
            } => {
                // A demoted user keeps the session but loses what the role no longer allows.
                let allowed = scope.intersect(&user.role.scopes());
                let scopes = narrow(form.get("scope"), allowed)?;
                let token = state
                    .tokens
                    .issue(
                        user.id.to_string(),
                        &scopes,
                        Some(user.role),
                        Some(session_id),
                    )
                    .map_err(ApiError::from)?;
                tracing::info!(user_id = %user.id, %session_id, benign_race, "refresh token rotated");
                Ok(granted(token, Some(new.token)))
            }
            RefreshOutcome::Reused {
                session_id,
                user_id,
            } => {
                tracing::warn!(%user_id, %session_id, "refresh token reuse detected: session revoked");
                Err(OAuthError::new(
                    OAuthErrorCode::InvalidGrant,
                    "refresh token reuse detected; the session has been revoked",
                ))
            }
            RefreshOutcome::Invalid => Err(OAuthError::new(
                OAuthErrorCode::InvalidGrant,
                "invalid, expired or revoked refresh token",
            )),
        }
    }

    /// Upgrades a hash made with older argon2 parameters while the password is at hand.
    /// Best effort: a failure here must not fail the login.
    async fn rehash_if_outdated(&self, state: &AppState, user: &User, password: &SecretString) {
        if !state.passwords.needs_rehash(&user.password_hash) {
            return;
        }
        let old = user.password_hash.clone();
        let outcome = match state.passwords.hash(password).await {
            Ok(hash) => state
                .store
                .update_user(
                    user.id,
                    // Only if the password did not change meanwhile: never resurrect an old one.
                    Box::new(move |u| {
                        if u.password_hash == old {
                            u.password_hash = hash;
                        }
                    }),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = outcome {
            tracing::warn!(user_id = %user.id, %error, "could not upgrade an outdated password hash");
        }
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Get an access token
    ///
    /// The OAuth2 token endpoint (RFC 6749), form-encoded. `grant_type=password` with the
    /// account's email as `username` returns a signed JWT access token and a refresh token.
    /// Wrong email and wrong password get the same `invalid_grant` answer.
    /// `grant_type=refresh_token` exchanges a refresh token for a new pair (rotation).
    #[oai(path = "/auth/token", method = "post", operation_id = "createToken")]
    async fn token(&self, body: FormFields<TokenRequest>) -> Result<TokenResponse, OAuthError> {
        let state = super::state(&self.state)?;
        let form = form_of(body)?;
        match form.get("grant_type") {
            None => Err(OAuthError::invalid_request("grant_type missing")),
            Some("password") => self.password_grant(state, &form).await,
            Some("refresh_token") => self.refresh_grant(state, &form).await,
            Some(other) => Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                format!("grant_type {other} is not supported"),
            )),
        }
    }

    /// Revoke a token
    ///
    /// RFC 7009. A refresh token ends its whole session; an access token is refused from
    /// now until it expires. Answers 200 `{}` even for unknown or expired tokens, so it
    /// reveals nothing. Anyone holding a token may revoke it.
    #[oai(path = "/auth/revoke", method = "post", operation_id = "revokeToken")]
    async fn revoke(&self, body: FormFields<RevokeRequest>) -> Result<RevokeResponse, OAuthError> {
        let state = super::state(&self.state)?;
        let form = form_of(body)?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token missing"))?;
        if token.contains('.') {
            // Only a token this service signed, and that is still valid, needs revoking.
            if let Ok(claims) = state.tokens.verify(token) {
                let (jti, exp) = (claims.jti.clone(), claims.expires_at());
                state
                    .store
                    .revoke_jti(jti, exp)
                    .await
                    .map_err(ApiError::from)?;
                tracing::info!(sub = %claims.sub, "access token revoked");
            }
        } else if let Some(session) = state
            .store
            .session_by_refresh(&refresh::hash(token))
            .await
            .map_err(ApiError::from)?
        {
            state
                .store
                .revoke_session(session.id)
                .await
                .map_err(ApiError::from)?;
            tracing::info!(user_id = %session.user_id, session_id = %session.id, "session revoked");
        }
        Ok(RevokeResponse::Ok(Json(super::users::Empty {})))
    }
}

/// The form of a token-endpoint request, or the RFC 6749 error for it.
fn form_of<T>(body: FormFields<T>) -> Result<Form, OAuthError> {
    let pairs = body.into_object().map_err(|e| match e {
        BodyError::TooLarge => OAuthError::from(ApiError::too_large()),
        BodyError::WrongFormat => {
            OAuthError::invalid_request("the body must be application/x-www-form-urlencoded")
        }
    })?;
    Form::new(pairs).map_err(OAuthError::invalid_request)
}

fn refresh_ttl(state: &AppState) -> chrono::Duration {
    chrono::Duration::seconds(state.config.refresh_token_ttl.min(i64::MAX as u64 / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, Scope};

    #[test]
    fn scope_requests_only_narrow() {
        let admin = Role::Admin.scopes();
        assert_eq!(narrow(None, admin.clone()).ok(), Some(admin.clone()));
        assert_eq!(narrow(Some(""), admin.clone()).ok(), Some(admin.clone()));
        assert_eq!(
            narrow(Some("users:read"), admin).ok(),
            Some(Scopes::of([Scope::UsersRead]))
        );
        assert!(narrow(Some("users:read"), Role::User.scopes()).is_err());
        assert!(narrow(Some("root"), Role::User.scopes()).is_err());
    }
}
