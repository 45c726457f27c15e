//! Accounts by mail (issue #19): password reset. The decisions are `service::reset`'s.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;

use super::body::{optional_str, JsonOrForm};
use super::{ApiError, ApiTags, Empty, ErrorBody, RequestCtx};
use crate::domain::{Identifier, NewPassword};
use crate::service::{AppState, ResetRefusal, ResetRequested};

pub struct MailApi;

/// The account whose password to reset.
#[derive(Object)]
pub struct PasswordResetRequest {
    /// The account's email address.
    #[oai(validator(
        min_length = 1,
        max_length = 320,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    ))]
    pub email: String,
}

/// The code from the message, and the new password.
#[derive(Object)]
pub struct PasswordResetConfirm {
    /// The account's email address.
    #[oai(validator(
        min_length = 1,
        max_length = 320,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    ))]
    pub email: String,
    /// The code the message shows (on a line of its own).
    #[oai(validator(min_length = 1, max_length = 64))]
    pub code: String,
    /// The new password (8 to 256 characters).
    #[oai(validator(min_length = 8, max_length = 256))]
    pub new_password: Password,
}

#[derive(ApiResponse)]
pub enum ResetRequestedResponse {
    /// Accepted: if the address has an account, a message with a code is on its way
    /// (the answer is the same, and as fast, when it has none).
    #[oai(status = 202)]
    Accepted(Json<Empty>),
    /// Too many messages to this address, or from this client, lately.
    #[oai(status = 429)]
    TooMany(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
}

#[derive(ApiResponse)]
pub enum ResetConfirmedResponse {
    /// The password is changed and every session of the account has ended.
    #[oai(status = 200)]
    Ok(Json<Empty>),
}

/// A required, non-empty string member.
fn required<'a>(
    fields: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<&'a str, ApiError> {
    optional_str(fields, name)?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{name} missing")))
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Mail")]
impl MailApi {
    /// Ask for a password reset
    ///
    /// Sends a message with a one-time code (valid 15 minutes, usable once; a new request
    /// replaces it) to the address, if it has an account. Always `202 {}`, as fast
    /// whether or not it has one (or is an address at all). Limited per address and per client (MAIL_LIMIT_MINUTE,
    /// MAIL_LIMIT_DAY): 429 with Retry-After beyond.
    #[oai(
        path = "/auth/password-reset",
        method = "post",
        operation_id = "requestPasswordReset"
    )]
    async fn request_reset(
        &self,
        state: Data<&Arc<AppState>>,
        ctx: RequestCtx,
        body: JsonOrForm<PasswordResetRequest>,
    ) -> Result<ResetRequestedResponse, ApiError> {
        let fields = body.into_object()?;
        // Any string the schema allows: one that is no address has no account, and gets
        // the same answer.
        let email = Identifier::parse(required(&fields, "email")?, "email")?;
        match state
            .request_password_reset(email.as_str(), &ctx.audit())
            .await?
        {
            ResetRequested::Accepted => Ok(ResetRequestedResponse::Accepted(Json(Empty {}))),
            ResetRequested::Throttled(wait) => Ok(ResetRequestedResponse::TooMany(
                ErrorBody::json("Too many messages; try again later"),
                wait.as_secs().max(1).to_string(),
            )),
        }
    }

    /// Reset the password
    ///
    /// With the code from the message: sets the new password, ends every session of the
    /// account (second factors stay as they are) and sends a notice. A wrong, used or
    /// expired code, or an address without an account, is the same 400.
    #[oai(
        path = "/auth/password-reset/confirm",
        method = "post",
        operation_id = "confirmPasswordReset"
    )]
    async fn confirm_reset(
        &self,
        state: Data<&Arc<AppState>>,
        ctx: RequestCtx,
        body: JsonOrForm<PasswordResetConfirm>,
    ) -> Result<ResetConfirmedResponse, ApiError> {
        let fields = body.into_object()?;
        let email = required(&fields, "email")?;
        let code = required(&fields, "code")?;
        if code.chars().count() > 64 {
            return Err(ApiError::bad_request("code is longer than 64 characters"));
        }
        let password = required(&fields, "new_password")?;
        let password = NewPassword::parse(SecretString::from(password.to_owned()))?;
        match state
            .confirm_password_reset(email, code, password, &ctx.audit())
            .await?
        {
            Ok(()) => Ok(ResetConfirmedResponse::Ok(Json(Empty {}))),
            Err(ResetRefusal::InvalidCode) => Err(ApiError::bad_request(
                "the code is not right, was used already or has expired: ask for a new one",
            )),
            Err(ResetRefusal::Throttled(wait)) => Err(ApiError::throttled(wait)),
        }
    }
}
