//! Second factors of the signed-in person (issue #18): TOTP enrolment, confirmation and
//! removal, passkey registration and removal, and recovery codes. The decisions are
//! `service::mfa`'s and `service::passkeys`'.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Object, OpenApi};
use secrecy::SecretString;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::body::{optional_str, JsonOrForm};
use super::security::{
    MFA_ADD_PASSKEY, MFA_CONFIRM_PASSKEY, MFA_CONFIRM_TOTP, MFA_ENROL_TOTP, MFA_PASSKEY_CHALLENGE,
    MFA_RECOVERY_CODES, MFA_REMOVE_PASSKEY, MFA_REMOVE_TOTP, MFA_STATUS,
};
use super::{ApiError, ApiTags, Caller, Empty, ErrorBody, RequestCtx};
use crate::domain::{PasskeyCredential, PersonName};
use crate::service::{
    AppState, Ceremony, CeremonyUse, MfaRefusal, PasskeyAnswer, Proof, SecondFactor,
};

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

/// What proves you are there: your current password, or a second factor (a code, a
/// recovery code, or a passkey's answer).
#[derive(Object)]
pub struct MfaProofRequest {
    /// Your current password.
    pub current_password: Option<Password>,
    /// Or the 6-digit code of your authenticator app.
    #[oai(validator(max_length = 64))]
    pub otp: Option<String>,
    /// Or one of your recovery codes (used up).
    pub recovery_code: Option<Password>,
    /// Or a passkey: the `ceremony` of `POST /api/v1/users/me/mfa/passkeys/challenge`...
    pub passkey_ceremony: Option<String>,
    /// ...and the browser's answer to its options (the `PublicKeyCredential` as JSON; in
    /// a form, as JSON text).
    pub passkey_credential: Option<BTreeMap<String, Value>>,
}

/// A passkey to register: a name for it, and your current password.
#[derive(Object)]
pub struct AddPasskeyRequest {
    /// Your current password.
    pub current_password: Password,
    /// A name to know it by ("Laptop", "YubiKey"); "Passkey" if none.
    #[oai(validator(max_length = 100))]
    pub name: Option<String>,
}

/// A WebAuthn ceremony begun.
#[derive(Object)]
pub struct CeremonyBody {
    /// Send this back with the browser's answer (signed; ten minutes; used once).
    pub ceremony: String,
    /// The options for `navigator.credentials.create()` (registration) or `.get()`
    /// (authentication): `{"publicKey": {...}}`, binary members base64url, as
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON`
    /// read them.
    pub options: BTreeMap<String, Value>,
}

/// The browser's answer to a registration.
#[derive(Object)]
pub struct ConfirmPasskeyRequest {
    /// The `ceremony` the options came with.
    pub ceremony: String,
    /// The new `PublicKeyCredential`, as JSON (its `toJSON()`; in a form, as JSON text).
    pub credential: BTreeMap<String, Value>,
}

/// A registered passkey.
#[derive(Object)]
pub struct PasskeyBody {
    pub id: Uuid,
    /// The name you gave it.
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// When it last signed in or proved you there (absent: never).
    #[oai(skip_serializing_if_is_none)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A passkey registered; recovery codes if it is your first second factor.
#[derive(Object)]
pub struct PasskeyAddedBody {
    pub passkey: PasskeyBody,
    /// Ten single-use codes, shown this once (empty if you had some already).
    pub recovery_codes: Vec<String>,
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
    /// Any second factor: the password alone gets no token.
    pub enrolled: bool,
    /// A confirmed TOTP authenticator.
    pub totp: bool,
    /// Your passkeys, oldest first.
    pub passkeys: Vec<PasskeyBody>,
    /// Recovery codes not used yet.
    pub recovery_codes_left: u32,
    /// Whether this server can register passkeys (PUBLIC_URL must name a host, not an
    /// IP address).
    pub passkeys_available: bool,
}

impl From<&PasskeyCredential> for PasskeyBody {
    fn from(p: &PasskeyCredential) -> Self {
        Self {
            id: p.id,
            name: p.name.as_str().to_owned(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum CeremonyResponse {
    /// Begun: answer it in the browser within ten minutes. Never cache it.
    #[oai(status = 200)]
    Ok(Json<CeremonyBody>, #[oai(header = "Cache-Control")] String),
}

impl From<Ceremony> for CeremonyResponse {
    fn from(c: Ceremony) -> Self {
        let options = match c.options {
            Value::Object(map) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Self::Ok(
            Json(CeremonyBody {
                ceremony: c.ceremony,
                options,
            }),
            "no-store".into(),
        )
    }
}

#[derive(ApiResponse)]
pub enum PasskeyAddedResponse {
    /// Registered; any recovery codes are shown this once.
    #[oai(status = 201)]
    Created(
        Json<PasskeyAddedBody>,
        #[oai(header = "Cache-Control")] String,
    ),
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
    /// Removed (with the recovery codes if it was your last second factor, when the
    /// password alone signs in again).
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
        MfaRefusal::PasskeysUnavailable => ApiError::Unavailable(
            ErrorBody::json(
                "passkeys are unavailable: PUBLIC_URL must name a host (WebAuthn does not allow an IP address)",
            ),
            None,
        ),
        MfaRefusal::TooManyPasskeys => ApiError::Conflict(ErrorBody::json(
            "the account has 10 passkeys already: remove one first",
        )),
        MfaRefusal::PasskeyRegistered => ApiError::Conflict(ErrorBody::json(
            "this passkey is registered to the account already",
        )),
        MfaRefusal::CeremonyExpired => ApiError::bad_request(
            "the ceremony has expired, was used already or is not yours: start again",
        ),
    }
}

/// A WebAuthn credential in a body: a JSON object, or, in a `form`, JSON text of one;
/// anything else (`null` included: the schema does not allow it) is a 400.
fn credential_field(
    fields: &Map<String, Value>,
    name: &str,
    form: bool,
) -> Result<Option<Value>, ApiError> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::Object(_)) => Ok(fields.get(name).cloned()),
        Some(Value::String(s)) if form && s.is_empty() => Ok(None),
        Some(Value::String(s)) if form => serde_json::from_str::<Map<String, Value>>(s)
            .map(|m| Some(Value::Object(m)))
            .map_err(|_| ApiError::bad_request(format!("{name} must be a JSON object"))),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be a JSON object"
        ))),
    }
}

/// The proof in a body: `current_password`, `otp` or `recovery_code`.
fn proof(body: JsonOrForm<MfaProofRequest>) -> Result<Proof, ApiError> {
    let form = body.is_form();
    let fields = body.into_object()?;
    let text = |name| -> Result<Option<String>, ApiError> {
        // `null` is not a string: the schema does not allow it here.
        if fields.get(name).is_some_and(Value::is_null) {
            return Err(ApiError::bad_request(format!("{name} must be a string")));
        }
        Ok(optional_str(&fields, name)?
            .filter(|v| !v.is_empty())
            .map(str::to_owned))
    };
    // Every field is read (and its type checked) before one is chosen.
    let password = text("current_password")?;
    let ceremony = text("passkey_ceremony")?;
    let credential = credential_field(&fields, "passkey_credential", form)?;
    let otp = text("otp")?;
    let recovery = text("recovery_code")?;
    if let Some(password) = password {
        return Ok(Proof::Password(SecretString::from(password)));
    }
    if let Some(ceremony) = ceremony {
        let credential =
            credential.ok_or_else(|| ApiError::bad_request("passkey_credential missing"))?;
        return Ok(Proof::Factor(SecondFactor::Passkey(PasskeyAnswer {
            ceremony,
            credential,
            purpose: CeremonyUse::Proof,
        })));
    }
    SecondFactor::from_form(otp.as_deref(), recovery.as_deref())
        .map_err(ApiError::bad_request)?
        .map(Proof::Factor)
        .ok_or_else(|| {
            ApiError::bad_request(
                "send current_password, otp, recovery_code or passkey_ceremony with passkey_credential",
            )
        })
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
    /// Whether a TOTP authenticator is enrolled, your passkeys, and how many recovery
    /// codes are left.
    #[oai(path = "/users/me/mfa", method = "get", operation_id = "getMfa")]
    async fn status(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
    ) -> Result<StatusResponse, ApiError> {
        caller.authorize(MFA_STATUS, caller.user_id())?;
        let me = caller.require_user()?;
        Ok(StatusResponse::Ok(Json(MfaStatusBody {
            enrolled: me.mfa.enrolled(),
            totp: me.mfa.totp_enrolled(),
            passkeys: me.mfa.passkeys.iter().map(PasskeyBody::from).collect(),
            recovery_codes_left: me.mfa.recovery_codes.len() as u32,
            passkeys_available: state.passkeys.is_some(),
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
    /// With your current password, a code, a recovery code or a passkey (JSON or form:
    /// `current_password`, `otp`, `recovery_code`, or a passkey's `passkey_ceremony` and
    /// `passkey_credential`). The recovery codes go with your last second factor.
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
    /// current password, a code, a recovery code or a passkey.
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

    /// Start registering a passkey
    ///
    /// With your current password and a name for it: the options for the browser's
    /// `navigator.credentials.create()` and a `ceremony` to send back with its answer to
    /// `POST /api/v1/users/me/mfa/passkeys/confirm`. The relying-party id is PUBLIC_URL's
    /// host; user verification (PIN or biometric) is required. At most 10 per account.
    #[oai(
        path = "/users/me/mfa/passkeys",
        method = "post",
        operation_id = "addPasskey"
    )]
    async fn add_passkey(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        body: JsonOrForm<AddPasskeyRequest>,
    ) -> Result<CeremonyResponse, ApiError> {
        caller.authorize(MFA_ADD_PASSKEY, caller.user_id())?;
        let me = caller.require_user()?;
        let fields = body.into_object()?;
        let password = optional_str(&fields, "current_password")?
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::bad_request("current_password missing"))?;
        if fields.get("name").is_some_and(Value::is_null) {
            return Err(ApiError::bad_request("name must be a string"));
        }
        let name = match optional_str(&fields, "name")? {
            Some(raw) => PersonName::parse(raw, "name").map_err(|_| {
                ApiError::bad_request("name: at most 100 characters, no control characters")
            })?,
            None => None,
        };
        let ceremony = state
            .begin_passkey(me, &SecretString::from(password), name, &ctx.audit())
            .await?
            .map_err(refused)?;
        Ok(ceremony.into())
    }

    /// Finish registering a passkey
    ///
    /// With the browser's answer. From then on the password alone gets no token, and
    /// the passkey can sign in by itself ("Sign in with a passkey" on the sign-in page).
    /// If it is your first second factor, every other session of yours ends and the
    /// answer holds ten recovery codes, shown this once.
    #[oai(
        path = "/users/me/mfa/passkeys/confirm",
        method = "post",
        operation_id = "confirmPasskey"
    )]
    async fn confirm_passkey(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        body: JsonOrForm<ConfirmPasskeyRequest>,
    ) -> Result<PasskeyAddedResponse, ApiError> {
        caller.authorize(MFA_CONFIRM_PASSKEY, caller.user_id())?;
        let me = caller.require_user()?;
        let form = body.is_form();
        let fields = body.into_object()?;
        let ceremony = optional_str(&fields, "ceremony")?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::bad_request("ceremony missing"))?;
        let credential = credential_field(&fields, "credential", form)?
            .ok_or_else(|| ApiError::bad_request("credential missing"))?;
        let (added, recovery_codes) = state
            .finish_passkey(me, ceremony, &credential, caller.session_id(), &ctx.audit())
            .await?
            .map_err(refused)?;
        Ok(PasskeyAddedResponse::Created(
            Json(PasskeyAddedBody {
                passkey: PasskeyBody::from(&added),
                recovery_codes,
            }),
            "no-store".into(),
        ))
    }

    /// Remove a passkey
    ///
    /// With your current password, a code, a recovery code or a passkey (JSON or form).
    /// The recovery codes go when your last second factor does.
    #[oai(
        path = "/users/me/mfa/passkeys/:id",
        method = "delete",
        operation_id = "removePasskey"
    )]
    async fn remove_passkey(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        ctx: RequestCtx,
        /// The passkey's `id`.
        id: Path<Uuid>,
        body: JsonOrForm<MfaProofRequest>,
    ) -> Result<RemovedResponse, ApiError> {
        caller.authorize(MFA_REMOVE_PASSKEY, caller.user_id())?;
        let me = caller.require_user()?;
        let proof = proof(body)?;
        state
            .remove_passkey(me, id.0, proof, &ctx.audit())
            .await?
            .map_err(refused)?;
        Ok(RemovedResponse::Ok(Json(Empty {})))
    }

    /// Challenge your passkeys
    ///
    /// An authentication ceremony for your passkeys: options for the browser's
    /// `navigator.credentials.get()`, and a `ceremony`. Its answer proves you are there
    /// (`passkey_ceremony` and `passkey_credential`) when removing a second factor or
    /// renewing recovery codes. 404 if you have no passkey.
    #[oai(
        path = "/users/me/mfa/passkeys/challenge",
        method = "post",
        operation_id = "passkeyChallenge"
    )]
    async fn passkey_challenge(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
    ) -> Result<CeremonyResponse, ApiError> {
        caller.authorize(MFA_PASSKEY_CHALLENGE, caller.user_id())?;
        let me = caller.require_user()?;
        Ok(state
            .passkey_challenge(CeremonyUse::Proof, Some(me))
            .map_err(refused)?
            .into())
    }
}
