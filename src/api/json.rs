//! A JSON response payload written straight from the typed body with serde.
//!
//! poem-openapi's `Json<T>` first builds a `serde_json::Value` tree (one allocation per
//! field and key) and then prints it; on the hottest route (`GET /users/me`) that was
//! the largest cost after the HTTP stack itself (see the README's profile). `JsonView<S, T>`
//! documents schema `S` and sends `T` through serde (often `S` itself, or a borrowed view
//! of the domain value that skips building `S`); a unit test per body checks that both
//! give the same JSON, so the spec still describes the wire.

use poem::http::header::CONTENT_TYPE;
use poem::http::HeaderValue;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use std::marker::PhantomData;

use serde::Serialize;

/// `application/json` with schema `S`, sending `T` serialized with serde rather than
/// through a `Value`.
pub struct JsonView<S, T = S>(T, PhantomData<fn() -> S>);

impl<S, T> JsonView<S, T> {
    pub fn new(body: T) -> Self {
        Self(body, PhantomData)
    }
}

const CONTENT: &str = "application/json; charset=utf-8";

impl<S: Type, T: Send> Payload for JsonView<S, T> {
    const CONTENT_TYPE: &'static str = CONTENT;

    fn schema_ref() -> MetaSchemaRef {
        S::schema_ref()
    }

    fn register(registry: &mut Registry) {
        S::register(registry);
    }
}

impl<S, T: Serialize + Send> IntoResponse for JsonView<S, T> {
    fn into_response(self) -> Response {
        // Room for a typical body up front: no regrowing while writing it.
        let mut bytes = Vec::with_capacity(512);
        match serde_json::to_writer(&mut bytes, &self.0) {
            Ok(()) => {
                let mut resp = Response::from(bytes);
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
                resp
            }
            // Only a Serialize impl that fails on purpose gets here, and none of ours do.
            // Not an error response: the ApiResponse around this payload would relabel it
            // 200. A panic becomes the JSON 500 of the CatchPanic layer.
            Err(e) => panic!("a response body failed to serialize: {e}"),
        }
    }
}

/// A date as poem-openapi writes it (`to_rfc3339`: `+00:00`, not serde's `Z`), so a
/// body sent through `JsonView` matches its schema's JSON.
pub struct Rfc3339(pub chrono::DateTime<chrono::Utc>);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_rfc3339())
    }
}

/// For the bodies' tests: what `JsonView` sends equals poem-openapi's JSON of the schema.
#[cfg(test)]
pub fn assert_same_json<S: poem_openapi::types::ToJSON>(sent: &impl Serialize, schema: &S) {
    let direct: serde_json::Value = serde_json::to_value(sent).expect("serializes");
    assert_eq!(Some(direct), schema.to_json());
}
