//! Who is calling: the access token from the `Authorization` header or the session cookie,
//! handed to `AppState::verify_access_token` on every request (this module only finds the
//! token and guards the cookie against cross-site use), and who may call what (`Access`).
//! Declared in the spec as an HTTP bearer scheme, an OAuth2 password and client
//! credentials flow (so Swagger UI's Authorize button logs in) and a cookie scheme.

use std::sync::Arc;

use poem::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use poem::{Request, RequestBody};
use poem_openapi::registry::{
    MetaOAuthFlow, MetaOAuthFlows, MetaOAuthScope, MetaSecurityScheme, Registry,
};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use super::{ApiError, ErrorBody};
use crate::auth::AccessClaims;
use crate::domain::{Role, Scope, Scopes, User, UserId};
use crate::service::{Account, AppState, Verified};

pub const BEARER_SCHEME: &str = "bearerAuth";
pub const OAUTH2_SCHEME: &str = "oauth2";
pub const COOKIE_SCHEME: &str = "sessionCookie";
/// The spec cannot follow SESSION_NAME (it is the same file for every deployment), so it
/// documents the default name.
pub const DEFAULT_COOKIE_NAME: &str = "session_id";
pub const TOKEN_URL: &str = "/api/v1/auth/token";
pub const AUTHORIZE_URL: &str = "/api/v1/auth/authorize";

/// Who may call an operation. The one declaration per operation: handlers enforce it
/// (`Caller::authorize`) and the spec documents it (the oauth2 scopes of each operation
/// are filled in from `ACCESS` by `api::spec_json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Admins and clients holding the scope.
    Admin(Scope),
    /// The user themselves (`profile` scope), or admins and clients holding the scope.
    SelfOr(Scope),
    /// Only the user themselves (`profile` scope).
    SelfOnly,
    /// Any valid user token (its own session).
    AnyUser,
    /// A person's token carrying `openid` (OpenID Connect userinfo).
    OpenId,
}

pub const GET_STATS: (&str, Access) = ("getStats", Access::Admin(Scope::UsersRead));
pub const LIST_USERS: (&str, Access) = ("listUsers", Access::Admin(Scope::UsersRead));
pub const GET_USER: (&str, Access) = ("getUser", Access::SelfOr(Scope::UsersRead));
pub const UPDATE_USER: (&str, Access) = ("updateUser", Access::SelfOr(Scope::UsersWrite));
pub const DELETE_USER: (&str, Access) = ("deleteUser", Access::SelfOr(Scope::UsersWrite));
pub const CHANGE_PASSWORD: (&str, Access) = ("changePassword", Access::SelfOnly);
pub const LOGOUT: (&str, Access) = ("deleteSession", Access::AnyUser);
pub const USERINFO: (&str, Access) = ("getUserInfo", Access::OpenId);
pub const USERINFO_POST: (&str, Access) = ("postUserInfo", Access::OpenId);
pub const LIST_CONSENTS: (&str, Access) = ("listConsents", Access::SelfOnly);
pub const MFA_STATUS: (&str, Access) = ("getMfa", Access::SelfOnly);
pub const MFA_ENROL_TOTP: (&str, Access) = ("enrolTotp", Access::SelfOnly);
pub const MFA_CONFIRM_TOTP: (&str, Access) = ("confirmTotp", Access::SelfOnly);
pub const MFA_REMOVE_TOTP: (&str, Access) = ("removeTotp", Access::SelfOnly);
pub const MFA_RECOVERY_CODES: (&str, Access) = ("renewRecoveryCodes", Access::SelfOnly);
pub const MFA_ADD_PASSKEY: (&str, Access) = ("addPasskey", Access::SelfOnly);
pub const MFA_CONFIRM_PASSKEY: (&str, Access) = ("confirmPasskey", Access::SelfOnly);
pub const MFA_REMOVE_PASSKEY: (&str, Access) = ("removePasskey", Access::SelfOnly);
pub const MFA_PASSKEY_CHALLENGE: (&str, Access) = ("passkeyChallenge", Access::SelfOnly);
pub const DELETE_CONSENT: (&str, Access) = ("deleteConsent", Access::SelfOnly);
pub const RESEND_VERIFICATION: (&str, Access) = ("resendVerification", Access::SelfOnly);
pub const CHANGE_EMAIL: (&str, Access) = ("changeEmail", Access::SelfOnly);
/// Creating users when sign-up is closed (open sign-up needs no token at all).
pub const CREATE_USER: (&str, Access) = ("createUser", Access::Admin(Scope::UsersWrite));

/// Every protected operation, by operationId.
pub const ACCESS: &[(&str, Access)] = &[
    GET_STATS,
    LIST_USERS,
    GET_USER,
    UPDATE_USER,
    DELETE_USER,
    CHANGE_PASSWORD,
    LOGOUT,
    CREATE_USER,
    USERINFO,
    USERINFO_POST,
    LIST_CONSENTS,
    DELETE_CONSENT,
    MFA_STATUS,
    MFA_ENROL_TOTP,
    MFA_CONFIRM_TOTP,
    MFA_REMOVE_TOTP,
    MFA_RECOVERY_CODES,
    MFA_ADD_PASSKEY,
    MFA_CONFIRM_PASSKEY,
    MFA_REMOVE_PASSKEY,
    MFA_PASSKEY_CHALLENGE,
    RESEND_VERIFICATION,
    CHANGE_EMAIL,
];

/// The OpenAPI security requirements of an operation with this access: any of the bearer
/// token, the cookie, or an oauth2 token with the scopes (OpenAPI lists scopes for oauth2
/// schemes only). `open`: the operation also works without a token.
pub fn requirements(access: Access, open: bool) -> serde_json::Value {
    use serde_json::json;
    let mut alternatives = vec![json!({ BEARER_SCHEME: [] })];
    match access {
        Access::Admin(scope) => alternatives.push(json!({ OAUTH2_SCHEME: [scope.as_str()] })),
        Access::SelfOr(scope) => {
            alternatives.push(json!({ OAUTH2_SCHEME: [Scope::Profile.as_str()] }));
            alternatives.push(json!({ OAUTH2_SCHEME: [scope.as_str()] }));
        }
        Access::SelfOnly => alternatives.push(json!({ OAUTH2_SCHEME: [Scope::Profile.as_str()] })),
        Access::AnyUser => alternatives.push(json!({ OAUTH2_SCHEME: [] })),
        Access::OpenId => alternatives.push(json!({ OAUTH2_SCHEME: [Scope::OpenId.as_str()] })),
    }
    alternatives.push(json!({ COOKIE_SCHEME: [] }));
    if open {
        alternatives.push(json!({}));
    }
    serde_json::Value::Array(alternatives)
}

/// A verified caller: the token's claims, its effective scopes and its account.
pub struct Caller {
    pub claims: Arc<AccessClaims>,
    /// The token's scopes, narrowed to what the account may still have today.
    pub scopes: Scopes,
    pub account: Account,
    /// The token came from the session cookie rather than the Authorization header.
    pub via_cookie: bool,
    /// A person's token held by a third-party client (see `Verified::delegated`).
    pub delegated: bool,
}

fn bearer_token(req: &Request) -> Option<&str> {
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    // Two Authorization headers: which one a proxy or another service would use is
    // anyone's guess, so use neither.
    if values.next().is_some() {
        return Some("");
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// Whether a browser request comes from this service's own pages. Requests without an
/// `Origin` (curl, SDKs, same-origin GETs) are not cross-site browser requests.
pub fn same_origin(req: &Request, public_url: &str) -> bool {
    let Some(origin) = req.headers().get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if origin.eq_ignore_ascii_case(public_url.trim_end_matches('/')) {
        return true;
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    !host.is_empty()
        && ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")))
}

fn app_state(req: &Request) -> Result<&Arc<AppState>, ApiError> {
    req.data::<Arc<AppState>>().ok_or_else(|| {
        ApiError::internal(&std::io::Error::other("AppState missing from the request"))
    })
}

/// `Ok(None)` when no credentials were sent; `Err` when they were and failed.
async fn authenticate(req: &Request) -> Result<Option<Caller>, ApiError> {
    let state = app_state(req)?;
    let (token, via_cookie) = match bearer_token(req) {
        Some(token) => (token, false),
        None => match cookie(req, &state.config.session_name) {
            Some(token) => (token, true),
            None => return Ok(None),
        },
    };
    // SameSite=Strict already keeps the cookie off cross-site requests in current
    // browsers; checking Origin on unsafe methods covers older ones and sibling sites.
    if via_cookie && !req.method().is_safe() && !same_origin(req, &state.public_url) {
        return Err(ApiError::Forbidden(ErrorBody::json(
            "cross-site request refused: the Origin does not match this service",
        )));
    }
    let Verified {
        claims,
        scopes,
        account,
        delegated,
    } = state.verify_access_token(token).await?;
    Ok(Some(Caller {
        claims,
        scopes,
        account,
        via_cookie,
        delegated,
    }))
}

impl Caller {
    pub fn user(&self) -> Option<&User> {
        self.shared_user().map(|user| &**user)
    }

    /// The user, shared (for responses that send it as it is).
    pub fn shared_user(&self) -> Option<&Arc<User>> {
        match &self.account {
            Account::User(user) => Some(user),
            Account::Client(_) => None,
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        self.user().map(|u| u.id)
    }

    /// The user behind a user-only operation; 403 for a client token.
    pub fn require_user(&self) -> Result<&User, ApiError> {
        self.user().ok_or_else(ApiError::forbidden)
    }

    pub fn session_id(&self) -> Option<uuid::Uuid> {
        self.claims.session_id()
    }

    /// For logs: `user:<id>` or `client:<id>`.
    pub fn label(&self) -> String {
        match &self.account {
            Account::User(u) => format!("user:{}", u.id),
            Account::Client(c) => format!("client:{}", c.id),
        }
    }

    /// An admin (by the store's current role, not the token's) or a client, whose token
    /// carries `scope`.
    pub fn has_authority(&self, scope: Scope) -> bool {
        let privileged = match &self.account {
            Account::User(user) => user.role == Role::Admin,
            Account::Client(_) => true,
        };
        privileged && self.scopes.contains(scope)
    }

    /// `me` or a user id from a path (anything that is not a UUID names no user). A
    /// client has no `me`: 403.
    pub fn target(&self, raw: &str) -> Result<Option<UserId>, ApiError> {
        if raw == "me" {
            return self.user_id().map(Some).ok_or_else(ApiError::forbidden);
        }
        Ok(uuid::Uuid::parse_str(raw).ok())
    }

    /// Enforces an operation's `Access` on `target` (the user the operation is about).
    /// Others get 403 whether or not the record exists, so ids cannot be probed.
    pub fn authorize(
        &self,
        (operation, access): (&str, Access),
        target: Option<UserId>,
    ) -> Result<(), ApiError> {
        // A third-party client holding a person's `profile` token reads their record; only
        // the person (or their own applications) changes or deletes the account.
        let own = || {
            self.user_id().is_some_and(|id| Some(id) == target)
                && self.scopes.contains(Scope::Profile)
                && (!self.delegated || operation == GET_USER.0)
        };
        let allowed = match access {
            Access::Admin(scope) => self.has_authority(scope),
            Access::SelfOr(scope) => own() || self.has_authority(scope),
            Access::SelfOnly => own(),
            Access::AnyUser => self.user().is_some(),
            Access::OpenId => self.user().is_some() && self.scopes.contains(Scope::OpenId),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

fn register_schemes(registry: &mut Registry) {
    registry.create_security_scheme(
        COOKIE_SCHEME,
        MetaSecurityScheme {
            ty: "apiKey",
            description: Some(
                "The session cookie set by POST /api/v1/auth_session/login (named by SESSION_NAME, \
                 default `session_id`). Unsafe requests must come from this service's origin.",
            ),
            name: Some(DEFAULT_COOKIE_NAME),
            key_in: Some("cookie"),
            scheme: None,
            bearer_format: None,
            flows: None,
            openid_connect_url: None,
        },
    );
    registry.create_security_scheme(
        BEARER_SCHEME,
        MetaSecurityScheme {
            ty: "http",
            description: Some("An access token from POST /api/v1/auth/token, sent as `Authorization: Bearer <token>`."),
            name: None,
            key_in: None,
            scheme: Some("bearer"),
            bearer_format: Some("JWT"),
            flows: None,
            openid_connect_url: None,
        },
    );
    let scopes = || {
        Scope::ALL
            .iter()
            .map(|s| MetaOAuthScope {
                name: s.as_str(),
                description: Some(s.description()),
            })
            .collect()
    };
    registry.create_security_scheme(
        OAUTH2_SCHEME,
        MetaSecurityScheme {
            ty: "oauth2",
            description: Some(
                "People: the authorization code flow with PKCE (sign in on this service's own \
                 page; in Swagger UI the client id is filled in) or the password flow (email as \
                 username). Services: the client credentials flow (`simple-api clients create`). \
                 Tokens are sent as bearer tokens.",
            ),
            name: None,
            key_in: None,
            scheme: None,
            bearer_format: None,
            flows: Some(MetaOAuthFlows {
                implicit: None,
                password: Some(MetaOAuthFlow {
                    authorization_url: None,
                    token_url: Some(TOKEN_URL),
                    refresh_url: Some(TOKEN_URL),
                    scopes: scopes(),
                }),
                client_credentials: Some(MetaOAuthFlow {
                    authorization_url: None,
                    token_url: Some(TOKEN_URL),
                    refresh_url: None,
                    scopes: scopes(),
                }),
                authorization_code: Some(MetaOAuthFlow {
                    authorization_url: Some(AUTHORIZE_URL),
                    token_url: Some(TOKEN_URL),
                    refresh_url: Some(TOKEN_URL),
                    scopes: scopes(),
                }),
            }),
            openid_connect_url: None,
        },
    );
}

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_schemes(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME, OAUTH2_SCHEME, COOKIE_SCHEME]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match authenticate(req).await {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => Err(ApiError::unauthorized().into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A caller when credentials were sent, nobody when none were; bad credentials are still
/// a 401 rather than silently anonymous.
pub struct MaybeCaller(pub Option<Caller>);

impl<'a> ApiExtractor<'a> for MaybeCaller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        Caller::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        Caller::security_schemes()
    }

    fn has_security_fallback() -> bool {
        true
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        authenticate(req).await.map(MaybeCaller).map_err(Into::into)
    }
}
