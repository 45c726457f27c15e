//! Login-failure counters shared by every replica: one row per account or address, in
//! fixed windows timed by the database's clock (replicas' clocks may differ). Each
//! failure is one atomic upsert, so failures on different replicas add up.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{database, exec, rows, PgStore};
use crate::store::{FailureCounts, StoreError};

#[async_trait]
impl FailureCounts for PgStore {
    async fn blocked(&self, keys: &[(String, u32)]) -> Result<Option<Duration>, StoreError> {
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let rows = self
            .with("check login failures", async move |c| {
                rows(
                    &*c,
                    "SELECT key, failures, \
                     extract(epoch FROM window_end - now())::float8 AS remaining \
                     FROM login_failures WHERE key = ANY($1) AND window_end > now()",
                    &[&names],
                )
                .await
                .map_err(database("check login failures"))
            })
            .await?;
        let wait = rows
            .iter()
            .filter(|row| {
                let key: &str = row.get("key");
                let failures: i32 = row.get("failures");
                keys.iter()
                    .any(|(k, limit)| k == key && failures as i64 >= i64::from(*limit))
            })
            .map(|row| Duration::from_secs_f64(row.get::<_, f64>("remaining").max(0.0)))
            .max();
        Ok(wait.map(|w| w.max(Duration::from_secs(1))))
    }

    async fn record_failure(&self, keys: &[String], window: Duration) -> Result<(), StoreError> {
        let seconds = window.as_secs_f64();
        self.with("count a login failure", async move |c| {
            exec(&*c, "INSERT INTO login_failures (key, window_start, window_end, failures) \
                 SELECT k, now(), now() + make_interval(secs => $2), 1 FROM unnest($1::text[]) AS k \
                 ON CONFLICT (key) DO UPDATE SET \
                 failures = CASE WHEN login_failures.window_end <= now() THEN 1 \
                                 ELSE login_failures.failures + 1 END, \
                 window_start = CASE WHEN login_failures.window_end <= now() THEN now() \
                                     ELSE login_failures.window_start END, \
                 window_end = CASE WHEN login_failures.window_end <= now() \
                                   THEN now() + make_interval(secs => $2) \
                                   ELSE login_failures.window_end END",
                &[&keys, &seconds],
            )
            .await
            .map_err(database("count a login failure"))
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

/// Forgets windows that have ended.
pub async fn prune(client: &impl GenericClient) -> Result<u64, StoreError> {
    exec(
        client,
        "DELETE FROM login_failures WHERE window_end <= now()",
        &[],
    )
    .await
    .map_err(database("prune login failures"))
}
