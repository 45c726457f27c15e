//! Subcommands other than `serve`.

use std::io::Read;

use anyhow::Context;
use secrecy::SecretString;

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::auth::clients::generate_secret;
use crate::auth::keys::{self, KeyAlgorithm, KeySet, KeyStatus};
use crate::auth::PasswordHasher;
use crate::config::StoreCommand;
use crate::config::{ClientsCommand, Config, KeysCommand, PasswordsCommand, UsersCommand};
use crate::domain::{client_scopes, Client, ClientName, PersonName, Role};
use crate::startup::AppState;
use crate::store::postgres::{self, PgStore};
use crate::store::spool::{self, AdminChange, Applied};
use crate::store::Store;

/// `simple-api users ...`: works on the store directly: on DATA_DIR the server must not be
/// running (the store's lock says so clearly if it is); on DATABASE_URL it may.
pub async fn users(config: Config, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            email,
            admin,
            first_name,
            last_name,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            // One trailing newline is the terminal's, not the password's.
            let password = password.strip_suffix('\n').unwrap_or(&password);
            let password = password.strip_suffix('\r').unwrap_or(password);
            let state = AppState::open(config).await?;
            let role = if admin { Role::Admin } else { Role::User };
            let user = state
                .create_user(&email, SecretString::from(password), role)
                .await?;
            let first = first_name
                .map(|n| PersonName::parse(&n, "first_name"))
                .transpose()?
                .flatten();
            let last = last_name
                .map(|n| PersonName::parse(&n, "last_name"))
                .transpose()?
                .flatten();
            if first.is_some() || last.is_some() {
                state
                    .store
                    .update_user(
                        user.id,
                        Box::new(move |u| {
                            u.first_name = first;
                            u.last_name = last;
                        }),
                    )
                    .await?;
            }
            println!(
                "{}",
                serde_json::json!({ "id": user.id, "email": user.email.as_str(), "role": role.as_str() })
            );
            Ok(())
        }
    }
}

/// How long the CLI waits for a running server to take a spooled change.
const SPOOL_WAIT: Duration = Duration::from_secs(15);

/// Records an operator's action in the audit log, like the server does for API calls.
fn audit(config: &Config, event: &str, subject: &str, fields: serde_json::Value) {
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

fn hasher(config: &Config) -> anyhow::Result<PasswordHasher> {
    Ok(PasswordHasher::new(
        config.argon2_m_kib,
        config.argon2_t,
        config.argon2_p,
        1,
    )?)
}

/// The PostgreSQL store, when DATABASE_URL names one: the CLI then works on the shared
/// database directly, and every replica sees the change at once (clients are not cached).
async fn database(config: &Config) -> anyhow::Result<Option<PgStore>> {
    match config.database() {
        Some(url) => Ok(Some(
            PgStore::open_unlisted(url)
                .await
                .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?,
        )),
        None => Ok(None),
    }
}

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
                secret_hash: hasher(&config)?
                    .hash(&SecretString::from(secret.clone()))
                    .await?,
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
            client.secret_hash = hasher(&config)?
                .hash(&SecretString::from(secret.clone()))
                .await?;
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

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `simple-api keys ...`: works on KEYS_DIR files; a running server notices within seconds
/// (or at once on SIGHUP).
pub fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let delay = Duration::from_secs(config.key_publish_delay);
    let dir = &config.keys_dir;
    match command {
        KeysCommand::List => {
            let set = KeySet::load(dir, delay)?;
            let now = SystemTime::now();
            for key in set.keys() {
                let status = match set.status(key, now) {
                    KeyStatus::Next => "next",
                    KeyStatus::Signing => "signing",
                    KeyStatus::Previous => "previous",
                };
                println!(
                    "{}",
                    json!({ "kid": key.kid, "alg": key.jwk.alg, "status": status,
                            "published_at": rfc3339(key.modified),
                            "signs_from": rfc3339(key.modified + delay),
                            "file": key.path.display().to_string() })
                );
            }
        }
        KeysCommand::Rotate { alg } => {
            let algorithm = KeyAlgorithm::parse(&alg).ok_or_else(|| {
                anyhow::anyhow!("--alg: expected EdDSA, ES256 or RS256, got {alg}")
            })?;
            let path = keys::generate(dir, algorithm)?;
            let set = KeySet::load(dir, delay)?;
            let key = set
                .keys()
                .iter()
                .find(|k| k.path == path)
                .context("the new key did not load")?;
            audit(
                &config,
                "key_rotated",
                &key.kid,
                json!({ "via": "cli", "alg": key.jwk.alg }),
            );
            println!(
                "{}",
                json!({ "kid": key.kid, "alg": key.jwk.alg, "file": path.display().to_string(),
                        "published_at": rfc3339(key.modified),
                        "signs_from": rfc3339(key.modified + delay) })
            );
        }
        KeysCommand::Retire { kid, force } => {
            let set = KeySet::load(dir, delay)?;
            let ttl = Duration::from_secs(config.session_duration);
            let retired = set.retire(&kid, ttl, force)?;
            audit(
                &config,
                "key_retired",
                &kid,
                json!({ "via": "cli", "forced": force }),
            );
            println!(
                "{}",
                json!({ "retired": kid, "file": retired.display().to_string() })
            );
        }
    }
    Ok(())
}

/// `simple-api passwords calibrate`: keeps the OWASP memory cost (19 MiB) or more and finds
/// the passes that reach the target time on this machine; raises memory when even ten
/// passes are faster than the target. Also reports what one hash costs with the current
/// ARGON2_* settings (the benchmarks' single-hash baseline).
pub fn passwords(config: &Config, command: PasswordsCommand) -> anyhow::Result<()> {
    let PasswordsCommand::Calibrate { target_ms } = command;
    let target = Duration::from_millis(target_ms.max(1));
    let time_lanes = |m: u32, t: u32, p: u32| -> anyhow::Result<Duration> {
        let params = argon2::Params::new(m, t, p, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        let mut best = Duration::MAX;
        // The best of three: the machine's speed, not its neighbours' noise.
        for _ in 0..3 {
            let started = std::time::Instant::now();
            argon
                .hash_password_into(b"calibration password", b"calibration salt", &mut out)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            best = best.min(started.elapsed());
        }
        Ok(best)
    };
    let time = |m: u32, t: u32| time_lanes(m, t, 1);
    let current = time_lanes(config.argon2_m_kib, config.argon2_t, config.argon2_p)?;
    let mut m = 19_456;
    let mut t = 1;
    let mut took = time(m, t)?;
    while took < target && t < 10 {
        t += 1;
        took = time(m, t)?;
    }
    while took < target && m < 1_048_576 {
        m *= 2;
        took = time(m, t)?;
    }
    println!(
        "{}",
        json!({
            "ARGON2_M_KIB": m, "ARGON2_T": t, "ARGON2_P": 1,
            "measured_ms": took.as_secs_f64() * 1000.0, "target_ms": target_ms,
            "current_ms": current.as_secs_f64() * 1000.0,
            "note": "each concurrent hash holds ARGON2_M_KIB of memory; at most one per core runs at once"
        })
    );
    Ok(())
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
            let source = crate::startup::open_file_store(config)?;
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
