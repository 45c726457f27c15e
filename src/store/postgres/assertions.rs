//! Used client assertions (`private_key_jwt`), decided by the database in batches: each
//! replica sends the uses that arrive while its previous statement runs as one INSERT …
//! ON CONFLICT, so a busy replica spends one round trip on many assertions, not one each.
//! The database's primary key still decides every use, across replicas: a batch changes
//! how uses travel, not who decides.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use super::{database, with_pool};
use crate::domain::ClientId;
use crate::store::StoreError;

/// Uses sent in one statement at most; more wait for the next.
const MAX_BATCH: usize = 1000;
/// Uses waiting at most (a database that stopped answering): beyond that, refused at once.
const MAX_WAITING: usize = 10 * MAX_BATCH;
/// How long a use waits for its answer at most: a batch's own connection and statement
/// are bounded by `OPERATION` each.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One use waiting for its answer.
struct Use {
    client: ClientId,
    digest: Vec<u8>,
    expires_at: DateTime<Utc>,
    answer: oneshot::Sender<Result<bool, String>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Use>,
    /// A task is sending batches; it takes whatever arrives until nothing does.
    flushing: bool,
}

/// This replica's queue of uses on their way to the database.
#[derive(Clone, Default)]
pub struct Batcher {
    queue: Arc<Mutex<Queue>>,
}

impl Batcher {
    /// Whether `client`'s assertion `jti` is used here for the first time (see
    /// `Store::use_assertion`), decided by the database with whatever else is waiting.
    pub async fn use_assertion(
        &self,
        pool: &Pool,
        client: ClientId,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let failed = |reason: String| StoreError::Database {
            context: "use an assertion".into(),
            reason,
        };
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.waiting.len() >= MAX_WAITING {
                return Err(failed(
                    "too many client assertions are waiting for the database".into(),
                ));
            }
            queue.waiting.push(Use {
                client,
                digest: super::clients::jti_digest(jti),
                expires_at,
                answer,
            });
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start {
            // A task of its own: a caller that hangs up must not leave the queue stopped.
            tokio::spawn(flush(self.queue.clone(), pool.clone()));
        }
        match tokio::time::timeout(MAX_WAIT, answered).await {
            Ok(Ok(result)) => result.map_err(failed),
            Ok(Err(_)) => Err(failed("the batch was dropped".into())),
            Err(_) => Err(failed("the database did not answer in time".into())),
        }
    }
}

/// Clears `flushing` however `flush` ends (a panic, or its runtime shutting down), failing
/// what is still waiting, so the queue never stays stopped with callers in it.
struct Flushing {
    queue: Arc<Mutex<Queue>>,
    /// `flush` ended normally (and cleared `flushing` itself, under the lock).
    done: bool,
}

impl Drop for Flushing {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.flushing = false;
        for u in queue.waiting.drain(..) {
            let _ = u.answer.send(Err("the batch was dropped".into()));
        }
    }
}

/// Sends the waiting uses in batches until none are left.
async fn flush(queue: Arc<Mutex<Queue>>, pool: Pool) {
    let mut guard = Flushing {
        queue: queue.clone(),
        done: false,
    };
    loop {
        let batch: Vec<Use> = {
            let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            // A caller that gave up (hung up, timed out) has nothing to be told.
            queue.waiting.retain(|u| !u.answer.is_closed());
            if queue.waiting.is_empty() {
                queue.flushing = false;
                guard.done = true;
                return;
            }
            let take = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..take).collect()
        };
        // One assertion twice in a batch: the first is sent, the others are replays (one
        // statement may not insert and update the same row).
        let mut seen = HashSet::new();
        let (first, again): (Vec<Use>, Vec<Use>) = batch
            .into_iter()
            .partition(|u| seen.insert((u.client, u.digest.clone())));
        for replay in again {
            let _ = replay.answer.send(Ok(false));
        }
        // One order for every replica's batches: rows are locked as they are inserted, so
        // two batches taking the same keys in opposite orders could deadlock.
        let mut first = first;
        first.sort_by(|a, b| (a.client, &a.digest).cmp(&(b.client, &b.digest)));
        match insert(&pool, &first).await {
            Ok(accepted) => {
                for u in first {
                    let new = accepted.contains(&(u.client, u.digest));
                    let _ = u.answer.send(Ok(new));
                }
            }
            Err(error) => {
                let reason = error.to_string();
                for u in first {
                    let _ = u.answer.send(Err(reason.clone()));
                }
            }
        }
    }
}

/// One statement for the batch; the uses the database accepted (new, or over an expired
/// use). `synchronous_commit` is off for its own transaction only (set_config's `true`):
/// the rows are decided and visible to every replica at once, but the commit does not wait
/// for the WAL flush, which would bind every `private_key_jwt` request to the disk's
/// latency. A crash of the database can lose the last moments of used ids (the WAL writer
/// flushes within 3 × wal_writer_delay); README "Design decisions" says why that is
/// acceptable.
async fn insert(pool: &Pool, batch: &[Use]) -> Result<HashSet<(ClientId, Vec<u8>)>, StoreError> {
    let clients: Vec<ClientId> = batch.iter().map(|u| u.client).collect();
    let digests: Vec<Vec<u8>> = batch.iter().map(|u| u.digest.clone()).collect();
    let expiries: Vec<DateTime<Utc>> = batch.iter().map(|u| u.expires_at).collect();
    let leeway = super::clients::assertion_leeway();
    with_pool(pool, "use an assertion", async move |c| {
        let statement = c
            .prepare_cached(
                "INSERT INTO client_assertions (client_id, jti_sha256, expires_at) \
                 SELECT u.client_id, u.jti_sha256, u.expires_at \
                 FROM unnest($1::uuid[], $2::bytea[], $3::timestamptz[]) WITH ORDINALITY \
                      AS u (client_id, jti_sha256, expires_at, position), \
                      (SELECT set_config('synchronous_commit', 'off', true)) AS async \
                 ORDER BY u.position \
                 ON CONFLICT (client_id, jti_sha256) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE client_assertions.expires_at <= now() - make_interval(secs => $4) \
                 RETURNING client_id, jti_sha256",
            )
            .await
            .map_err(database("use an assertion"))?;
        let rows = c
            .query(&statement, &[&clients, &digests, &expiries, &leeway])
            .await
            .map_err(database("use an assertion"))?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, ClientId>(0), row.get::<_, Vec<u8>>(1)))
            .collect())
    })
    .await
}
