//! `simple-api migrate` and `simple-api store ...`: the PostgreSQL schema, and moving
//! between stores.

use clap::Subcommand;
use serde_json::json;

use crate::config::Config;
use crate::service::open_file_store;
use crate::store::postgres::{self, PgStore};

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

/// `simple-api migrate`: brings DATABASE_URL's schema up to this build's version and
/// prints what it applied (JSON).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.database().ok_or_else(|| {
        anyhow::anyhow!("DATABASE_URL is not set: migrations are for the PostgreSQL store")
    })?;
    let mut client = crate::store::postgres::connect(url).await?;
    let applied = crate::store::postgres::migrate(&mut client).await?;
    let version = crate::store::postgres::MIGRATIONS
        .last()
        .map_or(0, |m| m.version);
    println!(
        "{}",
        json!({ "applied": applied, "schema_version": version })
    );
    Ok(())
}

/// `simple-api store copy --to postgres://…`: the file store in DATA_DIR into PostgreSQL.
pub async fn store(config: &Config, command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy { to, overwrite } => {
            if !crate::config::is_postgres_url(&to) {
                anyhow::bail!("--to: must be a postgres:// or postgresql:// URL");
            }
            let source = open_file_store(config)?;
            let target = PgStore::open_unlisted(&to)
                .await
                .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            let report = postgres::copy_into(&target, &source.export(), overwrite).await?;
            println!("{}", serde_json::to_string(&report)?);
            eprintln!(
                "Copied. Point DATABASE_URL at the database to use it; DATA_DIR is left as it was."
            );
            Ok(())
        }
    }
}
