//! Service clients and revoked access-token ids in PostgreSQL: the simple halves of the
//! `Store` trait (a row each; revocations kept until the token would have expired anyway).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{database, PgStore};
use crate::domain::{Client, ClientId};
use crate::store::record::ClientRecord;
use crate::store::StoreError;

const COLUMNS: &str = "id, name, scope, secret_hash, created_at, secret_rotated_at";

fn client_of(row: &Row) -> Result<Client, StoreError> {
    Client::try_from(ClientRecord {
        id: row.get("id"),
        name: row.get("name"),
        scope: row.get("scope"),
        secret_hash: row.get("secret_hash"),
        created_at: row.get("created_at"),
        secret_rotated_at: row.get("secret_rotated_at"),
    })
    .map_err(|reason| StoreError::Database {
        context: "read a client".into(),
        reason,
    })
}

impl PgStore {
    /// Adds or replaces a client (registration, secret rotation, scope change).
    pub async fn put_client(&self, client: &Client) -> Result<(), StoreError> {
        let record = ClientRecord::from(client);
        self.client
            .execute(
                &format!(
                    "INSERT INTO clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (id) DO UPDATE SET name = $2, scope = $3, secret_hash = $4, \
                     created_at = $5, secret_rotated_at = $6"
                ),
                &[
                    &record.id,
                    &record.name,
                    &record.scope,
                    &record.secret_hash,
                    &record.created_at,
                    &record.secret_rotated_at,
                ],
            )
            .await
            .map_err(database("store a client"))?;
        Ok(())
    }

    pub async fn client(&self, id: ClientId) -> Result<Option<Client>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM clients WHERE id = $1");
        let row = self
            .client
            .query_opt(&sql, &[&id])
            .await
            .map_err(database("read a client"))?;
        row.as_ref().map(client_of).transpose()
    }

    pub async fn delete_client(&self, id: ClientId) -> Result<Client, StoreError> {
        let sql = format!("DELETE FROM clients WHERE id = $1 RETURNING {COLUMNS}");
        let row = self
            .client
            .query_opt(&sql, &[&id])
            .await
            .map_err(database("delete a client"))?
            .ok_or(StoreError::NotFound)?;
        client_of(&row)
    }

    /// Oldest first, as the file store lists them.
    pub async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM clients ORDER BY created_at, id");
        self.client
            .query(&sql, &[])
            .await
            .map_err(database("list clients"))?
            .iter()
            .map(client_of)
            .collect()
    }

    /// Revokes an access token's `jti` until `expires_at` (idempotent).
    pub async fn revoke_jti(&self, jti: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti) DO NOTHING",
                &[&jti, &expires_at],
            )
            .await
            .map_err(database("revoke a token"))?;
        Ok(())
    }

    pub async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_opt("SELECT 1 FROM revoked_jtis WHERE jti = $1", &[&jti])
            .await
            .map_err(database("check a revocation"))?;
        Ok(row.is_some())
    }

    /// Forgets revocations of tokens that have expired anyway; returns how many.
    pub async fn prune_jtis(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.client
            .execute("DELETE FROM revoked_jtis WHERE expires_at <= $1", &[&now])
            .await
            .map_err(database("prune revocations"))
    }
}
