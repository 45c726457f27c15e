//! The only place that turns errors into HTTP statuses and bodies.

use std::fmt::Write as _;

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object};

use crate::auth::{PasswordError, TokenError};
use crate::domain::DomainError;
use crate::service::ServiceError;
use crate::store::StoreError;

pub const REALM: &str = "Bearer realm=\"simple-api\"";

/// The body of every error on this API.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// What went wrong, in words meant for the developer calling the API.
    pub error: String,
}

/// Errors of the users and stats operations.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request body or a parameter is malformed or invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No token, or the token was rejected (expired, revoked, bad signature, user gone).
    /// Log in again and send `Authorization: Bearer <access_token>`.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>, #[oai(header = "WWW-Authenticate")] String),
    /// The token is valid but may not do this (another user's record, a missing scope),
    /// or (REQUIRE_VERIFIED_EMAIL) the account's email address is not verified yet.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such user.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The email is already registered (emails are unique regardless of case).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body is larger than MAX_BODY_BYTES.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// Too many failed attempts (logins, password checks): retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
    /// An unexpected failure; details are in the server log, never in the response.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The store cannot accept writes right now (disk full, read-only; reads still work),
    /// or the service is shedding load (then with `Retry-After`).
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] Option<String>,
    ),
}

impl ErrorBody {
    pub fn json(message: impl Into<String>) -> Json<ErrorBody> {
        Json(ErrorBody {
            error: message.into(),
        })
    }
}

fn body(message: impl Into<String>) -> Json<ErrorBody> {
    ErrorBody::json(message)
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(body(message))
    }

    pub fn wrong_format() -> Self {
        Self::bad_request("Wrong format")
    }

    /// No credentials were presented.
    pub fn unauthorized() -> Self {
        Self::Unauthorized(body("Unauthorized"), REALM.to_owned())
    }

    /// Credentials were presented and rejected (RFC 6750 §3).
    pub fn invalid_token(error: &TokenError) -> Self {
        Self::Unauthorized(
            body(format!("Invalid token: {error}")),
            format!("{REALM}, error=\"invalid_token\", error_description=\"{error}\""),
        )
    }

    pub fn forbidden() -> Self {
        Self::Forbidden(body("Forbidden"))
    }

    pub fn not_found() -> Self {
        Self::NotFound(body("Not found"))
    }

    pub fn too_large() -> Self {
        Self::PayloadTooLarge(body("Payload too large"))
    }

    /// Logs the whole cause chain; the client learns nothing about internals.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(error), "internal error");
        Self::Internal(body("Internal error"))
    }

    pub fn unavailable(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(error), "store unavailable for writes");
        Self::Unavailable(
            body("Service unavailable: the store cannot accept writes right now"),
            None,
        )
    }

    pub fn throttled(retry_after: std::time::Duration) -> Self {
        Self::TooManyRequests(
            body("Too many failed attempts; retry later"),
            retry_after.as_secs().max(1).to_string(),
        )
    }
}

/// `error: cause: cause…`, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::EmailMissing
            | DomainError::InvalidEmail(_)
            | DomainError::PasswordMissing
            | DomainError::PasswordLength
            | DomainError::InvalidName(_)
            | DomainError::InvalidRole
            | DomainError::InvalidIdentifier(_)
            | DomainError::InvalidCursor
            | DomainError::InvalidKeys(_)
            | DomainError::InvalidRedirectUri(_) => Self::bad_request(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DuplicateEmail => Self::Conflict(body("email already exists")),
            StoreError::NotFound => Self::not_found(),
            StoreError::Unavailable(_) => Self::unavailable(&e),
            StoreError::Database { .. } => {
                tracing::error!(error = %error_chain(&e), "database unavailable");
                Self::Unavailable(
                    body("Service unavailable: the database cannot be reached; retry shortly"),
                    Some("1".into()),
                )
            }
            StoreError::Locked(_) | StoreError::Corrupt { .. } | StoreError::Io { .. } => {
                Self::internal(&e)
            }
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Signing(_) => Self::internal(&e),
            TokenError::Malformed
            | TokenError::WrongType
            | TokenError::UnknownKey
            | TokenError::WrongAlgorithm
            | TokenError::BadSignature
            | TokenError::Expired
            | TokenError::NotYetValid
            | TokenError::WrongIssuer
            | TokenError::WrongAudience
            | TokenError::Invalid(_)
            | TokenError::Revoked => Self::invalid_token(&e),
        }
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => Self::Unavailable(
                body("Busy: too many password checks in progress; retry shortly"),
                Some("1".into()),
            ),
            PasswordError::Params(_) | PasswordError::Hashing(_) => Self::internal(&e),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(e) => e.into(),
            ServiceError::Password(e) => e.into(),
            ServiceError::Token(e) => e.into(),
            ServiceError::EmailNotVerified => Self::Forbidden(body(UNVERIFIED)),
            ServiceError::Mail(reason) => {
                tracing::error!(%reason, "mail cannot be queued");
                Self::Unavailable(
                    body("Mail cannot be sent from this server right now; see its log"),
                    None,
                )
            }
        }
    }
}

/// The error code (RFC 6749 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// Not RFC 6749: too many failed attempts; retry after `Retry-After` seconds.
    TooManyRequests,
    /// Not RFC 6749: an unexpected failure (see the server log).
    ServerError,
    /// Not RFC 6749: the store cannot accept writes right now.
    TemporarilyUnavailable,
}

/// The body of a token endpoint error (RFC 6749 §5.2).
#[derive(Debug, Clone, Object)]
pub struct OAuthErrorBody {
    pub error: OAuthErrorCode,
    /// A human-readable explanation.
    #[oai(skip_serializing_if_is_none)]
    pub error_description: Option<String>,
}

/// Errors of the token endpoint, shaped as RFC 6749 §5.2 asks.
#[derive(Debug, ApiResponse)]
pub enum OAuthError {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type` or `invalid_scope`.
    #[oai(status = 400)]
    BadRequest(
        Json<OAuthErrorBody>,
        #[oai(header = "Cache-Control")] String,
    ),
    /// `invalid_client`: the client failed to authenticate.
    #[oai(status = 401)]
    InvalidClient(
        Json<OAuthErrorBody>,
        #[oai(header = "WWW-Authenticate")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The request body is larger than MAX_BODY_BYTES.
    #[oai(status = 413)]
    PayloadTooLarge(Json<OAuthErrorBody>),
    /// `too_many_requests`: too many failed logins for the account or from the address, or
    /// (`private_key_jwt`) too many unexpired assertions of the client remembered.
    #[oai(status = 429)]
    TooManyRequests(
        Json<OAuthErrorBody>,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// An unexpected failure; details are in the server log.
    #[oai(status = 500)]
    Internal(Json<OAuthErrorBody>),
    /// The store cannot accept writes, or the service is shedding load (`Retry-After`).
    #[oai(status = 503)]
    Unavailable(
        Json<OAuthErrorBody>,
        #[oai(header = "Retry-After")] Option<String>,
    ),
}

impl OAuthError {
    pub fn new(error: OAuthErrorCode, description: impl Into<String>) -> Self {
        let body = Json(OAuthErrorBody {
            error,
            error_description: Some(description.into()),
        });
        match error {
            OAuthErrorCode::InvalidClient => {
                Self::InvalidClient(body, "Basic realm=\"simple-api\"".into(), "no-store".into())
            }
            OAuthErrorCode::ServerError => Self::Internal(body),
            OAuthErrorCode::TemporarilyUnavailable => Self::Unavailable(body, None),
            OAuthErrorCode::TooManyRequests => {
                Self::TooManyRequests(body, "1".into(), "no-store".into())
            }
            _ => Self::BadRequest(body, "no-store".into()),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    pub fn throttled(retry_after: std::time::Duration) -> Self {
        Self::too_many_requests(retry_after, "too many failed logins; retry later")
    }

    /// 429 `too_many_requests` with `Retry-After`.
    pub fn too_many_requests(retry_after: std::time::Duration, description: &str) -> Self {
        let body = Json(OAuthErrorBody {
            error: OAuthErrorCode::TooManyRequests,
            error_description: Some(description.into()),
        });
        Self::TooManyRequests(
            body,
            retry_after.as_secs().max(1).to_string(),
            "no-store".into(),
        )
    }
}

impl From<ApiError> for OAuthError {
    /// Failures shared with the rest of the API, in the token endpoint's shape.
    fn from(e: ApiError) -> Self {
        let (code, msg) = match e {
            ApiError::BadRequest(Json(b)) => (OAuthErrorCode::InvalidRequest, b.error),
            ApiError::PayloadTooLarge(Json(b)) => {
                return Self::PayloadTooLarge(Json(OAuthErrorBody {
                    error: OAuthErrorCode::InvalidRequest,
                    error_description: Some(b.error),
                }))
            }
            ApiError::Unavailable(Json(b), retry) => {
                let body = Json(OAuthErrorBody {
                    error: OAuthErrorCode::TemporarilyUnavailable,
                    error_description: Some(b.error),
                });
                return Self::Unavailable(body, retry);
            }
            ApiError::TooManyRequests(Json(b), retry) => {
                let body = Json(OAuthErrorBody {
                    error: OAuthErrorCode::TooManyRequests,
                    error_description: Some(b.error),
                });
                return Self::TooManyRequests(body, retry, "no-store".into());
            }
            ApiError::Unauthorized(Json(b), _)
            | ApiError::Forbidden(Json(b))
            | ApiError::NotFound(Json(b))
            | ApiError::Conflict(Json(b)) => (OAuthErrorCode::InvalidRequest, b.error),
            ApiError::Internal(Json(b)) => (OAuthErrorCode::ServerError, b.error),
        };
        Self::new(code, msg)
    }
}

impl From<ServiceError> for OAuthError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::EmailNotVerified => Self::new(OAuthErrorCode::InvalidGrant, UNVERIFIED),
            e => ApiError::from(e).into(),
        }
    }
}

/// The refusal of a token to an account whose address is unproven (REQUIRE_VERIFIED_EMAIL).
pub const UNVERIFIED: &str = "email not verified: enter the code sent to the address \
     (POST /api/v1/auth/verify-email); a refused sign-in sends a new one";

/// The last line of defence: whatever poem itself answers with (unknown route, wrong
/// method, unparsable parameter) becomes a JSON `{"error": ...}` body.
pub fn error_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let message = match status {
        StatusCode::NOT_FOUND => "Not found".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "Method not allowed".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "Payload too large".to_owned(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => format!("Unsupported media type: {err}"),
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), error = %error_chain(&err), "unhandled error");
            "Internal error".to_owned()
        }
        _ => err.to_string(),
    };
    json_response(status, &message)
}

pub fn json_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(body)
}

#[cfg(test)]
mod tests {
    use poem::IntoResponse;

    use super::*;

    #[test]
    fn store_errors_map_to_the_contracts_statuses() {
        let status = |e: StoreError| ApiError::from(e).into_response().status();
        assert_eq!(status(StoreError::DuplicateEmail), StatusCode::CONFLICT);
        assert_eq!(status(StoreError::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            status(StoreError::Unavailable(std::io::Error::other("disk full"))),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(StoreError::Locked("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn framework_errors_become_json_and_500s_stay_opaque() {
        let resp = error_response(poem::Error::from_string(
            "secret internals: /etc/passwd",
            StatusCode::INTERNAL_SERVER_ERROR,
        ));
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.into_body().into_string().await.unwrap(),
            r#"{"error":"Internal error"}"#
        );
        let resp = error_response(poem::error::NotFoundError.into());
        assert_eq!(
            resp.into_body().into_string().await.unwrap(),
            r#"{"error":"Not found"}"#
        );
    }

    #[test]
    fn rejected_tokens_get_an_rfc_6750_challenge() {
        let resp = ApiError::from(TokenError::Expired).into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer realm=\"simple-api\", error=\"invalid_token\""));
    }
}
