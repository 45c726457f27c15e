//! The HTTP layers around every route: the request id (taken from `X-Request-Id` when
//! well-formed, else generated; echoed on every response), JSON bodies for the
//! framework's own errors, the `Allow` header of a 405, the metrics of every answer, and
//! the body limit the extractors read.

use std::sync::Arc;
use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;

use crate::service::AppState;

pub const REQUEST_ID: &str = "x-request-id";

/// The request's id, set by `observe` for the handlers (see `RequestCtx`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// MAX_BODY_BYTES, shared with the extractors through the request's data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A caller's id is reused only if it is short and plain, so it cannot inject into logs.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The outermost layer: request id in, JSON errors and request id out, metrics recorded.
pub async fn observe<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let id = req
        .header(REQUEST_ID)
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let state = req.data::<Arc<AppState>>().cloned();
    let allow = req.data::<Arc<AllowTable>>().cloned();
    let uri = req.uri().clone();
    let mut resp = match next.call(req).await {
        Ok(resp) => resp.into_response(),
        Err(err) => super::error::error_response(err),
    };
    // RFC 9110 §15.5.6: a 405 names the methods that would work.
    if resp.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
        let methods = allow.as_ref().and_then(|a| a.methods(uri.path()));
        if let Some(value) = methods.and_then(|m| HeaderValue::from_str(m).ok()) {
            resp.headers_mut().insert(poem::http::header::ALLOW, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, value);
    }
    if let Some(state) = state {
        let status = resp.status().as_u16();
        let route = match resp.data::<OperationId>() {
            Some(op) => op.0,
            None if status == 404 => "not_found",
            None => "other",
        };
        state.metrics.request(route, status, started.elapsed());
    }
    Ok(resp)
}

/// The methods of every route, for the `Allow` header of a 405 (RFC 9110 §15.5.6).
pub struct AllowTable(Vec<(Vec<Option<String>>, String)>);

impl AllowTable {
    /// From the spec's paths (`{param}` segments match anything), plus the spec and docs.
    pub fn from_spec(spec: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let segments = |path: &str| -> Vec<Option<String>> {
            path.trim_matches('/')
                .split('/')
                .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                .collect()
        };
        let mut table: Vec<(Vec<Option<String>>, String)> = spec["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, item)| {
                let mut methods: Vec<String> = item
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(m, _)| m.to_ascii_uppercase())
                    .collect();
                if methods.iter().any(|m| m == "GET") {
                    methods.push("HEAD".into());
                }
                (segments(path), methods.join(", "))
            })
            .collect();
        table.push((segments("/openapi.json"), "GET, HEAD".into()));
        table.push((segments("/docs"), "GET, HEAD".into()));
        let pages = super::signin::PATHS.iter().chain(super::account::PATHS);
        for (path, methods) in pages.chain(super::recovery::PATHS) {
            table.push((segments(path), (*methods).into()));
        }
        Self(table)
    }

    pub fn methods(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == parts.len()
                    && template
                        .iter()
                        .zip(&parts)
                        .all(|(t, p)| t.as_deref().is_none_or(|t| t == *p))
            })
            .map(|(_, methods)| methods.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_short_request_ids_are_reused() {
        assert!(acceptable("abc-123_x.y"));
        assert!(!acceptable(""));
        assert!(!acceptable("evil\nline"));
        assert!(!acceptable(&"a".repeat(65)));
    }
}
