//! The OAuth2 endpoints: token (password, refresh_token and client_credentials grants),
//! revocation (RFC 7009) and introspection (RFC 7662). The work is the service's
//! (`AppState::login`, `authenticate_client`, `exchange_refresh_token`, `issue`,
//! `revoke_token`, `verify_access_token`); this module reads the forms and shapes the
//! RFC 6749 answers.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::Password;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use secrecy::SecretString;

use super::body::{BodyError, Form, FormFields};
use super::error::{OAuthError, OAuthErrorCode};
use super::security::{Access, USERINFO, USERINFO_POST};
use super::{ApiError, ApiTags, Caller, Empty, RequestCtx};
use crate::auth::assertion::ASSERTION_TYPE;
use crate::auth::clients::parse_basic;
use crate::domain::{Client, Identifier, Scopes};
use crate::service::{
    released_claims, AppState, ClientCredential, ClientVerdict, Exchanged, FactorCheck, Grant,
    SecondFactor, ServiceError, Tokens, Verdict, Verified,
};

pub struct AuthApi;

/// Which grant: `password`, `refresh_token`, `client_credentials` or `authorization_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum GrantType {
    /// Resource owner password credentials (RFC 6749 §4.3): email and password.
    Password,
    /// Exchange a refresh token for a new access token and a new refresh token (§6).
    RefreshToken,
    /// A registered client's own token (§4.4).
    ClientCredentials,
    /// Browser sign-in (§4.1 with PKCE, RFC 7636): exchange the code the authorization
    /// endpoint sent to the redirect URI.
    AuthorizationCode,
}

/// An OAuth2 token request (RFC 6749), form-encoded.
#[derive(Object)]
#[oai(example)]
pub struct TokenRequest {
    pub grant_type: GrantType,
    /// password grant: the account's email (at most 320 characters, no control characters).
    #[oai(validator(max_length = 320, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"))]
    pub username: Option<String>,
    /// password grant: the account's password.
    pub password: Option<Password>,
    /// password grant, for an account with a second factor: the 6-digit code of its
    /// authenticator app (TOTP). Without it such an account gets `invalid_grant`.
    #[oai(validator(max_length = 64))]
    pub otp: Option<String>,
    /// password grant, for an account with a second factor, instead of `otp`: one of its
    /// recovery codes (each works once).
    pub recovery_code: Option<Password>,
    /// refresh_token grant: the refresh token. It is single-use: keep the new one.
    pub refresh_token: Option<String>,
    /// Space-separated scopes to narrow the token to (default: everything the account may do).
    pub scope: Option<String>,
    /// client_credentials with form authentication: the client's id. (Public clients such
    /// as Swagger UI may send one with the other grants; it is accepted, not authenticated.)
    #[oai(validator(max_length = 320, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"))]
    pub client_id: Option<String>,
    /// client_credentials with form authentication (`client_secret_post`): the secret.
    pub client_secret: Option<Password>,
    /// `private_key_jwt` client authentication: always
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    pub client_assertion_type: Option<String>,
    /// `private_key_jwt` client authentication (RFC 7523 §2.2): a JWT signed with one of the
    /// client's registered keys; `iss` = `sub` = client id, `aud` = this endpoint's URL, the
    /// token endpoint's or the issuer, `exp` at most an hour ahead, a `jti` never used before.
    pub client_assertion: Option<Password>,
    /// authorization_code grant: the code from the redirect (single use, a minute).
    pub code: Option<Password>,
    /// authorization_code grant: the redirect URI the authorization request sent.
    #[oai(validator(max_length = 2000))]
    pub redirect_uri: Option<String>,
    /// authorization_code grant: the PKCE code verifier (RFC 7636), 43 to 128 characters.
    pub code_verifier: Option<Password>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Object)]
pub struct TokenBody {
    /// The access token: a JWT signed with a key from `/.well-known/jwks.json`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// User logins only: exchange it at this endpoint (`grant_type=refresh_token`) for a
    /// new pair before it expires. Single-use; presenting a used one again (after a short
    /// grace window) revokes the whole session.
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
    /// authorization_code grant with the `openid` scope: the OpenID Connect ID token
    /// (RS256), for the client to read who signed in. Not for calling the API.
    #[oai(skip_serializing_if_is_none)]
    pub id_token: Option<String>,
}

/// A token to revoke (RFC 7009) or introspect (RFC 7662), form-encoded, with optional
/// form client authentication (or use HTTP Basic).
#[derive(Object)]
pub struct TokenForm {
    /// The access token or refresh token.
    #[oai(validator(min_length = 1))]
    pub token: String,
    /// `access_token` or `refresh_token`; only a hint, the token's shape decides.
    pub token_type_hint: Option<String>,
    /// Form client authentication (`client_secret_post`): the client's id. Optional beside
    /// HTTP Basic or a `client_assertion`, where it must name the same client.
    #[oai(validator(max_length = 320, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"))]
    pub client_id: Option<String>,
    /// Form client authentication (`client_secret_post`): the client's secret.
    pub client_secret: Option<Password>,
    /// `private_key_jwt` client authentication: always
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    pub client_assertion_type: Option<String>,
    /// `private_key_jwt` client authentication (RFC 7523 §2.2): a JWT signed with one of the
    /// client's registered keys (see the token endpoint).
    pub client_assertion: Option<Password>,
}

/// RFC 7662 §2.2. Inactive tokens get `{"active": false}` and nothing else.
#[derive(Object, Default)]
#[oai(skip_serializing_if_is_none)]
pub struct IntrospectBody {
    /// Whether the token is valid right now.
    pub active: bool,
    /// Its scopes, space-separated.
    pub scope: Option<String>,
    /// The client it was issued to (client tokens).
    pub client_id: Option<String>,
    /// The user or client id it speaks for.
    pub sub: Option<String>,
    /// `Bearer` (access token) or `refresh_token`.
    pub token_type: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: Option<i64>,
    /// Issue time, seconds since the epoch.
    pub iat: Option<i64>,
    /// Not-before, seconds since the epoch.
    pub nbf: Option<i64>,
    /// Issuer.
    pub iss: Option<String>,
    /// Audience.
    pub aud: Option<String>,
    /// Token id.
    pub jti: Option<String>,
}

#[derive(ApiResponse)]
pub enum IntrospectResponse {
    /// The token's state.
    #[oai(status = 200)]
    Ok(
        Json<IntrospectBody>,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[derive(ApiResponse)]
pub enum RevokeResponse {
    /// The token is revoked, or was unknown, expired or already revoked (RFC 7009 §2.2).
    #[oai(status = 200)]
    Ok(Json<Empty>),
}

#[derive(ApiResponse)]
pub enum TokenResponse {
    /// A new access token. Never cache it.
    #[oai(status = 200)]
    Ok(
        Json<TokenBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

fn granted(tokens: Tokens) -> TokenResponse {
    let Tokens {
        access,
        refresh,
        id_token,
    } = tokens;
    TokenResponse::Ok(
        Json(TokenBody {
            access_token: access.token,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            scope: access.claims.scope,
            refresh_token: refresh,
            id_token,
        }),
        "no-store".into(),
        "no-cache".into(),
    )
}

/// The scopes to grant: all of `allowed`, or the requested subset of it.
fn narrow(requested: Option<&str>, allowed: Scopes) -> Result<Scopes, OAuthError> {
    let Some(raw) = requested else {
        return Ok(allowed);
    };
    let requested = Scopes::parse(raw).map_err(|unknown| {
        OAuthError::new(
            OAuthErrorCode::InvalidScope,
            format!("unknown scope {unknown}"),
        )
    })?;
    if requested.is_empty() {
        return Ok(allowed);
    }
    if !requested.is_subset(&allowed) {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidScope,
            format!("this account may be granted at most: {allowed}"),
        ));
    }
    Ok(requested)
}

async fn password_grant(
    state: &AppState,
    form: &Form,
    ctx: &RequestCtx,
) -> Result<TokenResponse, OAuthError> {
    let username = form
        .get("username")
        .ok_or_else(|| OAuthError::invalid_request("username missing"))?;
    let password = SecretString::from(
        form.get("password")
            .ok_or_else(|| OAuthError::invalid_request("password missing"))?,
    );
    // Read before the password is hashed: a malformed field costs nothing.
    let presented = SecondFactor::from_form(form.get("otp"), form.get("recovery_code"))
        .map_err(OAuthError::invalid_request)?;
    let user = match state
        .login(username, &password, &ctx.audit(), "password")
        .await?
    {
        Verdict::Ok(user) => user,
        Verdict::Throttled(wait) => return Err(OAuthError::throttled(wait)),
        Verdict::Invalid => {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidGrant,
                "invalid username or password",
            ))
        }
    };
    if state.refuse_unverified(&user, &ctx.audit()).await {
        return Err(ServiceError::EmailNotVerified.into());
    }
    let scopes = narrow(form.get("scope"), user.role.scopes())?;
    let checked = state
        .check_second_factor(&user, presented, &ctx.audit())
        .await?;
    let authn = checked.signed_in().map_err(|refused| match refused {
        FactorCheck::Throttled(wait) => OAuthError::throttled(wait),
        FactorCheck::Required => OAuthError::new(
            OAuthErrorCode::InvalidGrant,
            "a second factor is required: send otp (the 6-digit code of the account's \
             authenticator app) or recovery_code with the password (a passkey signs in \
             in a browser, through the authorization code flow)",
        ),
        _ => OAuthError::new(OAuthErrorCode::InvalidGrant, "invalid second factor"),
    })?;
    state.rehash_if_outdated(&user, &password).await;
    let grant = Grant::Password { user: &user, authn };
    let tokens = state.issue(grant, scopes).await?;
    Ok(granted(tokens))
}

async fn refresh_grant(
    state: &AppState,
    req: &Request,
    form: &Form,
    ctx: &RequestCtx,
) -> Result<TokenResponse, OAuthError> {
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token missing"))?;
    // A login granted to a client through the code flow is refreshed by that client, and
    // a confidential one must authenticate (RFC 6749 §6); the service's own logins take
    // no client authentication.
    let caller = client_from_request(state, req, form, ctx).await?;
    if let Some((granted_to, client)) = state.refresh_token_client(presented).await? {
        let public = client.as_ref().is_some_and(Client::is_public);
        let same = match &caller {
            Some(caller) => client.is_some() && caller.id == granted_to,
            None => public && named_client(req, form) == Some(granted_to),
        };
        if !same {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidGrant,
                "this refresh token was issued to another client, or the client did not authenticate",
            ));
        }
    }
    let exchanged = state
        .exchange_refresh_token(presented, &ctx.audit())
        .await?;
    match exchanged {
        Exchanged::Rotated {
            user,
            session_id,
            allowed,
            refresh_token,
            client,
            authn,
        } => {
            let scopes = narrow(form.get("scope"), allowed)?;
            let grant = Grant::RefreshToken {
                user: &user,
                session_id,
                refresh_token,
                client,
                authn,
            };
            let tokens = state.issue(grant, scopes).await?;
            Ok(granted(tokens))
        }
        Exchanged::Reused => Err(OAuthError::new(
            OAuthErrorCode::InvalidGrant,
            "refresh token reuse detected; the session has been revoked",
        )),
        Exchanged::Invalid => Err(OAuthError::new(
            OAuthErrorCode::InvalidGrant,
            "invalid, expired or revoked refresh token",
        )),
    }
}

async fn authorization_code_grant(
    state: &AppState,
    req: &Request,
    form: &Form,
    ctx: &RequestCtx,
) -> Result<TokenResponse, OAuthError> {
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code missing"))?;
    // A confidential client authenticates as for client_credentials; a public one names
    // itself (client_id) and PKCE stands in for a secret.
    let client = match client_from_request(state, req, form, ctx).await? {
        Some(client) => client,
        None => {
            let client = match named_client(req, form) {
                Some(id) => state.sign_in_client(id).await.map_err(ApiError::from)?,
                None => None,
            };
            match client {
                Some(client) if client.is_public() => client,
                Some(_) => {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidClient,
                        "this client must authenticate (client_secret_basic, client_secret_post or private_key_jwt)",
                    ))
                }
                None => {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidClient,
                        "client_id missing or unknown",
                    ))
                }
            }
        }
    };
    let audit = ctx.audit();
    let redeemed = state
        .redeem_code(
            &client,
            code,
            form.get("redirect_uri"),
            form.get("code_verifier"),
            &audit,
        )
        .await?;
    let (code, user) =
        redeemed.map_err(|reason| OAuthError::new(OAuthErrorCode::InvalidGrant, reason))?;
    let family = crate::auth::refresh::Family::generate();
    let grant = Grant::AuthorizationCode {
        user: &user,
        client: &client,
        code: &code,
        session: &family,
    };
    let tokens = state.issue(grant, code.scope).await?;
    // Marked used only now, after the session exists: whichever exchange is second finds
    // the first's session to revoke (and its own is revoked with it).
    if !state
        .mark_code_used(&code, family.session_id(), &audit)
        .await?
    {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidGrant,
            "authorization code already used: the tokens issued with it are revoked",
        ));
    }
    Ok(granted(tokens))
}

/// The client a public client's request names without authenticating (`none`): form
/// `client_id`, or HTTP Basic with an empty secret (Swagger UI sends that).
fn named_client(req: &Request, form: &Form) -> Option<uuid::Uuid> {
    let basic = req
        .header(poem::http::header::AUTHORIZATION)
        .and_then(parse_basic)
        .filter(|(_, secret)| secret.is_empty())
        .map(|(id, _)| id);
    let named = form.get("client_id").map(str::to_owned).or(basic)?;
    uuid::Uuid::parse_str(&named).ok()
}

async fn client_credentials_grant(
    state: &AppState,
    req: &Request,
    form: &Form,
    ctx: &RequestCtx,
) -> Result<TokenResponse, OAuthError> {
    let client = require_client(state, req, form, ctx).await?;
    let scopes = narrow(form.get("scope"), client.scope)?;
    let tokens = state
        .issue(Grant::ClientCredentials(&client), scopes)
        .await?;
    Ok(granted(tokens))
}

/// What OpenID Connect releases about the signed-in person (OIDC Core §5.3.2), by the
/// token's scopes: `email` and `email_verified` with `email`, the names with `profile`.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct UserInfo {
    /// The person's user id: the same for every client.
    pub sub: String,
    pub email: Option<String>,
    /// Whether the address is known to be the person's (addresses are not verified yet).
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// When the account last changed (Unix seconds).
    pub updated_at: Option<i64>,
}

#[derive(ApiResponse)]
pub enum UserInfoResponse {
    /// The claims the token's scopes release.
    #[oai(status = 200)]
    Ok(Json<UserInfo>, #[oai(header = "Cache-Control")] String),
}

fn userinfo(caller: &Caller, op: (&'static str, Access)) -> Result<UserInfoResponse, ApiError> {
    caller.authorize(op, caller.user_id())?;
    let user = caller.require_user()?;
    let claims = released_claims(user, caller.scopes);
    let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(UserInfoResponse::Ok(
        Json(UserInfo {
            sub: user.id.to_string(),
            email: text("email"),
            email_verified: claims.get("email_verified").and_then(|v| v.as_bool()),
            name: text("name"),
            given_name: text("given_name"),
            family_name: text("family_name"),
            updated_at: claims.get("updated_at").and_then(|v| v.as_i64()),
        }),
        "no-store".into(),
    ))
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Who is signed in (OpenID Connect)
    ///
    /// OIDC Core §5.3: the claims about the person an access token with the `openid` scope
    /// speaks for, by its scopes (`email`, `profile`). From the authorization code flow.
    #[oai(path = "/auth/userinfo", method = "get", operation_id = "getUserInfo")]
    async fn userinfo_get(&self, caller: Caller) -> Result<UserInfoResponse, ApiError> {
        userinfo(&caller, USERINFO)
    }

    /// Who is signed in (OpenID Connect, POST)
    ///
    /// The same as `GET /api/v1/auth/userinfo` (OIDC Core §5.3.1 allows both).
    #[oai(
        path = "/auth/userinfo",
        method = "post",
        operation_id = "postUserInfo"
    )]
    async fn userinfo_post(&self, caller: Caller) -> Result<UserInfoResponse, ApiError> {
        userinfo(&caller, USERINFO_POST)
    }

    /// Get an access token
    ///
    /// The OAuth2 token endpoint (RFC 6749), form-encoded.
    /// - `grant_type=password` with the account's email as `username` returns a signed JWT
    ///   access token and a refresh token. Wrong email and wrong password get the same
    ///   `invalid_grant` answer.
    /// - `grant_type=refresh_token` exchanges a refresh token for a new pair (rotation).
    /// - `grant_type=client_credentials`: a registered client (HTTP Basic, form
    ///   `client_id`/`client_secret`, or a signed `client_assertion` for a client registered
    ///   with public keys: `private_key_jwt`) gets an access token with its scopes (or the
    ///   narrower `scope` asked for); no refresh token.
    #[oai(path = "/auth/token", method = "post", operation_id = "createToken")]
    async fn token(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        ctx: RequestCtx,
        body: FormFields<TokenRequest>,
    ) -> Result<TokenResponse, OAuthError> {
        let form = form_of(body, &["username", "client_id"])?;
        if form
            .get("redirect_uri")
            .is_some_and(|uri| uri.chars().count() > 2000)
        {
            return Err(OAuthError::invalid_request(
                "redirect_uri is longer than 2000 characters",
            ));
        }
        // The spec's bound on `otp` holds whatever the grant (only the password grant reads it).
        SecondFactor::from_form(form.get("otp"), None).map_err(OAuthError::invalid_request)?;
        match form.get("grant_type") {
            None => Err(OAuthError::invalid_request("grant_type missing")),
            Some("password") => password_grant(&state, &form, &ctx).await,
            Some("refresh_token") => refresh_grant(&state, req, &form, &ctx).await,
            Some("authorization_code") => authorization_code_grant(&state, req, &form, &ctx).await,
            Some("client_credentials") => client_credentials_grant(&state, req, &form, &ctx).await,
            Some(other) => Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                format!("grant_type {other} is not supported"),
            )),
        }
    }

    /// Revoke a token
    ///
    /// RFC 7009. A refresh token ends its whole session; an access token is refused from
    /// now until it expires. Answers 200 `{}` even for unknown or expired tokens, so it
    /// reveals nothing. Without client authentication, whoever holds a token may revoke
    /// it; an authenticated client may revoke only tokens issued to it.
    #[oai(path = "/auth/revoke", method = "post", operation_id = "revokeToken")]
    async fn revoke(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        ctx: RequestCtx,
        body: FormFields<TokenForm>,
    ) -> Result<RevokeResponse, OAuthError> {
        let form = form_of(body, &["client_id"])?;
        let client = client_from_request(&state, req, &form, &ctx).await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token missing"))?;
        state
            .revoke_token(token, client.as_ref(), &ctx.audit())
            .await?;
        Ok(RevokeResponse::Ok(Json(Empty {})))
    }

    /// Introspect a token
    ///
    /// RFC 7662, for registered clients (HTTP Basic, form `client_id`/`client_secret`, or
    /// `private_key_jwt`):
    /// whether a token is active right now, checked against revocations and the store, for
    /// services that cannot accept the latency of offline verification. Anything invalid,
    /// expired or revoked is `{"active": false}`.
    #[oai(
        path = "/auth/introspect",
        method = "post",
        operation_id = "introspectToken"
    )]
    async fn introspect(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        ctx: RequestCtx,
        body: FormFields<TokenForm>,
    ) -> Result<IntrospectResponse, OAuthError> {
        let form = form_of(body, &["client_id"])?;
        require_client(&state, req, &form, &ctx).await?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token missing"))?;
        let inactive = IntrospectBody::default();
        let body = if token.contains('.') {
            match state.verify_access_token(token).await {
                Ok(Verified {
                    claims: c, scopes, ..
                }) => IntrospectBody {
                    active: true,
                    scope: Some(scopes.to_string()),
                    client_id: c.client_id.clone(),
                    sub: Some(c.sub.clone()),
                    token_type: Some("Bearer".into()),
                    exp: Some(c.exp),
                    iat: Some(c.iat),
                    nbf: Some(c.nbf),
                    iss: Some(c.iss.clone()),
                    aud: Some(c.aud.clone()),
                    jti: Some(c.jti.clone()),
                },
                Err(_) => inactive,
            }
        } else {
            introspect_refresh(&state, token).await?.unwrap_or(inactive)
        };
        Ok(IntrospectResponse::Ok(Json(body), "no-store".into()))
    }
}

/// A refresh token's introspection (RFC 7662 §2.2), when it is active.
async fn introspect_refresh(
    state: &AppState,
    token: &str,
) -> Result<Option<IntrospectBody>, OAuthError> {
    let active = state.active_refresh_token(token).await?;
    Ok(active.map(|t| IntrospectBody {
        active: true,
        scope: Some(t.scope.to_string()),
        sub: Some(t.user_id.to_string()),
        token_type: Some("refresh_token".into()),
        exp: Some(t.expires_at.timestamp()),
        iat: Some(t.issued_at.timestamp()),
        iss: Some(state.config.jwt_issuer.clone()),
        ..IntrospectBody::default()
    }))
}

/// The client authenticating this request, if it tried: HTTP Basic, form `client_id` +
/// `client_secret`, or a `client_assertion` (`private_key_jwt`) — exactly one of them.
/// Swagger UI's empty Basic (`Og==`) and a bare `client_id` (public clients) count as no
/// authentication. Failure is `invalid_client`.
async fn client_from_request(
    state: &AppState,
    req: &Request,
    form: &Form,
    ctx: &RequestCtx,
) -> Result<Option<Client>, OAuthError> {
    // An empty secret authenticates nobody: Swagger UI's empty Basic (`Og==`), or a
    // public client naming itself in Basic (`named_client`).
    let basic = req
        .header(poem::http::header::AUTHORIZATION)
        .and_then(parse_basic)
        .filter(|(_, secret)| !secret.is_empty());
    let posted = form
        .get("client_secret")
        .map(|secret| (form.get("client_id"), secret));
    let assertion = form.get("client_assertion");
    if assertion.is_none() && form.get("client_assertion_type").is_some() {
        return Err(OAuthError::invalid_request(
            "client_assertion_type without client_assertion",
        ));
    }
    let methods = [basic.is_some(), posted.is_some(), assertion.is_some()];
    if methods.iter().filter(|&&used| used).count() > 1 {
        return Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        ));
    }
    let secret;
    let endpoint_url;
    let credential = match (basic, posted, assertion) {
        (_, _, Some(assertion)) => {
            if form.get("client_assertion_type") != Some(ASSERTION_TYPE) {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidClient,
                    format!("client_assertion_type must be {ASSERTION_TYPE}"),
                ));
            }
            endpoint_url = format!("{}{}", state.public_url, req.uri().path());
            ClientCredential::Assertion {
                assertion,
                endpoint_url: &endpoint_url,
            }
        }
        (basic, posted, None) => {
            let (id, presented) = match (basic, posted) {
                (Some((id, presented)), _) => {
                    // The form's client_id was checked with the form (`form_of`); a Basic
                    // one is here.
                    Identifier::parse(&id, "client_id").map_err(ApiError::from)?;
                    (id, presented)
                }
                (None, Some((id, presented))) => {
                    (id.unwrap_or_default().to_owned(), presented.to_owned())
                }
                (None, None) => return Ok(None),
            };
            secret = (id, SecretString::from(presented));
            ClientCredential::Secret {
                id: &secret.0,
                secret: &secret.1,
            }
        }
    };
    let verdict = state.authenticate_client(credential, &ctx.audit()).await?;
    let client = match verdict {
        ClientVerdict::Authenticated(client) => client,
        ClientVerdict::Throttled(wait) => return Err(OAuthError::throttled(wait)),
        ClientVerdict::TooManyAssertions(wait) => {
            return Err(OAuthError::too_many_requests(
                wait,
                "this client has as many unexpired assertions remembered as it may \
                 (MAX_CLIENT_ASSERTIONS): give its assertions a shorter exp, such as 60 seconds",
            ))
        }
        ClientVerdict::Refused { reason } => {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidClient,
                reason.unwrap_or_else(|| "client authentication failed".into()),
            ))
        }
    };
    // A client_id sent beside Basic or an assertion must name the same client (RFC 7521
    // §4.2 says so for assertions); compared as UUIDs, in whatever form it was written.
    if let Some(named) = form.get("client_id").filter(|id| !id.is_empty()) {
        if uuid::Uuid::parse_str(named).ok() != Some(client.id) {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "client_id names another client than the one authenticated",
            ));
        }
    }
    Ok(Some(client))
}

/// The authenticated client of a request that needs one (`invalid_client` without).
async fn require_client(
    state: &AppState,
    req: &Request,
    form: &Form,
    ctx: &RequestCtx,
) -> Result<Client, OAuthError> {
    client_from_request(state, req, form, ctx)
        .await?
        .ok_or_else(|| {
            OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "client authentication required",
            )
        })
}

/// The form of a token-endpoint request (token, revocation, introspection), or the RFC 6749
/// error for it. Whatever the grant, its `identifiers` (the fields the endpoint's schema
/// bounds) outside the spec's limits are refused here, before anything else is done.
fn form_of<T>(body: FormFields<T>, identifiers: &[&'static str]) -> Result<Form, OAuthError> {
    let pairs = body.into_object().map_err(|e| match e {
        BodyError::TooLarge => OAuthError::from(ApiError::too_large()),
        BodyError::WrongFormat => {
            OAuthError::invalid_request("the body must be application/x-www-form-urlencoded")
        }
    })?;
    let form = Form::new(pairs).map_err(OAuthError::invalid_request)?;
    for &field in identifiers {
        if let Some(value) = form.get(field) {
            Identifier::parse(value, field).map_err(ApiError::from)?;
        }
    }
    Ok(form)
}

impl poem_openapi::types::Example for TokenRequest {
    fn example() -> Self {
        Self {
            grant_type: GrantType::Password,
            username: Some("ada@example.com".into()),
            password: Some(Password("correct horse battery".into())),
            refresh_token: None,
            scope: None,
            client_id: None,
            client_secret: None,
            client_assertion_type: None,
            client_assertion: None,
            code: None,
            redirect_uri: None,
            code_verifier: None,
            otp: None,
            recovery_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, Scope};

    #[test]
    fn scope_requests_only_narrow() {
        let admin = Role::Admin.scopes();
        assert_eq!(narrow(None, admin).ok(), Some(admin));
        assert_eq!(narrow(Some(""), admin).ok(), Some(admin));
        assert_eq!(
            narrow(Some("users:read"), admin).ok(),
            Some(Scopes::of([Scope::UsersRead]))
        );
        assert!(narrow(Some("users:read"), Role::User.scopes()).is_err());
        assert!(narrow(Some("root"), Role::User.scopes()).is_err());
    }
}
