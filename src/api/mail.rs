//! Accounts by mail (issue #19): password reset, proving an address, changing it. The
//! decisions are `service::reset`'s and `service::address`'s.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;

use super::body::{optional_str, JsonOrForm};
use super::security::{CHANGE_EMAIL, RESEND_VERIFICATION};
use super::{ApiError, ApiTags, Caller, Empty, ErrorBody, RequestCtx};
use crate::domain::{Email, Identifier, NewPassword};
use crate::service::{AddressChange, AppState, CodeRefusal, Confirmed, MailRequested};

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

/// A code sent by mail to prove an address.
#[derive(Object)]
pub struct VerifyEmailRequest {
    /// The address the message went to: the account's, or the one it is moving to.
    #[oai(validator(
        min_length = 1,
        max_length = 320,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    ))]
    pub email: String,
    /// The code the message shows (on a line of its own).
    #[oai(validator(min_length = 1, max_length = 64))]
    pub code: String,
}

/// A move to another address.
#[derive(Object)]
pub struct ChangeEmailRequest {
    /// The new address. A code goes there; the account moves when it comes back.
    #[oai(validator(min_length = 1, max_length = 254))]
    pub email: String,
    /// Your current password.
    #[oai(validator(min_length = 1))]
    pub current_password: Password,
}

/// What a code confirmed.
#[derive(Object)]
pub struct EmailConfirmedBody {
    // Documented on EmailConfirmed: a doc comment here would wrap the $ref in allOf.
    pub result: EmailConfirmed,
}

/// `verified`: the account's address is proven. `changed`: the account moved to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum EmailConfirmed {
    Verified,
    Changed,
}

#[derive(ApiResponse)]
pub enum MailSentResponse {
    /// Accepted: the message is on its way (a password reset's only if the address has an
    /// account: the answer is the same, and as fast, when it has none).
    #[oai(status = 202)]
    Accepted(Json<Empty>),
    /// Too many messages to this address or account, or from this client, lately.
    #[oai(status = 429)]
    TooMany(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
}

impl From<MailRequested> for MailSentResponse {
    fn from(requested: MailRequested) -> Self {
        match requested {
            MailRequested::Accepted => Self::Accepted(Json(Empty {})),
            MailRequested::Throttled(wait) => {
                let (body, retry) = too_many(wait);
                Self::TooMany(body, retry)
            }
        }
    }
}

#[derive(ApiResponse)]
pub enum EmailConfirmedResponse {
    /// The code was right: the address is verified, or the account moved to it.
    #[oai(status = 200)]
    Ok(Json<EmailConfirmedBody>),
}

/// 429 with Retry-After, for too many messages.
fn too_many(wait: std::time::Duration) -> (Json<ErrorBody>, String) {
    (
        ErrorBody::json("Too many messages; try again later"),
        wait.as_secs().max(1).to_string(),
    )
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
    ) -> Result<MailSentResponse, ApiError> {
        let fields = body.into_object()?;
        // Any string the schema allows: one that is no address has no account, and gets
        // the same answer.
        let email = Identifier::parse(required(&fields, "email")?, "email")?;
        let requested = state
            .request_password_reset(email.as_str(), &ctx.audit())
            .await?;
        Ok(requested.into())
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
            Err(refusal) => Err(code_refused(refusal)),
        }
    }

    /// Confirm an email address
    ///
    /// With the code from a message: proves the account's address (`verified`), or moves
    /// the account to the address a change was asked for (`changed`). A wrong, used or
    /// expired code, or an address without an account, is the same 400; attempts are
    /// limited like logins (429). 409 if the new address got an account meanwhile.
    #[oai(
        path = "/auth/verify-email",
        method = "post",
        operation_id = "verifyEmail"
    )]
    async fn verify_email(
        &self,
        state: Data<&Arc<AppState>>,
        ctx: RequestCtx,
        body: JsonOrForm<VerifyEmailRequest>,
    ) -> Result<EmailConfirmedResponse, ApiError> {
        let fields = body.into_object()?;
        let email = Identifier::parse(required(&fields, "email")?, "email")?;
        let code = required(&fields, "code")?;
        if code.chars().count() > 64 {
            return Err(ApiError::bad_request("code is longer than 64 characters"));
        }
        let result = match state
            .confirm_email(email.as_str(), code, &ctx.audit())
            .await?
        {
            Ok(Confirmed::Address) => EmailConfirmed::Verified,
            Ok(Confirmed::Moved) => EmailConfirmed::Changed,
            Err(refusal) => return Err(code_refused(refusal)),
        };
        Ok(EmailConfirmedResponse::Ok(Json(EmailConfirmedBody {
            result,
        })))
    }

    /// Send the verification message again
    ///
    /// A new code (the last one stops working) to your address, if it is not verified
    /// yet (400 if it is). Limited like every message (429 with Retry-After).
    #[oai(
        path = "/users/me/verification",
        method = "post",
        operation_id = "resendVerification"
    )]
    async fn resend_verification(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
    ) -> Result<MailSentResponse, ApiError> {
        caller.authorize(RESEND_VERIFICATION, caller.user_id())?;
        let me = caller.require_user()?;
        if me.email_verified {
            return Err(ApiError::bad_request(
                "your email address is verified already",
            ));
        }
        Ok(state.send_verification(me, &ctx.audit()).await?.into())
    }

    /// Change your email address
    ///
    /// With your current password: a code goes to the new address and a notice to the
    /// one in use now. Nothing changes until the code comes back
    /// (`POST /api/v1/auth/verify-email` with the new address); the address must still
    /// be free then. A new request replaces the last; changing or resetting the password
    /// cancels it. Whether the new address has an account is not said here.
    #[oai(
        path = "/users/me/email",
        method = "post",
        operation_id = "changeEmail"
    )]
    async fn change_email(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        body: JsonOrForm<ChangeEmailRequest>,
    ) -> Result<MailSentResponse, ApiError> {
        caller.authorize(CHANGE_EMAIL, caller.user_id())?;
        let me = caller.require_user()?;
        let fields = body.into_object()?;
        let new = Email::parse(required(&fields, "email")?)?;
        let password = SecretString::from(required(&fields, "current_password")?);
        match state
            .request_address_change(me, new, &password, &ctx.audit())
            .await?
        {
            AddressChange::Requested => Ok(MailSentResponse::Accepted(Json(Empty {}))),
            AddressChange::WrongPassword => {
                Err(ApiError::bad_request("current password is incorrect"))
            }
            AddressChange::Same => Err(ApiError::bad_request("that is your email address already")),
            AddressChange::Throttled(wait) => {
                let (body, retry) = too_many(wait);
                Ok(MailSentResponse::TooMany(body, retry))
            }
        }
    }
}

/// A code sent by mail, refused.
fn code_refused(refusal: CodeRefusal) -> ApiError {
    match refusal {
        CodeRefusal::InvalidCode => ApiError::bad_request(
            "the code is not right, was used already or has expired: ask for a new one",
        ),
        CodeRefusal::Throttled(wait) => ApiError::throttled(wait),
        CodeRefusal::AddressTaken => ApiError::from(crate::store::StoreError::DuplicateEmail),
    }
}
