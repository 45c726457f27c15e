//! Service clients in PostgreSQL: a row each; and the assertion ids `private_key_jwt`
//! clients have used.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{database, exec, row_opt, rows};
use crate::domain::{Client, ClientId};
use crate::store::record::ClientRecord;
use crate::store::StoreError;

/// A client's columns; exactly one of `secret_hash` and `jwks` is set (migration 5's
/// CHECK), as in `ClientRecord`.
const COLUMNS: &str = "id, name, scope, secret_hash, jwks, created_at, secret_rotated_at, \
                       public, redirect_uris, post_logout_redirect_uris, first_party";

fn client_of(row: &Row) -> Result<Client, StoreError> {
    Client::try_from(ClientRecord {
        id: row.get("id"),
        name: row.get("name"),
        scope: row.get("scope"),
        secret_hash: row.get("secret_hash"),
        jwks: row.get("jwks"),
        created_at: row.get("created_at"),
        secret_rotated_at: row.get("secret_rotated_at"),
        public: row.get("public"),
        redirect_uris: row.get("redirect_uris"),
        post_logout_redirect_uris: row.get("post_logout_redirect_uris"),
        first_party: row.get("first_party"),
    })
    .map_err(|reason| StoreError::Database {
        context: "read a client".into(),
        reason,
    })
}

/// Adds or replaces a client (registration, secret rotation, scope change).
pub async fn put(client: &impl GenericClient, c: &Client) -> Result<(), StoreError> {
    let record = ClientRecord::from(c);
    exec(
        client,
        &format!(
            "INSERT INTO clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO UPDATE SET name = $2, scope = $3, secret_hash = $4, \
                 jwks = $5, created_at = $6, secret_rotated_at = $7, public = $8, \
                 redirect_uris = $9, post_logout_redirect_uris = $10, first_party = $11"
        ),
        &[
            &record.id,
            &record.name,
            &record.scope,
            &record.secret_hash,
            &record.jwks,
            &record.created_at,
            &record.secret_rotated_at,
            &record.public,
            &record.redirect_uris,
            &record.post_logout_redirect_uris,
            &record.first_party,
        ],
    )
    .await
    .map_err(database("store a client"))?;
    Ok(())
}

/// See `Store::restore_client_secret`: one conditional UPDATE, never an insert.
pub async fn restore_secret(
    client: &impl GenericClient,
    expected: &Client,
    secret_hash: &str,
) -> Result<bool, StoreError> {
    let updated = exec(
        client,
        "UPDATE clients SET secret_hash = $3 \
         WHERE id = $1 AND secret_hash = $2 AND secret_rotated_at = $4",
        &[
            &expected.id,
            &expected.secret_hash(),
            &secret_hash,
            &expected.secret_rotated_at,
        ],
    )
    .await
    .map_err(database("store a client's secret"))?;
    Ok(updated == 1)
}

pub async fn get(client: &impl GenericClient, id: ClientId) -> Result<Option<Client>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM clients WHERE id = $1");
    let row = row_opt(client, &sql, &[&id])
        .await
        .map_err(database("read a client"))?;
    row.as_ref().map(client_of).transpose()
}

pub async fn delete(client: &impl GenericClient, id: ClientId) -> Result<Client, StoreError> {
    let sql = format!("DELETE FROM clients WHERE id = $1 RETURNING {COLUMNS}");
    let row = row_opt(client, &sql, &[&id])
        .await
        .map_err(database("delete a client"))?
        .ok_or(StoreError::NotFound)?;
    client_of(&row)
}

/// Oldest first, as the file store lists them.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Client>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM clients ORDER BY created_at, id");
    rows(client, &sql, &[])
        .await
        .map_err(database("list clients"))?
        .iter()
        .map(client_of)
        .collect()
}

/// How long after its `exp` a used assertion id is still remembered: as long as the
/// verifier's leeway may still accept the assertion (as for revoked token ids), so a
/// replay a moment after `exp` is refused rather than taken for a new assertion.
pub(super) fn assertion_leeway() -> f64 {
    crate::domain::LEEWAY_SECS as f64
}

/// The stored form of an assertion id: its SHA-256 (migration 5 says why).
pub(super) fn jti_digest(jti: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jti.as_bytes())
        .as_ref()
        .to_vec()
}

/// Forgets up to `batch` used assertion ids that no verifier accepts any more (on the
/// database's clock); returns how many.
pub async fn prune_assertions(client: &impl GenericClient, batch: i64) -> Result<u64, StoreError> {
    exec(
        client,
        "DELETE FROM client_assertions WHERE (client_id, jti_sha256) IN \
         (SELECT client_id, jti_sha256 FROM client_assertions \
          WHERE expires_at <= now() - make_interval(secs => $1) LIMIT $2)",
        &[&assertion_leeway(), &batch],
    )
    .await
    .map_err(database("prune"))
}
