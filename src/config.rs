//! Configuration: every setting is an environment variable and a CLI flag (clap), with
//! the contract's defaults. Bad values stop start-up with one line naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser};

/// The settings alone, parsed without the CLI's subcommands (`Config::from_defaults`).
#[derive(Debug, Parser)]
#[command(name = "simple-api")]
struct Settings {
    #[command(flatten)]
    config: Config,
}

/// Every setting of the service. Plain data: tests build one and change what they need.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1", global = true)]
    pub api_host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "API_PORT", default_value_t = 5000, global = true)]
    pub api_port: u16,
    /// Directory of the file-backed store.
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://user@host/db`) of the store replicas share; unset: the
    /// file store in DATA_DIR. Without a password in it, PGPASSWORD or the password file
    /// (PGPASSFILE, default ~/.pgpass) gives it, as for psql.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Directory of PKCS#8 PEM signing keys; an Ed25519 key is generated if it has none.
    #[arg(long, env = "KEYS_DIR", default_value = "./keys", global = true)]
    pub keys_dir: PathBuf,
    /// Access-token lifetime, seconds.
    #[arg(long, env = "SESSION_DURATION", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400 * 365), global = true)]
    pub session_duration: u64,
    /// How long a browser stays signed in to the hosted sign-in pages (single sign-on),
    /// seconds: within it, further clients are authorized without the password.
    #[arg(long, env = "SSO_SESSION_DURATION", default_value_t = 43_200, value_parser = clap::value_parser!(u64).range(60..=86_400 * 30), global = true)]
    pub sso_session_duration: u64,
    /// Refresh-token lifetime, seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value_t = 2_592_000, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub refresh_token_ttl: u64,
    /// Name of the session cookie.
    #[arg(
        long,
        env = "SESSION_NAME",
        default_value = "session_id",
        global = true
    )]
    pub session_name: String,
    /// `iss` claim of issued tokens, checked on every request.
    #[arg(long, env = "JWT_ISSUER", default_value = "simple-api", global = true)]
    pub jwt_issuer: String,
    /// `aud` claim of issued tokens, checked on every request.
    #[arg(
        long,
        env = "JWT_AUDIENCE",
        default_value = "simple-api",
        global = true
    )]
    pub jwt_audience: String,
    /// External base URL (default http://API_HOST:API_PORT).
    #[arg(long, env = "PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Whether POST /api/v1/users is open without a token.
    #[arg(long, env = "SIGNUP_ENABLED", default_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub signup_enabled: bool,
    /// With ADMIN_PASSWORD: make sure this admin account exists at start.
    #[arg(long, env = "ADMIN_EMAIL", global = true)]
    pub admin_email: Option<String>,
    /// With ADMIN_EMAIL: the admin's password when the account is created.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true, global = true)]
    pub admin_password: Option<String>,
    /// Add `Secure` to the session cookie.
    #[arg(long, env = "COOKIE_SECURE", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub cookie_secure: bool,
    /// Seconds in which re-presenting a just-rotated refresh token is a benign race.
    #[arg(long, env = "REFRESH_REUSE_GRACE", default_value_t = 10, global = true)]
    pub refresh_reuse_grace: u64,
    /// Seconds a new key is published before it signs.
    #[arg(long, env = "KEY_PUBLISH_DELAY", default_value_t = 600, global = true)]
    pub key_publish_delay: u64,
    /// Request body limit, bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)), global = true)]
    pub max_body_bytes: u64,
    /// Failed logins per account (and, scaled, per address) before 429.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5, global = true)]
    pub login_max_failures: u32,
    /// Window of LOGIN_MAX_FAILURES, seconds.
    #[arg(long, env = "LOGIN_WINDOW", default_value_t = 900, global = true)]
    pub login_window: u64,
    /// Used `private_key_jwt` assertions remembered per client (each `jti` until its `exp`
    /// + 65 s); beyond that, 429 until the first is forgotten.
    #[arg(long, env = "MAX_CLIENT_ASSERTIONS", default_value_t = 4_000_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..), global = true)]
    pub max_client_assertions: usize,
    /// argon2id memory cost, KiB.
    #[arg(long, env = "ARGON2_M_KIB", default_value_t = 19_456, global = true)]
    pub argon2_m_kib: u32,
    /// argon2id passes.
    #[arg(long, env = "ARGON2_T", default_value_t = 2, global = true)]
    pub argon2_t: u32,
    /// argon2id lanes.
    #[arg(long, env = "ARGON2_P", default_value_t = 1, global = true)]
    pub argon2_p: u32,
    /// Password checks that may wait for a hashing slot; beyond that, 503 + Retry-After.
    #[arg(long, env = "ARGON2_QUEUE", default_value_t = 256, global = true)]
    pub argon2_queue: usize,
    /// Peers whose X-Forwarded-For is believed (comma-separated addresses).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', global = true)]
    pub trusted_proxies: Vec<IpAddr>,
    /// Security-event log (JSON lines); `-` for stdout. Default DATA_DIR/audit.log.
    #[arg(long, env = "AUDIT_LOG", global = true)]
    pub audit_log: Option<PathBuf>,
    /// Seconds a client may take to send a request's headers (slow clients are cut off).
    #[arg(long, env = "HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub header_timeout: u64,
    /// Seconds between re-reads of KEYS_DIR and of admin changes from the CLI (SIGHUP: at once).
    #[arg(long, env = "RELOAD_INTERVAL", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub reload_interval: u64,
    /// SMTP server for the service's mail: `smtp://user:pass@host:587` (STARTTLS
    /// required), `smtps://host:465`, or `smtp://127.0.0.1:2525?tls=none` (loopback only).
    /// Unset: each message is written as an `.eml` file into DATA_DIR/outbox/.
    #[arg(long, env = "SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<String>,
    /// The sender of the service's mail (default `simple-api <no-reply@PUBLIC_URL's host>`).
    #[arg(long, env = "MAIL_FROM", global = true)]
    pub mail_from: Option<String>,
    /// Messages a minute per account (and, times 10, per client address): password
    /// resets and the like; beyond that, 429 with Retry-After.
    #[arg(long, env = "MAIL_LIMIT_MINUTE", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub mail_limit_minute: u32,
    /// Messages a day per account (and, times 10, per client address).
    #[arg(long, env = "MAIL_LIMIT_DAY", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub mail_limit_day: u32,
    /// Refuse tokens to accounts whose email address is not verified (a refused sign-in
    /// sends a new code, within the mail limits).
    #[arg(long, env = "REQUIRE_VERIFIED_EMAIL", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub require_verified_email: bool,
    /// The service's name in its mail, hosted pages, authenticator apps and passkeys.
    #[arg(
        long,
        env = "SERVICE_NAME",
        default_value = "simple-api",
        global = true
    )]
    pub service_name: String,
    /// Log format on stderr: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
}

/// A setting that parses but makes no sense; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl Config {
    /// The defaults, as `simple-api` with no environment would have them.
    pub fn from_defaults() -> Self {
        Settings::parse_from(["simple-api"]).config
    }

    /// DATABASE_URL, unless unset or empty.
    pub fn database(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
    }

    /// Cross-field and semantic checks clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |var, reason: &str| {
            Err(ConfigError {
                var,
                reason: reason.to_owned(),
            })
        };
        if let Some(url) = self.database() {
            if !is_postgres_url(url) {
                return err(
                    "DATABASE_URL",
                    "must be a postgres:// or postgresql:// URL (or unset, for the file store in DATA_DIR)",
                );
            }
        }
        let name = self.service_name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return err(
                "SERVICE_NAME",
                "must be 1 to 64 characters, without control characters",
            );
        }
        if self.jwt_issuer.trim().is_empty() {
            return err("JWT_ISSUER", "must not be empty");
        }
        if self.jwt_audience.trim().is_empty() {
            return err("JWT_AUDIENCE", "must not be empty");
        }
        if !is_cookie_name(&self.session_name) {
            return err(
                "SESSION_NAME",
                "must be a non-empty cookie name (letters, digits, - _ .)",
            );
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 8 {
                return err("PUBLIC_URL", "must be an absolute http:// or https:// URL");
            }
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(_), None) => return err("ADMIN_PASSWORD", "must be set when ADMIN_EMAIL is"),
            (None, Some(_)) => return err("ADMIN_EMAIL", "must be set when ADMIN_PASSWORD is"),
            _ => {}
        }
        if self.login_max_failures == 0 {
            return err("LOGIN_MAX_FAILURES", "must be at least 1");
        }
        argon2::Params::new(self.argon2_m_kib, self.argon2_t, self.argon2_p, None).map_err(
            |e| ConfigError {
                var: "ARGON2_M_KIB/ARGON2_T/ARGON2_P",
                reason: e.to_string(),
            },
        )?;
        Ok(())
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_duration)
    }

    /// PUBLIC_URL without a trailing slash, or the listen address.
    pub fn public_url(&self, port: u16) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => match self.api_host {
                IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
                IpAddr::V4(ip) => format!("http://{ip}:{port}"),
            },
        }
    }
}

/// The URL form only: a key=value connection string would be accepted by the driver, but
/// a typo in one would silently mean something else.
pub fn is_postgres_url(url: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| {
        url.len() > scheme.len()
            && url
                .get(..scheme.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
    })
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contracts() {
        let c = Config::from_defaults();
        assert_eq!(c.api_host.to_string(), "127.0.0.1");
        assert_eq!(c.api_port, 5000);
        assert_eq!(c.session_duration, 900);
        assert_eq!(c.session_name, "session_id");
        assert!(c.signup_enabled);
        assert!(!c.cookie_secure);
        assert_eq!(c.max_body_bytes, 65_536);
        assert_eq!((c.argon2_m_kib, c.argon2_t, c.argon2_p), (19_456, 2, 1));
        assert_eq!(c.public_url(5000), "http://127.0.0.1:5000");
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = Settings::try_parse_from(["simple-api", "--api-port", "abc"]).unwrap_err();
        assert!(err.to_string().contains("API_PORT"), "{err}");
        let mut c = Config::from_defaults();
        c.admin_email = Some("a@example.com".into());
        assert_eq!(c.validate().unwrap_err().var, "ADMIN_PASSWORD");
        let mut c = Config::from_defaults();
        c.argon2_m_kib = 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("ARGON2_M_KIB"));
    }

    #[test]
    fn service_name_is_a_short_printable_name() {
        let mut c = Config::from_defaults();
        assert_eq!(c.service_name, "simple-api");
        assert!(!c.require_verified_email);
        for bad in ["", "  ", "a\nb", &"x".repeat(65)] {
            c.service_name = bad.into();
            assert_eq!(c.validate().unwrap_err().var, "SERVICE_NAME", "{bad:?}");
        }
        c.service_name = "Acme <ID> ✓".into();
        c.validate().unwrap();
    }

    #[test]
    fn database_url_must_be_a_postgres_url() {
        let mut c = Config::from_defaults();
        for ok in ["postgres://u@h/db", "PostgreSQL://u:p@h:5432/db", ""] {
            c.database_url = Some(ok.into());
            c.validate().unwrap();
        }
        for bad in [
            "host=h user=u",
            "mysql://h/db",
            "postgres://",
            "pöstgres://x",
        ] {
            c.database_url = Some(bad.into());
            assert_eq!(c.validate().unwrap_err().var, "DATABASE_URL", "{bad}");
        }
    }
}
