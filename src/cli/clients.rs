//! `simple-api clients ...`: service clients for the client_credentials grant, with a
//! secret or (private_key_jwt) public keys.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::{audit, database};
use crate::auth::assertion::public_key_from_pem;
use crate::auth::clients::{generate_secret, hash_secret};
use crate::config::Config;
use crate::domain::{
    client_scopes, Client, ClientKeys, ClientName, Credential, RedirectUri, SignIn,
};
use crate::store::spool::{self, AdminChange, Applied};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a client; prints its client_id and client_secret (shown only once), or,
    /// with --public-key/--jwks, registers a private_key_jwt client, which has no secret;
    /// with --public, a browser or mobile app (no secret at all; PKCE binds its codes).
    Create {
        #[arg(long)]
        name: String,
        /// Space-separated scopes: users:read and/or users:write; a client with a
        /// --redirect-uri may also ask people for openid, profile, email, offline_access.
        #[arg(long)]
        scope: String,
        #[command(flatten)]
        keys: KeyFiles,
        #[command(flatten)]
        sign_in: SignInArgs,
    },
    /// List clients (never their secrets).
    List,
    /// Delete a client; its tokens stop working at once.
    Delete { id: String },
    /// Give a client a new secret (printed once); the old one and its tokens stop working.
    RotateSecret { id: String },
    /// Replace a private_key_jwt client's public keys (list the old and the new one to roll
    /// over); tokens issued before stop working, as with rotate-secret.
    SetKeys {
        id: String,
        #[command(flatten)]
        keys: KeyFiles,
    },
}

/// Where a private_key_jwt client's public keys come from.
#[derive(Debug, clap::Args)]
pub struct KeyFiles {
    /// A public key PEM (`openssl pkey -in key.pem -pubout`): Ed25519, P-256 or RSA of
    /// 2048+ bits. Repeat it to register several (a rollover).
    #[arg(long = "public-key", value_name = "FILE.pem", conflicts_with = "jwks")]
    public_keys: Vec<std::path::PathBuf>,
    /// A JWK Set (or a single JWK) with the client's public keys.
    #[arg(long, value_name = "FILE")]
    jwks: Option<std::path::PathBuf>,
}

/// Browser sign-in (authorization code flow) settings of a client.
#[derive(Debug, clap::Args)]
pub struct SignInArgs {
    /// Where people are sent back after signing in (repeatable): https, http to a loopback
    /// host, or a private-use scheme. Matched exactly, except that a loopback IP
    /// (127.0.0.1, [::1]) may use any port (RFC 8252 §7.3).
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send people afterwards (repeatable).
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    post_logout_redirect_uris: Vec<String>,
    /// A browser or mobile app that cannot keep a secret: none is made (token endpoint
    /// auth `none`); PKCE protects its codes. Needs --redirect-uri.
    #[arg(long, conflicts_with_all = ["public_keys", "jwks"], requires = "redirect_uris")]
    public: bool,
    /// The operator's own application: people are not asked to consent, and it gets a
    /// refresh token without asking for offline_access. Needs --redirect-uri.
    #[arg(long, requires = "redirect_uris")]
    first_party: bool,
}

impl SignInArgs {
    fn read(&self) -> anyhow::Result<SignIn> {
        let parse = |flag: &str, uris: &[String]| {
            uris.iter()
                .map(|u| RedirectUri::parse(u).map_err(|e| anyhow::anyhow!("{flag} {u}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        if !self.post_logout_redirect_uris.is_empty() && self.redirect_uris.is_empty() {
            anyhow::bail!(
                "--post-logout-redirect-uri needs --redirect-uri (a client that signs people in)"
            );
        }
        Ok(SignIn {
            redirect_uris: parse("--redirect-uri", &self.redirect_uris)?,
            post_logout_redirect_uris: parse(
                "--post-logout-redirect-uri",
                &self.post_logout_redirect_uris,
            )?,
            first_party: self.first_party,
        })
    }
}

impl KeyFiles {
    /// The keys named, `None` if none were.
    fn read(&self) -> anyhow::Result<Option<ClientKeys>> {
        if let Some(path) = &self.jwks {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--jwks {}", path.display()))?;
            let keys = ClientKeys::parse_jwks(&text)
                .with_context(|| format!("--jwks {}", path.display()))?;
            return Ok(Some(keys));
        }
        if self.public_keys.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        for path in &self.public_keys {
            let text =
                std::fs::read(path).with_context(|| format!("--public-key {}", path.display()))?;
            let key = public_key_from_pem(&text)
                .map_err(|e| anyhow::anyhow!("--public-key {}: {e}", path.display()))?;
            keys.push(key);
        }
        Ok(Some(ClientKeys::new(keys).context("--public-key")?))
    }
}

/// How a client authenticates, as RFC 8414/7591 name it, its key ids if it has keys, and
/// its browser sign-in settings if it has any.
fn described(client: &Client) -> serde_json::Value {
    let mut described = match &client.credential {
        Credential::Keys(keys) => json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "kids": keys.keys().iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        }),
        Credential::Secret(_) => json!({ "token_endpoint_auth_method": "client_secret_basic" }),
        Credential::Public => json!({ "token_endpoint_auth_method": "none" }),
    };
    let sign_in = &client.sign_in;
    if !sign_in.redirect_uris.is_empty() {
        fn uris(uris: &[RedirectUri]) -> Vec<&str> {
            uris.iter().map(|u| u.as_str()).collect()
        }
        described["redirect_uris"] = json!(uris(&sign_in.redirect_uris));
        described["post_logout_redirect_uris"] = json!(uris(&sign_in.post_logout_redirect_uris));
        described["first_party"] = json!(sign_in.first_party);
    }
    described
}

/// A JSON object with `extra`'s members added.
fn with(mut object: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(object), serde_json::Value::Object(extra)) = (object.as_object_mut(), extra) {
        object.extend(extra);
    }
    object
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
        ClientsCommand::Create {
            name,
            scope,
            keys,
            sign_in,
        } => {
            let name = ClientName::parse(&name).context("--name")?;
            let public = sign_in.public;
            let sign_in = sign_in.read()?;
            let scope = client_scopes(&scope, !sign_in.redirect_uris.is_empty())
                .map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let (credential, secret) = match keys.read()? {
                Some(keys) => (Credential::Keys(keys), None),
                None if public => (Credential::Public, None),
                None => {
                    let secret = generate_secret();
                    (Credential::Secret(hash_secret(&secret)), Some(secret))
                }
            };
            let now = crate::domain::now();
            let client = Client {
                id: uuid::Uuid::new_v4(),
                name,
                scope,
                credential,
                created_at: now,
                secret_rotated_at: now,
                sign_in,
            };
            apply(&config, AdminChange::PutClient(client.clone())).await?;
            let fields = with(
                json!({ "via": "cli", "scope": client.scope.to_string() }),
                described(&client),
            );
            audit(&config, "client_created", &client.id.to_string(), fields);
            let mut shown = json!({
                "client_id": client.id,
                "name": client.name.as_str(),
                "scope": client.scope.to_string(),
            });
            if let Some(secret) = &secret {
                shown["client_secret"] = json!(secret);
            }
            println!("{}", with(shown, described(&client)));
            if secret.is_some() {
                eprintln!("Store the client_secret now: it is not shown again.");
            }
        }
        ClientsCommand::List => {
            for c in read_clients(&config).await? {
                let listed = json!({ "client_id": c.id, "name": c.name.as_str(), "scope": c.scope.to_string(),
                            "created_at": c.created_at, "secret_rotated_at": c.secret_rotated_at });
                println!("{}", with(listed, described(&c)));
            }
        }
        ClientsCommand::SetKeys { id, keys } => {
            let mut client = find_client(&config, &id).await?;
            if client.keys().is_none() {
                anyhow::bail!(
                    "client {} authenticates with a secret; register a new client for private_key_jwt",
                    client.id
                );
            }
            let keys = keys
                .read()?
                .ok_or_else(|| anyhow::anyhow!("give the new keys with --public-key or --jwks"))?;
            client.credential = Credential::Keys(keys);
            client.secret_rotated_at = crate::domain::now();
            apply(&config, AdminChange::PutClient(client.clone())).await?;
            let fields = with(json!({ "via": "cli" }), described(&client));
            audit(
                &config,
                "client_keys_replaced",
                &client.id.to_string(),
                fields,
            );
            println!(
                "{}",
                with(json!({ "client_id": client.id }), described(&client))
            );
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
            match client.credential {
                Credential::Keys(_) => anyhow::bail!(
                    "client {} has no secret: it signs assertions with its keys (clients set-keys replaces them)",
                    client.id
                ),
                Credential::Public => anyhow::bail!(
                    "client {} is public: it has no secret to rotate",
                    client.id
                ),
                Credential::Secret(_) => {}
            }
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
