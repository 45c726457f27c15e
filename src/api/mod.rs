//! The HTTP API: one module per OpenAPI tag, assembled here into the service whose spec
//! is committed under `openapi/`.

mod account;
mod auth;
mod body;
mod context;
mod error;
mod json;
mod mail;
mod mfa;
mod middleware;
mod recovery;
mod security;
mod sessions;
mod signin;
mod status;
mod users;
mod well_known;

use std::sync::Arc;

use poem::middleware::{CatchPanic, NormalizePath, TrailingSlash};
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{Object, OpenApiService, Tags};

pub use context::RequestCtx;
pub use error::{ApiError, ErrorBody};
pub use middleware::BodyLimit;
pub use security::{Access, Caller, ACCESS};

use crate::service::AppState;

#[derive(Tags)]
pub enum ApiTags {
    /// Health and counts.
    Status,
    /// Tokens: the OAuth2 token endpoint (password and refresh grants) and revocation.
    Auth,
    /// Cookie sessions for browsers: log in and log out.
    Sessions,
    /// User accounts.
    Users,
    /// Your second factors: a TOTP authenticator app, passkeys and recovery codes.
    Mfa,
    /// Accounts by mail: password reset, verifying and changing the email address.
    Mail,
    /// Published keys for verifying tokens offline.
    WellKnown,
}

pub type Apis = (
    status::StatusApi,
    auth::AuthApi,
    sessions::SessionsApi,
    users::UsersApi,
    mfa::MfaApi,
    mail::MailApi,
    well_known::WellKnownApi,
);

/// An empty JSON object.
#[derive(Object)]
pub struct Empty {}

/// The OpenAPI service. The spec depends on no configuration, so the committed file
/// matches every deployment; handlers get the state as a `Data` parameter at run time.
pub fn openapi_service() -> OpenApiService<Apis, ()> {
    let apis = (
        status::StatusApi,
        auth::AuthApi,
        sessions::SessionsApi,
        users::UsersApi,
        mfa::MfaApi,
        mail::MailApi,
        well_known::WellKnownApi,
    );
    OpenApiService::new(apis, "simple-api", env!("CARGO_PKG_VERSION"))
        .description(
            "A stateless JWT authentication service. Log in at `POST /api/v1/auth/token` \
             (OAuth2 password grant, email as username), then send the access token as \
             `Authorization: Bearer <token>`. Verify tokens offline with `/.well-known/jwks.json`.",
        )
        .license("MIT")
}

/// The spec as committed in `openapi/openapi.json` (pretty JSON and a final newline),
/// with each protected operation's scopes taken from its `Access` declaration.
pub fn spec_json() -> String {
    let mut spec: serde_json::Value =
        serde_json::from_str(&openapi_service().spec()).expect("poem-openapi emits JSON");
    if let Some(paths) = spec.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths
            .values_mut()
            .filter_map(|i| i.as_object_mut())
            .flat_map(|i| i.values_mut())
        {
            let id = op
                .get("operationId")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if let Some((_, access)) = security::ACCESS.iter().find(|(op_id, _)| *op_id == id) {
                let open = op["security"].as_array().is_some_and(|r| {
                    r.iter()
                        .any(|req| req.as_object().is_some_and(|o| o.is_empty()))
                });
                op["security"] = security::requirements(*access, open);
            }
        }
    }
    // The domain checks an address's shape by hand; `format: email` tells clients and
    // generators what is accepted.
    if let Some(email) = spec.pointer_mut("/components/schemas/NewUserRequest/properties/email") {
        email["format"] = "email".into();
    }
    tidy_for_generators(&mut spec);
    let mut text = serde_json::to_string_pretty(&spec).expect("a JSON value serializes");
    text.push('\n');
    text
}

/// Details of poem-openapi's output that SDK generators stumble on: media types keyed
/// `application/json; charset=utf-8` (openapi-generator looks for `application/json`
/// exactly; the responses still say `charset=utf-8`), and an empty object schema without
/// `additionalProperties`, which generators read as an untyped map.
fn tidy_for_generators(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(map) => {
            if let Some(content) = map.get_mut("content").and_then(|c| c.as_object_mut()) {
                if let Some(json) = content.remove("application/json; charset=utf-8") {
                    content.insert("application/json".into(), json);
                }
            }
            let empty_object = map.get("type").and_then(|t| t.as_str()) == Some("object")
                && !map.contains_key("properties")
                && !map.contains_key("additionalProperties");
            if empty_object {
                map.insert(
                    "additionalProperties".into(),
                    serde_json::Value::Bool(false),
                );
            }
            // Examples list only the fields they set (`null` would break non-nullable ones).
            if let Some(serde_json::Value::Object(example)) = map.get_mut("example") {
                example.retain(|_, v| !v.is_null());
            }
            map.values_mut().for_each(tidy_for_generators);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(tidy_for_generators),
        _ => {}
    }
}

/// Swagger UI with the assets poem-openapi embeds (no CDN), showing the served spec
/// (scopes included) and keeping the Authorize login across reloads. Its OAuth2
/// authorization code flow signs in with PKCE as the built-in `/docs` client, and comes
/// back to `/docs/oauth2-redirect.html`.
pub fn docs_html(service: &OpenApiService<Apis, ()>, spec: &str) -> String {
    let init = format!(
        "deepLinking: true,\n        persistAuthorization: true,\n    }})\n    \
         ui.initOAuth({{ clientId: \"{}\", usePkceWithAuthorizationCodeGrant: true }})",
        crate::service::DOCS_CLIENT_ID
    );
    service
        .swagger_ui_html()
        .replacen(&service.spec(), spec.trim_end(), 1)
        // The receiver page at a fixed address (the template derives it from the page's
        // own URL, which a trailing slash or a query changes).
        .replacen(
            "oauth2RedirectUrl += \"oauth-receiver.html\";",
            "oauth2RedirectUrl = window.location.origin + \"/docs/oauth2-redirect.html\";",
            1,
        )
        .replacen("SwaggerUIBundle({", "const ui = SwaggerUIBundle({", 1)
        .replacen("deepLinking: true,\n    })", &init, 1)
}

/// Every route of the service, wrapped in the JSON error handling.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let service = openapi_service();
    let limit = BodyLimit(usize::try_from(state.config.max_body_bytes).unwrap_or(usize::MAX));
    let spec = spec_json();
    let allow = Arc::new(middleware::AllowTable::from_spec(&spec));
    let docs_page = docs_html(&service, &spec);
    let docs = poem::endpoint::make_sync(move |_| poem::web::Html(docs_page.clone()));
    // Swagger UI's OAuth2 receiver page, as poem-openapi embeds it.
    let receiver = Arc::new(service.swagger_ui());
    let oauth2_redirect = poem::endpoint::make(move |_| {
        let receiver = Arc::clone(&receiver);
        async move {
            let page = poem::Request::builder()
                .uri_str("/oauth-receiver.html")
                .finish();
            receiver.get_response(page).await
        }
    });
    recovery::add_routes(account::add_routes(signin::add_routes(Route::new())))
        .nest("/", service)
        .at("/docs/oauth2-redirect.html", poem::get(oauth2_redirect))
        .nest("/docs", poem::get(docs))
        .at(
            "/openapi.json",
            poem::get(poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(spec.clone())
            })),
        )
        .at("/metrics", poem::get(status::metrics))
        .with(NormalizePath::new(TrailingSlash::Trim))
        .around(middleware::observe)
        .with(CatchPanic::new().with_handler(|_| {
            error::json_response(
                poem::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            )
        }))
        .data(state)
        .data(allow)
        .data(limit)
}
