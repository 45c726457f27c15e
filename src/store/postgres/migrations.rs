//! Versioned schema migrations, embedded in the binary. Applied in one transaction under
//! a PostgreSQL advisory lock, so replicas starting together (or `simple-api migrate`
//! next to a starting replica) never race: the second waits, then finds nothing to do.

use super::database;
use crate::store::StoreError;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// In order. Never edit one that shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: include_str!("0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "change notifications, refresh token order",
        sql: include_str!("0002_notify.sql"),
    },
    Migration {
        version: 3,
        name: "notifications for bulk changes",
        sql: include_str!("0003_notify_bulk.sql"),
    },
    Migration {
        version: 4,
        name: "refresh-token families",
        sql: include_str!("0004_refresh_families.sql"),
    },
    Migration {
        version: 5,
        name: "client public keys, client notifications, used assertion ids",
        sql: include_str!("0005_client_keys.sql"),
    },
    Migration {
        version: 6,
        name: "browser sign-in: client redirect URIs, authorization codes, consents",
        sql: include_str!("0006_browser_sign_in.sql"),
    },
    Migration {
        version: 7,
        name: "second factors, sign-in methods of a session",
        sql: include_str!("0007_second_factors.sql"),
    },
    Migration {
        version: 8,
        name: "mail queue and codes",
        sql: include_str!("0008_mail_queue.sql"),
    },
    Migration {
        version: 9,
        name: "verified addresses, pending changes of address",
        sql: include_str!("0009_email_verification.sql"),
    },
];

/// The advisory lock all simple-api migrations take ("simple-a" in ASCII).
const LOCK: i64 = 0x7369_6d70_6c65_2d61;

/// Applies the migrations this database lacks; returns their versions (empty: it was up
/// to date). A database migrated by a newer build is refused rather than guessed at.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    // Up to date: nothing to lock or create, so a role without DDL rights (common on
    // PostgreSQL 15+, where `public` is not writable by default) can run the service once
    // an owner has migrated.
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(database("read schema_migrations"))?
        .get(0);
    if exists {
        let current: i32 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(database("read schema_migrations"))?
            .get(0);
        if current == known {
            return Ok(Vec::new());
        }
        if current > known {
            return Err(newer_than_known(current, known));
        }
    }
    let tx = client
        .transaction()
        .await
        .map_err(database("begin migrations"))?;
    // Quiet "already exists, skipping" notices of the IF NOT EXISTS below.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(database("begin migrations"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(database("take the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(database("create schema_migrations"))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(database("read schema_migrations"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if let Some(newer) = applied.iter().copied().filter(|v| *v > known).max() {
        return Err(newer_than_known(newer, known));
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(m.sql)
            .await
            .map_err(database(&format!("migration {} ({})", m.version, m.name)))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(database("record a migration"))?;
        done.push(m.version);
    }
    tx.commit().await.map_err(database("commit migrations"))?;
    Ok(done)
}

fn newer_than_known(newer: i32, known: i32) -> StoreError {
    StoreError::Database {
        context: "migrations".into(),
        reason: format!(
            "the database is at schema version {newer}, newer than this build knows ({known}); upgrade simple-api"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
