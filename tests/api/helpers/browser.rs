//! A browser as the sign-in flow needs one: it keeps cookies, does not follow redirects
//! by itself (each hop is checked), and fills in the hosted pages' forms the way a person
//! would, hidden fields included. Plus the relying party's side: PKCE, the callback, and
//! reading an ID token.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::http::{form, Resp, FORM};

pub struct Browser {
    pub base: String,
    agent: ureq::Agent,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(60)))
                .build(),
        );
        Self {
            base: base.to_owned(),
            agent,
            cookies: HashMap::new(),
        }
    }

    fn send(&mut self, method: &str, url: &str, body: Option<Vec<u8>>) -> Resp {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        };
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "text/html");
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !jar.is_empty() {
            req = req.header("Cookie", jar.join("; "));
        }
        let result = match body {
            Some(body) => {
                // As browsers send it from a page with Referrer-Policy: no-referrer.
                let req = req.header("Content-Type", FORM).header("Origin", "null");
                self.agent.run(req.body(body).unwrap())
            }
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let resp = Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        };
        for cookie in resp.headers.get_all("set-cookie") {
            let cookie = cookie.to_str().unwrap();
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        resp
    }

    pub fn get(&mut self, url: &str) -> Resp {
        self.send("GET", url, None)
    }

    /// Submits the page's first form that is not a passkey's, with its hidden fields and
    /// `fields`.
    pub fn submit(&mut self, page: &Resp, fields: &[(&str, &str)]) -> Resp {
        let form = forms(&page.body)
            .into_iter()
            .find(|f| !f.contains("data-options="))
            .expect("the page has a form");
        self.submit_form(form, fields)
    }

    /// Submits the page's form whose `action` is `action` and which has a hidden field
    /// `marker` (its `action` field's value, or a field only it has).
    pub fn submit_to(
        &mut self,
        page: &Resp,
        marker: (&str, &str),
        fields: &[(&str, &str)],
    ) -> Resp {
        let form = forms(&page.body)
            .into_iter()
            .find(|f| {
                hidden_fields(f)
                    .iter()
                    .any(|(n, v)| n == marker.0 && (marker.1.is_empty() || v == marker.1))
            })
            .unwrap_or_else(|| panic!("no form with {marker:?}: {}", page.body));
        self.submit_form(form, fields)
    }

    fn submit_form(&mut self, html: &str, fields: &[(&str, &str)]) -> Resp {
        let action = attribute(html, "form", "action").expect("the form has an action");
        let mut all: Vec<(String, String)> = hidden_fields(html);
        for (name, value) in fields {
            all.retain(|(n, _)| n != name);
            all.push((name.to_string(), value.to_string()));
        }
        let pairs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        self.send("POST", &action, Some(form(&pairs)))
    }

    /// The `Location` of a 303.
    pub fn location(resp: &Resp) -> String {
        assert_eq!(resp.status, 303, "expected a redirect: {}", resp.body);
        resp.header("location").unwrap().to_owned()
    }
}

/// Every `<form …>…</form>` of a page, in order.
fn forms(html: &str) -> Vec<&str> {
    html.match_indices("<form ")
        .filter_map(|(start, _)| {
            let end = html[start..].find("</form>")? + start;
            Some(&html[start..end])
        })
        .collect()
}

/// The options the page's passkey form carries (`data-options`, unescaped) and its
/// `passkey_ceremony`.
pub fn passkey_form(html: &str) -> (Value, String) {
    let form = forms(html)
        .into_iter()
        .find(|f| f.contains("data-options=\""))
        .unwrap_or_else(|| panic!("no passkey form: {html}"));
    let options = attribute(form, "form", "data-options").unwrap();
    let options = options
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let ceremony = hidden_fields(form)
        .into_iter()
        .find(|(n, _)| n == "passkey_ceremony")
        .unwrap()
        .1;
    (
        serde_json::from_str(&options).expect("data-options is JSON"),
        ceremony,
    )
}

/// The first `name="…"` attribute value of the first `<tag …>`.
fn attribute(html: &str, tag: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("<{tag} "))?;
    let element = &html[start..start + html[start..].find('>')?];
    let at = element.find(&format!("{name}=\""))? + name.len() + 2;
    Some(element[at..at + element[at..].find('"')?].to_owned())
}

/// Every `<input type="hidden" name="…" value="…">` of the page.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter(|i| i.contains("type=\"hidden\""))
        .filter_map(|input| {
            let input = &input[..input.find('>')?];
            let get = |attr: &str| {
                let at = input.find(&format!("{attr}=\""))? + attr.len() + 2;
                Some(input[at..at + input[at..].find('"')?].to_owned())
            };
            Some((get("name")?, get("value")?))
        })
        .collect()
}

/// A PKCE pair (RFC 7636): a verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = simple_api::auth::clients::generate_secret();
    let challenge = simple_api::service::s256(&verifier);
    (verifier, challenge)
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// The claims of a JWT, unverified (the tests verify signatures where it matters).
pub fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}
