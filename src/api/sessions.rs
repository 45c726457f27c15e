//! The classic session routes, now stateless: the cookie holds an access JWT.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;

use super::body::{BodyError, Form, FormFields};
use super::security::{same_origin, LOGOUT};
use super::users::UserBody;
use super::{ApiError, ApiTags, Caller, Empty, ErrorBody, RequestCtx};
use crate::domain::Identifier;
use crate::service::{AppState, FactorCheck, Grant, SecondFactor, ServiceError, Verdict};

pub struct SessionsApi;

/// Cookie login, form-encoded.
#[derive(Object)]
pub struct SessionLoginRequest {
    /// The account's email (at most 320 characters, no control characters).
    #[oai(validator(
        min_length = 1,
        max_length = 320,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    ))]
    pub email: String,
    /// The account's password.
    #[oai(validator(min_length = 1))]
    pub password: Password,
    /// For an account with a second factor: the 6-digit code of its authenticator app.
    #[oai(validator(max_length = 64))]
    pub otp: Option<String>,
    /// For an account with a second factor, instead of `otp`: one of its recovery codes
    /// (each works once).
    pub recovery_code: Option<Password>,
}

#[derive(ApiResponse)]
pub enum SessionLoginResponse {
    /// Logged in: the session cookie holds an access token for SESSION_DURATION seconds.
    #[oai(status = 200)]
    Ok(
        Json<UserBody>,
        /// `<SESSION_NAME>=<access token>; HttpOnly; SameSite=Strict; Path=/; Max-Age=...`
        #[oai(header = "Set-Cookie")]
        String,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// Which sessions a logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum LogoutScope {
    /// This session only.
    Local,
    /// Every session of the user.
    Global,
}

#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// Logged out; the cookie is cleared.
    #[oai(status = 200)]
    Ok(Json<Empty>, #[oai(header = "Set-Cookie")] String),
}

/// The Set-Cookie value for the session cookie (`max_age` 0 clears it).
fn session_cookie(state: &AppState, value: &str, max_age: u64) -> String {
    let secure = if state.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
        state.config.session_name
    )
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// Log in with a session cookie
    ///
    /// Form fields `email` and `password` (and, for an account with a second factor, `otp`
    /// or `recovery_code`). Sets the session cookie (an access token, valid
    /// for SESSION_DURATION seconds) that every protected route accepts like a bearer
    /// token. An unknown email and a wrong password get the same 401.
    #[oai(
        path = "/auth_session/login",
        method = "post",
        operation_id = "createSession"
    )]
    async fn login(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        ctx: RequestCtx,
        body: FormFields<SessionLoginRequest>,
    ) -> Result<SessionLoginResponse, ApiError> {
        // Login CSRF: a cross-site form must not log the victim into someone else's account.
        if !same_origin(req, &state.public_url) {
            return Err(ApiError::Forbidden(ErrorBody::json(
                "cross-site request refused: the Origin does not match this service",
            )));
        }
        let pairs = match body.into_object() {
            Ok(pairs) => pairs,
            Err(BodyError::TooLarge) => return Err(ApiError::too_large()),
            // Like the classic API: anything but a form has no email in it.
            Err(BodyError::WrongFormat) => Vec::new(),
        };
        let form = Form::new(pairs).map_err(ApiError::bad_request)?;
        let email = form
            .get("email")
            .ok_or_else(|| ApiError::bad_request("email missing"))?;
        let email = Identifier::parse(email, "email")?.as_str();
        let password = SecretString::from(
            form.get("password")
                .ok_or_else(|| ApiError::bad_request("password missing"))?,
        );
        // Read before the password is hashed: a malformed field costs nothing.
        let presented = SecondFactor::from_form(form.get("otp"), form.get("recovery_code"))
            .map_err(ApiError::bad_request)?;
        let user = match state
            .login(email, &password, &ctx.audit(), "cookie")
            .await?
        {
            Verdict::Ok(user) => Some(user),
            Verdict::Throttled(wait) => return Err(ApiError::throttled(wait)),
            Verdict::Invalid => None,
        };
        let Some(user) = user else {
            tracing::info!("cookie login refused");
            return Err(ApiError::Unauthorized(
                ErrorBody::json("invalid credentials"),
                super::error::REALM.to_owned(),
            ));
        };
        if state.refuse_unverified(&user, &ctx.audit()).await {
            return Err(ServiceError::EmailNotVerified.into());
        }
        let checked = state
            .check_second_factor(&user, presented, &ctx.audit())
            .await?;
        let authn = checked.signed_in().map_err(|refused| match refused {
            FactorCheck::Throttled(wait) => ApiError::throttled(wait),
            FactorCheck::Required => ApiError::Unauthorized(
                ErrorBody::json(
                    "a second factor is required: send otp (the 6-digit code of your \
                     authenticator app) or recovery_code",
                ),
                super::error::REALM.to_owned(),
            ),
            _ => ApiError::Unauthorized(
                ErrorBody::json("invalid second factor"),
                super::error::REALM.to_owned(),
            ),
        })?;
        let grant = Grant::Cookie { user: &user, authn };
        let tokens = state.issue(grant, user.role.scopes()).await?;
        Ok(SessionLoginResponse::Ok(
            Json(UserBody::from(&user)),
            session_cookie(&state, &tokens.access.token, tokens.access.expires_in),
            "no-store".into(),
        ))
    }

    /// Log out
    ///
    /// Revokes the presented token (and, for a password-grant login, its refresh tokens)
    /// and clears the session cookie. `?scope=global` also ends every other session of the
    /// user: all access and refresh tokens issued before now.
    #[oai(
        path = "/auth_session/logout",
        method = "delete",
        operation_id = "deleteSession"
    )]
    async fn logout(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        /// `local` (default): this session; `global`: every session of the user.
        scope: Query<Option<LogoutScope>>,
    ) -> Result<LogoutResponse, ApiError> {
        caller.authorize(LOGOUT, None)?;
        let user_id = caller.require_user()?.id;
        let global = scope.0 == Some(LogoutScope::Global);
        state
            .log_out(user_id, &caller.claims, global, &ctx.audit())
            .await?;
        Ok(LogoutResponse::Ok(
            Json(Empty {}),
            session_cookie(&state, "", 0),
        ))
    }
}
