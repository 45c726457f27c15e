//! The hosted password-reset pages (issue #19): `/signin/forgot` asks for the address and
//! sends the code, `/signin/reset` takes the code and the new password. The message's
//! link opens `/signin/reset`, which only asks for the code (a mail scanner that opens the
//! link uses nothing up). The decisions are `service::reset`'s.

use minijinja::context;
use poem::http::StatusCode;
use poem::{handler, Body, IntoResponse, Request, Response, Route};
use secrecy::SecretString;

use super::signin::{csrf_form, csrf_token, state, unavailable, Fields, Page};
use super::RequestCtx;
use crate::domain::{Email, NewPassword};
use crate::service::{AppState, CodeRefusal, MailRequested};
use crate::SERVICE_NAME;

/// Adds the pages, outside the OpenAPI service.
pub fn add_routes(route: Route) -> Route {
    route
        .at("/signin/forgot", poem::get(forgot_page).post(forgot_post))
        .at("/signin/reset", poem::get(reset_page).post(reset_post))
}

/// The paths above and their methods, for the `Allow` header of a 405.
pub const PATHS: &[(&str, &str)] = &[
    ("/signin/forgot", "GET, HEAD, POST"),
    ("/signin/reset", "GET, HEAD, POST"),
];

/// The page at `step` (`forgot` or `reset`).
fn page(
    req: &Request,
    state: &AppState,
    status: StatusCode,
    step: &str,
    email: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Page {
    let (csrf, set) = csrf_token(req, state);
    let title = match step {
        "forgot" => "Forgot your password?",
        _ => "Choose a new password",
    };
    Page::render(
        status,
        "reset.html",
        context! { service => SERVICE_NAME, title, step, email, csrf, error, notice },
    )
    .with_cookie(set)
}

/// `email` from the query string, if it is one.
fn email_of(req: &Request) -> String {
    Fields::query(req)
        .ok()
        .and_then(|q| q.get("email").map(str::to_owned))
        .filter(|e| Email::parse(e).is_ok())
        .unwrap_or_default()
}

#[handler]
async fn forgot_page(req: &Request) -> Response {
    let state = state(req);
    let email = email_of(req);
    page(req, state, StatusCode::OK, "forgot", &email, None, None).into_response()
}

#[handler]
async fn reset_page(req: &Request) -> Response {
    let state = state(req);
    let email = email_of(req);
    page(req, state, StatusCode::OK, "reset", &email, None, None).into_response()
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
            "forgot",
            "",
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
            "reset",
            email.as_str(),
            None,
            Some("If this address has an account, a message with a code is on its way. It works for 15 minutes."),
        )
        .into_response(),
        Ok(MailRequested::Throttled(wait)) => {
            let message = format!(
                "Too many messages lately. Try again in {} seconds.",
                wait.as_secs().max(1)
            );
            let mut answer = page(
                req,
                state,
                StatusCode::TOO_MANY_REQUESTS,
                "forgot",
                email.as_str(),
                Some(&message),
                None,
            );
            answer.retry_after = Some(wait);
            answer.into_response()
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
    let again = |status, error: &str| {
        page(req, state, status, "reset", &email, Some(error), None).into_response()
    };
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
            let mut answer = page(
                req,
                state,
                StatusCode::TOO_MANY_REQUESTS,
                "reset",
                &email,
                Some("Too many attempts. Try again later."),
                None,
            );
            answer.retry_after = Some(wait);
            answer.into_response()
        }
        Err(e) => unavailable(req, e),
    }
}
