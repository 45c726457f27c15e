//! The application started in the test process: `TestApp`, on port 0 with its own temp
//! DATA_DIR and KEYS_DIR, on the file store or on a PostgreSQL database.

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use simple_api::config::Config;
use simple_api::startup::Application;
use tempfile::TempDir;

use super::cli::{self, CliOutput};
use super::http::Client;
use super::{ADMIN_EMAIL, ADMIN_PASSWORD};

/// A running application and a client for it (it derefs to its `Client`). Dropping it
/// stops the server.
pub struct TestApp {
    pub keys_dir: PathBuf,
    http: Client,
    config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dirs: Option<(TempDir, TempDir)>,
    /// Dropped after the server has stopped.
    database: Option<TestDatabase>,
}

impl Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.http
    }
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
        sso_session_duration: 43_200,
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
        max_client_assertions: 4_000_000,
        argon2_m_kib: 1024,
        argon2_t: 1,
        argon2_p: 1,
        argon2_queue: 256,
        trusted_proxies: Vec::new(),
        audit_log: None,
        header_timeout: 10,
        reload_interval: 2,
        smtp_url: None,
        mail_from: None,
        mail_limit_minute: 1,
        mail_limit_day: 10,
        require_verified_email: false,
        service_name: "simple-api".into(),
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
        Backend::Postgres => Some(super::database::database()),
    };
    spawn_app_in(database, change)
}

#[cfg(not(no_postgres))]
pub type TestDatabase = super::database::TestDatabase;
/// Stands in for a database where none can exist.
#[cfg(no_postgres)]
pub struct TestDatabase {
    pub url: String,
}

/// Copies one RSA ID-token key, made once per test run, into `dir`: generating RSA keys
/// is slow, and every server would otherwise make its own at start.
pub fn add_id_token_key(dir: &std::path::Path) {
    static KEY: std::sync::OnceLock<(String, Vec<u8>)> = std::sync::OnceLock::new();
    let (name, pem) = KEY.get_or_init(|| {
        let made = tempfile::tempdir().unwrap();
        let path = simple_api::auth::keys::generate_id_token_key(made.path()).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        (name, std::fs::read(&path).unwrap())
    });
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// An app on `database` (PostgreSQL), or on the file store if `None`.
pub fn spawn_app_in(database: Option<TestDatabase>, change: impl FnOnce(&mut Config)) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    simple_api::auth::keys::generate_ed25519(keys.path()).unwrap();
    add_id_token_key(keys.path());
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
    TestApp {
        keys_dir: keys.path().to_owned(),
        http: Client::new(format!("http://127.0.0.1:{port}")),
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

    /// Runs `simple-api ARGS` against this app's DATA_DIR and KEYS_DIR, as an operator
    /// would on the same machine while the server runs.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let c = &self.config;
        let mut cmd = std::process::Command::new(super::process::BIN);
        cmd.env_clear()
            .env("DATA_DIR", &c.data_dir)
            .env("KEYS_DIR", &c.keys_dir)
            .env("KEY_PUBLISH_DELAY", c.key_publish_delay.to_string())
            .env("SESSION_DURATION", c.session_duration.to_string())
            .env("ARGON2_M_KIB", c.argon2_m_kib.to_string())
            .env("ARGON2_T", c.argon2_t.to_string())
            .env("ARGON2_P", c.argon2_p.to_string())
            .envs(c.database_url.iter().map(|url| ("DATABASE_URL", url)))
            .stdin(std::process::Stdio::null());
        cli::run(&mut cmd, args)
    }

    /// The password hash the store holds for `email`, read from the store itself.
    pub fn stored_hash(&self, email: &str) -> String {
        #[cfg(not(no_postgres))]
        if let Some(url) = &self.config.database_url {
            let key = email.trim().to_lowercase().replace('\'', "''");
            return super::database::query_value(
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

    /// The PostgreSQL store's URL; `None` on the file store.
    pub fn database_url(&self) -> Option<&str> {
        self.config.database_url.as_deref()
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

    /// Signs arbitrary claims with the server's own key (to test claim checks).
    pub fn sign(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.signing_key()).unwrap()
    }

    pub fn signing_key(&self) -> EncodingKey {
        let pem = std::fs::read_dir(&self.keys_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.ends_with(".pem") && !name.starts_with("id-token-")
            })
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

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
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
