//! The one HTTP client of the tests, for an in-process `TestApp` and a spawned `Server`
//! alike: requests, the `Resp` they get back, form bodies, and the contract's common
//! requests (sign-up, the grants, revocation).

use std::time::Duration;

use serde_json::{json, Value};
use ureq::http;

use super::{ADMIN_EMAIL, ADMIN_PASSWORD};

pub const FORM: &str = "application/x-www-form-urlencoded";
const TOKEN: &str = "/api/v1/auth/token";

/// A form body.
pub fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
        .into_bytes()
}

/// A client for one server (`base` is `http://127.0.0.1:PORT`). HTTP errors are answers
/// (`Resp::status`), not `Err`s; a request that gets no answer panics, naming it.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    agent: ureq::Agent,
    /// Every answer must be JSON (see `json_only`).
    json_only: bool,
}

impl Client {
    pub fn new(base: String) -> Client {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build(),
        );
        Client {
            base,
            agent,
            json_only: false,
        }
    }

    /// The same client, asserting that every answer it gets is JSON.
    pub fn json_only(mut self) -> Client {
        self.json_only = true;
        self
    }

    /// A request with exactly these headers; `Err` only if no answer came.
    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Resp, ureq::Error> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut resp = match body {
            Some(body) => self.agent.run(req.body(body).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        }?;
        let resp = Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp
                .body_mut()
                .with_config()
                .limit(10 << 20)
                .read_to_string()?,
        };
        if self.json_only {
            if let Err(e) = serde_json::from_str::<Value>(&resp.body) {
                let (status, text) = (resp.status, &resp.body);
                panic!("{method} {path} → {status}, not JSON ({e}): {text}");
            }
        }
        Ok(resp)
    }

    /// A request with exactly these headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.try_send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A request with an optional bearer token and body of `content_type`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        self.send(method, path, &headers, body)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.request("GET", path, token, None, None)
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.request("DELETE", path, token, None, None)
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            token,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    }

    pub fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.request(
            "PUT",
            path,
            token,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    }

    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.request("POST", path, None, Some(FORM), Some(form(fields)))
    }

    /// `GET /api/v1/users/me` with this token.
    pub fn me(&self, token: &str) -> Resp {
        self.get("/api/v1/users/me", Some(token))
    }

    pub fn signup(&self, email: &str, password: &str) -> Resp {
        self.post_json(
            "/api/v1/users",
            None,
            &json!({ "email": email, "password": password }),
        )
    }

    /// A sign-up; `Err` if the server is gone (for writes racing a kill).
    pub fn try_signup(&self, email: &str, password: &str) -> Result<Resp, ureq::Error> {
        let body = json!({ "email": email, "password": password });
        self.try_send(
            "POST",
            "/api/v1/users",
            &[("Content-Type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
    }

    pub fn password_grant(&self, email: &str, password: &str) -> Resp {
        self.post_form(
            TOKEN,
            &[
                ("grant_type", "password"),
                ("username", email),
                ("password", password),
            ],
        )
    }

    /// A refresh-grant request.
    pub fn refresh(&self, refresh_token: &str) -> Resp {
        self.post_form(
            TOKEN,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
    }

    /// A public client's exchange of the code its `callback` (to `redirect_uri`) carries.
    pub fn exchange_code(
        &self,
        callback: &str,
        redirect_uri: &str,
        client_id: &str,
        verifier: &str,
    ) -> Resp {
        let code = super::browser::query_of(callback)["code"].clone();
        self.post_form(
            TOKEN,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
                ("client_id", client_id),
            ],
        )
    }

    /// RFC 7009 revocation of an access or refresh token.
    pub fn revoke(&self, token: &str) -> Resp {
        self.post_form("/api/v1/auth/revoke", &[("token", token)])
    }

    /// RFC 7662 introspection of `token` by the client `(id, secret)`, asserted to
    /// answer.
    pub fn introspect(&self, client: &(String, String), token: &str) -> Value {
        let fields = [
            ("token", token),
            ("client_id", client.0.as_str()),
            ("client_secret", client.1.as_str()),
        ];
        self.post_form("/api/v1/auth/introspect", &fields)
            .expect(200)
    }

    /// A client_credentials request with HTTP Basic authentication.
    pub fn client_grant(&self, id: &str, secret: &str, scope: Option<&str>) -> Resp {
        self.client_grant_with(id, secret, scope, &[])
    }

    /// `client_grant` with more headers (e.g. `X-Forwarded-For` behind a trusted proxy).
    pub fn client_grant_with(
        &self,
        id: &str,
        secret: &str,
        scope: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let auth = format!("Basic {basic}");
        let mut fields = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            fields.push(("scope", scope));
        }
        let mut all = vec![("Authorization", auth.as_str()), ("Content-Type", FORM)];
        all.extend_from_slice(headers);
        self.send("POST", TOKEN, &all, Some(form(&fields)))
    }

    /// The access token of a client_credentials grant with the credentials in the form
    /// (client_secret_post), asserted to succeed.
    pub fn client_token(&self, id: &str, secret: &str) -> String {
        let fields = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ];
        let resp = self.post_form(TOKEN, &fields);
        assert_eq!(resp.status, 200, "{}", resp.body);
        resp.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// The access token of a password grant (asserted to succeed).
    pub fn token_for(&self, email: &str, password: &str) -> String {
        let body = self.password_grant(email, password).expect(200);
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `(access, refresh)` of a fresh login.
    pub fn tokens(&self, email: &str, password: &str) -> (String, String) {
        let resp = self.password_grant(email, password);
        assert_eq!(resp.status, 200, "{}", resp.body);
        let body = resp.json();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// A new signed-up, logged-in user.
    pub fn new_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "a-good-password".to_owned();
        let body = self.signup(&email, &password).expect(201);
        let token = self.token_for(&email, &password);
        TestUser {
            id: body["id"].as_str().unwrap().to_owned(),
            email,
            password,
            token,
        }
    }

    pub fn admin_token(&self) -> String {
        self.token_for(ADMIN_EMAIL, ADMIN_PASSWORD)
    }
}

pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// What a request got back.
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and a JSON content type, and returns the body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct:?}, body {}",
            self.body
        );
        self.json()
    }

    /// Asserts an `{"error": message}` body with this status.
    pub fn expect_error(&self, status: u16, message: &str) {
        assert_eq!(self.expect(status), json!({ "error": message }));
    }

    /// The `Set-Cookie` header for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }
}
