//! Login-failure counters shared by every replica: one row per account or address, in
//! fixed windows timed by the database's clock (replicas' clocks may differ). An attempt
//! is counted in one transaction holding the keys' row locks, so concurrent attempts on
//! any replica are judged one after the other and add up.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{database, exec, read_committed, rows, PgStore};
use crate::store::{FailureCounts, StoreError};

#[async_trait]
impl FailureCounts for PgStore {
    async fn reserve(
        &self,
        keys: &[(String, u32)],
        window: Duration,
    ) -> Result<Option<(Duration, String)>, StoreError> {
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let seconds = window.as_secs_f64();
        let context = "count a login attempt";
        self.with(context, async move |c| {
            let tx = read_committed(c, context).await?;
            // Every key has a row to lock (an ended window counts as none); rows are
            // locked in key order, so two attempts on the same keys cannot deadlock, and
            // concurrent attempts on any replica are judged one after the other.
            exec(
                &tx,
                "INSERT INTO login_failures (key, window_start, window_end, failures) \
                 SELECT k, now(), now(), 0 FROM unnest($1::text[]) AS k \
                 ON CONFLICT (key) DO NOTHING",
                &[&names],
            )
            .await
            .map_err(database(context))?;
            let rows = rows(
                &tx,
                "SELECT key, failures, window_end > now() AS live, \
                 extract(epoch FROM window_end - now())::float8 AS remaining \
                 FROM login_failures WHERE key = ANY($1) ORDER BY key FOR UPDATE",
                &[&names],
            )
            .await
            .map_err(database(context))?;
            let wait = rows
                .iter()
                .filter(|row| {
                    let key: &str = row.get("key");
                    let failures: i32 = row.get("failures");
                    row.get::<_, bool>("live")
                        && keys
                            .iter()
                            .any(|(k, limit)| k == key && i64::from(failures) >= i64::from(*limit))
                })
                .map(|row| {
                    let remaining = row.get::<_, f64>("remaining").max(0.0);
                    (
                        Duration::from_secs_f64(remaining),
                        row.get::<_, String>("key"),
                    )
                })
                .max();
            if wait.is_none() {
                exec(
                    &tx,
                    "UPDATE login_failures SET \
                     failures = CASE WHEN window_end <= now() THEN 1 ELSE failures + 1 END, \
                     window_start = CASE WHEN window_end <= now() THEN now() \
                                         ELSE window_start END, \
                     window_end = CASE WHEN window_end <= now() \
                                       THEN now() + make_interval(secs => $2) \
                                       ELSE window_end END \
                     WHERE key = ANY($1)",
                    &[&names, &seconds],
                )
                .await
                .map_err(database(context))?;
            }
            tx.commit().await.map_err(database(context))?;
            Ok(wait.map(|(w, key)| (w.max(Duration::from_secs(1)), key)))
        })
        .await
    }

    async fn refund(&self, keys: &[String]) -> Result<(), StoreError> {
        self.with("take back a login attempt", async move |c| {
            exec(
                &*c,
                "UPDATE login_failures SET failures = greatest(failures - 1, 0) \
                 WHERE key = ANY($1) AND window_end > now()",
                &[&keys],
            )
            .await
            .map_err(database("take back a login attempt"))
        })
        .await?;
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.with("clear login failures", async move |c| {
            exec(&*c, "DELETE FROM login_failures WHERE key = $1", &[&key])
                .await
                .map_err(database("clear login failures"))
        })
        .await?;
        Ok(())
    }
}

/// Forgets windows that have ended, skipping rows an attempt holds (taking them in another
/// order than `reserve` could deadlock with it).
pub async fn prune(client: &impl GenericClient) -> Result<u64, StoreError> {
    exec(
        client,
        "DELETE FROM login_failures WHERE key IN (SELECT key FROM login_failures \
         WHERE window_end <= now() FOR UPDATE SKIP LOCKED)",
        &[],
    )
    .await
    .map_err(database("prune login failures"))
}
