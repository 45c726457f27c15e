use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use secrecy::SecretString;

use super::body::{Form, FormFields};
use super::error::{OAuthError, OAuthErrorCode};
use super::ApiTags;
use crate::domain::{Scopes, User};
use crate::startup::AppState;

pub struct AuthApi {
    state: Option<Arc<AppState>>,
}

impl AuthApi {
    pub fn new(state: Option<Arc<AppState>>) -> Self {
        Self { state }
    }
}

/// The grants this endpoint supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum GrantType {
    /// Resource owner password credentials (RFC 6749 §4.3): email and password.
    Password,
}

/// An OAuth2 token request (RFC 6749), form-encoded.
#[derive(Object)]
pub struct TokenRequest {
    /// Which grant: `password`.
    pub grant_type: GrantType,
    /// password grant: the account's email.
    pub username: Option<String>,
    /// password grant: the account's password.
    pub password: Option<Password>,
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

fn granted(token: crate::auth::tokens::IssuedToken) -> TokenResponse {
    TokenResponse::Ok(
        Json(TokenBody {
            access_token: token.token,
            token_type: "Bearer".into(),
            expires_in: token.expires_in,
            scope: token.claims.scope,
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
            .store
            .user_by_email(username)
            .await
            .map_err(super::ApiError::from)?;
        // Verify even for unknown accounts (against a dummy hash): same answer, same time.
        let verified = state
            .passwords
            .verify(user.as_ref().map(|u| u.password_hash.as_str()), &password)
            .await;
        let Some(user) = user.filter(|_| verified) else {
            tracing::info!("password grant refused");
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidGrant,
                "invalid username or password",
            ));
        };
        let scopes = narrow(form.get("scope"), user.role.scopes())?;
        self.rehash_if_outdated(state, &user, &password).await;
        let token = state
            .tokens
            .issue(user.id.to_string(), &scopes, Some(user.role))
            .map_err(super::ApiError::from)?;
        tracing::info!(user_id = %user.id, "password grant issued a token");
        Ok(granted(token))
    }

    /// Upgrades a hash made with older argon2 parameters while the password is at hand.
    /// Best effort: a failure here must not fail the login.
    async fn rehash_if_outdated(&self, state: &AppState, user: &User, password: &SecretString) {
        if !state.passwords.needs_rehash(&user.password_hash) {
            return;
        }
        let outcome = match state.passwords.hash(password).await {
            Ok(hash) => state
                .store
                .update_user(user.id, Box::new(move |u| u.password_hash = hash))
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
    /// account's email as `username` returns a signed JWT access token. Wrong email and
    /// wrong password get the same `invalid_grant` answer.
    #[oai(path = "/auth/token", method = "post", operation_id = "createToken")]
    async fn token(&self, body: FormFields<TokenRequest>) -> Result<TokenResponse, OAuthError> {
        let state = super::state(&self.state)?;
        let pairs = body.into_object().map_err(|e| match e {
            super::body::BodyError::TooLarge => OAuthError::from(super::ApiError::too_large()),
            super::body::BodyError::WrongFormat => {
                OAuthError::invalid_request("the body must be application/x-www-form-urlencoded")
            }
        })?;
        let form = Form::new(pairs).map_err(OAuthError::invalid_request)?;
        match form.get("grant_type") {
            None => Err(OAuthError::invalid_request("grant_type missing")),
            Some("password") => self.password_grant(state, &form).await,
            Some(other) => Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                format!("grant_type {other} is not supported"),
            )),
        }
    }
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
