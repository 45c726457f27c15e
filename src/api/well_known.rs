//! Published metadata for verifying tokens offline: the JWKS and the RFC 8414 document.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{ApiError, ApiTags};
use crate::auth::assertion::SIGNING_ALGS;
use crate::domain::Scope;
use crate::service::AppState;

pub struct WellKnownApi;

/// A public key (RFC 7517): Ed25519 (`OKP`), P-256 (`EC`) or RSA.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Jwk {
    /// Key type: `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Key id: the RFC 7638 SHA-256 thumbprint; tokens name their key with it.
    pub kid: String,
    /// The only algorithm this key verifies: `EdDSA`, `ES256` or `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: String,
    /// Curve (`OKP`, `EC`): `Ed25519` or `P-256`.
    pub crv: Option<String>,
    /// Public key (`OKP`) or X coordinate (`EC`), base64url.
    pub x: Option<String>,
    /// Y coordinate (`EC`), base64url.
    pub y: Option<String>,
    /// Modulus (`RSA`), base64url.
    pub n: Option<String>,
    /// Exponent (`RSA`), base64url.
    pub e: Option<String>,
}

/// A JWK Set (RFC 7517 §5).
#[derive(Object)]
pub struct JwkSet {
    /// Every key that may have signed a token that is still valid.
    pub keys: Vec<Jwk>,
}

#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The verification keys. Cache them for at most `max-age` seconds.
    #[oai(status = 200)]
    Ok(Json<JwkSet>, #[oai(header = "Cache-Control")] String),
}

/// Authorization server metadata (RFC 8414); the OpenID Connect Discovery 1.0 document
/// adds the OpenID fields.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ServerMetadata {
    /// The `iss` of every token (JWT_ISSUER).
    pub issuer: String,
    /// Where browsers are sent to sign in (authorization code flow with PKCE).
    pub authorization_endpoint: String,
    /// Where to get tokens.
    pub token_endpoint: String,
    /// Where the verification keys are.
    pub jwks_uri: String,
    /// Where to revoke tokens (RFC 7009).
    pub revocation_endpoint: String,
    /// Where registered clients ask whether a token is active (RFC 7662).
    pub introspection_endpoint: String,
    /// The grants the token endpoint accepts.
    pub grant_types_supported: Vec<String>,
    /// How clients authenticate at the token endpoint.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms a `private_key_jwt` client assertion may be signed with there.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// How clients authenticate at the revocation endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms a `private_key_jwt` client assertion may be signed with there.
    pub revocation_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// How clients authenticate at the introspection endpoint.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms a `private_key_jwt` client assertion may be signed with there.
    pub introspection_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// `code`: the authorization code flow.
    pub response_types_supported: Vec<String>,
    /// `query`: the authorization response's parameters are in the redirect's query.
    pub response_modes_supported: Vec<String>,
    /// `S256` only: PKCE is required, and `plain` is refused.
    pub code_challenge_methods_supported: Vec<String>,
    /// The authorization response carries `iss` (RFC 9207).
    pub authorization_response_iss_parameter_supported: bool,
    /// Every scope a token can carry.
    pub scopes_supported: Vec<String>,
    /// Where the human-readable API documentation is.
    pub service_documentation: String,
    /// OpenID Connect: the signed-in person's claims, with an access token carrying `openid`.
    pub userinfo_endpoint: Option<String>,
    /// OpenID Connect RP-Initiated Logout 1.0.
    pub end_session_endpoint: Option<String>,
    /// OpenID Connect: how ID tokens are signed (RS256).
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    /// OpenID Connect: `public` (a person's `sub` is their user id, for every client).
    pub subject_types_supported: Option<Vec<String>>,
    /// OpenID Connect: the claims ID tokens and userinfo may carry.
    pub claims_supported: Option<Vec<String>>,
    /// OpenID Connect: the `prompt` values the authorization endpoint understands.
    pub prompt_values_supported: Option<Vec<String>>,
    /// OpenID Connect: `mfa`, which `acr_values` may ask for (a sign-in with a second
    /// factor; the ID token then says `acr: mfa` and `amr` has `mfa`).
    pub acr_values_supported: Option<Vec<String>>,
}

#[derive(ApiResponse)]
pub enum MetadataResponse {
    /// The metadata.
    #[oai(status = 200)]
    Ok(
        Json<ServerMetadata>,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[OpenApi(tag = "ApiTags::WellKnown")]
impl WellKnownApi {
    /// Token verification keys (JWKS)
    ///
    /// The public keys that verify access tokens, for services that check tokens offline.
    /// Pick the key whose `kid` matches the token header and accept only its `alg`.
    #[oai(
        path = "/.well-known/jwks.json",
        method = "get",
        operation_id = "getJwks"
    )]
    async fn jwks(&self, state: Data<&Arc<AppState>>) -> Result<JwksResponse, ApiError> {
        let keys = state
            .tokens
            .keys()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .jwks();
        let keys = keys
            .into_iter()
            .map(|k| Jwk {
                kty: k.kty.into(),
                kid: k.kid,
                alg: k.alg.into(),
                use_: "sig".into(),
                crv: k.crv.map(str::to_owned),
                x: k.x,
                y: k.y,
                n: k.n,
                e: k.e,
            })
            .collect();
        // Never cache longer than a new key is pre-published, so a cached set always
        // already holds the key that signs next.
        let max_age = state.config.key_publish_delay.clamp(1, 3600);
        Ok(JwksResponse::Ok(
            Json(JwkSet { keys }),
            format!("public, max-age={max_age}"),
        ))
    }

    /// Authorization server metadata
    ///
    /// RFC 8414 discovery: the issuer and the absolute URLs of the endpoints (on PUBLIC_URL).
    #[oai(
        path = "/.well-known/oauth-authorization-server",
        method = "get",
        operation_id = "getServerMetadata"
    )]
    async fn metadata(&self, state: Data<&Arc<AppState>>) -> Result<MetadataResponse, ApiError> {
        Ok(MetadataResponse::Ok(
            Json(metadata(&state)),
            "public, max-age=3600".into(),
        ))
    }

    /// OpenID Connect discovery
    ///
    /// OpenID Connect Discovery 1.0: everything the RFC 8414 document has, plus the
    /// userinfo and logout endpoints, the ID-token signing algorithm and the claims.
    /// OpenID relying parties require `issuer` to be the URL they discovered from: set
    /// JWT_ISSUER to PUBLIC_URL to use them.
    #[oai(
        path = "/.well-known/openid-configuration",
        method = "get",
        operation_id = "getOpenIdConfiguration"
    )]
    async fn openid_configuration(
        &self,
        state: Data<&Arc<AppState>>,
    ) -> Result<MetadataResponse, ApiError> {
        let base = &state.public_url;
        let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
        let mut doc = metadata(&state);
        doc.userinfo_endpoint = Some(format!("{base}/api/v1/auth/userinfo"));
        doc.end_session_endpoint = Some(format!("{base}/api/v1/auth/logout"));
        doc.id_token_signing_alg_values_supported = strings(&[state.tokens.id_token_algorithm()]);
        doc.subject_types_supported = strings(&["public"]);
        doc.claims_supported = strings(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "sid",
            "amr",
            "at_hash",
            "azp",
            "email",
            "email_verified",
            "name",
            "given_name",
            "family_name",
            "updated_at",
        ]);
        doc.prompt_values_supported = strings(&["none", "login", "consent", "select_account"]);
        doc.acr_values_supported = strings(&["mfa"]);
        Ok(MetadataResponse::Ok(
            Json(doc),
            "public, max-age=3600".into(),
        ))
    }
}

/// The RFC 8414 document, every URL absolute on PUBLIC_URL.
fn metadata(state: &AppState) -> ServerMetadata {
    let base = &state.public_url;
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    ServerMetadata {
        issuer: state.config.jwt_issuer.clone(),
        authorization_endpoint: format!("{base}/api/v1/auth/authorize"),
        token_endpoint: state.token_endpoint(),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        revocation_endpoint: format!("{base}/api/v1/auth/revoke"),
        introspection_endpoint: format!("{base}/api/v1/auth/introspect"),
        grant_types_supported: strings(&[
            "authorization_code",
            "password",
            "refresh_token",
            "client_credentials",
        ]),
        token_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ]),
        token_endpoint_auth_signing_alg_values_supported: strings(&SIGNING_ALGS),
        revocation_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ]),
        revocation_endpoint_auth_signing_alg_values_supported: strings(&SIGNING_ALGS),
        introspection_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ]),
        introspection_endpoint_auth_signing_alg_values_supported: strings(&SIGNING_ALGS),
        response_types_supported: strings(&["code"]),
        response_modes_supported: strings(&["query"]),
        code_challenge_methods_supported: strings(&["S256"]),
        authorization_response_iss_parameter_supported: true,
        scopes_supported: Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        service_documentation: format!("{base}/docs"),
        userinfo_endpoint: None,
        end_session_endpoint: None,
        id_token_signing_alg_values_supported: None,
        subject_types_supported: None,
        claims_supported: None,
        prompt_values_supported: None,
        acr_values_supported: None,
    }
}
