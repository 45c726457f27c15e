//! `simple-api clients ...`: service clients for the client_credentials grant.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::{audit, database};
use crate::auth::clients::{generate_secret, hash_secret};
use crate::config::Config;
use crate::domain::{client_scopes, Client, ClientName, Credential};
use crate::store::spool::{self, AdminChange, Applied};
use crate::store::Store;

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

/// How long the CLI waits for a running server to take a spooled change.
const SPOOL_WAIT: Duration = Duration::from_secs(15);

async fn apply(config: &Config, change: AdminChange) -> anyhow::Result<()> {
    if let Some(db) = database(config).await? {
        match change {
            AdminChange::PutClient(client) => db.put_client(client).await?,
            AdminChange::DeleteClient(id) => {
                db.delete_client(id).await?;
            }
        }
        return Ok(());
    }
    match spool::apply(&config.data_dir, change, SPOOL_WAIT).await? {
        Applied::Done => Ok(()),
        Applied::Queued(path) => {
            eprintln!(
                "note: the running server has not applied the change yet; it is saved in {} and \
                 will be applied at its next reload (send it SIGHUP)",
                path.display()
            );
            Ok(())
        }
    }
}

async fn read_clients(config: &Config) -> anyhow::Result<Vec<Client>> {
    match database(config).await? {
        Some(db) => Ok(db.list_clients().await?),
        None => Ok(spool::read_clients(&config.data_dir)?),
    }
}

async fn find_client(config: &Config, id: &str) -> anyhow::Result<Client> {
    let id = uuid::Uuid::parse_str(id).context("client id")?;
    read_clients(config)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| anyhow::anyhow!("no client with id {id}"))
}

/// `simple-api clients ...`: on the shared database (DATABASE_URL), or directly on
/// DATA_DIR, or through the running server's spool.
pub async fn clients(config: Config, command: ClientsCommand) -> anyhow::Result<()> {
    match command {
        ClientsCommand::Create { name, scope } => {
            let name = ClientName::parse(&name).context("--name")?;
            let scope = client_scopes(&scope).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let secret = generate_secret();
            let now = crate::domain::now();
            let client = Client {
                id: uuid::Uuid::new_v4(),
                name,
                scope,
                credential: Credential::Secret(hash_secret(&secret)),
                created_at: now,
                secret_rotated_at: now,
            };
            apply(&config, AdminChange::PutClient(client.clone())).await?;
            let fields = json!({ "via": "cli", "scope": client.scope.to_string() });
            audit(&config, "client_created", &client.id.to_string(), fields);
            println!(
                "{}",
                json!({
                    "client_id": client.id,
                    "client_secret": secret,
                    "name": client.name.as_str(),
                    "scope": client.scope.to_string(),
                })
            );
            eprintln!("Store the client_secret now: it is not shown again.");
        }
        ClientsCommand::List => {
            for c in read_clients(&config).await? {
                println!(
                    "{}",
                    json!({ "client_id": c.id, "name": c.name.as_str(), "scope": c.scope.to_string(),
                            "created_at": c.created_at, "secret_rotated_at": c.secret_rotated_at })
                );
            }
        }
        ClientsCommand::Delete { id } => {
            let client = find_client(&config, &id).await?;
            apply(&config, AdminChange::DeleteClient(client.id)).await?;
            audit(
                &config,
                "client_deleted",
                &client.id.to_string(),
                json!({ "via": "cli" }),
            );
            println!("{}", json!({ "deleted": client.id }));
        }
        ClientsCommand::RotateSecret { id } => {
            let mut client = find_client(&config, &id).await?;
            let secret = generate_secret();
            client.credential = Credential::Secret(hash_secret(&secret));
            client.secret_rotated_at = crate::domain::now();
            apply(&config, AdminChange::PutClient(client.clone())).await?;
            audit(
                &config,
                "client_secret_rotated",
                &client.id.to_string(),
                json!({ "via": "cli" }),
            );
            println!(
                "{}",
                json!({ "client_id": client.id, "client_secret": secret })
            );
            eprintln!("Store the client_secret now: it is not shown again.");
        }
    }
    Ok(())
}
