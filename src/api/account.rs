//! The hosted "sign-in methods" page (`/account`): a signed-in browser's address and second
//! factors — confirm or change the address, set up or turn off an authenticator app, add
//! or remove passkeys, new recovery codes.
//! Every change asks for the current password, as the API does (a borrowed browser must
//! not be able to add its borrower's key); the decisions are `service::mfa`'s and
//! `service::passkeys`'. The forms post back to `/account` with an `action`.

use minijinja::context;
use poem::http::StatusCode;
use poem::{handler, Body, IntoResponse, Request, Response, Route};
use secrecy::SecretString;
use serde::Serialize;

use super::signin::{
    csrf_form, csrf_token, page_cookie, see_other, state, try_again_in, unavailable, Fields, Page,
    PasskeyForm, SSO_COOKIE,
};
use super::RequestCtx;
use crate::domain::{Email, PersonName, User};
use crate::service::{
    AddressChange, AppState, MailRequested, MfaRefusal, Proof, ServiceError, Sso,
};

/// Adds `/account`, outside the OpenAPI service (a page, not JSON).
pub fn add_routes(route: Route) -> Route {
    route.at("/account", poem::get(account_page).post(account_post))
}

/// The path above and its methods, for the `Allow` header of a 405.
pub const PATHS: &[(&str, &str)] = &[("/account", "GET, HEAD, POST")];

/// A passkey as the page lists it.
#[derive(Serialize)]
struct PasskeyLine {
    id: String,
    name: String,
    created: String,
    last_used: Option<String>,
}

/// What the page shows besides the overview.
#[derive(Default)]
struct Step {
    /// `totp-setup`, `passkey-create` or `codes`; empty: the overview.
    name: &'static str,
    qr_svg: String,
    secret: String,
    passkey: Option<PasskeyForm>,
    passkey_name: String,
    recovery_codes: Vec<String>,
}

/// The page for `user`, at `step`, with an error or a notice.
fn render(
    req: &Request,
    state: &AppState,
    user: &User,
    status: StatusCode,
    step: Step,
    error: Option<&str>,
    notice: Option<&str>,
) -> Page {
    let (csrf, set) = csrf_token(req, state);
    let title = match step.name {
        "totp-setup" => "Set up an authenticator app",
        "passkey-create" => "Add a passkey",
        "codes" => "Save your recovery codes",
        _ => "Your account",
    };
    let passkeys: Vec<PasskeyLine> = user
        .mfa
        .passkeys
        .iter()
        .map(|p| PasskeyLine {
            id: p.id.to_string(),
            name: p.name.as_str().to_owned(),
            created: p.created_at.format("%Y-%m-%d").to_string(),
            last_used: p.last_used_at.map(|t| t.format("%Y-%m-%d").to_string()),
        })
        .collect();
    Page::render(
        state,
        status,
        "account.html",
        context! {
            title,
            email => user.email.as_str(),
            email_verified => user.email_verified,
            moving_to => user.mail_codes.email_change.as_ref().map(|c| c.new_email.as_str()),
            csrf,
            error,
            notice,
            totp => user.mfa.totp_enrolled(),
            enrolled => user.mfa.enrolled(),
            passkeys,
            passkeys_available => state.passkeys.is_some(),
            codes_left => user.mfa.recovery_codes.len(),
            step => step.name,
            qr_svg => step.qr_svg,
            secret => step.secret,
            passkey => step.passkey,
            passkey_name => step.passkey_name,
            recovery_codes => step.recovery_codes,
        },
    )
    .with_cookie(set)
}

/// The signed-in browser's session, or where to send a browser that is not.
async fn signed_in(req: &Request, state: &AppState) -> Result<Sso, Response> {
    match state.sso(page_cookie(req, state, SSO_COOKIE)).await {
        Ok(Some(sso)) => Ok(sso),
        Ok(None) => Err(see_other("/signin", Vec::new())),
        Err(e) => Err(unavailable(req, e)),
    }
}

/// `GET /account`: the signed-in person's sign-in methods.
#[handler]
async fn account_page(req: &Request) -> Response {
    let state = state(req);
    match signed_in(req, state).await {
        Ok(sso) => render(
            req,
            state,
            &sso.user,
            StatusCode::OK,
            Step::default(),
            None,
            None,
        )
        .into_response(),
        Err(answer) => answer,
    }
}

/// How a refusal reads on the page, and its status.
fn refusal(refused: &MfaRefusal) -> (StatusCode, String) {
    match refused {
        MfaRefusal::WrongProof => (
            StatusCode::BAD_REQUEST,
            "That password or code is not right.".into(),
        ),
        MfaRefusal::Throttled(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            try_again_in("Too many failed attempts.", *wait),
        ),
        MfaRefusal::AlreadyEnrolled => (
            StatusCode::CONFLICT,
            "An authenticator app is set up already.".into(),
        ),
        MfaRefusal::NotStarted => (
            StatusCode::CONFLICT,
            "There is nothing to confirm or remove: start again.".into(),
        ),
        MfaRefusal::Unavailable | MfaRefusal::PasskeysUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "This is not available on this server.".into(),
        ),
        MfaRefusal::TooManyPasskeys => (
            StatusCode::CONFLICT,
            "You have 10 passkeys already: remove one first.".into(),
        ),
        MfaRefusal::PasskeyRegistered => (
            StatusCode::CONFLICT,
            "That passkey is registered already.".into(),
        ),
        MfaRefusal::CeremonyExpired => (
            StatusCode::BAD_REQUEST,
            "This page has expired. Start again.".into(),
        ),
    }
}

/// What an action led to.
enum Outcome {
    /// Show this step.
    Step(Step),
    /// Back to the overview with this notice.
    Done(&'static str),
    /// Refused by the service.
    Refused(MfaRefusal),
    /// The form lacks something.
    Invalid(&'static str),
    /// The mail limits hold a message back for this long.
    TooManyMessages(std::time::Duration),
}

/// `POST /account`: one change, named by the form's `action`.
#[handler]
async fn account_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let mut form = match csrf_form(req, state, body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let sso = match signed_in(req, state).await {
        Ok(sso) => sso,
        Err(answer) => return answer,
    };
    let outcome = match act(state, &sso, &mut form, &ctx).await {
        Ok(outcome) => outcome,
        Err(e) => return unavailable(req, e),
    };
    // The person as they are after the change.
    let user = match state.store.user(sso.user.id).await {
        Ok(Some(user)) => user,
        Ok(None) => return see_other("/signin", Vec::new()),
        Err(e) => return unavailable(req, e.into()),
    };
    let overview = Step::default;
    let (status, step, error, notice, retry_after) = match outcome {
        Outcome::Step(step) => (StatusCode::OK, step, None, None, None),
        Outcome::Done(notice) => (StatusCode::OK, overview(), None, Some(notice), None),
        Outcome::Invalid(error) => {
            let error = Some(error.to_owned());
            (StatusCode::BAD_REQUEST, overview(), error, None, None)
        }
        Outcome::Refused(refused) => {
            let (status, error) = refusal(&refused);
            let wait = match refused {
                MfaRefusal::Throttled(wait) => Some(wait),
                _ => None,
            };
            (status, overview(), Some(error), None, wait)
        }
        Outcome::TooManyMessages(wait) => {
            let error = try_again_in("Too many messages lately.", wait);
            let status = StatusCode::TOO_MANY_REQUESTS;
            (status, overview(), Some(error), None, Some(wait))
        }
    };
    let mut page = render(req, state, &user, status, step, error.as_deref(), notice);
    page.retry_after = retry_after;
    page.into_response()
}

/// Carries out the form's action for the signed-in `sso`.
async fn act(
    state: &AppState,
    sso: &Sso,
    form: &mut Fields,
    ctx: &RequestCtx,
) -> Result<Outcome, ServiceError> {
    let user = &sso.user;
    let audit = ctx.audit();
    // This browser's session goes on when a first second factor ends the others.
    let keep = Some(sso.claims.sid);
    let password = form
        .take("current_password")
        .filter(|p| !p.is_empty())
        .map(SecretString::from);
    let action = form.take("action").unwrap_or_default();
    let needs_password = matches!(
        action.as_str(),
        "totp-begin"
            | "totp-remove"
            | "passkey-begin"
            | "passkey-remove"
            | "codes-renew"
            | "email-change"
    );
    let password = match password {
        Some(password) => password,
        None if needs_password => return Ok(Outcome::Invalid("Enter your current password.")),
        None => SecretString::from(String::new()),
    };
    let codes_or = |codes: Vec<String>, notice| {
        if codes.is_empty() {
            Outcome::Done(notice)
        } else {
            Outcome::Step(Step {
                name: "codes",
                recovery_codes: codes,
                ..Step::default()
            })
        }
    };
    Ok(match action.as_str() {
        "verify-resend" if !user.email_verified => {
            match state.send_verification(user, &audit).await? {
                MailRequested::Accepted => Outcome::Done(
                    "A new code is on its way to your address: open the link in its message.",
                ),
                MailRequested::Throttled(wait) => Outcome::TooManyMessages(wait),
            }
        }
        "verify-resend" => Outcome::Done("Your address is confirmed already."),
        "email-change" => {
            let Ok(new) = Email::parse(form.get("email").unwrap_or_default()) else {
                return Ok(Outcome::Invalid("Enter the new email address."));
            };
            match state
                .request_address_change(user, new, &password, &audit)
                .await?
            {
                AddressChange::Requested => Outcome::Done(
                    "A code is on its way to the new address. Your address changes once it is entered.",
                ),
                AddressChange::WrongPassword => Outcome::Refused(MfaRefusal::WrongProof),
                AddressChange::Same => Outcome::Invalid("That is your address already."),
                AddressChange::Throttled(wait) => Outcome::TooManyMessages(wait),
            }
        }
        "totp-begin" => match state.begin_totp(user, &password, &audit).await? {
            Ok(enrolment) => Outcome::Step(Step {
                name: "totp-setup",
                qr_svg: enrolment.qr_svg,
                secret: enrolment.secret,
                ..Step::default()
            }),
            Err(refused) => Outcome::Refused(refused),
        },
        "totp-confirm" => {
            let code = form.take("code").unwrap_or_default();
            if code.trim().is_empty() || code.chars().count() > crate::service::MAX_OTP_CHARS {
                return Ok(Outcome::Invalid("Enter the 6-digit code."));
            }
            match state.confirm_totp(user, &code, keep, &audit).await? {
                Ok(codes) => codes_or(codes, "The authenticator app is on."),
                Err(refused) => Outcome::Refused(refused),
            }
        }
        "totp-remove" => match state
            .remove_totp(user, Proof::Password(password), &audit)
            .await?
        {
            Ok(()) => Outcome::Done("The authenticator app is off."),
            Err(refused) => Outcome::Refused(refused),
        },
        "passkey-begin" => {
            let Ok(name) = PersonName::parse(form.get("name").unwrap_or_default(), "name") else {
                return Ok(Outcome::Invalid(
                    "A name has at most 100 characters and no control characters.",
                ));
            };
            let shown = name.clone().unwrap_or_else(PersonName::passkey);
            match state.begin_passkey(user, &password, name, &audit).await? {
                Ok(ceremony) => Outcome::Step(Step {
                    name: "passkey-create",
                    passkey: Some(ceremony.into()),
                    passkey_name: shown.as_str().to_owned(),
                    ..Step::default()
                }),
                Err(refused) => Outcome::Refused(refused),
            }
        }
        "passkey-confirm" => {
            // The registration's ceremony and the browser's new credential (JSON text).
            let ceremony = form.get("passkey_ceremony").filter(|c| !c.is_empty());
            let credential = form
                .get("passkey_credential")
                .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok());
            let (Some(ceremony), Some(credential)) = (ceremony, credential) else {
                return Ok(Outcome::Invalid(
                    "The passkey was not created. Start again.",
                ));
            };
            match state
                .finish_passkey(user, ceremony, &credential, keep, &audit)
                .await?
            {
                Ok((_, codes)) => codes_or(codes, "The passkey is added."),
                Err(MfaRefusal::WrongProof) => {
                    Outcome::Invalid("The passkey could not be checked. Start again.")
                }
                Err(refused) => Outcome::Refused(refused),
            }
        }
        "passkey-remove" => {
            let Some(id) = form
                .get("passkey_id")
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
            else {
                return Ok(Outcome::Invalid("Choose a passkey to remove."));
            };
            match state
                .remove_passkey(user, id, Proof::Password(password), &audit)
                .await?
            {
                Ok(()) => Outcome::Done("The passkey is removed."),
                Err(refused) => Outcome::Refused(refused),
            }
        }
        "codes-renew" => match state
            .renew_recovery_codes(user, Proof::Password(password), &audit)
            .await?
        {
            Ok(codes) => codes_or(codes, "New recovery codes are made."),
            Err(refused) => Outcome::Refused(refused),
        },
        _ => Outcome::Invalid("That is not something this page does."),
    })
}
