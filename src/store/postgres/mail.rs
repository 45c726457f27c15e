//! The mail queue in PostgreSQL: a row per message; a claim is one UPDATE over rows
//! locked with SKIP LOCKED, so replicas never claim the same message.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{database, exec, rows};
use crate::domain::QueuedMail;
use crate::store::StoreError;

const COLUMNS: &str =
    "id, recipient, sealed, purpose, user_id, attempts, next_attempt_at, created_at";

fn mail(row: &Row) -> QueuedMail {
    QueuedMail {
        id: row.get("id"),
        recipient: row.get("recipient"),
        sealed: row.get("sealed"),
        purpose: row.get("purpose"),
        user_id: row.get("user_id"),
        attempts: u32::try_from(row.get::<_, i32>("attempts")).unwrap_or(0),
        next_attempt_at: row.get("next_attempt_at"),
        created_at: row.get("created_at"),
    }
}

pub async fn enqueue(client: &impl GenericClient, m: &QueuedMail) -> Result<(), StoreError> {
    let attempts = i32::try_from(m.attempts).unwrap_or(i32::MAX);
    exec(
        client,
        "INSERT INTO mail_queue (id, recipient, sealed, purpose, user_id, attempts, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &m.id,
            &m.recipient,
            &m.sealed,
            &m.purpose,
            &m.user_id,
            &attempts,
            &m.next_attempt_at,
            &m.created_at,
        ],
    )
    .await
    .map_err(database("queue a message"))?;
    Ok(())
}

pub async fn claim(
    client: &impl GenericClient,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<QueuedMail>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "UPDATE mail_queue SET next_attempt_at = $2 WHERE id IN (\
         SELECT id FROM mail_queue WHERE next_attempt_at <= $1 \
         ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}"
    );
    let found = rows(client, &sql, &[&now, &until, &limit])
        .await
        .map_err(database("claim messages"))?;
    let mut claimed: Vec<QueuedMail> = found.iter().map(mail).collect();
    claimed.sort_by_key(|m| m.id);
    Ok(claimed)
}

pub async fn retry(
    client: &impl GenericClient,
    id: Uuid,
    attempts: u32,
    next_attempt_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
    exec(
        client,
        "UPDATE mail_queue SET attempts = $2, next_attempt_at = $3 WHERE id = $1",
        &[&id, &attempts, &next_attempt_at],
    )
    .await
    .map_err(database("reschedule a message"))?;
    Ok(())
}

pub async fn delete(client: &impl GenericClient, id: Uuid) -> Result<(), StoreError> {
    exec(client, "DELETE FROM mail_queue WHERE id = $1", &[&id])
        .await
        .map_err(database("forget a message"))?;
    Ok(())
}
