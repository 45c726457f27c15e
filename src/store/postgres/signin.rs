//! Browser sign-in in PostgreSQL: authorization codes (a row each, used once) and what
//! people allowed third-party clients.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{database, exec, row_opt, rows};
use crate::domain::{AuthCode, ClientId, Consent, Scopes, UserId};
use crate::store::record::AuthCodeRecord;
use crate::store::{StoreError, CODE_MEMORY};

fn corrupt(context: &str) -> impl FnOnce(String) -> StoreError + '_ {
    move |reason| StoreError::Database {
        context: context.to_owned(),
        reason,
    }
}

pub async fn put_code(client: &impl GenericClient, code: &AuthCode) -> Result<(), StoreError> {
    let record = serde_json::to_string(&AuthCodeRecord::from(code))
        .map_err(|e| corrupt("store a code")(e.to_string()))?;
    exec(
        client,
        "INSERT INTO auth_codes (hash, record, expires_at) VALUES ($1, $2, $3)",
        &[&code.hash, &record, &code.expires_at],
    )
    .await
    .map_err(database("store a code"))?;
    Ok(())
}

pub async fn code(
    client: &impl GenericClient,
    hash: &str,
) -> Result<Option<(AuthCode, Option<Uuid>)>, StoreError> {
    let row = row_opt(
        client,
        "SELECT record, used_by FROM auth_codes WHERE hash = $1",
        &[&hash],
    )
    .await
    .map_err(database("read a code"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record: AuthCodeRecord = serde_json::from_str(row.get("record"))
        .map_err(|e| corrupt("read a code")(e.to_string()))?;
    let code = record
        .into_code(hash.to_owned())
        .map_err(corrupt("read a code"))?;
    Ok(Some((code, row.get("used_by"))))
}

/// See `Store::redeem_code`: the conditional UPDATE decides; a loser reads the winner.
pub async fn redeem_code(
    client: &impl GenericClient,
    hash: &str,
    session: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let context = "redeem a code";
    let won = exec(
        client,
        "UPDATE auth_codes SET used_by = $2 WHERE hash = $1 AND used_by IS NULL",
        &[&hash, &session],
    )
    .await
    .map_err(database(context))?;
    if won == 1 {
        return Ok(None);
    }
    let row = row_opt(
        client,
        "SELECT used_by FROM auth_codes WHERE hash = $1",
        &[&hash],
    )
    .await
    .map_err(database(context))?
    .ok_or(StoreError::NotFound)?;
    Ok(row.get("used_by"))
}

/// Forgets up to `batch` codes past `CODE_MEMORY` (on the database's clock).
pub async fn prune_codes(client: &impl GenericClient, batch: i64) -> Result<u64, StoreError> {
    exec(
        client,
        "DELETE FROM auth_codes WHERE hash IN (SELECT hash FROM auth_codes \
         WHERE expires_at <= now() - make_interval(secs => $1) LIMIT $2)",
        &[&(CODE_MEMORY.num_seconds() as f64), &batch],
    )
    .await
    .map_err(database("prune"))
}

fn consent_of(row: &tokio_postgres::Row) -> Result<Consent, StoreError> {
    let scope: &str = row.get("scope");
    Ok(Consent {
        client_id: row.get("client_id"),
        scope: Scopes::parse(scope)
            .map_err(|s| corrupt("read a consent")(format!("unknown scope {s}")))?,
        granted_at: row.get::<_, DateTime<Utc>>("granted_at"),
    })
}

pub async fn consent(
    client: &impl GenericClient,
    user: UserId,
    client_id: ClientId,
) -> Result<Option<Consent>, StoreError> {
    row_opt(
        client,
        "SELECT client_id, scope, granted_at FROM consents WHERE user_id = $1 AND client_id = $2",
        &[&user, &client_id],
    )
    .await
    .map_err(database("read a consent"))?
    .as_ref()
    .map(consent_of)
    .transpose()
}

/// `NotFound` when the user (or the client) is gone: the foreign keys decide.
pub async fn put_consent(
    client: &impl GenericClient,
    user: UserId,
    consent: &Consent,
) -> Result<(), StoreError> {
    let scope = consent.scope.to_string();
    let stored = exec(
        client,
        "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, client_id) DO UPDATE SET scope = $3, granted_at = $4",
        &[&user, &consent.client_id, &scope, &consent.granted_at],
    )
    .await;
    match stored {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
            Err(StoreError::NotFound)
        }
        Err(e) => Err(database("store a consent")(e)),
    }
}

pub async fn consents(
    client: &impl GenericClient,
    user: UserId,
) -> Result<Vec<Consent>, StoreError> {
    rows(
        client,
        "SELECT client_id, scope, granted_at FROM consents WHERE user_id = $1 \
         ORDER BY granted_at, client_id",
        &[&user],
    )
    .await
    .map_err(database("list consents"))?
    .iter()
    .map(consent_of)
    .collect()
}

pub async fn delete_consent(
    client: &impl GenericClient,
    user: UserId,
    client_id: ClientId,
) -> Result<bool, StoreError> {
    let deleted = exec(
        client,
        "DELETE FROM consents WHERE user_id = $1 AND client_id = $2",
        &[&user, &client_id],
    )
    .await
    .map_err(database("delete a consent"))?;
    Ok(deleted == 1)
}
