//! The file store's write path: one writer thread appends every change to the log and
//! applies it in memory, in arrival order; callers are answered once the syncer has made
//! it durable. Compaction rewrites the log as the live records, off that thread.

use std::sync::atomic::Ordering;

use super::codec::Entry;
use super::state::State;
use super::{read, FileStore};
use crate::store::StoreError;

/// One write, run on the writer thread; it reports its own outcome.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// The writer thread: runs jobs in arrival order until the store is dropped. A job that
/// panics may have appended without applying (a bug, not an input): `failed` then stops
/// every later write, as a failed fsync does, since memory and disk may disagree.
pub(super) fn start_writer(
    failed: impl Fn() + Send + 'static,
) -> Result<std::sync::mpsc::Sender<Job>, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            for job in rx {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a store write panicked; refusing further writes");
                    failed();
                }
            }
        })
        .map_err(|source| StoreError::Io {
            context: "start the store's writer thread".into(),
            source,
        })?;
    Ok(tx)
}

impl FileStore {
    /// Runs one write on the writer thread: `plan` sees the current state and returns the
    /// entries to append; they are appended and applied in memory at once (so the next
    /// write validates against them), and the caller is answered once they are durable.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        plan: impl FnOnce(&State) -> Result<(Vec<Entry>, T), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (appended, out) = self.append(plan).await?;
        self.inner.syncer.wait_durable(appended).await?;
        Ok(out)
    }

    /// On the writer thread: appends every used assertion pending (see `use_assertion`) in
    /// one write and applies them, taking them out of the pending set under its lock, so
    /// that each use is always in one of the two. Not acknowledged to anyone: the syncer
    /// makes it durable with whatever comes next. If the append fails they stay pending
    /// (still refused in memory; expired ones dropped) and the next use schedules another
    /// try.
    pub(super) fn append_pending_assertions(&self) {
        let inner = &self.inner;
        let mut log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = inner
            .pending_assertions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending.scheduled = false;
        if pending.uses.is_empty() || inner.syncer.failed() {
            return;
        }
        let entries: Vec<Entry> = pending
            .uses
            .iter()
            .map(|(&key, &exp)| Entry::AssertionUse { key, exp })
            .collect();
        if let Err(error) = log.write(&entries, inner.syncer.synced_len()) {
            tracing::error!(%error, "could not append used client assertions; they stay in memory");
            let now = crate::domain::now();
            pending
                .uses
                .retain(|_, &mut exp| super::state::still_accepted(exp, now));
            return;
        }
        inner.syncer.wrote(log.len());
        let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            state
                .apply(entry)
                .expect("entries were built from valid domain values");
        }
        pending.uses.clear();
        let due = log.entries() > 2 * state.live_records() + inner.options.compact_slack;
        drop((state, pending, log));
        if due {
            self.compact_in_background();
        }
    }

    /// Appends and applies `plan`'s entries on the writer thread: the sequence number to
    /// wait for, and `plan`'s answer.
    async fn append<T: Send + 'static>(
        &self,
        plan: impl FnOnce(&State) -> Result<(Vec<Entry>, T), StoreError> + Send + 'static,
    ) -> Result<(u64, T), StoreError> {
        let inner = self.inner.clone();
        let store = self.clone();
        // The append runs on the writer thread (the lock may be held by a compaction);
        // waiting for the fsync does not hold a thread.
        let job = move || {
            let mut log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
            if inner.syncer.failed() {
                return Err(StoreError::Unavailable(std::io::Error::other(
                    "an fsync of the store failed; restart to recover",
                )));
            }
            let (entries, out) = plan(&read(&inner.state))?;
            if entries.is_empty() {
                // Nothing to append, but the answer may rest on earlier writes that are
                // applied and not yet durable (a repeated revocation, a duplicate email):
                // it waits for them like any write.
                return Ok((inner.syncer.appended(), out));
            }
            log.write(&entries, inner.syncer.synced_len())?;
            let seq = inner.syncer.wrote(log.len());
            // Applied before it is durable, so the next writer validates against it; the
            // caller is answered only once it is durable (below).
            let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                state
                    .apply(entry)
                    .expect("entries were built from valid domain values");
            }
            let due = log.entries() > 2 * state.live_records() + inner.options.compact_slack;
            drop((state, log));
            if due {
                store.compact_in_background();
            }
            Ok((seq, out))
        };
        self.on_writer(job).await?
    }

    /// Runs `job` on the writer thread, after the writes queued before it.
    pub(super) async fn on_writer<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let gone = || StoreError::Unavailable(std::io::Error::other("the store's writer stopped"));
        let (done, result) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(Box::new(move || {
                let _ = done.send(job());
            }))
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())
    }

    fn compact_in_background(&self) {
        if self.inner.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        let started = std::thread::Builder::new()
            .name("store-compaction".into())
            .spawn(move || {
                if let Err(e) = store.compact() {
                    tracing::error!(error = %e, "store compaction failed; the log stays as it was");
                }
                store.inner.compacting.store(false, Ordering::Release);
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "could not start a store compaction; will retry");
            self.inner.compacting.store(false, Ordering::Release);
        }
    }

    /// Rewrites the log as the live records only. Writers wait (the log's lock); readers
    /// do not: the rewrite holds the state's lock only for reading, and nothing else waits
    /// for its write side meanwhile (writes and pruning run under the log's lock too).
    pub fn compact(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        self.inner
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .prune(crate::domain::now(), self.inner.options.revoked_retention);
        let (before, old_format) = (log.entries(), log.version());
        log.rewrite(read(&self.inner.state).snapshot())?;
        self.inner.syncer.replaced(log.handle(), log.len());
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            before,
            after = log.entries(),
            elapsed_ms,
            "store log compacted"
        );
        if old_format != log.version() {
            tracing::info!(
                from = old_format,
                to = log.version(),
                "store log rewritten in the current format (with commit markers)"
            );
        }
        Ok(())
    }
}
