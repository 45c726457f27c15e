//! `AppState`: everything a request handler or a CLI command needs, opened once from the
//! configuration, and its upkeep (key reloads, the CLI's spooled changes).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;

use super::Mailer;
use crate::audit::Audit;
use crate::auth::assertion::AssertionHistory;
use crate::auth::clients::RecentSecrets;
use crate::auth::passkeys::RelyingParty;
use crate::auth::throttle::{LoginThrottle, Throttle};
use crate::auth::totp::SealKey;
use crate::auth::{KeySet, PasswordHasher, TokenService};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::postgres::PgStore;
use crate::store::{FileStore, FileStoreOptions, Store, StoreError};

/// Everything a request handler needs, shared by all of them.
pub struct AppState {
    pub config: Config,
    /// PUBLIC_URL, or the address actually bound.
    pub public_url: String,
    pub store: Arc<dyn Store>,
    pub tokens: TokenService,
    pub passwords: PasswordHasher,
    pub throttle: LoginThrottle,
    /// Client secrets verified right in the last few seconds.
    pub recent_client_secrets: RecentSecrets,
    /// Refused client assertions per address, in this process (see
    /// `authenticate_client_assertion`).
    pub assertion_failures: Throttle,
    /// Used assertions each client has remembered, from this process (MAX_CLIENT_ASSERTIONS).
    pub assertion_history: AssertionHistory,
    pub audit: Audit,
    pub metrics: Metrics,
    /// Seals TOTP secrets at rest (KEYS_DIR/mfa-seal.key); `None` when KEYS_DIR has none
    /// and cannot be written (a read-only mount): TOTP is then unavailable, the rest works.
    pub seal: Option<SealKey>,
    /// The WebAuthn relying party (PUBLIC_URL's host); `None` when PUBLIC_URL's host is an
    /// IP address, which browsers refuse as an RP id: passkeys are then unavailable.
    pub passkeys: Option<RelyingParty>,
    /// Where mail goes (SMTP_URL, or DATA_DIR/outbox) and the delivery worker's wake-up.
    pub mailer: Mailer,
    /// Messages sent per account and address: MAIL_LIMIT_MINUTE a minute and
    /// MAIL_LIMIT_DAY a day (shared by replicas on PostgreSQL).
    pub mail_limits: [LoginThrottle; 2],
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
        let seal = match SealKey::load_or_generate(&config.keys_dir) {
            Ok(seal) => Some(seal),
            Err(error) => {
                tracing::warn!(%error, "no key to seal TOTP secrets with (KEYS_DIR/mfa-seal.key): TOTP enrolment and codes are unavailable until there is one");
                None
            }
        };
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
            .with_context(|| format!("AUDIT_LOG: cannot open {}", audit_path.display()))?
            .repeats_within(Duration::from_secs(config.login_window));
        let throttle = LoginThrottle::new(
            Throttle::new(
                config.login_max_failures,
                Duration::from_secs(config.login_window),
            ),
            &store,
        );
        let assertion_failures = Throttle::new(
            config.login_max_failures,
            Duration::from_secs(config.login_window),
        );
        let assertion_history = AssertionHistory::new(config.max_client_assertions);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let passwords = PasswordHasher::with_queue(
            config.argon2_m_kib,
            config.argon2_t,
            config.argon2_p,
            cores,
            config.argon2_queue,
        )
        .map_err(|e| anyhow::anyhow!("ARGON2_M_KIB/ARGON2_T/ARGON2_P: {e}"))?;
        let public_url = config.public_url(config.api_port);
        let passkeys = match RelyingParty::new(&public_url, &config.service_name) {
            Ok(rp) => Some(rp),
            Err(reason) => {
                tracing::info!(%reason, "passkeys are unavailable");
                None
            }
        };
        let transport = crate::mail::Transport::new(config.smtp_url.as_deref(), &config.data_dir)
            .map_err(|e| anyhow::anyhow!(e))?;
        // From PUBLIC_URL's host, which binding port 0 later does not change.
        let from = crate::mail::sender(
            config.mail_from.as_deref(),
            &public_url,
            &config.service_name,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let mail_limits = [
            LoginThrottle::namespaced(
                Throttle::new(config.mail_limit_minute, Duration::from_secs(60)),
                &store,
                "mail-minute:",
            ),
            LoginThrottle::namespaced(
                Throttle::new(config.mail_limit_day, Duration::from_secs(86_400)),
                &store,
                "mail-day:",
            ),
        ];
        Ok(Self {
            public_url,
            passkeys,
            mailer: Mailer::new(transport, from),
            mail_limits,
            config,
            store,
            tokens,
            passwords,
            throttle,
            recent_client_secrets: RecentSecrets::new(super::RECENT_SECRET_TTL),
            assertion_failures,
            assertion_history,
            audit,
            metrics: Metrics::default(),
            seal,
        })
    }

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

    /// REFRESH_TOKEN_TTL as a duration.
    pub(super) fn refresh_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.config.refresh_token_ttl.min(i64::MAX as u64 / 1000) as i64)
    }
}

/// The file store in DATA_DIR, with errors that name it.
pub fn open_file_store(config: &Config) -> anyhow::Result<FileStore> {
    FileStore::open(&config.data_dir, FileStoreOptions::default()).map_err(|e| match e {
        StoreError::Locked(_) | StoreError::Corrupt { .. } => anyhow::anyhow!("DATA_DIR: {e}"),
        other => anyhow::anyhow!("DATA_DIR {}: {other}", config.data_dir.display()),
    })
}
