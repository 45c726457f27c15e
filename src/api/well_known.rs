use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::startup::AppState;

pub struct WellKnownApi {
    state: Option<Arc<AppState>>,
}

impl WellKnownApi {
    pub fn new(state: Option<Arc<AppState>>) -> Self {
        Self { state }
    }
}

/// A public key (RFC 7517). Only the members of Ed25519 (OKP) keys are present today.
#[derive(Object)]
pub struct Jwk {
    /// Key type: `OKP` for Ed25519.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// Key id: the RFC 7638 SHA-256 thumbprint; tokens name their key with it.
    pub kid: String,
    /// The only algorithm this key verifies: `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: String,
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
    async fn jwks(&self) -> poem::Result<JwksResponse> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::SERVICE_UNAVAILABLE))?;
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
                crv: k.crv.into(),
                x: k.x,
                kid: k.kid,
                alg: k.alg.into(),
                use_: k.use_.into(),
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
}
