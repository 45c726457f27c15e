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

use super::middleware::BodyLimit;
use super::ApiError;

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

/// How long a client may take to send a body; a trickle beyond that is dropped.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn read_limited(req: &Request, body: &mut RequestBody) -> Result<Vec<u8>, BodyError> {
    let limit = req.data::<BodyLimit>().map_or(64 * 1024, |l| l.0);
    // A declared length over the limit is refused before reading a byte.
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let body = body.take().map_err(|_| BodyError::WrongFormat)?;
    match tokio::time::timeout(BODY_READ_TIMEOUT, body.into_bytes_limit(limit)).await {
        Ok(Ok(bytes)) => Ok(bytes.to_vec()),
        Ok(Err(ReadBodyError::PayloadTooLarge)) => Err(BodyError::TooLarge),
        Ok(Err(_)) | Err(_) => Err(BodyError::WrongFormat),
    }
}

fn media_type(req: &Request) -> Option<String> {
    let ct = req.content_type()?;
    Some(ct.split(';').next()?.trim().to_ascii_lowercase())
}

/// How a body of one media type is recognised and decoded.
pub trait BodyFormat {
    /// The media types documented in the spec.
    const MEDIA_TYPES: &'static [&'static str];
    type Output: Send;
    fn accepts(media_type: &str) -> bool;
    fn decode(media_type: &str, bytes: &[u8]) -> Result<Self::Output, BodyError>;
}

/// `application/json` (or `+json`) holding an object.
pub struct JsonFormat;

impl BodyFormat for JsonFormat {
    const MEDIA_TYPES: &'static [&'static str] = &["application/json"];
    type Output = Map<String, Value>;

    fn accepts(media: &str) -> bool {
        media == "application/json"
            || (media.starts_with("application/") && media.ends_with("+json"))
    }

    fn decode(_: &str, bytes: &[u8]) -> Result<Self::Output, BodyError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(BodyError::WrongFormat),
        }
    }
}

/// `application/x-www-form-urlencoded` pairs, in order.
pub struct FormFormat;

impl BodyFormat for FormFormat {
    const MEDIA_TYPES: &'static [&'static str] = &[FORM];
    type Output = Vec<(String, String)>;

    fn accepts(media: &str) -> bool {
        media == FORM
    }

    fn decode(_: &str, bytes: &[u8]) -> Result<Self::Output, BodyError> {
        Ok(form_urlencoded::parse(bytes).into_owned().collect())
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A JSON object or a form, as a JSON object (form values become strings).
pub struct JsonOrFormFormat;

impl BodyFormat for JsonOrFormFormat {
    const MEDIA_TYPES: &'static [&'static str] = &["application/json", FORM];
    type Output = Map<String, Value>;

    fn accepts(media: &str) -> bool {
        JsonFormat::accepts(media) || FormFormat::accepts(media)
    }

    fn decode(media_type: &str, bytes: &[u8]) -> Result<Self::Output, BodyError> {
        if JsonFormat::accepts(media_type) {
            return JsonFormat::decode(media_type, bytes);
        }
        let pairs = FormFormat::decode(media_type, bytes)?;
        let form = Form::new(pairs).map_err(|_| BodyError::WrongFormat)?;
        Ok(form
            .0
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    }
}

/// A body in format `F`, documented in the spec as schema `T`. Decoding never fails the
/// request by itself: the handler decides when to look, so a 404 for an unknown record
/// can win over a malformed body, and each route answers in its own error shape.
pub struct Body<T, F: BodyFormat> {
    fields: Result<F::Output, BodyError>,
    /// Sent as `application/x-www-form-urlencoded` (every value a string).
    form: bool,
    _schema: PhantomData<T>,
}

/// A JSON object body documented as `T`.
pub type JsonObject<T> = Body<T, JsonFormat>;
/// Form fields documented as `T`.
pub type FormFields<T> = Body<T, FormFormat>;
/// A JSON object or form fields documented as `T`.
pub type JsonOrForm<T> = Body<T, JsonOrFormFormat>;

impl<T, F: BodyFormat> Body<T, F> {
    pub fn into_object(self) -> Result<F::Output, BodyError> {
        self.fields
    }

    /// Whether it came as a form: a member a JSON body sends as an object, a form can only
    /// send as JSON text.
    pub fn is_form(&self) -> bool {
        self.form
    }
}

impl<'a, T: Type, F: BodyFormat> ApiExtractor<'a> for Body<T, F> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: F::MEDIA_TYPES
                .iter()
                .map(|media| MetaMediaType {
                    content_type: media,
                    schema: T::schema_ref(),
                })
                .collect(),
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let media = media_type(req).filter(|m| F::accepts(m));
        let form = media.as_deref().is_some_and(FormFormat::accepts);
        let fields = async {
            // The media type must say what the body is: this also keeps cross-site HTML
            // forms (which cannot send application/json) away from JSON routes.
            let media = media.ok_or(BodyError::WrongFormat)?;
            F::decode(&media, &read_limited(req, body).await?)
        }
        .await;
        Ok(Self {
            fields,
            form,
            _schema: PhantomData,
        })
    }
}

/// Every form parameter some route reads. Only these may not be repeated (RFC 6749 §3.1);
/// any other parameter is ignored, repeated or not.
const KNOWN_PARAMETERS: &[&str] = &[
    "grant_type",
    "username",
    "password",
    "refresh_token",
    "scope",
    "client_id",
    "client_secret",
    "token",
    "token_type_hint",
    "email",
    "current_password",
    "new_password",
];

/// Parsed form fields; empty values count as absent (RFC 6749 §3.1).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn new(pairs: Vec<(String, String)>) -> Result<Self, String> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if KNOWN_PARAMETERS.contains(&name.as_str())
                && pairs[..i].iter().any(|(n, _)| n == name)
            {
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
        assert!(Form::new(vec![pair("token", "1"), pair("token", "2")]).is_err());
        assert!(Form::new(vec![pair("unknown", "1"), pair("unknown", "2")]).is_ok());
        let form = Form::new(vec![pair("a", ""), pair("b", "x")]).unwrap();
        assert_eq!(form.get("a"), None);
        assert_eq!(form.get("b"), Some("x"));
    }
}
