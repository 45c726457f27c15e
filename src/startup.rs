//! The server's life: builds the application from a Config (the same code path for
//! `main` and the tests), serves it, keeps it up to date in the background and drains it
//! on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Server};

use crate::api;
use crate::config::Config;
use crate::header_deadline::HeaderDeadlineAcceptor;
use crate::service::AppState;

/// OpenID relying parties require the issuer to be the URL they discover from: a
/// JWT_ISSUER that is not one works for everything but them, so say so at start when
/// clients that sign people in are registered.
async fn warn_if_issuer_is_not_a_url(state: &AppState) {
    let issuer = &state.config.jwt_issuer;
    if issuer.starts_with("https://") || issuer.starts_with("http://") {
        return;
    }
    match state.store.list_clients().await {
        Ok(clients) => {
            let browser = clients
                .iter()
                .filter(|c| !c.sign_in.redirect_uris.is_empty())
                .count();
            if browser > 0 {
                tracing::warn!(
                    jwt_issuer = %issuer,
                    public_url = %state.public_url,
                    clients = browser,
                    "clients with redirect URIs are registered but JWT_ISSUER is not a URL: \
                     OpenID Connect relying parties will refuse this issuer; set JWT_ISSUER to PUBLIC_URL"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list clients to check JWT_ISSUER"),
    }
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
        warn_if_issuer_is_not_a_url(&state).await;
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
        let mail = tokio::spawn(crate::service::run_mail_worker(self.state.clone()));
        let app = api::routes(self.state.clone()).boxed();
        // Idle or trickling connections are closed rather than held forever.
        let header_timeout = Duration::from_secs(self.state.config.header_timeout);
        let acceptor = HeaderDeadlineAcceptor::new(self.acceptor, header_timeout);
        let result = Server::new_with_acceptor(acceptor)
            .idle_timeout(Duration::from_secs(60))
            .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(10)))
            .await;
        maintenance.abort();
        // A delivery cut short is retried when its lease ends (here or on another replica).
        mail.abort();
        if let Err(error) = self.state.store.flush().await {
            tracing::error!(%error, "could not write the store's last changes at shutdown");
        }
        result
    }
}

/// How often expired sessions, revocations and used assertions are forgotten (in the
/// store, and in the per-client count of used assertions).
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
            _ = prune.tick() => {
                state.assertion_history.sweep(crate::domain::now());
                match state.store.prune(crate::domain::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(pruned = n, "expired sessions and revocations pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning failed"),
                }
            }
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
