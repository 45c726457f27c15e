//! Second factors of the signed-in person (issue #18): TOTP enrolment, confirmation and
//! removal, and recovery codes. The decisions are `service::mfa`'s.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;

use super::body::{optional_str, JsonOrForm};
use super::security::{
    MFA_CONFIRM_TOTP, MFA_ENROL_TOTP, MFA_RECOVERY_CODES, MFA_REMOVE_TOTP, MFA_STATUS,
};
use super::{ApiError, ApiTags, Caller, Empty, ErrorBody, RequestCtx};
use crate::service::{AppState, MfaRefusal, Proof, SecondFactor};

pub struct MfaApi;

/// A TOTP enrolment begun: put it into an authenticator app, then confirm it with a code.
#[derive(Object)]
pub struct TotpEnrolmentBody {
    /// The shared secret, base32 (for typing it in).
    pub secret: String,
    /// The `otpauth://totp/…` URI authenticator apps read.
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG image.
    pub qr_svg: String,
}

/// Your current password, to start an enrolment.
#[derive(Object)]
pub struct EnrolTotpRequest {
    /// Your current password.
    pub current_password: Password,
}

/// A first code from the authenticator app, confirming the enrolment.
#[derive(Object)]
pub struct ConfirmTotpRequest {
    /// The 6-digit code the app shows now.
    #[oai(validator(max_length = 64))]
    pub code: String,
}

/// What proves you are there: your current password, or a second factor.
#[derive(Object)]
pub struct MfaProofRequest {
    /// Your current password.
    pub current_password: Option<Password>,
    /// Or the 6-digit code of your authenticator app.
    #[oai(validator(max_length = 64))]
    pub otp: Option<String>,
    /// Or one of your recovery codes (used up).
    pub recovery_code: Option<Password>,
}

/// Recovery codes, shown this once: each signs in once in place of a code from the app.
#[derive(Object)]
pub struct RecoveryCodesBody {
    /// Ten single-use codes (empty when confirming a re-enrolment that kept earlier ones).
    pub recovery_codes: Vec<String>,
}

/// Your second factors.
#[derive(Object)]
pub struct MfaStatusBody {
    /// A confirmed TOTP authenticator: the password alone gets no token.
    pub totp: bool,
    /// Recovery codes not used yet.
    pub recovery_codes_left: u32,
}

#[derive(ApiResponse)]
pub enum EnrolmentResponse {
    /// Begun: confirm it with a first code. Shown once; never cache it.
    #[oai(status = 200)]
    Ok(
        Json<TotpEnrolmentBody>,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[derive(ApiResponse)]
pub enum RecoveryCodesResponse {
    /// Done; the codes are shown this once.
    #[oai(status = 200)]
    Ok(
        Json<RecoveryCodesBody>,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[derive(ApiResponse)]
pub enum RemovedResponse {
    /// Removed, with the recovery codes: the password alone signs in again.
    #[oai(status = 200)]
    Ok(Json<Empty>),
}

#[derive(ApiResponse)]
pub enum StatusResponse {
    /// Your second factors.
    #[oai(status = 200)]
    Ok(Json<MfaStatusBody>),
}

/// A refusal as the API answers it.
fn refused(refusal: MfaRefusal) -> ApiError {
    match refusal {
        MfaRefusal::AlreadyEnrolled => ApiError::Conflict(ErrorBody::json(
            "a TOTP authenticator is enrolled already: remove it first",
        )),
        MfaRefusal::NotStarted => ApiError::not_found(),
        MfaRefusal::WrongProof => ApiError::bad_request("the code or password is not right"),
        MfaRefusal::Throttled(wait) => ApiError::throttled(wait),
        MfaRefusal::Unavailable => ApiError::Unavailable(
            ErrorBody::json(
                "TOTP is unavailable: KEYS_DIR holds no mfa-seal.key and cannot be written",
            ),
            None,
        ),
    }
}

/// The proof in a body: `current_password`, `otp` or `recovery_code`.
fn proof(body: JsonOrForm<MfaProofRequest>) -> Result<Proof, ApiError> {
    let fields = body.into_object()?;
    let text = |name| -> Result<Option<String>, ApiError> {
        Ok(optional_str(&fields, name)?
            .filter(|v| !v.is_empty())
            .map(str::to_owned))
    };
    if let Some(password) = text("current_password")? {
        return Ok(Proof::Password(SecretString::from(password)));
    }
    let otp = text("otp")?;
    let recovery = text("recovery_code")?;
    SecondFactor::from_form(otp.as_deref(), recovery.as_deref())
        .map_err(ApiError::bad_request)?
        .map(Proof::Factor)
        .ok_or_else(|| ApiError::bad_request("send current_password, otp or recovery_code"))
}

fn codes(codes: Vec<String>) -> RecoveryCodesResponse {
    RecoveryCodesResponse::Ok(
        Json(RecoveryCodesBody {
            recovery_codes: codes,
        }),
        "no-store".into(),
    )
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Mfa")]
impl MfaApi {
    /// Your second factors
    ///
    /// Whether a TOTP authenticator is enrolled, and how many recovery codes are left.
    #[oai(path = "/users/me/mfa", method = "get", operation_id = "getMfa")]
    async fn status(&self, caller: Caller) -> Result<StatusResponse, ApiError> {
        caller.authorize(MFA_STATUS, caller.user_id())?;
        let me = caller.require_user()?;
        Ok(StatusResponse::Ok(Json(MfaStatusBody {
            totp: me.mfa.enrolled(),
            recovery_codes_left: me.mfa.recovery_codes.len() as u32,
        })))
    }

    /// Start a TOTP enrolment
    ///
    /// With your current password (JSON or form `current_password`): a new secret for an
    /// authenticator app (RFC 6238: SHA-1, 6 digits, 30 s), as base32, an `otpauth://` URI
    /// and a QR code. It counts only once confirmed with a first code
    /// (`POST /api/v1/users/me/mfa/totp/confirm`); starting again replaces an unconfirmed
    /// one. 409 while a confirmed one exists.
    #[oai(
        path = "/users/me/mfa/totp",
        method = "post",
        operation_id = "enrolTotp"
    )]
    async fn enrol(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        body: JsonOrForm<EnrolTotpRequest>,
    ) -> Result<EnrolmentResponse, ApiError> {
        caller.authorize(MFA_ENROL_TOTP, caller.user_id())?;
        let me = caller.require_user()?;
        let fields = body.into_object()?;
        let password = optional_str(&fields, "current_password")?
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::bad_request("current_password missing"))?;
        let enrolment = state
            .begin_totp(me, &SecretString::from(password), &ctx.audit())
            .await?
            .map_err(refused)?;
        Ok(EnrolmentResponse::Ok(
            Json(TotpEnrolmentBody {
                secret: enrolment.secret,
                otpauth_uri: enrolment.otpauth_uri,
                qr_svg: enrolment.qr_svg,
            }),
            "no-store".into(),
        ))
    }

    /// Confirm the TOTP enrolment
    ///
    /// With a first code from the app. From then on the password alone gets no token:
    /// sign-ins ask for a code too, and every other session of yours ends (this one goes
    /// on). At the first enrolment the answer holds ten recovery codes, shown this once.
    #[oai(
        path = "/users/me/mfa/totp/confirm",
        method = "post",
        operation_id = "confirmTotp"
    )]
    async fn confirm(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        body: JsonOrForm<ConfirmTotpRequest>,
    ) -> Result<RecoveryCodesResponse, ApiError> {
        caller.authorize(MFA_CONFIRM_TOTP, caller.user_id())?;
        let me = caller.require_user()?;
        let fields = body.into_object()?;
        let code = optional_str(&fields, "code")?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::bad_request("code missing"))?;
        let given = state
            .confirm_totp(me, code, caller.session_id(), &ctx.audit())
            .await?
            .map_err(refused)?;
        Ok(codes(given))
    }

    /// Remove the TOTP authenticator
    ///
    /// With your current password, a code or a recovery code (JSON or form:
    /// `current_password`, `otp` or `recovery_code`). The recovery codes go with it.
    #[oai(
        path = "/users/me/mfa/totp",
        method = "delete",
        operation_id = "removeTotp"
    )]
    async fn remove(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        body: JsonOrForm<MfaProofRequest>,
    ) -> Result<RemovedResponse, ApiError> {
        caller.authorize(MFA_REMOVE_TOTP, caller.user_id())?;
        let me = caller.require_user()?;
        let proof = proof(body)?;
        state
            .remove_totp(me, proof, &ctx.audit())
            .await?
            .map_err(refused)?;
        Ok(RemovedResponse::Ok(Json(Empty {})))
    }

    /// New recovery codes
    ///
    /// Ten new single-use codes, shown this once; the old ones stop working. With your
    /// current password, a code or a recovery code.
    #[oai(
        path = "/users/me/mfa/recovery-codes",
        method = "post",
        operation_id = "renewRecoveryCodes"
    )]
    async fn renew(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        body: JsonOrForm<MfaProofRequest>,
    ) -> Result<RecoveryCodesResponse, ApiError> {
        caller.authorize(MFA_RECOVERY_CODES, caller.user_id())?;
        let me = caller.require_user()?;
        let proof = proof(body)?;
        let given = state
            .renew_recovery_codes(me, proof, &ctx.audit())
            .await?
            .map_err(refused)?;
        Ok(codes(given))
    }
}
