use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use simple_api::config::Config;
use simple_api::startup::Application;
use tempfile::TempDir;
use ureq::http;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// A running application and a client for it. Dropping it stops the server.
pub struct TestApp {
    pub base: String,
    pub keys_dir: PathBuf,
    agent: ureq::Agent,
    config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dirs: Option<(TempDir, TempDir)>,
    /// Dropped after the server has stopped.
    database: Option<TestDatabase>,
}

/// The config every test starts from: the contract's defaults, port 0, private dirs,
/// cheap argon2 (the real parameters are covered by the unit tests' hashing round trip).
pub fn test_config(data_dir: PathBuf, keys_dir: PathBuf) -> Config {
    Config {
        api_host: "127.0.0.1".parse().unwrap(),
        api_port: 0,
        data_dir,
        database_url: None,
        keys_dir,
        session_duration: 900,
        refresh_token_ttl: 2_592_000,
        session_name: "session_id".into(),
        jwt_issuer: "simple-api".into(),
        jwt_audience: "simple-api".into(),
        public_url: None,
        signup_enabled: true,
        admin_email: Some(ADMIN_EMAIL.into()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        cookie_secure: false,
        refresh_reuse_grace: 10,
        key_publish_delay: 600,
        max_body_bytes: 65_536,
        login_max_failures: 5,
        login_window: 900,
        argon2_m_kib: 1024,
        argon2_t: 1,
        argon2_p: 1,
        argon2_queue: 256,
        trusted_proxies: Vec::new(),
        audit_log: None,
        header_timeout: 10,
        reload_interval: 2,
        log_format: "text".into(),
    }
}

/// Which store a test's app runs on. The suite's bodies are shared: `main.rs` compiles
/// them once per backend, each with a `helpers` whose `spawn_app*` pick it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    File,
    #[cfg(not(no_postgres))]
    Postgres,
}

pub fn spawn_app_on(backend: Backend, change: impl FnOnce(&mut Config)) -> TestApp {
    let database = match backend {
        Backend::File => None,
        #[cfg(not(no_postgres))]
        Backend::Postgres => Some(crate::database::database()),
    };
    spawn_app_in(database, change)
}

#[cfg(not(no_postgres))]
pub type TestDatabase = crate::database::TestDatabase;
/// Stands in for a database where none can exist.
#[cfg(no_postgres)]
pub struct TestDatabase {
    pub url: String,
}

/// An app on `database` (PostgreSQL), or on the file store if `None`.
pub fn spawn_app_in(database: Option<TestDatabase>, change: impl FnOnce(&mut Config)) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    simple_api::auth::keys::generate_ed25519(keys.path()).unwrap();
    let mut config = test_config(data.path().join("data"), keys.path().to_owned());
    config.database_url = database.as_ref().map(|d| d.url.clone());
    change(&mut config);
    start(config, (data, keys), database)
}

fn start(config: Config, dirs: (TempDir, TempDir), database: Option<TestDatabase>) -> TestApp {
    let (data, keys) = dirs;
    let saved = config.clone();
    if std::env::var_os("TEST_LOG").is_some() {
        simple_api::telemetry::init("text");
    }

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = Application::build(config).await.expect("the app starts");
            ready_tx.send(app.port()).unwrap();
            app.run_until(async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let port = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("app ready");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    );
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        keys_dir: keys.path().to_owned(),
        agent,
        config: saved,
        stop: Some(stop_tx),
        thread: Some(thread),
        dirs: Some((data, keys)),
        database,
    }
}

impl TestApp {
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops the server and starts a new one on the same DATA_DIR and KEYS_DIR.
    pub fn restart(self) -> TestApp {
        self.restart_with(|_| {})
    }

    /// As `restart`, with some settings changed.
    pub fn restart_with(mut self, change: impl FnOnce(&mut Config)) -> TestApp {
        self.stop();
        let dirs = self.dirs.take().unwrap();
        let database = self.database.take();
        let mut config = self.config.clone();
        change(&mut config);
        drop(self);
        start(config, dirs, database)
    }
}

/// What a CLI run printed.
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The one JSON object printed on stdout.
    pub fn json(&self) -> Value {
        assert!(self.success, "CLI failed: {}", self.stderr);
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

impl TestApp {
    /// Runs `simple-api ARGS` against this app's DATA_DIR and KEYS_DIR, as an operator
    /// would on the same machine while the server runs.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let c = &self.config;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_simple-api"))
            .args(args)
            .env_clear()
            .env("DATA_DIR", &c.data_dir)
            .env("KEYS_DIR", &c.keys_dir)
            .env("KEY_PUBLISH_DELAY", c.key_publish_delay.to_string())
            .env("SESSION_DURATION", c.session_duration.to_string())
            .env("ARGON2_M_KIB", c.argon2_m_kib.to_string())
            .env("ARGON2_T", c.argon2_t.to_string())
            .env("ARGON2_P", c.argon2_p.to_string())
            .envs(c.database_url.iter().map(|url| ("DATABASE_URL", url)))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The password hash the store holds for `email`, read from the store itself.
    pub fn stored_hash(&self, email: &str) -> String {
        #[cfg(not(no_postgres))]
        if let Some(url) = &self.config.database_url {
            let key = email.trim().to_lowercase().replace('\'', "''");
            return crate::database::query_value(
                url,
                &format!("SELECT password_hash FROM users WHERE email_key = '{key}'"),
            );
        }
        let text = std::fs::read_to_string(self.config.data_dir.join("store.log")).unwrap();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(email) && l.contains("user_put"))
            .unwrap();
        let hash = line.split("\"password_hash\":\"").nth(1).unwrap();
        hash.split('"').next().unwrap().to_owned()
    }

    pub fn config_data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// A registered client: (id, secret).
    pub fn new_client(&self, scope: &str) -> (String, String) {
        let out = self
            .cli(&[
                "clients",
                "create",
                "--name",
                "test service",
                "--scope",
                scope,
            ])
            .json();
        (
            out["client_id"].as_str().unwrap().to_owned(),
            out["client_secret"].as_str().unwrap().to_owned(),
        )
    }

    /// A client_credentials request with HTTP Basic authentication.
    pub fn client_grant(&self, id: &str, secret: &str, scope: Option<&str>) -> Resp {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let auth = format!("Basic {basic}");
        let mut fields = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            fields.push(("scope", scope));
        }
        self.send(
            "POST",
            "/api/v1/auth/token",
            &[("Authorization", &auth), ("Content-Type", FORM)],
            Some(form(&fields)),
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

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
}

pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

impl TestApp {
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

    /// A request with exactly these headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let result = match body {
            Some(body) => self.agent.run(req.body(body).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp
                .body_mut()
                .with_config()
                .limit(10 << 20)
                .read_to_string()
                .unwrap(),
        }
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

    /// A refresh-grant request.
    pub fn refresh(&self, refresh_token: &str) -> Resp {
        self.post_form(
            "/api/v1/auth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
    }

    pub fn signup(&self, email: &str, password: &str) -> Resp {
        self.post_json(
            "/api/v1/users",
            None,
            &json!({ "email": email, "password": password }),
        )
    }

    pub fn password_grant(&self, email: &str, password: &str) -> Resp {
        self.post_form(
            "/api/v1/auth/token",
            &[
                ("grant_type", "password"),
                ("username", email),
                ("password", password),
            ],
        )
    }

    pub fn token_for(&self, email: &str, password: &str) -> String {
        let body = self.password_grant(email, password).expect(200);
        body["access_token"].as_str().unwrap().to_owned()
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

    /// Signs arbitrary claims with the server's own key (to test claim checks).
    pub fn sign(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.signing_key()).unwrap()
    }

    pub fn signing_key(&self) -> EncodingKey {
        let pem = std::fs::read_dir(&self.keys_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pem"))
            .unwrap();
        EncodingKey::from_ed_pem(&std::fs::read(pem).unwrap()).unwrap()
    }

    pub fn kid(&self) -> String {
        self.get("/.well-known/jwks.json", None).json()["keys"][0]["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A header like the server's: EdDSA, `typ: at+jwt`, the server's kid.
    pub fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid());
        header
    }
}

pub const FORM: &str = "application/x-www-form-urlencoded";

pub fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
        .into_bytes()
}

impl Resp {
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

/// Claims the server would issue for `sub` now, as JSON to tweak.
pub fn claims_for(sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "simple-api", "aud": "simple-api", "sub": sub,
        "iat": now, "nbf": now, "exp": now + 300,
        "jti": uuid::Uuid::now_v7().to_string(), "scope": "profile", "role": "user",
    })
}

/// The `kid`s of a JWK Set, in order.
pub fn kids_of(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}
