//! `simple-api users ...`.

use std::io::Read;

use anyhow::Context;
use clap::Subcommand;
use secrecy::SecretString;

use crate::config::Config;
use crate::domain::{PersonName, Role};
use crate::service::AppState;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
    },
    /// Second factors of a user.
    #[command(subcommand)]
    Mfa(MfaCommand),
}

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Remove every second factor of an account (TOTP and recovery codes), for a person who
    /// lost theirs: the password alone signs in again. Audited.
    Reset {
        #[arg(long)]
        email: String,
    },
}

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
            let first = first_name
                .map(|n| PersonName::parse(&n, "first_name"))
                .transpose()?
                .flatten();
            let last = last_name
                .map(|n| PersonName::parse(&n, "last_name"))
                .transpose()?
                .flatten();
            let state = AppState::open(config).await?;
            let role = if admin { Role::Admin } else { Role::User };
            let user = state
                .create_user(&email, SecretString::from(password), role, (first, last))
                .await?;
            println!(
                "{}",
                serde_json::json!({ "id": user.id, "email": user.email.as_str(), "role": role.as_str() })
            );
            Ok(())
        }
        UsersCommand::Mfa(MfaCommand::Reset { email }) => {
            let state = AppState::open(config).await?;
            let user = state
                .store
                .user_by_email(&email)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
            let had = state.reset_mfa(&user).await?;
            let fields = serde_json::json!({ "via": "cli", "had_factors": had });
            state.audit.record(
                "mfa_reset",
                Some(&user.id.to_string()),
                &crate::audit::Context::default(),
                fields,
            );
            println!(
                "{}",
                serde_json::json!({ "id": user.id, "email": user.email.as_str(), "reset": had })
            );
            Ok(())
        }
    }
}
