//! Per-request context: the request id (taken from `X-Request-Id` when well-formed, else
//! generated; echoed on every response), the client address (see TRUSTED_PROXIES), and
//! the metrics of every answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, FromRequest, IntoResponse, Request, RequestBody, Response};
use poem_openapi::OperationId;

use crate::audit;
use crate::auth::throttle::client_address;
use crate::startup::AppState;

pub const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, Clone)]
struct RequestId(String);

/// Where a request comes from, for throttling and the audit log.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
}

impl RequestCtx {
    pub fn audit(&self) -> audit::Context {
        audit::Context {
            request_id: Some(self.request_id.clone()),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
        }
    }
}

impl<'a> FromRequest<'a> for RequestCtx {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map_or_else(String::new, |id| id.0.clone());
        let trusted = req
            .data::<Arc<AppState>>()
            .map_or(&[][..], |s| s.config.trusted_proxies.as_slice());
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        let forwarded = req.header("x-forwarded-for");
        Ok(Self {
            request_id,
            client_ip: client_address(peer, forwarded, trusted),
        })
    }
}

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
    let allow = req.data::<Arc<super::error::AllowTable>>().cloned();
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

#[poem::handler]
pub fn metrics(state: poem::web::Data<&Arc<AppState>>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(
            state
                .metrics
                .render(state.passwords.queue_depth(), state.store.cache_live()),
        )
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
