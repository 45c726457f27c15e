//! The hosted pages of accounts by mail (issue #19): `/signin/forgot` asks for the address
//! and sends a reset code, `/signin/reset` takes the code and the new password, and
//! `/signin/verify` takes a code that proves an address (or confirms a move to it). A
//! message's link opens its page with the code filled in; only the person's button uses
//! it (a mail scanner that opens links uses nothing up). The decisions are
//! `service::reset`'s and `service::address`'s.

use poem::http::StatusCode;
use poem::{handler, Body, IntoResponse, Request, Response, Route};
use secrecy::SecretString;

use super::signin::{csrf_form, page, state, try_again_in, unavailable, Fields, Page, Shown};
use super::RequestCtx;
use crate::domain::{Email, Identifier, NewPassword};
use crate::service::{CodeRefusal, Confirmed, MailRequested};

/// Adds the pages, outside the OpenAPI service.
pub fn add_routes(route: Route) -> Route {
    route
        .at("/signin/forgot", poem::get(forgot_page).post(forgot_post))
        .at("/signin/reset", poem::get(reset_page).post(reset_post))
        .at("/signin/verify", poem::get(verify_page).post(verify_post))
}

/// The paths above and their methods, for the `Allow` header of a 405.
pub const PATHS: &[(&str, &str)] = &[
    ("/signin/forgot", "GET, HEAD, POST"),
    ("/signin/reset", "GET, HEAD, POST"),
    ("/signin/verify", "GET, HEAD, POST"),
];

const TOO_MANY_ATTEMPTS: &str = "Too many attempts. Try again later.";

/// `email` and `code` from the query string (a message's link), if they are plausible.
fn link_of(req: &Request) -> (String, String) {
    let query = Fields::query(req).ok();
    let field = |name| {
        query
            .as_ref()
            .and_then(|q| q.get(name).map(str::to_owned))
            .unwrap_or_default()
    };
    let email = Some(field("email"))
        .filter(|e| Email::parse(e).is_ok())
        .unwrap_or_default();
    let code = Some(field("code"))
        .filter(|c| c.len() <= 64 && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_default();
    (email, code)
}

/// A page a message's link opens: `step` with the link's address and code filled in.
fn linked_page(req: &Request, step: &str) -> Response {
    let state = state(req);
    let (email, code) = link_of(req);
    let shown = Shown {
        step,
        email: &email,
        code: &code,
    };
    page(req, state, StatusCode::OK, shown, None, None).into_response()
}

#[handler]
async fn forgot_page(req: &Request) -> Response {
    linked_page(req, "forgot")
}

#[handler]
async fn reset_page(req: &Request) -> Response {
    linked_page(req, "reset")
}

#[handler]
async fn verify_page(req: &Request) -> Response {
    linked_page(req, "verify")
}

/// `POST /signin/verify`: a code that proves an address, or confirms a move to it.
#[handler]
async fn verify_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let mut form = match csrf_form(req, state, body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let email = form.take("email").unwrap_or_default();
    let code = form.take("code").unwrap_or_default();
    let again_page = |status, error: &str| {
        let shown = Shown {
            step: "verify",
            email: &email,
            code: &code,
        };
        page(req, state, status, shown, Some(error), None)
    };
    let again = |status, error: &str| again_page(status, error).into_response();
    let plausible = Identifier::parse(&email, "email").is_ok();
    if !plausible || code.trim().is_empty() || code.chars().count() > 64 {
        return again(
            StatusCode::BAD_REQUEST,
            "Enter your email address and the code.",
        );
    }
    match state.confirm_email(&email, &code, &ctx.audit()).await {
        Ok(Ok(confirmed)) => {
            let message = match confirmed {
                Confirmed::Address => "Your email address is confirmed. You can sign in now.".to_owned(),
                Confirmed::Moved => format!(
                    "Your account's address is now {}. Sign in with it from now on.",
                    email.trim()
                ),
            };
            Page::message(state, StatusCode::OK, "Email address confirmed", None, Some(&message))
                .into_response()
        }
        Ok(Err(CodeRefusal::InvalidCode)) => again(
            StatusCode::BAD_REQUEST,
            "That code is not right, was used already or has expired. Sign in and ask for a new one.",
        ),
        Ok(Err(CodeRefusal::AddressTaken)) => again(
            StatusCode::CONFLICT,
            "That address has an account of its own now, so yours cannot move to it.",
        ),
        Ok(Err(CodeRefusal::Throttled(wait))) => {
            let too_many = again_page(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_ATTEMPTS);
            too_many.retrying_after(wait).into_response()
        }
        Err(e) => unavailable(req, e),
    }
}

/// `POST /signin/forgot`: the code goes out (if the address has an account); the answer
/// is the same either way.
#[handler]
async fn forgot_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let mut form = match csrf_form(req, state, body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let raw = form.take("email").unwrap_or_default();
    let Ok(email) = Email::parse(&raw) else {
        return page(
            req,
            state,
            StatusCode::BAD_REQUEST,
            Shown::new("forgot", ""),
            Some("Enter an email address."),
            None,
        )
        .into_response();
    };
    match state
        .request_password_reset(email.as_str(), &ctx.audit())
        .await
    {
        Ok(MailRequested::Accepted) => page(
            req,
            state,
            StatusCode::OK,
            Shown::new("reset", email.as_str()),
            None,
            Some("If this address has an account, a message with a code is on its way. It works for 15 minutes."),
        )
        .into_response(),
        Ok(MailRequested::Throttled(wait)) => {
            let message = try_again_in("Too many messages lately.", wait);
            let shown = Shown::new("forgot", email.as_str());
            let answer = page(req, state, StatusCode::TOO_MANY_REQUESTS, shown, Some(&message), None);
            answer.retrying_after(wait).into_response()
        }
        Err(e) => unavailable(req, e),
    }
}

/// `POST /signin/reset`: the code and the new password.
#[handler]
async fn reset_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let mut form = match csrf_form(req, state, body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let email = form.take("email").unwrap_or_default();
    let code = form.take("code").unwrap_or_default();
    let again_page = |status, error: &str| {
        let shown = Shown::new("reset", &email);
        page(req, state, status, shown, Some(error), None)
    };
    let again = |status, error: &str| again_page(status, error).into_response();
    if email.trim().is_empty() || code.trim().is_empty() || code.chars().count() > 64 {
        return again(
            StatusCode::BAD_REQUEST,
            "Enter your email address and the code.",
        );
    }
    let password = form.take("new_password").unwrap_or_default();
    let Ok(password) = NewPassword::parse(SecretString::from(password)) else {
        return again(
            StatusCode::BAD_REQUEST,
            "A password has 8 to 256 characters.",
        );
    };
    match state
        .confirm_password_reset(&email, &code, password, &ctx.audit())
        .await
    {
        Ok(Ok(())) => Page::message(
        state,
            StatusCode::OK,
            "Password changed",
            None,
            Some("Your password is changed and every session of your account has ended. You can sign in with the new one now."),
        )
        .into_response(),
        Ok(Err(CodeRefusal::InvalidCode | CodeRefusal::AddressTaken)) => again(
            StatusCode::BAD_REQUEST,
            "That code is not right, was used already or has expired. Send a new one.",
        ),
        Ok(Err(CodeRefusal::Throttled(wait))) => {
            let too_many = again_page(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_ATTEMPTS);
            too_many.retrying_after(wait).into_response()
        }
        Err(e) => unavailable(req, e),
    }
}
