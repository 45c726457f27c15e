//! Users in PostgreSQL.
//! Uniqueness of emails is the database's (a unique index on the email key); a change to
//! a user runs under a row lock, so concurrent updates of different fields never lose
//! each other (the file store's guarantee).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{database, exec, row_one, row_opt, rows};
use crate::domain::{Role, User, UserCursor, UserId};
use crate::store::record::{MailCodesRecord, MfaRecord, UserRecord};
use crate::store::{StoreError, UserUpdate};

pub(super) const COLUMNS: &str =
    "id, email, first_name, last_name, role, password_hash, created_at, \
                       updated_at, tokens_valid_after, kept_session, mfa, mail_codes, email_verified";

/// A user row, checked as the file store checks its records.
pub(super) fn user_of(row: &Row) -> Result<User, StoreError> {
    let corrupt = |reason: String| StoreError::Database {
        context: "read a user".into(),
        reason,
    };
    let role: String = row.get("role");
    let record = UserRecord {
        id: row.get("id"),
        email: row.get("email"),
        email_verified: row.get("email_verified"),
        first_name: row.get("first_name"),
        last_name: row.get("last_name"),
        role: Role::parse(&role).map_err(|e| corrupt(e.to_string()))?,
        password_hash: row.get("password_hash"),
        created_at: row.get::<_, DateTime<Utc>>("created_at"),
        updated_at: row.get::<_, DateTime<Utc>>("updated_at"),
        mfa: match row.get::<_, Option<&str>>("mfa") {
            Some(json) => Some(serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?),
            None => None,
        },
        mail_codes: match row.get::<_, Option<&str>>("mail_codes") {
            Some(json) => Some(Box::new(
                serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?,
            )),
            None => None,
        },
        tokens_valid_after: row.get::<_, DateTime<Utc>>("tokens_valid_after"),
        kept_session: row.get::<_, Option<Uuid>>("kept_session"),
    };
    User::try_from(record).map_err(corrupt)
}

/// A user's text columns as PostgreSQL takes them.
pub(super) struct Columns<'a> {
    email: &'a str,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    role: &'static str,
    key: String,
    mfa: Option<String>,
    mail_codes: Option<String>,
    /// The pending new address's key (`users_moving_to`), if a change waits.
    moving_to: Option<String>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(user: &'a User) -> Self {
        Self {
            email: user.email.as_str(),
            first_name: user.first_name.as_ref().map(|n| n.as_str()),
            last_name: user.last_name.as_ref().map(|n| n.as_str()),
            role: user.role.as_str(),
            key: user.email.key(),
            mfa: MfaRecord::of(&user.mfa)
                .map(|r| serde_json::to_string(&r).expect("a record serializes")),
            mail_codes: MailCodesRecord::of(&user.mail_codes)
                .map(|r| serde_json::to_string(&r).expect("a record serializes")),
            moving_to: user
                .mail_codes
                .email_change
                .as_ref()
                .map(|c| c.new_email.key()),
        }
    }

    /// `COLUMNS` in order, then the email key and the pending address's key: `$1`…`$15`
    /// of both the INSERT and the UPDATE.
    pub(super) fn params(&'a self, user: &'a User) -> [&'a (dyn ToSql + Sync); 15] {
        [
            &user.id,
            &self.email,
            &self.first_name,
            &self.last_name,
            &self.role,
            &user.password_hash,
            &user.created_at,
            &user.updated_at,
            &user.tokens_valid_after,
            &user.kept_session,
            &self.mfa,
            &self.mail_codes,
            &user.email_verified,
            &self.key,
            &self.moving_to,
        ]
    }
}

pub(super) fn duplicate_or(
    context: &'static str,
) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            StoreError::DuplicateEmail
        } else {
            database(context)(e)
        }
    }
}

pub async fn insert(client: &impl GenericClient, user: &User) -> Result<(), StoreError> {
    let columns = Columns::of(user);
    exec(
        client,
        &format!(
            "INSERT INTO users ({COLUMNS}, email_key, moving_to_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ),
        &columns.params(user),
    )
    .await
    .map_err(duplicate_or("create a user"))?;
    Ok(())
}

/// The user `sql` returns, if any.
async fn one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<Option<User>, StoreError> {
    let row = row_opt(client, sql, params)
        .await
        .map_err(database(context))?;
    row.as_ref().map(user_of).transpose()
}

pub async fn by_id(client: &impl GenericClient, id: UserId) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    one(client, &sql, &[&id], "read a user").await
}

pub async fn by_email(
    client: &impl GenericClient,
    email: &str,
) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE email_key = $1");
    let key = crate::domain::Email::key_of(email);
    one(client, &sql, &[&key], "read a user").await
}

/// The accounts whose pending change of address is to `email`.
pub async fn moving_to(client: &impl GenericClient, email: &str) -> Result<Vec<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE moving_to_key = $1");
    let key = crate::domain::Email::key_of(email);
    let found = rows(client, &sql, &[&key])
        .await
        .map_err(database("read a user"))?;
    found.iter().map(user_of).collect()
}

/// `update` runs on the row as it is now, under its lock, then the row is written back.
pub async fn update(
    client: &mut impl GenericClient,
    id: UserId,
    update: UserUpdate,
) -> Result<User, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(database("update a user"))?;
    let row = row_opt(
        &tx,
        &format!("SELECT {COLUMNS} FROM users WHERE id = $1 FOR UPDATE"),
        &[&id],
    )
    .await
    .map_err(database("update a user"))?
    .ok_or(StoreError::NotFound)?;
    let mut user = user_of(&row)?;
    update(&mut user);
    let columns = Columns::of(&user);
    exec(
        &tx,
        "UPDATE users SET email = $2, first_name = $3, last_name = $4, role = $5, \
         password_hash = $6, created_at = $7, updated_at = $8, tokens_valid_after = $9, \
         kept_session = $10, mfa = $11, mail_codes = $12, email_verified = $13, \
         email_key = $14, moving_to_key = $15 WHERE id = $1",
        &columns.params(&user),
    )
    .await
    .map_err(duplicate_or("update a user"))?;
    tx.commit().await.map_err(database("update a user"))?;
    Ok(user)
}

pub async fn delete(client: &impl GenericClient, id: UserId) -> Result<User, StoreError> {
    let sql = format!("DELETE FROM users WHERE id = $1 RETURNING {COLUMNS}");
    one(client, &sql, &[&id], "delete a user")
        .await?
        .ok_or(StoreError::NotFound)
}

/// Oldest first. OFFSET costs O(offset) in PostgreSQL (the index is walked to the page);
/// `list_after` is the seek.
pub async fn list(
    client: &impl GenericClient,
    offset: usize,
    limit: usize,
) -> Result<Vec<User>, StoreError> {
    let (offset, limit) = (offset as i64, limit as i64);
    rows(
        client,
        &format!("SELECT {COLUMNS} FROM users ORDER BY created_at, id OFFSET $1 LIMIT $2"),
        &[&offset, &limit],
    )
    .await
    .map_err(database("list users"))?
    .iter()
    .map(user_of)
    .collect()
}

/// The query of `list_after`: with a position (`$1` the time, `$2` the id, `$3` the
/// limit) or from the start (`$1` the limit). The row comparison is answered by the
/// `users_created (created_at, id)` index (migration 1) in one descent, so the cost does
/// not grow with the position (its plan is tested).
pub fn list_after_sql(after: bool) -> String {
    if after {
        format!(
            "SELECT {COLUMNS} FROM users WHERE (created_at, id) > ($1, $2) \
             ORDER BY created_at, id LIMIT $3"
        )
    } else {
        format!("SELECT {COLUMNS} FROM users ORDER BY created_at, id LIMIT $1")
    }
}

/// Up to `limit` users after `after` in the listing order (see `list_after_sql`).
pub async fn list_after(
    client: &impl GenericClient,
    after: Option<UserCursor>,
    limit: usize,
) -> Result<Vec<User>, StoreError> {
    let limit = limit as i64;
    let found = match after {
        Some(c) => {
            let sql = list_after_sql(true);
            rows(client, &sql, &[&c.created_at, &c.id, &limit]).await
        }
        None => rows(client, &list_after_sql(false), &[&limit]).await,
    };
    found
        .map_err(database("list users"))?
        .iter()
        .map(user_of)
        .collect()
}

pub async fn count(client: &impl GenericClient) -> Result<usize, StoreError> {
    let row = row_one(client, "SELECT count(*) FROM users", &[])
        .await
        .map_err(database("count users"))?;
    Ok(row.get::<_, i64>(0) as usize)
}
