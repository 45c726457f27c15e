//! Where a request comes from: its id (set by `middleware::observe`) and the client's
//! address (see TRUSTED_PROXIES), for throttling and the audit log.

use std::borrow::Cow;
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
        // Every line, in order: a proxy that appends its own line (HAProxy `option
        // forwardfor`) leaves the client's own line first, and it must not choose.
        // Read leniently: a non-ASCII byte in the client's own part of a line that a proxy
        // appended to must not hide the proxy's part (the walk stops at what it cannot
        // parse, and the proxy's hop is the right-most).
        // Only a trusted proxy's header is read at all (no work for anyone else's).
        let forwarded: Vec<Cow<str>> = match peer {
            Some(peer) if trusted.contains(&peer) => req
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            request_id,
            client_ip: client_address(peer, forwarded.iter().map(|l| l.as_ref()), trusted),
        })
    }
}

/// The client's address: the socket peer, unless the peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy, over all
/// the header's lines taken in order (RFC 9110 §5.3: they are one comma list). Entries
/// left of that were written by the client and cannot be believed; an unreadable one
/// stops the walk at the proxy.
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|line| line.split(',')).collect();
    for hop in hops.into_iter().rev() {
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
        let at = |peer: IpAddr, lines: &[&'static str]| {
            client_address(Some(peer), lines.iter().copied(), &trusted)
        };
        let xff = &["6.6.6.6, 198.51.100.7"];
        assert_eq!(at(ip("192.0.2.5"), xff), Some(ip("192.0.2.5")));
        assert_eq!(at(proxy, xff), Some(ip("198.51.100.7")));
        assert_eq!(
            at(proxy, &["198.51.100.7, 10.0.0.1"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(at(proxy, &[]), Some(proxy));
        assert_eq!(at(proxy, &["garbage"]), Some(proxy));
    }

    #[test]
    fn every_forwarded_for_line_is_read_in_order() {
        let proxy = ip("10.0.0.1");
        let trusted = [proxy];
        let at =
            |lines: &[&'static str]| client_address(Some(proxy), lines.iter().copied(), &trusted);
        // The client's spoofed line first, the proxy's own line last: the proxy's wins.
        assert_eq!(at(&["6.6.6.6", "198.51.100.7"]), Some(ip("198.51.100.7")));
        assert_eq!(
            at(&["6.6.6.6, 7.7.7.7", "198.51.100.7, 10.0.0.1"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(at(&["198.51.100.7", "10.0.0.1", ""]), Some(proxy));
        assert_eq!(at(&["6.6.6.6", "garbage"]), Some(proxy));
        // A byte the client mangled in its own part leaves the proxy's hop readable.
        assert_eq!(
            at(&["6.6.6.\u{FFFD}, 198.51.100.7"]),
            Some(ip("198.51.100.7"))
        );
    }
}
