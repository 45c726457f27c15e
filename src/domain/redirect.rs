use std::fmt;

use super::DomainError;

/// Where a browser sign-in may send its answer: a redirect URI registered with a client.
///
/// Accepted (RFC 9700 §2.1, RFC 8252 §7): `https` URIs; `http` only to a loopback host
/// (`127.0.0.1`, `[::1]`, `localhost`: development and native apps); and private-use
/// schemes with a dot (`com.example.app:/callback`, RFC 8252 §7.1). Never a fragment
/// (RFC 6749 §3.1.2), never user info, at most 2,000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

/// The parts of a URI a redirect check needs.
struct Parts<'a> {
    scheme: &'a str,
    /// Host as written (IPv6 with its brackets), for `http(s)` URIs.
    host: &'a str,
    /// Everything after the authority (path and query), or after the scheme's `:`.
    rest: &'a str,
}

fn parts(uri: &str) -> Option<Parts<'_>> {
    let (scheme, after) = uri.split_once(':')?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return None;
    }
    let Some(hier) = after.strip_prefix("//") else {
        return Some(Parts {
            scheme,
            host: "",
            rest: after,
        });
    };
    let end = hier.find(['/', '?']).unwrap_or(hier.len());
    let (authority, rest) = hier.split_at(end);
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']')?;
        let port = v6[close + 1..].strip_prefix(':');
        if port.is_none() && close + 1 != v6.len() {
            return None;
        }
        (&authority[..close + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.len() > 5) {
        return None;
    }
    Some(Parts { scheme, host, rest })
}

fn is_loopback_host(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}

impl RedirectUri {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let bad = |why: &'static str| DomainError::InvalidRedirectUri(why);
        // ASCII only (anything else is percent-encoded in a URI): it goes into a
        // `Location` header as it is.
        if raw.len() > 2000 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "at most 2,000 printable ASCII characters (percent-encode the rest), no spaces",
            ));
        }
        if raw.contains('#') {
            return Err(bad("a redirect URI has no fragment (RFC 6749 §3.1.2)"));
        }
        let p = parts(raw).ok_or(bad("not an absolute URI"))?;
        match p.scheme.to_ascii_lowercase().as_str() {
            "https" if !p.host.is_empty() => {}
            "http" if is_loopback_host(&p.host.to_ascii_lowercase()) => {}
            "http" => {
                return Err(bad(
                    "http is allowed only to a loopback host (127.0.0.1, [::1], localhost); use https",
                ))
            }
            "https" => return Err(bad("an https URI needs a host")),
            scheme if scheme.contains('.') => {}
            _ => {
                return Err(bad(
                    "use https, http to a loopback host, or a private-use scheme such as com.example.app:/callback",
                ))
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this URI: exactly (RFC 9700 §4.1.3), except that a loopback
    /// IP redirect may name any port (RFC 8252 §7.3: a native app listens on whatever port
    /// the system gives it).
    pub fn matches(&self, presented: &str) -> bool {
        if self.0 == presented {
            return true;
        }
        let (Some(mine), Some(theirs)) = (parts(&self.0), parts(presented)) else {
            return false;
        };
        mine.scheme == "http"
            && theirs.scheme == "http"
            && matches!(mine.host, "127.0.0.1" | "[::1]")
            && mine.host == theirs.host
            && mine.rest == theirs.rest
    }

    /// This URI with `params` added to its query (RFC 6749 §4.1.2: the query component is
    /// kept, the parameters appended).
    pub fn with_query(&self, params: &[(&str, &str)]) -> String {
        with_query(&self.0, params)
    }
}

/// `uri` (a redirect URI as presented, already matched) with `params` added to its query.
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    let query = query.finish();
    let joiner = match uri.find('?') {
        None => "?",
        Some(at) if at + 1 == uri.len() || uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{uri}{joiner}{query}")
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_redirect_uris_are_accepted() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com:8443/cb?x=1",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:8080/callback",
            "http://[::1]:9000/cb",
            "http://localhost:3000/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(RedirectUri::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://app.example.com/callback",
            "https://app.example.com/cb#frag",
            "https://user@app.example.com/cb",
            "javascript:alert(1)",
            "/relative",
            "https:///nohost",
            "https://app.example.com:port/cb",
            "https://app .example.com/",
            "https://exämple.com/cb",
            "custom:/cb",
        ] {
            assert!(RedirectUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_match_exactly_except_the_port_of_a_loopback_ip() {
        let https = RedirectUri::parse("https://app.example.com/cb").unwrap();
        assert!(https.matches("https://app.example.com/cb"));
        assert!(!https.matches("https://app.example.com/cb/"));
        assert!(!https.matches("https://app.example.com/cb?x=1"));
        assert!(!https.matches("https://APP.example.com/cb"));
        let loopback = RedirectUri::parse("http://127.0.0.1/cb").unwrap();
        assert!(loopback.matches("http://127.0.0.1:53121/cb"));
        assert!(!loopback.matches("http://127.0.0.1:53121/other"));
        assert!(!loopback.matches("http://127.0.0.2:53121/cb"));
        assert!(!loopback.matches("http://127.0.0.1.evil.com/cb"));
        let v6 = RedirectUri::parse("http://[::1]:1/cb").unwrap();
        assert!(v6.matches("http://[::1]:2/cb"));
        // Not `localhost`: a name can be made to resolve elsewhere (RFC 8252 §8.3).
        let name = RedirectUri::parse("http://localhost:1/cb").unwrap();
        assert!(!name.matches("http://localhost:2/cb"));
    }

    #[test]
    fn parameters_are_appended_to_the_query() {
        assert_eq!(
            with_query("https://a/cb", &[("code", "x y")]),
            "https://a/cb?code=x+y"
        );
        assert_eq!(
            with_query("https://a/cb?k=1", &[("state", "s&t")]),
            "https://a/cb?k=1&state=s%26t"
        );
        assert_eq!(
            with_query("https://a/cb?", &[("a", "1")]),
            "https://a/cb?a=1"
        );
    }
}
