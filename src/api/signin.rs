//! Browser sign-in over HTTP: the authorization endpoint and the hosted pages (sign-in,
//! consent, RP-initiated logout), server-rendered from `pages/`; the one script is
//! `passkey.js`, which runs the WebAuthn ceremonies (everything else works without it).
//! The decisions are `service::signin`'s; this module reads query strings and forms,
//! keeps the CSRF and single-sign-on cookies, and renders.
//!
//! Every page is sent with a Content-Security-Policy that allows nothing but this
//! service's stylesheet and script (no inline script, no frames: `frame-ancestors 'none'` and
//! `X-Frame-Options: DENY` against clickjacking of the sign-in and consent buttons),
//! `Referrer-Policy: no-referrer` (the request in the URL must not leak) and
//! `Cache-Control: no-store`. Errors the browser cannot be sent back with are pages too;
//! a caller that does not accept HTML gets the contract's JSON error body instead.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use minijinja::{context, Environment};
use poem::http::header::{self, HeaderValue};
use poem::http::StatusCode;
use poem::{handler, Body, IntoResponse, Request, Response, Route};
use secrecy::SecretString;
use serde::Serialize;

use super::security::{cookie, same_origin};
use super::{BodyLimit, RequestCtx};
use crate::auth::clients::{generate_secret, same_bytes};
use crate::auth::Authentication;
use crate::domain::{
    Client, Email, Identifier, NewPassword, PersonName, Role, Scope, Scopes, User,
};
use crate::service::{
    AppState, AuthRequest, AuthorizeError, AuthorizeParams, Ceremony, CeremonyUse, FactorCheck,
    LogoutParams, LogoutRequest, NewAccount, Next, PasskeyAnswer, PasskeySignIn, PendingSignIn,
    SecondFactor, ServiceError, Sso, Verdict,
};
use crate::store::StoreError;

/// The browser's single-sign-on cookie (`HttpOnly; SameSite=Lax`: the authorization
/// request arrives as a cross-site top-level navigation, which must carry it).
pub const SSO_COOKIE: &str = "simple_api_sso";
/// The double-submit CSRF cookie of the pages' forms (`SameSite=Strict`).
pub const CSRF_COOKIE: &str = "simple_api_csrf";

/// A cookie's name as this deployment sets it: with COOKIE_SECURE, `__Host-` prefixed, so
/// a sibling subdomain can neither set nor shadow it (no CSRF token or session of its
/// choosing planted in the browser); browsers honour the prefix only on `Secure` cookies.
fn cookie_name(state: &AppState, name: &str) -> String {
    if state.config.cookie_secure {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// The value of the page cookie `name` the request carries.
pub(super) fn page_cookie<'r>(req: &'r Request, state: &AppState, name: &str) -> Option<&'r str> {
    cookie(req, &cookie_name(state, name))
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // `.html` names are auto-escaped: every value is text, never markup.
    for (name, source) in [
        ("base.html", include_str!("pages/base.html")),
        ("signin.html", include_str!("pages/signin.html")),
        ("consent.html", include_str!("pages/consent.html")),
        ("logout.html", include_str!("pages/logout.html")),
        ("message.html", include_str!("pages/message.html")),
        ("mfa.html", include_str!("pages/mfa.html")),
        ("account.html", include_str!("pages/account.html")),
        ("reset.html", include_str!("pages/reset.html")),
        ("signup.html", include_str!("pages/signup.html")),
    ] {
        env.add_template(name, source)
            .expect("the built-in page templates parse");
    }
    env
});

/// Adds the routes of browser sign-in, outside the OpenAPI service: they answer browsers
/// with pages and redirects, not JSON.
pub fn add_routes(route: Route) -> Route {
    route
        .at("/api/v1/auth/authorize", poem::get(authorize))
        .at(
            "/api/v1/auth/logout",
            poem::get(logout_get).post(logout_post),
        )
        .at("/signin", poem::get(signin_page).post(signin_post))
        .at("/signup", poem::get(signup_page).post(signup_post))
        .at(
            "/signin/consent",
            poem::get(consent_page).post(consent_post),
        )
        .at("/signin/mfa", poem::post(signin_mfa_post))
        .at("/signin/passkey", poem::post(signin_passkey_post))
        .at("/signin/style.css", poem::get(stylesheet))
        .at("/signin/passkey.js", poem::get(script))
}

/// The paths above and their methods, for the `Allow` header of a 405.
pub const PATHS: &[(&str, &str)] = &[
    ("/api/v1/auth/authorize", "GET, HEAD"),
    ("/api/v1/auth/logout", "GET, HEAD, POST"),
    ("/signin", "GET, HEAD, POST"),
    ("/signup", "GET, HEAD, POST"),
    ("/signin/consent", "GET, HEAD, POST"),
    ("/signin/mfa", "POST"),
    ("/signin/passkey", "POST"),
    ("/signin/style.css", "GET, HEAD"),
    ("/signin/passkey.js", "GET, HEAD"),
];

/// A page about to be sent: its status, HTML and cookies.
pub(super) struct Page {
    status: StatusCode,
    html: String,
    cookies: Vec<String>,
    pub(super) retry_after: Option<Duration>,
}

impl Page {
    /// `template` with `ctx`, and the service's name (SERVICE_NAME) as `service`.
    pub(super) fn render(
        state: &AppState,
        status: StatusCode,
        template: &str,
        ctx: minijinja::Value,
    ) -> Self {
        Self::named(&state.config.service_name, status, template, ctx)
    }

    fn named(service: &str, status: StatusCode, template: &str, ctx: minijinja::Value) -> Self {
        let ctx = context! { service, ..ctx };
        let html = PAGES
            .get_template(template)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, template, "a page template failed to render");
                "<!doctype html><title>Error</title><p>The page cannot be shown.</p>".into()
            });
        Self {
            status,
            html,
            cookies: Vec::new(),
            retry_after: None,
        }
    }

    pub(super) fn message(
        state: &AppState,
        status: StatusCode,
        title: &str,
        error: Option<&str>,
        message: Option<&str>,
    ) -> Self {
        Self::render(
            state,
            status,
            "message.html",
            context! { title, error, message },
        )
    }

    /// With `Retry-After` (a 429).
    pub(super) fn retrying_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub(super) fn with_cookie(mut self, cookie: Option<String>) -> Self {
        self.cookies.extend(cookie);
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut resp = Response::builder()
            .status(self.status)
            .content_type("text/html; charset=utf-8")
            .body(self.html);
        page_headers(&mut resp);
        for c in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        if let Some(wait) = self.retry_after {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        resp
    }
}

fn page_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// A 303 to `location` (after a form, the browser follows it with a GET), with the
/// pages' headers and `cookies`.
pub(super) fn see_other(location: &str, cookies: Vec<String>) -> Response {
    let mut resp = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .body(Body::empty());
    page_headers(&mut resp);
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `what`, and when to try again (a 429 page's error).
pub(super) fn try_again_in(what: &str, wait: Duration) -> String {
    format!("{what} Try again in {} seconds.", wait.as_secs().max(1))
}

/// An error for someone who cannot be sent back to the client: a page for browsers, the
/// contract's `{"error": …}` for anything that does not accept HTML.
pub(super) fn error_answer(req: &Request, status: StatusCode, message: &str) -> Response {
    let html = req
        .header(header::ACCEPT)
        .is_some_and(|a| a.contains("text/html"));
    if html {
        return Page::message(
            state(req),
            status,
            "Something went wrong",
            Some(message),
            None,
        )
        .into_response();
    }
    let mut resp = super::error::json_response(status, message);
    page_headers(&mut resp);
    resp
}

/// A store or signing failure: nothing the person can fix; logged, not shown.
pub(super) fn unavailable(req: &Request, e: ServiceError) -> Response {
    tracing::error!(error = %e, "browser sign-in could not be carried out");
    error_answer(
        req,
        StatusCode::SERVICE_UNAVAILABLE,
        "The service cannot complete this now. Please try again in a moment.",
    )
}

pub(super) fn state(req: &Request) -> &Arc<AppState> {
    req.data::<Arc<AppState>>()
        .expect("routes() is served with the AppState")
}

fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<i64>,
) -> String {
    let name = cookie_name(state, name);
    let mut c = format!("{name}={value}; HttpOnly; SameSite={same_site}; Path=/");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if state.config.cookie_secure {
        c.push_str("; Secure");
    }
    c
}

/// The page's CSRF token: the browser's cookie if it has a well-formed one, else a new
/// one (and the cookie that sets it).
pub(super) fn csrf_token(req: &Request, state: &AppState) -> (String, Option<String>) {
    match page_cookie(req, state, CSRF_COOKIE).filter(|v| {
        v.len() == 43
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        Some(token) => (token.to_owned(), None),
        None => {
            let token = generate_secret();
            let c = set_cookie(state, CSRF_COOKIE, &token, "Strict", None);
            (token, Some(c))
        }
    }
}

/// Whether a form carries the browser's CSRF token (double submit: a cross-site page can
/// neither read the cookie nor make the browser send it, being `SameSite=Strict`) and does
/// not come from another site. Browsers send `Origin: null` from pages with
/// `Referrer-Policy: no-referrer` (Fetch §3.1, "serializing a request origin"), as ours
/// are: that says nothing either way, and the token decides.
fn csrf_ok(req: &Request, state: &AppState, form: &Fields) -> bool {
    let (Some(cookie), Some(sent)) = (page_cookie(req, state, CSRF_COOKIE), form.get("csrf"))
    else {
        return false;
    };
    let opaque_origin = req.header(header::ORIGIN) == Some("null");
    (opaque_origin || same_origin(req, &state.public_url))
        && same_bytes(cookie.as_bytes(), sent.as_bytes())
}

/// A page's form, read and checked for its CSRF token; `Err`: the answer to send instead.
pub(super) async fn csrf_form(
    req: &Request,
    state: &AppState,
    body: Body,
) -> Result<Fields, Response> {
    let form = Fields::form(req, body)
        .await
        .map_err(|e| error_answer(req, StatusCode::BAD_REQUEST, &e))?;
    if !csrf_ok(req, state, &form) {
        return Err(csrf_refused(state).into_response());
    }
    Ok(form)
}

fn csrf_refused(state: &AppState) -> Page {
    Page::message(
        state,
        StatusCode::FORBIDDEN,
        "Please try again",
        Some("This form has expired or was sent from another site. Go back, reload the page and try again."),
        None,
    )
}

/// Query or form parameters; a parameter sent twice is refused (RFC 6749 §3.1).
pub(super) struct Fields(HashMap<String, String>);

impl Fields {
    fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw) {
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(format!("the parameter {k} is sent more than once"));
            }
        }
        Ok(Self(map))
    }

    pub(super) fn query(req: &Request) -> Result<Self, String> {
        Self::parse(req.uri().query().unwrap_or("").as_bytes())
    }

    async fn form(req: &Request, body: Body) -> Result<Self, String> {
        let limit = req.data::<BodyLimit>().map_or(65_536, |l| l.0);
        let bytes = body
            .into_bytes_limit(limit)
            .await
            .map_err(|_| "the form is too large or could not be read".to_owned())?;
        Self::parse(&bytes)
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(super) fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }
}

#[derive(Serialize)]
struct ScopeLine {
    name: &'static str,
    description: &'static str,
}

fn scope_lines(scopes: Scopes) -> Vec<ScopeLine> {
    scopes
        .iter()
        .map(|s| ScopeLine {
            name: s.as_str(),
            description: match s {
                Scope::OpenId => "Know who you are (your account id)",
                Scope::Profile => "See your name and your account's details",
                Scope::Email => "See your email address",
                Scope::OfflineAccess => "Stay signed in while you are away (a refresh token)",
                Scope::UsersRead => "List and read every user (as an administrator)",
                Scope::UsersWrite => "Create, change and delete any user (as an administrator)",
            },
        })
        .collect()
}

/// Where `next` leads: a page address or the client.
fn next_location(next: &Next) -> String {
    let encode = |r: &str| form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>();
    match next {
        Next::SignIn { request } => format!("/signin?request={}", encode(request)),
        Next::Consent { request, .. } => format!("/signin/consent?request={}", encode(request)),
        Next::Redirect(url) => url.clone(),
    }
}

/// `GET /api/v1/auth/authorize`: the authorization endpoint (RFC 6749 §4.1.1).
#[handler]
async fn authorize(req: &Request, ctx: RequestCtx) -> Response {
    let state = state(req);
    let mut q = match Fields::query(req) {
        Ok(q) => q,
        Err(e) => return error_answer(req, StatusCode::BAD_REQUEST, &e),
    };
    let params = AuthorizeParams {
        response_type: q.take("response_type"),
        client_id: q.take("client_id"),
        redirect_uri: q.take("redirect_uri"),
        scope: q.take("scope"),
        state: q.take("state"),
        code_challenge: q.take("code_challenge"),
        code_challenge_method: q.take("code_challenge_method"),
        nonce: q.take("nonce"),
        prompt: q.take("prompt"),
        max_age: q.take("max_age"),
        login_hint: q.take("login_hint"),
        request: q.take("request"),
        request_uri: q.take("request_uri"),
        response_mode: q.take("response_mode"),
        acr_values: q.take("acr_values"),
    };
    let (request, client) = match state.check_authorization(params).await {
        Ok(checked) => checked,
        Err(AuthorizeError::Page(message)) => {
            return error_answer(req, StatusCode::BAD_REQUEST, &message)
        }
        Err(AuthorizeError::Redirect(url)) => return see_other(&url, Vec::new()),
        Err(AuthorizeError::Unavailable(e)) => return unavailable(req, e),
    };
    let sso = match state.sso(page_cookie(req, state, SSO_COOKIE)).await {
        Ok(sso) => sso,
        Err(e) => return unavailable(req, e),
    };
    match state
        .next_step(request, &client, sso.as_ref(), &ctx.audit())
        .await
    {
        Ok(next) => see_other(&next_location(&next), Vec::new()),
        Err(e) => unavailable(req, e),
    }
}

/// A passkey ceremony as a page's form carries it.
#[derive(Serialize)]
pub(super) struct PasskeyForm {
    ceremony: String,
    /// The options, as JSON text (for the form's `data-options`).
    options: String,
}

impl From<Ceremony> for PasskeyForm {
    fn from(c: Ceremony) -> Self {
        Self {
            ceremony: c.ceremony,
            options: c.options.to_string(),
        }
    }
}

/// An authentication ceremony for `user`'s passkeys (a sign-in's second step), or for any
/// passkey (`None`: "Sign in with a passkey"); `None` when there is none to offer (no
/// passkeys here, or the account has none).
fn passkey_form(state: &AppState, user: Option<&User>) -> Option<PasskeyForm> {
    let purpose = match user {
        Some(_) => CeremonyUse::SecondFactor,
        None => CeremonyUse::SignIn,
    };
    state
        .passkey_challenge(purpose, user)
        .ok()
        .map(PasskeyForm::from)
}

/// The sign-in form, for `request` (signed) if the sign-in belongs to an authorization.
fn signin_form(
    req: &Request,
    state: &AppState,
    status: StatusCode,
    request: &str,
    client_name: Option<&str>,
    email: &str,
    error: Option<&str>,
) -> Page {
    let (csrf, set) = csrf_token(req, state);
    let passkey = passkey_form(state, None);
    let signup = state.config.signup_enabled;
    Page::render(
        state,
        status,
        "signin.html",
        context! { title => "Sign in", client_name, request, csrf, email, error, passkey, signup },
    )
    .with_cookie(set)
}

/// Which form a page shows (`forgot`, `reset` or `verify`), filled in with the address
/// and the code from the message's link, if any.
#[derive(Clone, Copy)]
pub(super) struct Shown<'a> {
    pub(super) step: &'a str,
    pub(super) email: &'a str,
    pub(super) code: &'a str,
}

impl<'a> Shown<'a> {
    pub(super) fn new(step: &'a str, email: &'a str) -> Self {
        Self {
            step,
            email,
            code: "",
        }
    }
}

/// The page of accounts by mail (`reset.html`) showing `shown`, with an error or a notice.
pub(super) fn page(
    req: &Request,
    state: &AppState,
    status: StatusCode,
    shown: Shown,
    error: Option<&str>,
    notice: Option<&str>,
) -> Page {
    let Shown { step, email, code } = shown;
    let (csrf, set) = csrf_token(req, state);
    let title = match step {
        "forgot" => "Forgot your password?",
        "verify" => "Confirm your email address",
        _ => "Choose a new password",
    };
    Page::render(
        state,
        status,
        "reset.html",
        context! { title, step, email, code, csrf, error, notice },
    )
    .with_cookie(set)
}

/// The answer to a sign-in REQUIRE_VERIFIED_EMAIL refused (`refuse_unverified` has sent a
/// new code, within the mail limits), or to a sign-up it holds back (`status` 200): the
/// confirmation form, with the address filled in.
fn unverified(req: &Request, state: &AppState, user: &User, status: StatusCode) -> Response {
    let notice = format!(
        "Confirm your email address first: a message with a code is on its way to {} \
         (one a minute at most). Then sign in again.",
        user.email.as_str()
    );
    let shown = Shown::new("verify", user.email.as_str());
    page(req, state, status, shown, None, Some(&notice)).into_response()
}

/// The sign-up form, for `request` (signed) if it belongs to an authorization, filled in
/// with what was entered (never the password).
fn signup_form(
    req: &Request,
    state: &AppState,
    status: StatusCode,
    continuing: &Continuing,
    entered: &Fields,
    error: Option<&str>,
) -> Page {
    let (csrf, set) = csrf_token(req, state);
    let field = |name| entered.get(name).unwrap_or_default();
    Page::render(
        state,
        status,
        "signup.html",
        context! {
            title => "Create an account",
            client_name => continuing.client_name, request => continuing.request, csrf, error,
            email => field("email"), first_name => field("first_name"), last_name => field("last_name"),
        },
    )
    .with_cookie(set)
}

/// Sign-up is closed (SIGNUP_ENABLED=false): accounts are made by admins.
fn signup_closed(state: &AppState) -> Response {
    Page::message(
        state,
        StatusCode::FORBIDDEN,
        "Sign-up is closed",
        Some("Accounts on this server are created by its administrators."),
        None,
    )
    .into_response()
}

/// `GET /signup`: the sign-up page (`?request=` from the sign-in page of an authorization).
#[handler]
async fn signup_page(req: &Request) -> Response {
    let state = state(req);
    if !state.config.signup_enabled {
        return signup_closed(state);
    }
    let mut query = match Fields::query(req) {
        Ok(q) => q,
        Err(e) => return error_answer(req, StatusCode::BAD_REQUEST, &e),
    };
    let continuing = match Continuing::of(req, state, &mut query).await {
        Ok(continuing) => continuing,
        Err(answer) => return answer,
    };
    // The query may fill in the form (`?email=`); a password never comes that way.
    query.take("password");
    signup_form(req, state, StatusCode::OK, &continuing, &query, None).into_response()
}

/// `POST /signup`: a new account (as `POST /api/v1/users` makes it: a verification
/// message goes out), signed in at once unless REQUIRE_VERIFIED_EMAIL wants the address
/// confirmed first; then on to the authorization it belongs to, if any.
#[handler]
async fn signup_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    if !state.config.signup_enabled {
        return signup_closed(state);
    }
    let (mut form, continuing) = match Continuing::form(req, state, body).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let password = form.take("password").unwrap_or_default();
    let again = |status, error: &str| {
        signup_form(req, state, status, &continuing, &form, Some(error)).into_response()
    };
    let Ok(email) = Email::parse(form.get("email").unwrap_or_default()) else {
        return again(StatusCode::BAD_REQUEST, "Enter a valid email address.");
    };
    let Ok(password) = NewPassword::parse(SecretString::from(password)) else {
        return again(
            StatusCode::BAD_REQUEST,
            "A password has 8 to 256 characters.",
        );
    };
    let name = |field| PersonName::parse(form.get(field).unwrap_or_default(), field);
    let (Ok(first_name), Ok(last_name)) = (name("first_name"), name("last_name")) else {
        return again(
            StatusCode::BAD_REQUEST,
            "A name has at most 100 characters and no control characters.",
        );
    };
    let new = NewAccount {
        email,
        password,
        role: Role::User,
        first_name,
        last_name,
        email_verified: false,
    };
    let audit = ctx.audit();
    let user = match state.sign_up(new, Some("signup-page".into()), &audit).await {
        Ok(user) => user,
        Err(ServiceError::Store(StoreError::DuplicateEmail)) => {
            return again(
                StatusCode::CONFLICT,
                "That address has an account already: sign in, or reset its password.",
            )
        }
        Err(e) => return unavailable(req, e),
    };
    // Its message is on its way already: the confirmation form, without a second code.
    if state.config.require_verified_email {
        return unverified(req, state, &user, StatusCode::OK);
    }
    let Continuing { authorization, .. } = continuing;
    signed_in(
        req,
        state,
        &user,
        Authentication::now(false),
        authorization,
        &audit,
    )
    .await
}

/// A page for a browser already signed in, with a way to sign out.
fn signed_in_page(req: &Request, state: &AppState, sso: &Sso) -> Page {
    let request = state
        .sign_logout(&LogoutRequest::default())
        .unwrap_or_default();
    let (csrf, set) = csrf_token(req, state);
    let message = format!("You are signed in as {}.", sso.user.email.as_str());
    Page::render(
        state,
        StatusCode::OK,
        "message.html",
        context! { title => "Signed in", message, request, csrf, account => true },
    )
    .with_cookie(set)
}

fn expired_request(state: &AppState) -> Page {
    Page::message(
        state,
        StatusCode::BAD_REQUEST,
        "Sign-in expired",
        Some("This sign-in request has expired or is not valid here. Go back to the application and start again."),
        None,
    )
}

/// `GET /signin`: the sign-in page (`?request=` from the authorization endpoint).
#[handler]
async fn signin_page(req: &Request) -> Response {
    let state = state(req);
    let q = match Fields::query(req) {
        Ok(q) => q,
        Err(e) => return error_answer(req, StatusCode::BAD_REQUEST, &e),
    };
    let request = q.get("request").unwrap_or_default();
    if request.is_empty() {
        return match state.sso(page_cookie(req, state, SSO_COOKIE)).await {
            Ok(Some(sso)) => signed_in_page(req, state, &sso).into_response(),
            Ok(None) => signin_form(req, state, StatusCode::OK, "", None, "", None).into_response(),
            Err(e) => unavailable(req, e),
        };
    }
    match state.read_request(request).await {
        Ok(Some((auth, client))) => {
            let hint = auth.login_hint.as_deref().unwrap_or_default();
            signin_form(
                req,
                state,
                StatusCode::OK,
                request,
                Some(client.name.as_str()),
                hint,
                None,
            )
            .into_response()
        }
        Ok(None) => expired_request(state).into_response(),
        Err(e) => unavailable(req, e),
    }
}

/// What a sign-in form continues: the signed authorization `request` it carries (empty
/// for a sign-in of its own), that authorization and its client's name.
struct Continuing {
    request: String,
    authorization: Option<(AuthRequest, Client)>,
    client_name: Option<String>,
}

impl Continuing {
    /// A sign-in form (`POST /signin`, `/signin/passkey`), checked for its CSRF token, and
    /// what it continues; `Err`: the answer instead (a bad form, an expired request).
    async fn form(req: &Request, state: &AppState, body: Body) -> Result<(Fields, Self), Response> {
        let mut form = csrf_form(req, state, body).await?;
        let continuing = Self::of(req, state, &mut form).await?;
        Ok((form, continuing))
    }

    /// Reads it from the form; `Err`: the answer when it has expired or cannot be read.
    async fn of(req: &Request, state: &AppState, form: &mut Fields) -> Result<Self, Response> {
        let request = form.take("request").unwrap_or_default();
        let authorization = authorization_of(req, state, &request).await?;
        let client_name = authorization
            .as_ref()
            .map(|(_, c)| c.name.as_str().to_owned());
        Ok(Self {
            request,
            authorization,
            client_name,
        })
    }
}

/// The authorization a signed `request` is (`None` if empty); `Err`: the answer when it
/// has expired or cannot be read.
async fn authorization_of(
    req: &Request,
    state: &AppState,
    request: &str,
) -> Result<Option<(AuthRequest, Client)>, Response> {
    if request.is_empty() {
        return Ok(None);
    }
    match state.read_request(request).await {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) => Err(expired_request(state).into_response()),
        Err(e) => Err(unavailable(req, e)),
    }
}

/// `POST /signin`: email and password, then on to the client (or its consent page).
#[handler]
async fn signin_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let (mut form, continuing) = match Continuing::form(req, state, body).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let Continuing {
        request,
        authorization,
        client_name,
    } = continuing;
    let email = form.take("email").unwrap_or_default();
    let again = |status, error: &str| {
        signin_form(
            req,
            state,
            status,
            &request,
            client_name.as_deref(),
            &email,
            Some(error),
        )
        .into_response()
    };
    if email.trim().is_empty() {
        return again(StatusCode::BAD_REQUEST, "Enter your email address.");
    }
    if Identifier::parse(&email, "email").is_err() {
        return again(
            StatusCode::BAD_REQUEST,
            "An email address has at most 320 characters and no control characters.",
        );
    }
    let Some(password) = form.take("password").filter(|p| !p.is_empty()) else {
        return again(StatusCode::BAD_REQUEST, "Enter your password.");
    };
    let password = SecretString::from(password);
    let audit = ctx.audit();
    let user = match state.login(&email, &password, &audit, "signin").await {
        Ok(Verdict::Ok(user)) => user,
        Ok(Verdict::Invalid) => return again(StatusCode::UNAUTHORIZED, "Wrong email or password."),
        Ok(Verdict::Throttled(wait)) => {
            let page = signin_form(
                req,
                state,
                StatusCode::TOO_MANY_REQUESTS,
                &request,
                client_name.as_deref(),
                &email,
                Some(&try_again_in("Too many failed attempts.", wait)),
            );
            return page.retrying_after(wait).into_response();
        }
        Err(e) => return unavailable(req, e),
    };
    // Before the second step: a second factor entered in vain would only annoy.
    if state.refuse_unverified(&user, &audit).await {
        return unverified(req, state, &user, StatusCode::FORBIDDEN);
    }
    state.rehash_if_outdated(&user, &password).await;
    // An account with a second factor (as it is now, not as the password check read it):
    // the next page asks for it.
    let factor = match state.check_second_factor(&user, None, &audit).await {
        Ok(factor) => factor,
        Err(e) => return unavailable(req, e),
    };
    if matches!(factor, FactorCheck::Required) {
        let pending = PendingSignIn {
            sub: user.id,
            request,
            password_at_ms: crate::domain::now().timestamp_millis(),
        };
        // The form offers the factors the account has now.
        let now = match state.store.user(user.id).await {
            Ok(now) => now.map_or(user, |u| (*u).clone()),
            Err(e) => return unavailable(req, e.into()),
        };
        return match state.sign_pending(&pending) {
            Ok(signed) => mfa_form(req, state, StatusCode::OK, &signed, &now, None).into_response(),
            Err(e) => unavailable(req, e),
        };
    }
    signed_in(
        req,
        state,
        &user,
        Authentication::now(false),
        authorization,
        &audit,
    )
    .await
}

/// The second step's form, for `user`'s pending sign-in `pending` (signed): a code field
/// if they have TOTP, a passkey button if they have passkeys, recovery codes always.
fn mfa_form(
    req: &Request,
    state: &AppState,
    status: StatusCode,
    pending: &str,
    user: &User,
    error: Option<&str>,
) -> Page {
    let (csrf, set) = csrf_token(req, state);
    let passkey = passkey_form(state, Some(user));
    let totp = user.mfa.totp_enrolled();
    Page::render(
        state,
        status,
        "mfa.html",
        context! { title => "Two-step verification", email => user.email.as_str(), pending, csrf, error, totp, passkey },
    )
    .with_cookie(set)
}

/// `POST /signin/mfa`: the second factor of a sign-in whose password was right.
#[handler]
async fn signin_mfa_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let form = match csrf_form(req, state, body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let signed = form.get("pending").unwrap_or_default();
    let (pending, user) = match state.read_pending(signed).await {
        Ok(Some(found)) => found,
        Ok(None) => return expired_request(state).into_response(),
        Err(e) => return unavailable(req, e),
    };
    let authorization = match authorization_of(req, state, &pending.request).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let audit = ctx.audit();
    let again = |status, error: &str| {
        mfa_form(req, state, status, signed, &user, Some(error)).into_response()
    };
    let presented = match second_factor(&form) {
        Ok(presented) => presented,
        Err(e) => return again(StatusCode::BAD_REQUEST, e),
    };
    let checked = match state.check_second_factor(&user, presented, &audit).await {
        Ok(checked) => checked,
        Err(e) => return unavailable(req, e),
    };
    let authn = match checked.signed_in() {
        Ok(authn) => authn,
        Err(FactorCheck::Required) => {
            return again(
                StatusCode::BAD_REQUEST,
                "Enter the code, or a recovery code.",
            )
        }
        Err(FactorCheck::Throttled(wait)) => {
            let message = try_again_in("Too many wrong codes.", wait);
            let page = mfa_form(
                req,
                state,
                StatusCode::TOO_MANY_REQUESTS,
                signed,
                &user,
                Some(&message),
            );
            return page.retrying_after(wait).into_response();
        }
        Err(_) => {
            return again(
                StatusCode::UNAUTHORIZED,
                "That code or passkey is not right, or was used already.",
            )
        }
    };
    signed_in(req, state, &user, authn, authorization, &audit).await
}

/// The second factor a page's form sends: a passkey's answer, a code or a recovery code.
pub(super) fn second_factor(form: &Fields) -> Result<Option<SecondFactor>, &'static str> {
    if let Some(answer) = PasskeyAnswer::from_form(
        form.get("passkey_ceremony"),
        form.get("passkey_credential"),
        CeremonyUse::SecondFactor,
    )? {
        return Ok(Some(SecondFactor::Passkey(answer)));
    }
    SecondFactor::from_form(form.get("otp"), form.get("recovery_code"))
}

/// `POST /signin/passkey`: "Sign in with a passkey", the whole sign-in.
#[handler]
async fn signin_passkey_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let (mut form, continuing) = match Continuing::form(req, state, body).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let Continuing {
        request,
        authorization,
        client_name,
    } = continuing;
    let again = |status, error: &str| {
        signin_form(
            req,
            state,
            status,
            &request,
            client_name.as_deref(),
            "",
            Some(error),
        )
    };
    let answer = match PasskeyAnswer::from_form(
        form.get("passkey_ceremony"),
        form.get("passkey_credential"),
        CeremonyUse::SignIn,
    ) {
        Ok(Some(answer)) => answer,
        Ok(None) | Err(_) => {
            return again(
                StatusCode::BAD_REQUEST,
                "The passkey did not answer. Try again.",
            )
            .into_response()
        }
    };
    let audit = ctx.audit();
    match state.sign_in_with_passkey(&answer, &audit).await {
        Ok(PasskeySignIn::Ok(user, authn)) => {
            signed_in(req, state, &user, authn, authorization, &audit).await
        }
        Ok(PasskeySignIn::Invalid) => again(
            StatusCode::UNAUTHORIZED,
            "That passkey is not registered here, or this page has expired. Try again.",
        )
        .into_response(),
        Ok(PasskeySignIn::Throttled(wait)) => {
            let page = again(
                StatusCode::TOO_MANY_REQUESTS,
                &try_again_in("Too many failed attempts.", wait),
            );
            page.retrying_after(wait).into_response()
        }
        Err(e) => unavailable(req, e),
    }
}

/// `user` has signed in (as `authn` says): the single-sign-on cookie, then on to the
/// authorization it belongs to, or the signed-in page.
async fn signed_in(
    req: &Request,
    state: &AppState,
    user: &User,
    authn: Authentication,
    authorization: Option<(AuthRequest, Client)>,
    audit: &crate::audit::Context,
) -> Response {
    if state.refuse_unverified(user, audit).await {
        return unverified(req, state, user, StatusCode::FORBIDDEN);
    }
    let (value, ttl) = match state.start_sso(user, &authn, audit) {
        Ok(started) => started,
        Err(e) => return unavailable(req, e),
    };
    let sso_cookie = set_cookie(state, SSO_COOKIE, &value, "Lax", Some(ttl));
    let sso = match state.sso(Some(&value)).await {
        Ok(Some(sso)) => sso,
        Ok(None) => {
            return unavailable(
                req,
                ServiceError::Token(crate::auth::TokenError::Invalid(
                    "a new session did not verify",
                )),
            )
        }
        Err(e) => return unavailable(req, e),
    };
    let Some((auth, client)) = authorization else {
        return signed_in_page(req, state, &sso)
            .with_cookie(Some(sso_cookie))
            .into_response();
    };
    match state.next_step(auth, &client, Some(&sso), audit).await {
        Ok(next) => see_other(&next_location(&next), vec![sso_cookie]),
        Err(e) => unavailable(req, e),
    }
}

/// The signed authorization request a consent page or form carries, its client, and the
/// browser's sign-in if any; `Err`: the page to answer with (expired request, store down).
async fn request_and_sso(
    req: &Request,
    state: &AppState,
    signed: Option<&str>,
) -> Result<(AuthRequest, Client, Option<Sso>), Response> {
    let (auth, client) = match state.read_request(signed.unwrap_or_default()).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(expired_request(state).into_response()),
        Err(e) => return Err(unavailable(req, e)),
    };
    match state.sso(page_cookie(req, state, SSO_COOKIE)).await {
        Ok(sso) => Ok((auth, client, sso)),
        Err(e) => Err(unavailable(req, e)),
    }
}

/// `GET /signin/consent`: which client asks for what, for the signed-in person.
#[handler]
async fn consent_page(req: &Request, ctx: RequestCtx) -> Response {
    let state = state(req);
    let q = match Fields::query(req) {
        Ok(q) => q,
        Err(e) => return error_answer(req, StatusCode::BAD_REQUEST, &e),
    };
    let (auth, client, sso) = match request_and_sso(req, state, q.get("request")).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    // The question is put again each time: consent given meanwhile, a session ended.
    let next = match state
        .next_step(auth, &client, sso.as_ref(), &ctx.audit())
        .await
    {
        Ok(next) => next,
        Err(e) => return unavailable(req, e),
    };
    let (
        Next::Consent {
            request,
            client,
            scope,
        },
        Some(sso),
    ) = (&next, sso)
    else {
        return see_other(&next_location(&next), Vec::new());
    };
    let (csrf, set) = csrf_token(req, state);
    Page::render(
        state,
        StatusCode::OK,
        "consent.html",
        context! {
            title => format!("Allow {}?", client.name.as_str()),
            client_name => client.name.as_str(),
            client_id => client.id.to_string(),
            email => sso.user.email.as_str(),
            scopes => scope_lines(*scope),
            request, csrf,
        },
    )
    .with_cookie(set)
    .into_response()
}

/// `POST /signin/consent`: allow or deny, then back to the client.
#[handler]
async fn consent_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let form = match csrf_form(req, state, body).await {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    // Signed out meanwhile: `decide_consent` sends the browser to sign in again.
    let (auth, client, sso) = match request_and_sso(req, state, form.get("request")).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let allow = match form.get("decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => {
            return error_answer(
                req,
                StatusCode::BAD_REQUEST,
                "decision must be allow or deny",
            )
        }
    };
    match state
        .decide_consent(auth, &client, sso.as_ref(), allow, &ctx.audit())
        .await
    {
        Ok(next) => see_other(&next_location(&next), Vec::new()),
        Err(e) => unavailable(req, e),
    }
}

fn signed_out(state: &AppState, cookies: Vec<String>) -> Response {
    let mut page = Page::message(
        state,
        StatusCode::OK,
        "Signed out",
        None,
        Some("You are signed out. You can close this window."),
    );
    page.cookies = cookies;
    page.into_response()
}

/// `GET /api/v1/auth/logout` (and a POST without a confirmation): RP-initiated logout
/// (OIDC RP-Initiated Logout 1.0 §2): asks the signed-in person to confirm.
async fn logout_request(req: &Request, mut params: Fields) -> Response {
    let state = state(req);
    let checked = state
        .check_logout(LogoutParams {
            id_token_hint: params.take("id_token_hint"),
            client_id: params.take("client_id"),
            post_logout_redirect_uri: params.take("post_logout_redirect_uri"),
            state: params.take("state"),
        })
        .await;
    let logout = match checked {
        Ok(Ok(logout)) => logout,
        Ok(Err(message)) => return error_answer(req, StatusCode::BAD_REQUEST, &message),
        Err(e) => return unavailable(req, e),
    };
    let sso = match state.sso(page_cookie(req, state, SSO_COOKIE)).await {
        Ok(sso) => sso,
        Err(e) => return unavailable(req, e),
    };
    let Some(sso) = sso else {
        // Nothing to end here.
        return match &logout.redirect {
            Some(url) => see_other(url, Vec::new()),
            None => signed_out(state, Vec::new()),
        };
    };
    let request = match state.sign_logout(&logout) {
        Ok(r) => r,
        Err(e) => return unavailable(req, e),
    };
    let (csrf, set) = csrf_token(req, state);
    Page::render(
        state,
        StatusCode::OK,
        "logout.html",
        context! {
            title => "Sign out",
            client_name => logout.client_name, email => sso.user.email.as_str(), request, csrf,
        },
    )
    .with_cookie(set)
    .into_response()
}

#[handler]
async fn logout_get(req: &Request) -> Response {
    match Fields::query(req) {
        Ok(q) => logout_request(req, q).await,
        Err(e) => error_answer(req, StatusCode::BAD_REQUEST, &e),
    }
}

/// `POST /api/v1/auth/logout`: the confirmation form (it carries `csrf`), or an
/// RP-initiated logout sent as a form (OIDC RP-Initiated Logout §2 allows POST).
#[handler]
async fn logout_post(req: &Request, body: Body, ctx: RequestCtx) -> Response {
    let state = state(req);
    let form = match Fields::form(req, body).await {
        Ok(form) => form,
        Err(e) => return error_answer(req, StatusCode::BAD_REQUEST, &e),
    };
    if form.get("csrf").is_none() {
        return logout_request(req, form).await;
    }
    if !csrf_ok(req, state, &form) {
        return csrf_refused(state).into_response();
    }
    let Some(logout) = state.read_logout(form.get("request").unwrap_or_default()) else {
        return expired_request(state).into_response();
    };
    let everywhere = form.get("everywhere") == Some("1");
    let clear = vec![set_cookie(state, SSO_COOKIE, "", "Lax", Some(0))];
    match state.sso(page_cookie(req, state, SSO_COOKIE)).await {
        Ok(Some(sso)) => {
            if let Err(e) = state.end_sso(&sso, everywhere, &ctx.audit()).await {
                return unavailable(req, e);
            }
        }
        Ok(None) => {}
        Err(e) => return unavailable(req, e),
    }
    match &logout.redirect {
        Some(url) => see_other(url, clear),
        None => signed_out(state, clear),
    }
}

#[handler]
fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("pages/style.css"))
}

/// `GET /signin/passkey.js`: the pages' one script (the WebAuthn ceremonies).
#[handler]
fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("pages/passkey.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders_and_escapes_what_it_is_given() {
        let evil = "<script>alert(1)</script>";
        let page = Page::named(
            evil,
            StatusCode::OK,
            "signin.html",
            context! { title => "Sign in", client_name => evil, request => "r", csrf => "c", email => evil, error => evil },
        );
        assert!(!page.html.contains("<script>"), "{}", page.html);
        assert!(page.html.contains("&lt;script&gt;"));
        for template in [
            "consent.html",
            "logout.html",
            "message.html",
            "signup.html",
            "reset.html",
        ] {
            let page = Page::named(
                evil,
                StatusCode::OK,
                template,
                context! { title => "t", client_name => "c", email => "e", scopes => scope_lines(Scopes::IDENTITY), request => "r", csrf => "c", message => "m" },
            );
            assert!(page.html.contains("<h1>"), "{template}: {}", page.html);
            assert!(!page.html.contains("<script"), "{template}");
        }
        // A passkey's options go into an attribute, escaped; the one script is ours.
        let passkey = PasskeyForm {
            ceremony: "c".into(),
            options: format!("{{\"x\":\"\\\"><{evil}\"}}"),
        };
        for template in ["signin.html", "mfa.html", "account.html"] {
            let page = Page::named(
                evil,
                StatusCode::OK,
                template,
                context! { title => "t", email => evil, request => "r", csrf => "c", passkey, totp => true, step => "passkey-create", passkey_name => evil },
            );
            assert!(!page.html.contains("<script>"), "{template}: {}", page.html);
            assert_eq!(
                page.html.matches("<script").count(),
                1,
                "{template}: {}",
                page.html
            );
            assert!(page
                .html
                .contains("<script src=\"/signin/passkey.js\" defer></script>"));
        }
    }

    #[test]
    fn a_parameter_sent_twice_is_refused() {
        assert!(Fields::parse(b"a=1&b=2").is_ok());
        assert!(Fields::parse(b"a=1&a=2").is_err());
    }
}
