//! Who is calling: the bearer token (or, later, the session cookie) verified on every
//! request, then re-checked against the store. Declared in the spec as an HTTP bearer
//! scheme and an OAuth2 password flow, so Swagger UI's Authorize button logs in.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::http::header::AUTHORIZATION;
use poem::{Request, RequestBody};
use poem_openapi::registry::{
    MetaOAuthFlow, MetaOAuthFlows, MetaOAuthScope, MetaSecurityScheme, Registry,
};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use super::ApiError;
use crate::auth::{AccessClaims, Principal, TokenError};
use crate::domain::{Role, Scope, Scopes, User, UserId};
use crate::startup::AppState;

pub const BEARER_SCHEME: &str = "bearerAuth";
pub const OAUTH2_SCHEME: &str = "oauth2";
pub const TOKEN_URL: &str = "/api/v1/auth/token";

/// A verified caller: the token's claims and the user as the store has it now.
pub struct Caller {
    pub claims: AccessClaims,
    pub scopes: Scopes,
    pub user: User,
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
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `Ok(None)` when no credentials were sent; `Err` when they were and failed.
async fn authenticate(req: &Request) -> Result<Option<Caller>, ApiError> {
    let Some(token) = bearer_token(req) else {
        return Ok(None);
    };
    let state = req.data::<Arc<AppState>>().ok_or_else(|| {
        ApiError::internal(&std::io::Error::other("AppState missing from the request"))
    })?;
    let claims = state.tokens.verify(token)?;
    match claims.principal()? {
        Principal::User { id, .. } => {
            let user = state
                .store
                .user(id)
                .await?
                .ok_or(TokenError::Invalid("the user no longer exists"))?;
            if issued_instant(&claims) < user.tokens_valid_after {
                return Err(TokenError::Revoked.into());
            }
            let scopes = claims.scopes();
            Ok(Some(Caller {
                claims,
                scopes,
                user,
            }))
        }
    }
}

impl Caller {
    pub fn id(&self) -> UserId {
        self.user.id
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
                    refresh_url: None,
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
        vec![BEARER_SCHEME, OAUTH2_SCHEME]
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
