//! Group commit of the log's appends (see `Syncer`).

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex};

use super::log::io_err;
use crate::store::StoreError;

/// Group commit: writers append under the store's lock, then wait (asynchronously, no
/// thread parked per write) until an fsync that started after their append has finished.
/// One thread per store runs `fdatasync` in a loop; every append that arrived while one
/// ran is covered by the next, so under load one fsync acknowledges many writes.
pub struct Syncer {
    shared: Arc<SyncShared>,
    durable: tokio::sync::watch::Receiver<Durable>,
}

struct SyncShared {
    state: Mutex<SyncState>,
    /// Wakes the fsync thread: something was written, or the store is closing.
    wake: Condvar,
    durable: tokio::sync::watch::Sender<Durable>,
}

struct SyncState {
    file: Arc<File>,
    /// Appends so far.
    written: u64,
    /// Appends known to be on disk.
    synced: u64,
    /// The length of `file` after the last append.
    written_len: u64,
    /// How much of `file` is known to be on disk: the length the last completed fsync
    /// covered (what a commit marker may claim).
    synced_len: u64,
    /// An fsync failed: what is on disk is unknown, so nothing more is acknowledged.
    failed: bool,
    closed: bool,
    fsyncs: u64,
}

/// What writers wait on: how many appends are on disk, and whether that stopped for good.
#[derive(Debug, Clone, Copy)]
struct Durable {
    synced: u64,
    failed: bool,
}

impl SyncShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &SyncState) {
        self.durable.send_replace(Durable {
            synced: state.synced,
            failed: state.failed,
        });
    }

    /// The fsync thread: sleeps until there are unsynced appends, syncs them all at once.
    fn run(&self) {
        let mut state = self.lock();
        loop {
            while !state.closed && (state.failed || state.synced >= state.written) {
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closed {
                return;
            }
            let (target, target_len) = (state.written, state.written_len);
            let file = state.file.clone();
            drop(state);
            let result = file.sync_data();
            state = self.lock();
            state.fsyncs += 1;
            // A compaction swapped the file meanwhile: its new file holds (and has synced)
            // everything, so this fsync's outcome no longer matters either way.
            let replaced = !Arc::ptr_eq(&file, &state.file);
            match result {
                // Lengths are of one file: the new one's were set by `replaced`.
                Ok(()) if replaced => {}
                Ok(()) => {
                    state.synced = state.synced.max(target);
                    state.synced_len = state.synced_len.max(target_len);
                }
                Err(e) if replaced => {
                    tracing::warn!(error = %e, "fsync of a store log already replaced by compaction failed; ignored");
                }
                Err(e) => {
                    tracing::error!(error = %e, "fsync of the store log failed; refusing further writes");
                    state.failed = true;
                }
            }
            self.publish(&state);
        }
    }
}

impl Syncer {
    /// For `file`, whose first `len` bytes are on disk already.
    pub fn new(file: Arc<File>, len: u64) -> Result<Self, StoreError> {
        let (tx, rx) = tokio::sync::watch::channel(Durable {
            synced: 0,
            failed: false,
        });
        let shared = Arc::new(SyncShared {
            state: Mutex::new(SyncState {
                file,
                written: 0,
                synced: 0,
                written_len: len,
                synced_len: len,
                failed: false,
                closed: false,
                fsyncs: 0,
            }),
            wake: Condvar::new(),
            durable: tx,
        });
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("store-fsync".into())
            .spawn(move || thread.run())
            .map_err(io_err("start the store's fsync thread"))?;
        Ok(Self {
            shared,
            durable: rx,
        })
    }

    /// Records an append that left the file `len` bytes long (call it under the writers'
    /// lock, right after the write); returns the number to wait for.
    pub fn wrote(&self, len: u64) -> u64 {
        let mut state = self.shared.lock();
        state.written += 1;
        state.written_len = len;
        self.shared.wake.notify_one();
        state.written
    }

    pub fn failed(&self) -> bool {
        self.shared.lock().failed
    }

    /// How much of the file is on disk: the length the last fsync that returned had covered
    /// (or the file's length when it was opened or replaced, already synced then).
    pub fn synced_len(&self) -> u64 {
        self.shared.lock().synced_len
    }

    /// Appends so far: a write that appends nothing waits for this many to be durable.
    pub fn appended(&self) -> u64 {
        self.shared.lock().written
    }

    /// Stops all further writes, as a failed fsync does (for the writer thread's panics).
    pub fn failer(&self) -> impl Fn() + Send + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            let mut state = shared.lock();
            state.failed = true;
            shared.publish(&state);
        }
    }

    /// fsyncs run so far (for tests and metrics).
    pub fn fsyncs(&self) -> u64 {
        self.shared.lock().fsyncs
    }

    /// After a compaction, which fsync'd a new file of `len` bytes holding everything: all
    /// is durable.
    pub fn replaced(&self, file: Arc<File>, len: u64) {
        let mut state = self.shared.lock();
        state.file = file;
        state.synced = state.written;
        state.written_len = len;
        state.synced_len = len;
        self.shared.publish(&state);
    }

    /// Returns once append number `seq` is on disk.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        let mut durable = self.durable.clone();
        let reached = durable
            .wait_for(|d| d.synced >= seq || d.failed)
            .await
            .map(|d| d.synced >= seq);
        match reached {
            Ok(true) => Ok(()),
            // Failed, or (never, while the store is open) the fsync thread is gone.
            _ => Err(StoreError::Unavailable(io::Error::other(
                "an fsync of the store failed; restart to recover",
            ))),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}
