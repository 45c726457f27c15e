//! The PostgreSQL store (issue #9), for replicas sharing one database. So far: the schema,
//! its migrations, users, clients and revoked token ids. `serve` still refuses DATABASE_URL until the store behind
//! the `Store` trait is complete.

mod clients;
mod migrations;
mod users;

pub use migrations::{migrate, Migration, MIGRATIONS};
pub use users::PgStore;

use std::time::Duration;

use super::StoreError;

/// Connects to `url` (`postgres://…`). Plain TCP or a Unix socket for now: no TLS yet.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Database {
        context: "DATABASE_URL".into(),
        reason: format!("not a PostgreSQL URL: {e}"),
    })?;
    // Never hang on an unreachable database: without its own timeout, 5 s.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(database("connect to DATABASE_URL"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Maps a driver error to `StoreError::Database`, naming what was being done. The
/// driver's message carries PostgreSQL's own (e.g. the constraint), never parameters.
pub fn database(context: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Database {
        context: context.to_owned(),
        reason: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_owned()),
    }
}
