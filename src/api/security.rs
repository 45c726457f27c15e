//! Who is calling: the bearer token (or, later, the session cookie) verified on every
//! request, then re-checked against the store. Declared in the spec as an HTTP bearer
//! scheme and an OAuth2 password flow, so Swagger UI's Authorize button logs in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use poem::{Request, RequestBody};
use poem_openapi::registry::{
    MetaOAuthFlow, MetaOAuthFlows, MetaOAuthScope, MetaSecurityScheme, Registry,
};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use super::{ApiError, ErrorBody};
use crate::auth::{AccessClaims, Principal, TokenError};
use crate::domain::{Role, Scope, Scopes, User, UserId};
use crate::startup::AppState;

pub const BEARER_SCHEME: &str = "bearerAuth";
pub const OAUTH2_SCHEME: &str = "oauth2";
pub const COOKIE_SCHEME: &str = "sessionCookie";
/// The spec cannot follow SESSION_NAME (it is the same file for every deployment), so it
/// documents the default name.
pub const DEFAULT_COOKIE_NAME: &str = "session_id";
pub const TOKEN_URL: &str = "/api/v1/auth/token";

/// A verified caller: the token's claims and the user as the store has it now.
pub struct Caller {
    pub claims: AccessClaims,
    pub scopes: Scopes,
    pub user: User,
    /// The token came from the session cookie rather than the Authorization header.
    pub via_cookie: bool,
}

/// When the token was issued, to the millisecond: the jti is a UUIDv7, whose timestamp is
/// finer than `iat`'s whole seconds, so "log out everywhere" does not also kill tokens
/// issued later in the same second.
fn issued_instant(claims: &AccessClaims) -> DateTime<Utc> {
    uuid::Uuid::parse_str(&claims.jti)
        .ok()
        .and_then(|jti| jti.get_timestamp())
        .and_then(|ts| {
            let (secs, nanos) = ts.to_unix();
            DateTime::from_timestamp(secs as i64, nanos)
        })
        .unwrap_or_else(|| claims.issued_at())
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

/// `Ok(None)` when no credentials were sent; `Err` when they were and failed.
async fn authenticate(req: &Request) -> Result<Option<Caller>, ApiError> {
    let state = req.data::<Arc<AppState>>().ok_or_else(|| {
        ApiError::internal(&std::io::Error::other("AppState missing from the request"))
    })?;
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
    let claims = state.tokens.verify(token)?;
    if state.store.is_jti_revoked(&claims.jti).await? {
        return Err(TokenError::Revoked.into());
    }
    match claims.principal()? {
        Principal::User { id, .. } => {
            let user = state
                .store
                .user(id)
                .await?
                .ok_or(TokenError::Invalid("the user no longer exists"))?;
            if !user.session_alive(claims.session_id(), issued_instant(&claims)) {
                return Err(TokenError::Revoked.into());
            }
            // A revoked session (logout, revocation, refresh-token theft) takes its
            // access tokens with it, not only its refresh tokens.
            if let Some(sid) = claims.session_id() {
                let session = state.store.session(sid).await?;
                if session.is_some_and(|s| s.revoked_at.is_some()) {
                    return Err(TokenError::Revoked.into());
                }
            }
            let scopes = claims.scopes();
            Ok(Some(Caller {
                claims,
                scopes,
                user,
                via_cookie,
            }))
        }
    }
}

impl Caller {
    pub fn id(&self) -> UserId {
        self.user.id
    }

    pub fn session_id(&self) -> Option<uuid::Uuid> {
        self.claims.session_id()
    }

    /// An admin (by the store's current role, not the token's) whose token carries `scope`.
    pub fn is_admin_with(&self, scope: Scope) -> bool {
        self.user.role == Role::Admin && self.scopes.contains(scope)
    }

    pub fn require_admin(&self, scope: Scope) -> Result<(), ApiError> {
        if self.is_admin_with(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// `me` or a user id from a path. Anything that is not a UUID names no user.
    pub fn target(&self, raw: &str) -> Option<UserId> {
        if raw == "me" {
            Some(self.id())
        } else {
            uuid::Uuid::parse_str(raw).ok()
        }
    }

    /// May act on `target`'s record: themselves with the `profile` scope, or an admin with
    /// `scope`. Others get 403 whether or not the record exists, so ids cannot be probed.
    pub fn require_access(&self, target: Option<UserId>, scope: Scope) -> Result<(), ApiError> {
        let own = target == Some(self.id()) && self.scopes.contains(Scope::Profile);
        if own || self.is_admin_with(scope) {
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
            description: Some("Log in with email (as username) and password; the token is sent as a bearer token."),
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
                client_credentials: None,
                authorization_code: None,
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
