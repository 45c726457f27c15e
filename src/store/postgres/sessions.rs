//! Sessions (refresh-token families), revoked access-token ids and the one-query check of
//! an access token, in PostgreSQL.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::cache::TokenState;
use super::users::{user_of, COLUMNS as USER_COLUMNS};
use super::{database, exec, read_committed, row_one, row_opt, rows};
use crate::domain::{PresentedRefresh, RefreshToken, Session, User, UserId};
use crate::store::record::{RefreshRecord, SessionRecord};
use crate::store::{rotation, RefreshOutcome, Rotation, StoreError};

const SESSION: &str = "id, user_id, scope, created_at, revoked_at, family, client_id, amr";
const TOKEN: &str = "hash, issued_at, expires_at, rotated_at";

fn token_of(row: &Row) -> RefreshToken {
    RefreshToken::from(RefreshRecord {
        hash: row.get("hash"),
        issued_at: row.get("issued_at"),
        expires_at: row.get("expires_at"),
        rotated_at: row.get("rotated_at"),
    })
}

/// The session in `row` with its tokens, checked as the file store checks its records.
async fn session_of(client: &impl GenericClient, row: &Row) -> Result<Session, StoreError> {
    let id: Uuid = row.get("id");
    let tokens = rows(
        client,
        &format!("SELECT {TOKEN} FROM refresh_tokens WHERE session_id = $1 ORDER BY seq"),
        &[&id],
    )
    .await
    .map_err(database("read a session"))?;
    let record = SessionRecord {
        id,
        user_id: row.get("user_id"),
        scope: row.get("scope"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
        family: row.get("family"),
        client_id: row.get("client_id"),
        amr: row.get("amr"),
        tokens: tokens
            .iter()
            .map(|t| RefreshRecord::from(&token_of(t)))
            .collect(),
    };
    Session::try_from(record).map_err(|reason| StoreError::Database {
        context: "read a session".into(),
        reason,
    })
}

async fn insert_token(
    client: &impl GenericClient,
    session: Uuid,
    token: &RefreshToken,
) -> Result<(), StoreError> {
    exec(
        client,
        &format!("INSERT INTO refresh_tokens (session_id, {TOKEN}) VALUES ($1, $2, $3, $4, $5)"),
        &[
            &session,
            &token.hash,
            &token.issued_at,
            &token.expires_at,
            &token.rotated_at,
        ],
    )
    .await
    .map_err(database("store a refresh token"))?;
    Ok(())
}

/// A session and its tokens, in one transaction (also `store copy`'s way in).
pub async fn insert_in(client: &impl GenericClient, session: &Session) -> Result<(), StoreError> {
    let record = SessionRecord::from(session);
    exec(
        client,
        &format!("INSERT INTO sessions ({SESSION}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            &record.id,
            &record.user_id,
            &record.scope,
            &record.created_at,
            &record.revoked_at,
            &record.family,
            &record.client_id,
            &record.amr,
        ],
    )
    .await
    .map_err(database("record a login"))?;
    for token in &session.tokens {
        insert_token(client, session.id, token).await?;
    }
    Ok(())
}

/// A new login: its session and first token in one statement (one round trip, atomic
/// by itself); anything else in a transaction.
pub async fn insert(client: &mut impl GenericClient, session: &Session) -> Result<(), StoreError> {
    let context = "record a login";
    if let [first] = session.tokens.as_slice() {
        let record = SessionRecord::from(session);
        exec(
            client,
            &format!(
                "WITH s AS (INSERT INTO sessions ({SESSION}) VALUES ($1, $2, $3, $4, $5, $6, $11, $12) \
                 RETURNING id) INSERT INTO refresh_tokens (session_id, {TOKEN}) \
                 SELECT id, $7, $8, $9, $10 FROM s"
            ),
            &[
                &record.id,
                &record.user_id,
                &record.scope,
                &record.created_at,
                &record.revoked_at,
                &record.family,
                &first.hash,
                &first.issued_at,
                &first.expires_at,
                &first.rotated_at,
                &record.client_id,
                &record.amr,
            ],
        )
        .await
        .map_err(database(context))?;
        return Ok(());
    }
    let tx = client.transaction().await.map_err(database(context))?;
    insert_in(&tx, session).await?;
    tx.commit().await.map_err(database(context))
}

/// Exchanges the presented token for `new`. The session's row lock makes concurrent
/// presentations of its tokens (on any replica) take turns: the second sees the first's
/// rotation and is judged by it (grace window or reuse), as in the file store.
pub async fn refresh(
    client: &mut impl GenericClient,
    presented: &PresentedRefresh,
    new: &RefreshToken,
    grace: chrono::Duration,
) -> Result<RefreshOutcome, StoreError> {
    let context = "refresh a session";
    let tx = read_committed(client, context).await?;
    let row = row_opt(
        &tx,
        &format!("SELECT {SESSION} FROM sessions WHERE id = $1 FOR UPDATE"),
        &[&presented.session_id],
    )
    .await
    .map_err(database(context))?;
    let Some(row) = row else {
        return Ok(RefreshOutcome::Invalid);
    };
    // Read after the lock is held: each statement sees what committed before it began.
    let session = session_of(&tx, &row).await?;
    let user = super::users::by_id(&tx, session.user_id).await?;
    // The database's clock, read under the lock, times rotations and judges the grace
    // window: replicas' clocks may differ, the database's is one.
    let now: DateTime<Utc> = row_one(&tx, "SELECT clock_timestamp()", &[])
        .await
        .map_err(database(context))?
        .get(0);
    let outcome = match rotation(&session, presented, user.as_ref(), now, grace) {
        Rotation::Invalid => RefreshOutcome::Invalid,
        Rotation::Reused => {
            revoke(&tx, session.id, now).await?;
            RefreshOutcome::Reused {
                session_id: session.id,
                user_id: session.user_id,
            }
        }
        Rotation::Rotate { benign_race, user } => {
            // What `Session::rotate` changes: the token replaced (the newest) counts as
            // rotated from now, `new` joins, superseded tokens kept no longer go.
            let replaced = session.tokens.last().map(|t| t.hash.clone());
            let dropped = session.clone().rotate(new.clone(), now, grace);
            exec(
                &tx,
                "UPDATE refresh_tokens SET rotated_at = coalesce(rotated_at, $2) WHERE hash = $1",
                &[&replaced, &now],
            )
            .await
            .map_err(database(context))?;
            insert_token(&tx, session.id, new).await?;
            if !dropped.is_empty() {
                exec(
                    &tx,
                    "DELETE FROM refresh_tokens WHERE hash = ANY($1)",
                    &[&dropped],
                )
                .await
                .map_err(database(context))?;
            }
            RefreshOutcome::Rotated {
                session_id: session.id,
                scope: session.scope,
                user: User::clone(user),
                benign_race,
                client: session.client_id,
                amr: session.amr.clone(),
                began: session.created_at,
            }
        }
    };
    tx.commit().await.map_err(database(context))?;
    Ok(outcome)
}

async fn one_session(
    client: &impl GenericClient,
    sql: &str,
    key: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<Option<Session>, StoreError> {
    let row = row_opt(client, sql, &[key])
        .await
        .map_err(database("read a session"))?;
    match row {
        Some(row) => Ok(Some(session_of(client, &row).await?)),
        None => Ok(None),
    }
}

pub async fn by_id(client: &impl GenericClient, id: Uuid) -> Result<Option<Session>, StoreError> {
    let sql = format!("SELECT {SESSION} FROM sessions WHERE id = $1");
    one_session(client, &sql, &id).await
}

/// Revokes a session (idempotent: the first revocation's time stays).
pub async fn revoke(
    client: &impl GenericClient,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    exec(
        client,
        "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        &[&id, &at],
    )
    .await
    .map_err(database("revoke a session"))?;
    Ok(())
}

/// Revokes an access token's `jti` until `expires_at` (idempotent).
pub async fn revoke_jti(
    client: &impl GenericClient,
    jti: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    exec(
        client,
        "INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        &[&jti, &expires_at],
    )
    .await
    .map_err(database("revoke a token"))?;
    Ok(())
}

pub async fn is_jti_revoked(client: &impl GenericClient, jti: &str) -> Result<bool, StoreError> {
    let row = row_opt(client, "SELECT 1 FROM revoked_jtis WHERE jti = $1", &[&jti])
        .await
        .map_err(database("check a revocation"))?;
    Ok(row.is_some())
}

/// The query behind `token_state`, built once (it runs on every cache miss).
static TOKEN_STATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT EXISTS (SELECT 1 FROM revoked_jtis WHERE jti = $1) AS jti_revoked, \
         coalesce((SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $3), false) \
         AS session_revoked, u.id IS NOT NULL AS user_exists, {} \
         FROM (VALUES (1)) AS one LEFT JOIN users u ON u.id = $2",
        USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
});

/// Everything an access token's check needs, in one query: whether its `jti` or its
/// session is revoked (an unknown session is not), and its user if they exist.
pub async fn token_state(
    client: &impl GenericClient,
    jti: &str,
    user: UserId,
    session: Option<Uuid>,
) -> Result<TokenState, StoreError> {
    let row = row_one(client, &TOKEN_STATE, &[&jti, &user, &session])
        .await
        .map_err(database("check a token"))?;
    let exists: bool = row.get("user_exists");
    Ok(TokenState {
        jti_revoked: row.get("jti_revoked"),
        session_revoked: row.get("session_revoked"),
        user: if exists { Some(user_of(&row)?) } else { None },
    })
}

/// What one prune batch did.
pub struct Pruned {
    pub removed: usize,
    /// A batch was full: run another.
    pub more: bool,
}

/// Rows one prune batch deletes at most per table.
const PRUNE_BATCH: i64 = 1000;

/// Forgets what can no longer matter, as the file store's prune: sessions whose newest
/// token expired, sessions revoked longer than `retention` ago (sessions of deleted users
/// went with them), token ids and used assertion ids past their expiry (and the
/// verifier's leeway), and failure windows long over; at most `PRUNE_BATCH` of each. On the database's clock (replicas'
/// clocks may differ), by one replica at a time, and never on a session a refresh holds
/// locked (it is judged again at the next prune).
pub async fn prune(
    client: &mut impl GenericClient,
    retention: chrono::Duration,
) -> Result<Pruned, StoreError> {
    let context = "prune";
    let tx = read_committed(client, context).await?;
    let ours: bool = row_one(&tx, "SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
        .await
        .map_err(database(context))?
        .get(0);
    if !ours {
        return Ok(Pruned {
            removed: 0,
            more: false,
        });
    }
    let retention = retention.num_seconds() as f64;
    let sessions = exec(
        &tx,
        "DELETE FROM sessions WHERE id IN (SELECT s.id FROM sessions s \
         WHERE s.revoked_at <= now() - make_interval(secs => $1) OR NOT EXISTS \
         (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id AND t.expires_at > now() \
          AND t.seq = (SELECT max(seq) FROM refresh_tokens WHERE session_id = s.id)) \
         LIMIT $2 FOR UPDATE SKIP LOCKED)",
        &[&retention, &PRUNE_BATCH],
    )
    .await
    .map_err(database(context))?;
    let leeway = crate::domain::LEEWAY_SECS as f64;
    let jtis = exec(
        &tx,
        "DELETE FROM revoked_jtis WHERE jti IN (SELECT jti FROM revoked_jtis \
         WHERE expires_at <= now() - make_interval(secs => $1) LIMIT $2)",
        &[&leeway, &PRUNE_BATCH],
    )
    .await
    .map_err(database(context))?;
    let assertions = super::clients::prune_assertions(&tx, PRUNE_BATCH).await?;
    let codes = super::signin::prune_codes(&tx, PRUNE_BATCH).await?;
    super::failures::prune(&tx).await?;
    tx.commit().await.map_err(database(context))?;
    Ok(Pruned {
        removed: (sessions + jtis + assertions + codes) as usize,
        more: [sessions, jtis, assertions, codes]
            .iter()
            .any(|n| *n as i64 == PRUNE_BATCH),
    })
}

/// The advisory lock of the prune ("simple-p").
const PRUNE_LOCK: i64 = 0x7369_6d70_6c65_2d70;
