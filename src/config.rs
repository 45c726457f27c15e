//! Configuration: every setting is an environment variable and a CLI flag (clap), with
//! the contract's defaults. Bad values stop start-up with one line naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "simple-api",
    version,
    about = "A stateless JWT authentication service"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Manage user accounts in the store (DATA_DIR, or DATABASE_URL).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage service clients (client_credentials). Works while the server runs.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Manage signing keys in KEYS_DIR. Works while the server runs.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Password hashing tools.
    #[command(subcommand)]
    Passwords(PasswordsCommand),
    /// Print the OpenAPI document (JSON).
    Openapi,
    /// Apply the PostgreSQL schema migrations to DATABASE_URL (safe to run at any time,
    /// and from several places at once: they take a lock and skip what is applied).
    Migrate,
    /// Move between stores.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the file store in DATA_DIR (stop the server first) into a PostgreSQL
    /// database: users with their password hashes, clients, live refresh-token families,
    /// revocations. Prints the counts copied (JSON).
    Copy {
        /// The target database, `postgres://…`. Migrated first.
        #[arg(long)]
        to: String,
        /// Replace what the target already holds (by default a non-empty target is refused).
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PasswordsCommand {
    /// Measure argon2id on this machine and suggest ARGON2_* settings for a target time.
    Calibrate {
        /// The time one hash should take, in milliseconds.
        #[arg(long, default_value_t = 50)]
        target_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a client; prints its client_id and client_secret (shown only once).
    Create {
        #[arg(long)]
        name: String,
        /// Space-separated scopes: users:read and/or users:write.
        #[arg(long)]
        scope: String,
    },
    /// List clients (never their secrets).
    List,
    /// Delete a client; its tokens stop working at once.
    Delete { id: String },
    /// Give a client a new secret (printed once); the old one stops working.
    RotateSecret { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys: kid, algorithm, status, file.
    List,
    /// Add a new key: published in the JWKS at once, signing after KEY_PUBLISH_DELAY.
    Rotate {
        /// EdDSA (default), ES256 or RS256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
    },
    /// Stop publishing a key (renames its file to *.pem.retired).
    Retire {
        /// The key's `kid` (as `keys list` prints it). A kid is base64url and may begin
        /// with `-`: it is taken as the kid, not as an option.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Retire even though tokens it signed may still be valid.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
    },
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
    /// PostgreSQL URL (`postgres://user:pass@host/db`) of the store replicas share; unset:
    /// the file store in DATA_DIR.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Directory of PKCS#8 PEM signing keys; an Ed25519 key is generated if it has none.
    #[arg(long, env = "KEYS_DIR", default_value = "./keys", global = true)]
    pub keys_dir: PathBuf,
    /// Access-token lifetime, seconds.
    #[arg(long, env = "SESSION_DURATION", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400 * 365), global = true)]
    pub session_duration: u64,
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
        Cli::parse_from(["simple-api"]).config
    }

    /// Cross-field and semantic checks clap cannot express.
    /// DATABASE_URL, unless unset or empty.
    pub fn database(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
    }

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
        let err = Cli::try_parse_from(["simple-api", "--api-port", "abc"]).unwrap_err();
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
    fn a_kid_beginning_with_a_hyphen_is_a_kid() {
        for args in [
            ["simple-api", "keys", "retire", "-iQx9", "--force"],
            ["simple-api", "keys", "retire", "--force", "-iQx9"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            match cli.command {
                Some(Command::Keys(KeysCommand::Retire { kid, force })) => {
                    assert_eq!((kid.as_str(), force), ("-iQx9", true));
                }
                other => panic!("{other:?}"),
            }
        }
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
