//! The PostgreSQL store (issue #9): the state of replicas sharing one database. The
//! database decides everything that must be decided once (email uniqueness, refresh-token
//! rotation, failure counts, replayed client assertions); each replica keeps a cache for
//! the per-request checks that LISTEN/NOTIFY keeps coherent (see `cache`).

mod assertions;
mod cache;
mod clients;
mod copy;
mod failures;
mod mail;
mod migrations;
mod password;
mod sessions;
mod signin;
mod users;

pub use copy::{copy_into, CopyReport};
pub use migrations::{migrate, Migration, MIGRATIONS};
/// The keyset query of `list_users_after`, for tests of its plan.
pub use users::list_after_sql as list_users_after_sql;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use self::cache::Cache;
use super::{FailureCounts, RefreshOutcome, Store, StoreError, TokenStanding, UserUpdate};
use crate::domain::{
    AuthCode, Client, ClientId, Consent, PresentedRefresh, QueuedMail, RefreshToken, Session, User,
    UserCursor, UserId,
};

/// Connections a replica keeps at most. Requests needing the database are short; beyond
/// this many at once they queue (up to `WAIT`) rather than overload PostgreSQL.
const POOL_SIZE: usize = 16;
/// How long a request waits for a connection, or to open one: an unreachable database
/// answers 503 within a second instead of hanging.
const WAIT: Duration = Duration::from_millis(800);
/// The most any one store operation may take before it is answered 503 (a database that
/// accepts connections but does not answer). Operations take milliseconds; this only
/// bounds a database that stopped answering.
const OPERATION: Duration = Duration::from_secs(2);
/// How the service's connections name themselves in `pg_stat_activity` (unless
/// DATABASE_URL sets `application_name`).
pub const POOL_NAME: &str = "simple-api";
pub const LISTENER_NAME: &str = "simple-api listener";
/// How long a revoked session is remembered, as in the file store: as long as an access
/// token of it may still be valid.
const REVOKED_RETENTION: chrono::Duration = chrono::Duration::days(1);

/// The PostgreSQL store: a pool, and this replica's cache with its listener.
pub struct PgStore {
    pool: Pool,
    cache: Arc<Cache>,
    /// Used client assertions on their way to the database, in batches.
    assertions: assertions::Batcher,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
    }
}

/// Runs one store operation on a pooled connection, bounded in time. A connection
/// whose operation timed out is closed, not returned to the pool: it may be stuck on
/// a database that stopped answering, and the next request must not inherit it.
async fn with_pool<T>(
    pool: &Pool,
    context: &'static str,
    f: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let timed_out = || StoreError::Database {
        context: context.into(),
        reason: "the database did not answer in time".into(),
    };
    let mut conn = match tokio::time::timeout(OPERATION, pool.get()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(deadpool_postgres::PoolError::Backend(e))) => return Err(database(context)(e)),
        Ok(Err(other)) => {
            return Err(StoreError::Database {
                context: context.into(),
                reason: other.to_string(),
            })
        }
        Err(_) => return Err(timed_out()),
    };
    let cancel = conn.cancel_token();
    match tokio::time::timeout(OPERATION, f(&mut conn)).await {
        Ok(result) => result,
        Err(_) => {
            // Closing our end does not stop the server's work (a query waiting on a
            // lock would go on): ask the server to cancel it too, in the background
            // and bounded, since a database that stopped answering may not take that
            // either.
            drop(Object::take(conn));
            tokio::spawn(async move {
                let _ = tokio::time::timeout(OPERATION, cancel.cancel_query(tokio_postgres::NoTls))
                    .await;
            });
            Err(timed_out())
        }
    }
}

/// `url` parsed, with what it does not say itself: a connect timeout (never hang on an
/// unreachable database), if given, the name the connection shows in
/// `pg_stat_activity`, and the password from PGPASSWORD or the password file.
fn config(
    url: &str,
    timeout: Duration,
    name: Option<&str>,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Database {
        context: "DATABASE_URL".into(),
        reason: format!("not a PostgreSQL URL: {e}"),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout);
    }
    if let Some(name) = name.filter(|_| config.get_application_name().is_none()) {
        config.application_name(name);
    }
    password::fill_in(&mut config, &password::Sources::from_env());
    Ok(config)
}

/// Connects to `url` (`postgres://…`), outside the pool (migrations, the listener). Plain
/// TCP or a Unix socket: put TLS in front (a sidecar, or a private network) for now.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = config(url, Duration::from_secs(5), None)?
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(database("connect to DATABASE_URL"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Maps a driver error to `StoreError::Database`, naming what was being done. The
/// driver's message carries PostgreSQL's own (e.g. the constraint), never parameters.
pub fn database(context: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Database {
        context: context.to_owned(),
        reason: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_owned()),
    }
}

// Every statement goes through its connection's statement cache: parsed once per
// connection, then one round trip per use (tokio-postgres alone prepares it every time).

async fn rows(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

async fn row_opt(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_opt(&statement, params).await
}

async fn row_one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_one(&statement, params).await
}

async fn exec(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

/// A transaction in READ COMMITTED whatever the server's default: each statement sees
/// what committed before it began (another replica's rotation, once its lock is released),
/// rather than failing on a serialization conflict.
pub(super) async fn read_committed<'a>(
    client: &'a mut impl GenericClient,
    context: &'static str,
) -> Result<deadpool_postgres::Transaction<'a>, StoreError> {
    let tx = client.transaction().await.map_err(database(context))?;
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(database(context))?;
    Ok(tx)
}

impl PgStore {
    /// Opens the store for a server: applies pending migrations (under their lock, so
    /// replicas starting together do not race), then starts this replica's listener.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = Self::migrated_pool(url).await?;
        let cache = Arc::new(Cache::new());
        let listener = config(url, WAIT, Some(LISTENER_NAME))?;
        Ok(Self {
            pool,
            listener: Some(tokio::spawn(cache::listen(listener, Arc::clone(&cache)))),
            cache,
            assertions: Default::default(),
        })
    }

    /// Opens the store for a one-off command (the CLI): migrated, no cache, no listener;
    /// every read goes to the database.
    pub async fn open_unlisted(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            pool: Self::migrated_pool(url).await?,
            cache: Arc::new(Cache::disabled()),
            listener: None,
            assertions: Default::default(),
        })
    }

    async fn migrated_pool(url: &str) -> Result<Pool, StoreError> {
        let config = config(url, WAIT, Some(POOL_NAME))?;
        migrate(&mut connect(url).await?).await?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                // A closed connection is noticed and replaced; a live one is not pinged
                // before every use (that would double the round trips).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .build()
            .map_err(|e| StoreError::Database {
                context: "DATABASE_URL".into(),
                reason: e.to_string(),
            })
    }

    /// Runs one store operation on a pooled connection, bounded in time (`with_pool`).
    async fn with<T>(
        &self,
        context: &'static str,
        f: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        with_pool(&self.pool, context, f).await
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let id = user.id;
        self.with("create a user", async move |c| {
            users::insert(&*c, &user).await
        })
        .await?;
        self.cache.forget_user(id);
        Ok(())
    }

    async fn update_user(&self, id: UserId, update: UserUpdate) -> Result<User, StoreError> {
        let user = self
            .with("update a user", async move |c| {
                users::update(c, id, update).await
            })
            .await?;
        self.cache.forget_user(id);
        Ok(user)
    }

    async fn delete_user(&self, id: UserId) -> Result<User, StoreError> {
        let user = self
            .with("delete a user", async move |c| users::delete(&*c, id).await)
            .await?;
        self.cache.forget_user(id);
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<Arc<User>>, StoreError> {
        if let Some(found) = self.cache.user(id) {
            return Ok(found);
        }
        let generation = self.cache.generation();
        let user = self
            .with("read a user", async move |c| users::by_id(&*c, id).await)
            .await?
            .map(Arc::new);
        self.cache.fill_user(generation, id, user.clone());
        Ok(user)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = email.to_owned();
        self.with("read a user", async move |c| {
            users::by_email(&*c, &email).await
        })
        .await
    }

    async fn users_moving_to(&self, email: &str) -> Result<Vec<User>, StoreError> {
        let email = email.to_owned();
        self.with("read a user", async move |c| {
            users::moving_to(&*c, &email).await
        })
        .await
    }

    async fn list_users(&self, offset: usize, limit: usize) -> Result<Vec<Arc<User>>, StoreError> {
        let users = self
            .with("list users", async move |c| {
                users::list(&*c, offset, limit).await
            })
            .await?;
        Ok(users.into_iter().map(Arc::new).collect())
    }

    async fn list_users_after(
        &self,
        after: Option<UserCursor>,
        limit: usize,
    ) -> Result<Vec<Arc<User>>, StoreError> {
        let users = self
            .with("list users", async move |c| {
                users::list_after(&*c, after, limit).await
            })
            .await?;
        Ok(users.into_iter().map(Arc::new).collect())
    }

    async fn count_users(&self) -> Result<usize, StoreError> {
        self.with("count users", async move |c| users::count(&*c).await)
            .await
    }

    async fn create_session(&self, session: Session) -> Result<(), StoreError> {
        self.with("record a login", async move |c| {
            sessions::insert(c, &session).await
        })
        .await
    }

    async fn refresh(
        &self,
        presented: PresentedRefresh,
        new: RefreshToken,
        grace: chrono::Duration,
    ) -> Result<RefreshOutcome, StoreError> {
        let outcome = self
            .with("refresh a session", async move |c| {
                sessions::refresh(c, &presented, &new, grace).await
            })
            .await?;
        if let RefreshOutcome::Reused { session_id, .. } = &outcome {
            self.cache.forget_session(*session_id);
        }
        Ok(outcome)
    }

    async fn session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        self.with("read a session", async move |c| {
            sessions::by_id(&*c, id).await
        })
        .await
    }

    async fn session_revoked(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .session(id)
            .await?
            .is_some_and(|s| s.revoked_at.is_some()))
    }

    async fn revoke_session(&self, id: Uuid) -> Result<(), StoreError> {
        self.with("revoke a session", async move |c| {
            sessions::revoke(&*c, id, crate::domain::now()).await
        })
        .await?;
        self.cache.forget_session(id);
        Ok(())
    }

    async fn revoke_jti(&self, jti: String, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        let forget = jti.clone();
        self.with("revoke a token", async move |c| {
            sessions::revoke_jti(&*c, &jti, expires_at).await
        })
        .await?;
        self.cache.forget_jti(&forget);
        Ok(())
    }

    /// From this replica's cache while its listener is connected (every request with a
    /// client token asks), otherwise from the database.
    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        if let Some(revoked) = self.cache.jti_revoked(jti) {
            return Ok(revoked);
        }
        let generation = self.cache.generation();
        let owned = jti.to_owned();
        let revoked = self
            .with("check a revocation", async move |c| {
                sessions::is_jti_revoked(&*c, &owned).await
            })
            .await?;
        self.cache.fill_jti(generation, jti, revoked);
        Ok(revoked)
    }

    /// From this replica's cache while its listener is connected; otherwise (and on a
    /// miss) from the database in one query.
    async fn user_token(
        &self,
        jti: &str,
        user: UserId,
        session: Option<Uuid>,
    ) -> Result<TokenStanding, StoreError> {
        if let Some(answer) = self.cache.user_token(jti, user, session) {
            return Ok(answer);
        }
        let generation = self.cache.generation();
        let owned = jti.to_owned();
        let found = self
            .with("check a token", async move |c| {
                sessions::token_state(&*c, &owned, user, session).await
            })
            .await?;
        Ok(self.cache.fill_token(generation, jti, user, session, found))
    }

    /// This replica forgets the client as soon as the write is over, without waiting for
    /// the notification (which tells the others): its next read sees the change. Even
    /// after an error, since the write may have committed unheard.
    async fn put_client(&self, client: Client) -> Result<(), StoreError> {
        let id = client.id;
        let stored = self
            .with("store a client", async move |c| {
                clients::put(&*c, &client).await
            })
            .await;
        self.cache.forget_client(id);
        stored
    }

    /// As `put_client`, forgotten here at once.
    async fn restore_client_secret(
        &self,
        expected: &Client,
        secret_hash: String,
    ) -> Result<bool, StoreError> {
        let (id, expected) = (expected.id, expected.clone());
        let restored = self
            .with("store a client's secret", async move |c| {
                clients::restore_secret(&*c, &expected, &secret_hash).await
            })
            .await;
        self.cache.forget_client(id);
        restored
    }

    /// As `put_client`, forgotten here at once.
    async fn delete_client(&self, id: ClientId) -> Result<Client, StoreError> {
        let deleted = self
            .with("delete a client", async move |c| {
                clients::delete(&*c, id).await
            })
            .await;
        self.cache.forget_client(id);
        deleted
    }

    /// From this replica's cache while its listener is connected (it runs for every
    /// client token and client authentication); otherwise, and for unknown ids, from the
    /// database.
    async fn client(&self, id: ClientId) -> Result<Option<Client>, StoreError> {
        if let Some(found) = self.cache.client(id) {
            return Ok(Some(found));
        }
        let generation = self.cache.generation();
        let client = self
            .with("read a client", async move |c| clients::get(&*c, id).await)
            .await?;
        if let Some(found) = &client {
            self.cache.fill_client(generation, found);
        }
        Ok(client)
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.with("list clients", async move |c| clients::list(&*c).await)
            .await
    }

    /// Never cached: the database's primary key is the one place that decides (in
    /// batches, see `assertions`).
    async fn use_assertion(
        &self,
        client: ClientId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.assertions
            .use_assertion(&self.pool, client, jti, expires_at)
            .await
    }

    async fn put_code(&self, code: AuthCode) -> Result<(), StoreError> {
        self.with("store a code", async move |c| {
            signin::put_code(&*c, &code).await
        })
        .await
    }

    async fn code(&self, hash: &str) -> Result<Option<(AuthCode, Option<Uuid>)>, StoreError> {
        let hash = hash.to_owned();
        self.with("read a code", async move |c| signin::code(&*c, &hash).await)
            .await
    }

    async fn redeem_code(&self, hash: &str, session: Uuid) -> Result<Option<Uuid>, StoreError> {
        let hash = hash.to_owned();
        self.with("redeem a code", async move |c| {
            signin::redeem_code(&*c, &hash, session).await
        })
        .await
    }

    async fn consent(&self, user: UserId, client: ClientId) -> Result<Option<Consent>, StoreError> {
        self.with("read a consent", async move |c| {
            signin::consent(&*c, user, client).await
        })
        .await
    }

    async fn put_consent(&self, user: UserId, consent: Consent) -> Result<(), StoreError> {
        self.with("store a consent", async move |c| {
            signin::put_consent(&*c, user, &consent).await
        })
        .await
    }

    async fn consents(&self, user: UserId) -> Result<Vec<Consent>, StoreError> {
        self.with("list consents", async move |c| {
            signin::consents(&*c, user).await
        })
        .await
    }

    async fn delete_consent(&self, user: UserId, client: ClientId) -> Result<bool, StoreError> {
        self.with("delete a consent", async move |c| {
            signin::delete_consent(&*c, user, client).await
        })
        .await
    }

    async fn enqueue_mail(&self, mail: QueuedMail) -> Result<(), StoreError> {
        self.with("queue a message", async move |c| {
            mail::enqueue(&*c, &mail).await
        })
        .await
    }

    async fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError> {
        self.with("claim messages", async move |c| {
            mail::claim(&*c, now, now + lease, limit).await
        })
        .await
    }

    async fn retry_mail(
        &self,
        id: Uuid,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with("reschedule a message", async move |c| {
            mail::retry(&*c, id, attempts, next_attempt_at).await
        })
        .await
    }

    async fn delete_mail(&self, id: Uuid) -> Result<(), StoreError> {
        self.with("forget a message", async move |c| {
            mail::delete(&*c, id).await
        })
        .await
    }

    /// On the database's clock, not `now` (see `sessions::prune`), in batches that each
    /// fit the operation bound however much there is to forget.
    async fn prune(&self, _now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let batch = self
                .with("prune", async move |c| {
                    sessions::prune(c, REVOKED_RETENTION).await
                })
                .await?;
            total += batch.removed;
            if !batch.more {
                return Ok(total);
            }
        }
    }

    fn failure_counts(&self) -> Option<&dyn FailureCounts> {
        Some(self)
    }

    fn cache_live(&self) -> Option<bool> {
        Some(self.cache.is_live())
    }
}
