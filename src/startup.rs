//! Builds the application from a Config: the same code path for `main` and the tests.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Server};
use secrecy::SecretString;

use serde_json::json;

use crate::api;
use crate::audit::{self, Audit};
use crate::auth::throttle::{LoginThrottle, Throttle};
use crate::auth::{KeySet, PasswordHasher, TokenService};
use crate::config::Config;
use crate::domain::{Email, NewPassword, Role, User};
use crate::metrics::Metrics;
use crate::slowloris::HeaderDeadlineAcceptor;
use crate::store::postgres::PgStore;
use crate::store::{FileStore, FileStoreOptions, Store, StoreError};

/// The outcome of a password login.
pub enum Login {
    Ok(User),
    /// Unknown email or wrong password: the caller cannot tell which.
    Invalid,
    /// Too many recent failures for the account or the address: retry after this long.
    Throttled(Duration),
}

/// Why a credential check could not be answered (not: why it failed).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] crate::auth::PasswordError),
}

/// Everything a request handler needs, shared by all of them.
pub struct AppState {
    pub config: Config,
    /// PUBLIC_URL, or the address actually bound.
    pub public_url: String,
    pub store: Arc<dyn Store>,
    pub tokens: TokenService,
    pub passwords: PasswordHasher,
    pub throttle: LoginThrottle,
    pub audit: Audit,
    pub metrics: Metrics,
}

impl AppState {
    /// Opens the store, loads (or generates) the keys and prepares the password hasher.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = match config.database() {
            Some(url) => Arc::new(
                PgStore::open(url)
                    .await
                    .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?,
            ),
            None => Arc::new(open_file_store(&config)?),
        };
        let keys = KeySet::load_or_generate(
            &config.keys_dir,
            Duration::from_secs(config.key_publish_delay),
        )
        .map_err(|e| anyhow::anyhow!("KEYS_DIR: {e}"))?;
        let tokens = TokenService::new(
            Arc::new(RwLock::new(keys)),
            config.jwt_issuer.clone(),
            config.jwt_audience.clone(),
            config.session_ttl(),
        );
        let audit_path = config
            .audit_log
            .clone()
            .unwrap_or_else(|| config.data_dir.join("audit.log"));
        let audit = Audit::open(&audit_path, config.audit_log.is_none())
            .with_context(|| format!("AUDIT_LOG: cannot open {}", audit_path.display()))?;
        let throttle = LoginThrottle::new(
            Throttle::new(
                config.login_max_failures,
                Duration::from_secs(config.login_window),
            ),
            &store,
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let passwords = PasswordHasher::with_queue(
            config.argon2_m_kib,
            config.argon2_t,
            config.argon2_p,
            cores,
            config.argon2_queue,
        )
        .map_err(|e| anyhow::anyhow!("ARGON2_M_KIB/ARGON2_T/ARGON2_P: {e}"))?;
        Ok(Self {
            public_url: config.public_url(config.api_port),
            config,
            store,
            tokens,
            passwords,
            throttle,
            audit,
            metrics: Metrics::default(),
        })
    }

    /// A password login (token endpoint or cookie), throttled per account and address
    /// before any hash is computed. Unknown emails are verified against a dummy hash: the
    /// same answer in the same time, so logins reveal nothing about which accounts exist.
    /// Records the attempt in the metrics and the audit log (`via`: the grant).
    pub async fn login(
        &self,
        email: &str,
        password: &SecretString,
        ctx: &audit::Context,
        via: &'static str,
    ) -> Result<Login, CredentialError> {
        let address = ctx.client_ip.as_deref().and_then(|ip| ip.parse().ok());
        if let Some(wait) = self.throttle.check(email, address).await? {
            self.metrics.login("throttled");
            self.audit
                .record("login_throttled", Some(email), ctx, json!({ "via": via }));
            return Ok(Login::Throttled(wait));
        }
        let user = self.store.user_by_email(email).await?;
        let hash = user.as_ref().map(|u| u.password_hash.as_str());
        let verified = self.passwords.verify(hash, password).await?;
        // A hash made with older (cheaper) parameters would answer faster than the dummy
        // hash of unknown accounts: pay the current price too, so timing tells nothing.
        if !verified && hash.is_some_and(|h| self.passwords.needs_rehash(h)) {
            self.passwords.verify(None, password).await?;
        }
        match user.filter(|_| verified) {
            Some(user) => {
                self.throttle.record_success(email).await?;
                self.metrics.login("ok");
                let subject = user.id.to_string();
                self.audit
                    .record("login_ok", Some(&subject), ctx, json!({ "via": via }));
                Ok(Login::Ok(user))
            }
            None => {
                self.throttle.record_failure(email, address).await?;
                self.metrics.login("failed");
                self.audit
                    .record("login_failed", Some(email), ctx, json!({ "via": via }));
                Ok(Login::Invalid)
            }
        }
    }

    /// Creates a user from plain inputs (CLI and ADMIN_EMAIL bootstrap).
    pub async fn create_user(
        &self,
        email: &str,
        password: SecretString,
        role: Role,
    ) -> anyhow::Result<User> {
        let email = Email::parse(email).context("email")?;
        let password = NewPassword::parse(password).context("password")?;
        let hash = self.passwords.hash(password.secret()).await?;
        let user = User::new(email, hash, role, None, None);
        self.store.create_user(user.clone()).await?;
        Ok(user)
    }

    /// ADMIN_EMAIL/ADMIN_PASSWORD: create the admin if missing. An existing account with
    /// that email is promoted only if ADMIN_PASSWORD is its password: with open sign-up,
    /// anyone could have registered that email first. Its password is never overwritten
    /// from the environment (changing it stays an explicit act).
    async fn ensure_admin(&self) -> anyhow::Result<()> {
        let (Some(email), Some(password)) = (&self.config.admin_email, &self.config.admin_password)
        else {
            return Ok(());
        };
        match self.store.user_by_email(email).await? {
            Some(user) if user.role == Role::Admin => {}
            Some(user) => {
                let password = SecretString::from(password.clone());
                if !self
                    .passwords
                    .verify(Some(&user.password_hash), &password)
                    .await?
                {
                    anyhow::bail!(
                        "ADMIN_EMAIL: an account with this email exists and ADMIN_PASSWORD is not its \
                         password; refusing to promote it (log in as that account and change its \
                         password, or choose another ADMIN_EMAIL)"
                    );
                }
                self.store
                    .update_user(
                        user.id,
                        Box::new(|u| {
                            u.role = Role::Admin;
                            u.updated_at = crate::domain::now();
                        }),
                    )
                    .await?;
                tracing::info!(user_id = %user.id, "ADMIN_EMAIL account promoted to admin");
            }
            None => {
                let user = self
                    .create_user(email, SecretString::from(password.clone()), Role::Admin)
                    .await
                    .context("ADMIN_EMAIL/ADMIN_PASSWORD")?;
                tracing::info!(user_id = %user.id, "ADMIN_EMAIL account created");
            }
        }
        Ok(())
    }
}

/// The file store in DATA_DIR, with errors that name it.
pub fn open_file_store(config: &Config) -> anyhow::Result<FileStore> {
    FileStore::open(&config.data_dir, FileStoreOptions::default()).map_err(|e| match e {
        StoreError::Locked(_) | StoreError::Corrupt { .. } => anyhow::anyhow!("DATA_DIR: {e}"),
        other => anyhow::anyhow!("DATA_DIR {}: {other}", config.data_dir.display()),
    })
}

/// A bound, ready-to-run server.
pub struct Application {
    addr: SocketAddr,
    state: Arc<AppState>,
    acceptor: poem::listener::TcpAcceptor,
}

impl Application {
    /// Opens everything and binds the port (0 picks a free one), failing with a message
    /// that names the variable at fault.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let addr = SocketAddr::new(config.api_host, config.api_port);
        // Bind first: a taken port must fail before anything is written to disk.
        let acceptor = TcpListener::bind(addr)
            .into_acceptor()
            .await
            .with_context(|| format!("API_HOST/API_PORT: cannot listen on {addr}"))?;
        let bound = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("API_PORT: the listener has no address")?;
        let mut state = AppState::open(config).await?;
        state.public_url = state.config.public_url(bound.port());
        let state = Arc::new(state);
        state.ensure_admin().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("API_PORT: the listener has no address")?;
        Ok(Self {
            addr,
            state,
            acceptor,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        tracing::info!(address = %self.addr, "simple-api listening");
        let maintenance = tokio::spawn(maintain(self.state.clone()));
        let app = api::routes(self.state.clone()).boxed();
        // Idle or trickling connections are closed rather than held forever.
        let header_timeout = Duration::from_secs(self.state.config.header_timeout);
        let acceptor = HeaderDeadlineAcceptor::new(self.acceptor, header_timeout);
        let result = Server::new_with_acceptor(acceptor)
            .idle_timeout(Duration::from_secs(60))
            .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(10)))
            .await;
        maintenance.abort();
        result
    }
}

/// How often expired sessions and revocations are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Background upkeep: picks up key changes and CLI changes without a restart, and keeps
/// memory to live state.
async fn maintain(state: Arc<AppState>) {
    let mut reload = tokio::time::interval(Duration::from_secs(state.config.reload_interval));
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = reload.tick() => state.reload().await,
            _ = hup => {
                tracing::info!("SIGHUP: reloading keys and admin changes");
                state.reload().await;
            }
            _ = prune.tick() => match state.store.prune(crate::domain::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(pruned = n, "expired sessions and revocations pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning failed"),
            },
        }
    }
}

impl AppState {
    /// Reloads KEYS_DIR if its files changed (a bad new file is logged and ignored: the
    /// running key set stays), and applies admin changes spooled by the CLI.
    pub async fn reload(&self) {
        let dir = &self.config.keys_dir;
        let stale = self
            .tokens
            .keys()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_stale(dir);
        if stale {
            match KeySet::load(dir, Duration::from_secs(self.config.key_publish_delay)) {
                Ok(keys) => {
                    let kids: Vec<String> = keys.keys().iter().map(|k| k.kid.clone()).collect();
                    self.tokens.replace_keys(keys);
                    tracing::info!(?kids, "signing keys reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "KEYS_DIR changed but cannot be loaded; keeping the current keys")
                }
            }
        }
        match self.store.apply_spool().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(changes = n, "applied admin changes from the CLI"),
            Err(e) => tracing::error!(error = %e, "applying spooled admin changes failed"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C, for a graceful shutdown. The handlers are installed
/// now, not when the future is first polled: a SIGTERM that arrives just after the port
/// answers must still drain, not kill the process.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    })
}
