//! `simple-api keys ...`: signing keys in KEYS_DIR.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::json;

use super::audit;
use crate::auth::keys::{self, KeyAlgorithm, KeySet, KeyStatus};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys: kid, algorithm, what they sign (access or ID tokens), status, file.
    List,
    /// Add a new key: published in the JWKS at once, signing after KEY_PUBLISH_DELAY.
    /// Rotates the access-token key, or with --id-token the RSA key of ID tokens.
    Rotate {
        /// EdDSA (default), ES256 or RS256.
        #[arg(long, default_value = "EdDSA", conflicts_with = "id_token")]
        alg: String,
        /// Rotate the key that signs OpenID Connect ID tokens (always RS256) instead.
        #[arg(long)]
        id_token: bool,
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
                    json!({ "kid": key.kid, "alg": key.jwk.alg, "signs": key.purpose.as_str(), "status": status,
                            "published_at": rfc3339(key.modified),
                            "signs_from": rfc3339(key.modified + delay),
                            "file": key.path.display().to_string() })
                );
            }
        }
        KeysCommand::Rotate { alg, id_token } => {
            let path = if id_token {
                keys::generate_id_token_key(dir)?
            } else {
                let algorithm = KeyAlgorithm::parse(&alg).ok_or_else(|| {
                    anyhow::anyhow!("--alg: expected EdDSA, ES256 or RS256, got {alg}")
                })?;
                keys::generate(dir, algorithm)?
            };
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
                json!({ "via": "cli", "alg": key.jwk.alg, "signs": key.purpose.as_str() }),
            );
            println!(
                "{}",
                json!({ "kid": key.kid, "alg": key.jwk.alg, "signs": key.purpose.as_str(), "file": path.display().to_string(),
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
