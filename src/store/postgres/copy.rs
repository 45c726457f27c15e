//! `simple-api store copy`: moves a file store into PostgreSQL in one transaction, so the
//! target ends up with all of it or none of it.

use serde::Serialize;

use super::{clients, database, row_one, sessions, users, PgStore};
use crate::store::{Export, StoreError};

/// What was copied.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CopyReport {
    pub users: usize,
    pub clients: usize,
    pub sessions: usize,
    pub refresh_tokens: usize,
    pub revoked_token_ids: usize,
}

/// Copies `export` into `target`. A target already holding users, clients or
/// revocations is refused unless `overwrite`, which empties it first (in the same
/// transaction: a failed copy leaves the target as it was).
pub async fn copy_into(
    target: &PgStore,
    export: &Export,
    overwrite: bool,
) -> Result<CopyReport, StoreError> {
    let context = "copy into PostgreSQL";
    let mut conn = target
        .pool()
        .get()
        .await
        .map_err(|e| StoreError::Database {
            context: context.into(),
            reason: e.to_string(),
        })?;
    let tx = conn.transaction().await.map_err(database(context))?;
    // Serialise with other copies and with nothing else: the emptiness check below holds
    // until commit.
    tx.batch_execute(
        "LOCK TABLE users, sessions, refresh_tokens, revoked_jtis, clients, login_failures \
         IN EXCLUSIVE MODE",
    )
    .await
    .map_err(database(context))?;
    let occupied: bool = row_one(
        &tx,
        "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM clients) \
             OR EXISTS (SELECT 1 FROM revoked_jtis)",
        &[],
    )
    .await
    .map_err(database(context))?
    .get(0);
    if occupied && !overwrite {
        return Err(StoreError::Database {
            context: context.into(),
            reason: "the target database already holds users, clients or revocations; \
                     pass --overwrite to replace them"
                .into(),
        });
    }
    if occupied {
        tx.batch_execute(
            "TRUNCATE users, sessions, refresh_tokens, revoked_jtis, clients, login_failures, \
             client_assertions, auth_codes, consents",
        )
        .await
        .map_err(database(context))?;
    }
    for user in &export.users {
        users::insert(&tx, user).await?;
    }
    for client in &export.clients {
        clients::put(&tx, client).await?;
    }
    let mut report = CopyReport {
        users: export.users.len(),
        clients: export.clients.len(),
        sessions: 0,
        refresh_tokens: 0,
        revoked_token_ids: export.revoked_jtis.len(),
    };
    let now = crate::domain::now();
    let ids: std::collections::HashSet<_> = export.users.iter().map(|u| u.id).collect();
    for session in &export.sessions {
        // Expired sessions and those of users deleted since are dead (the file store
        // prunes them later); revoked ones are kept, to keep refusing their tokens.
        let expired = !session.is_live(now) && session.revoked_at.is_none();
        if expired || !ids.contains(&session.user_id) {
            continue;
        }
        sessions::insert_in(&tx, session).await?;
        report.sessions += 1;
        report.refresh_tokens += session.tokens.len();
    }
    for (jti, expires_at) in &export.revoked_jtis {
        sessions::revoke_jti(&tx, jti, *expires_at).await?;
    }
    // What people allowed third-party clients (codes live a minute: not worth moving).
    let client_ids: std::collections::HashSet<_> = export.clients.iter().map(|c| c.id).collect();
    for (user, consent) in &export.consents {
        if ids.contains(user) && client_ids.contains(&consent.client_id) {
            super::signin::put_consent(&tx, *user, consent).await?;
        }
    }
    tx.commit().await.map_err(database(context))?;
    Ok(report)
}
