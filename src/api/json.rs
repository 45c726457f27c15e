//! A JSON response payload written straight from the typed body with serde.
//!
//! poem-openapi's `Json<T>` first builds a `serde_json::Value` tree (one allocation per
//! field and key) and then prints it; on the hottest route (`GET /users/me`) that was
//! the largest cost after the HTTP stack itself (see the README's profile). Bodies sent
//! through `Direct` derive `serde::Serialize` as well as `Object`, and a unit test per
//! body checks that both give the same JSON, so the spec still describes the wire.

use poem::http::header::CONTENT_TYPE;
use poem::http::HeaderValue;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde::Serialize;

use super::ApiError;

/// `application/json`, serialized with serde rather than through a `Value`.
pub struct Direct<T>(pub T);

const CONTENT: &str = "application/json; charset=utf-8";

impl<T: Type + Send> Payload for Direct<T> {
    const CONTENT_TYPE: &'static str = CONTENT;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for Direct<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => {
                let mut resp = Response::from(bytes);
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
                resp
            }
            // Only a Serialize impl that fails on purpose gets here; none of ours do.
            Err(e) => ApiError::internal(&e).into_response(),
        }
    }
}

/// Dates as poem-openapi writes them (`to_rfc3339`: `+00:00`, not serde's `Z`), so both
/// encodings of a body agree.
pub fn rfc3339<S: serde::Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339())
}

/// For the bodies' tests: serde's JSON equals poem-openapi's.
#[cfg(test)]
pub fn assert_same_json<T: Serialize + poem_openapi::types::ToJSON>(body: &T) {
    let direct: serde_json::Value = serde_json::to_value(body).expect("serializes");
    assert_eq!(Some(direct), body.to_json());
}
