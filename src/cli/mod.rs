//! The command line: its grammar (`Cli`, `Command`, and each subcommand's enum beside
//! its handler in this folder) and the dispatch from a parsed command line to the server
//! (`serve`, the default) or to a command that works on the store, keys or hashes.

mod clients;
mod keys;
mod passwords;
mod store;
mod users;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::Application;
use crate::store::postgres::PgStore;

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
    Users(users::UsersCommand),
    /// Manage service clients (client_credentials). Works while the server runs.
    #[command(subcommand)]
    Clients(clients::ClientsCommand),
    /// Manage signing keys in KEYS_DIR. Works while the server runs.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Password hashing tools.
    #[command(subcommand)]
    Passwords(passwords::PasswordsCommand),
    /// Print the OpenAPI document (JSON).
    Openapi,
    /// Apply the PostgreSQL schema migrations to DATABASE_URL (safe to run at any time,
    /// and from several places at once: they take a lock and skip what is applied).
    Migrate,
    /// Move between stores.
    #[command(subcommand)]
    Store(store::StoreCommand),
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Users(cmd) => users::users(cli.config, cmd).await,
        Command::Clients(cmd) => clients::clients(cli.config, cmd).await,
        Command::Keys(cmd) => keys::keys(cli.config, cmd),
        Command::Passwords(cmd) => passwords::passwords(&cli.config, cmd),
        Command::Migrate => store::migrate(&cli.config).await,
        Command::Store(cmd) => store::store(&cli.config, cmd).await,
        Command::Openapi => {
            print!("{}", crate::api::spec_json());
            Ok(())
        }
    }
}

/// Serves until SIGTERM or Ctrl-C, then drains.
async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = crate::startup::shutdown_signal()?;
    let app = Application::build(config).await?;
    app.run_until(shutdown).await?;
    Ok(())
}

/// Records an operator's action in the audit log, like the server does for API calls.
pub(super) fn audit(config: &Config, event: &str, subject: &str, fields: serde_json::Value) {
    let path = config
        .audit_log
        .clone()
        .unwrap_or_else(|| config.data_dir.join("audit.log"));
    match crate::audit::Audit::open(&path, config.audit_log.is_none()) {
        Ok(log) => log.record(
            event,
            Some(subject),
            &crate::audit::Context::default(),
            fields,
        ),
        Err(e) => eprintln!(
            "warning: cannot write the audit log {}: {e}",
            path.display()
        ),
    }
}

/// The PostgreSQL store, when DATABASE_URL names one: the CLI then works on the shared
/// database directly, and every replica sees the change at once (clients are not cached).
pub(super) async fn database(config: &Config) -> anyhow::Result<Option<PgStore>> {
    match config.database() {
        Some(url) => Ok(Some(
            PgStore::open_unlisted(url)
                .await
                .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?,
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kid_beginning_with_a_hyphen_is_a_kid() {
        for args in [
            ["simple-api", "keys", "retire", "-iQx9", "--force"],
            ["simple-api", "keys", "retire", "--force", "-iQx9"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            match cli.command {
                Some(Command::Keys(keys::KeysCommand::Retire { kid, force })) => {
                    assert_eq!((kid.as_str(), force), ("-iQx9", true));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
