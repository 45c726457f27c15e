//! Request bodies parsed by hand, so that every malformed body gets the contract's error
//! (`Wrong format`, RFC 6749 `invalid_request`) instead of the framework's text, while the
//! spec still documents the typed schema `T`.

use std::marker::PhantomData;

use poem::error::ReadBodyError;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::{Map, Value};

use super::ApiError;

/// MAX_BODY_BYTES, shared with the extractors through the request's data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Why a body could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not the expected media type, not decodable, or not an object.
    WrongFormat,
    TooLarge,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::WrongFormat => ApiError::wrong_format(),
            BodyError::TooLarge => ApiError::too_large(),
        }
    }
}

async fn read_limited(req: &Request, body: &mut RequestBody) -> Result<Vec<u8>, BodyError> {
    let limit = req.data::<BodyLimit>().map_or(64 * 1024, |l| l.0);
    let body = body.take().map_err(|_| BodyError::WrongFormat)?;
    match body.into_bytes_limit(limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(ReadBodyError::PayloadTooLarge) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::WrongFormat),
    }
}

fn media_type(req: &Request) -> Option<String> {
    let ct = req.content_type()?;
    Some(ct.split(';').next()?.trim().to_ascii_lowercase())
}

/// A JSON object body, documented as `T`. The handler decides when to look at it, so a
/// 404 for an unknown record can win over a malformed body.
pub struct JsonObject<T> {
    pub fields: Result<Map<String, Value>, BodyError>,
    _schema: PhantomData<T>,
}

impl<T> JsonObject<T> {
    pub fn into_object(self) -> Result<Map<String, Value>, BodyError> {
        self.fields
    }
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

impl<'a, T: Type> ApiExtractor<'a> for JsonObject<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let fields = async {
            // A JSON body must say so: this also keeps cross-site HTML forms out.
            if !media_type(req).is_some_and(|m| is_json(&m)) {
                return Err(BodyError::WrongFormat);
            }
            let bytes = read_limited(req, body).await?;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(BodyError::WrongFormat),
            }
        }
        .await;
        Ok(Self {
            fields,
            _schema: PhantomData,
        })
    }
}

/// The fields of an `application/x-www-form-urlencoded` body, documented as `T`.
/// A field sent twice is an error (RFC 6749 §3.2), so `get` never has to choose.
pub struct FormFields<T> {
    pub fields: Result<Vec<(String, String)>, BodyError>,
    _schema: PhantomData<T>,
}

/// Parsed form fields; empty values count as absent (RFC 6749 §3.1).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn new(pairs: Vec<(String, String)>) -> Result<Self, String> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("parameter {name} is repeated"));
            }
        }
        Ok(Self(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

impl<'a, T: Type> ApiExtractor<'a> for FormFields<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/x-www-form-urlencoded",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let fields = async {
            if media_type(req).as_deref() != Some("application/x-www-form-urlencoded") {
                return Err(BodyError::WrongFormat);
            }
            let bytes = read_limited(req, body).await?;
            Ok(form_urlencoded::parse(&bytes).into_owned().collect())
        }
        .await;
        Ok(Self {
            fields,
            _schema: PhantomData,
        })
    }
}

/// Reads an optional string member of a JSON object; `Err` when it has another type.
pub fn optional_str<'v>(
    fields: &'v Map<String, Value>,
    name: &str,
) -> Result<Option<&'v str>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_form_parameters_are_refused_and_empty_ones_are_absent() {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert!(Form::new(vec![pair("a", "1"), pair("a", "2")]).is_err());
        let form = Form::new(vec![pair("a", ""), pair("b", "x")]).unwrap();
        assert_eq!(form.get("a"), None);
        assert_eq!(form.get("b"), Some("x"));
    }
}
