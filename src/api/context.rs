//! Where a request comes from: its id (set by `middleware::observe`) and the client's
//! address (see TRUSTED_PROXIES), for throttling and the audit log.

use std::net::IpAddr;
use std::sync::Arc;

use poem::{FromRequest, Request, RequestBody};

use super::middleware::RequestId;
use crate::audit;
use crate::service::AppState;

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
            client_ip: self.client_ip,
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

/// The client's address: the socket peer, unless the peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
/// Entries left of that were written by the client and cannot be believed.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops = forwarded_for.unwrap_or_default().split(',').rev();
    for hop in hops {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.1");
        let trusted = [proxy];
        let xff = Some("6.6.6.6, 198.51.100.7");
        assert_eq!(
            client_address(Some(ip("192.0.2.5")), xff, &trusted),
            Some(ip("192.0.2.5"))
        );
        assert_eq!(
            client_address(Some(proxy), xff, &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_address(Some(proxy), Some("198.51.100.7, 10.0.0.1"), &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client_address(Some(proxy), None, &trusted), Some(proxy));
        assert_eq!(
            client_address(Some(proxy), Some("garbage"), &trusted),
            Some(proxy)
        );
    }
}
