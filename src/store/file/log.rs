//! An append-only log of JSON lines, each prefixed with its CRC-32 (see `codec`), so a
//! write costs O(record) and a write torn by a crash is recognisable on load.
//!
//! **Commit markers** (format 2). A power cut may leave any part of what was appended since
//! the last completed fdatasync on disk, in any order (the page cache writes pages back as
//! it likes): a damaged record followed by valid ones. Those were never acknowledged, and
//! are dropped; damage to what *was* acknowledged must still stop the start-up. To tell
//! them apart, an append made after an fdatasync completed starts with a marker recording
//! how far the file is synced, `synced through N`, N being the length the syncer had
//! covered when its fdatasync returned. The marker is appended in the same `write` as the
//! records that follow it, and is made durable by the same fdatasync as they are: no
//! extra fsync. Why it settles the question:
//!
//! - A marker claims only what an fdatasync that *returned* had covered, and is written
//!   after that: by the time it exists anywhere, even in the page cache, its first N bytes
//!   are on stable storage, and no power cut can damage them. So a valid marker after the
//!   damage claiming it (N > the damage's offset) proves the damage came from something
//!   else (the disk, a person): start-up refuses, as it always did.
//! - A write is answered only after an fdatasync that covered it returned (the `Syncer`),
//!   so every acknowledged byte lies below the point P the last completed fdatasync
//!   reached, and a power cut damages only bytes at or above P. Every marker on disk
//!   claims at most P (it recorded a completed fdatasync). So damage from a power cut is
//!   never claimed by any marker, and everything from it on lies above P: nothing there
//!   was acknowledged, and dropping it (with the valid lines after it) loses no answered
//!   write. The kept prefix is whole lines in append order, so it is a state the store
//!   really passed through.
//!
//! Like the torn-tail rule, this assumes a sector write is atomic: the last, partly filled
//! sector of the synced part is written again with the next appends, and must come back
//! old or new, never garbled.
//!
//! A marker is not a record: the state never sees it, compaction drops it, and it does not
//! count towards compaction. Before the first append after start (or after a compaction)
//! the whole file is fdatasync'd, so the first marker may claim all of it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{encode, encode_synced, parse, parse_stream, Entry, FORMAT_VERSION};
use crate::store::StoreError;

const LOG_FILE: &str = "store.log";
const TMP_FILE: &str = "store.log.tmp";

pub struct Log {
    dir: PathBuf,
    /// Shared with the `Syncer`, which fsyncs it outside the writers' lock.
    file: Arc<File>,
    len: u64,
    /// Records in the file, the Format line included (commit markers not): the compaction
    /// trigger.
    entries: u64,
    /// The file's format: 1 (no commit markers) until a compaction rewrites it as 2.
    version: u32,
    /// How far the last commit marker written claims the file is synced.
    sealed: u64,
    /// Set when a failed append could not be rolled back: the tail of the file is
    /// unknown, so no further write may be acknowledged.
    broken: bool,
}

pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// Makes a rename or a new file durable: POSIX persists directory entries separately.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("fsync {}", dir.display())))
}

pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

impl Log {
    /// Opens (or creates) the log in `dir` and returns it with every entry in it. A torn
    /// tail (a crash mid-append) is cut off, and so is damage followed only by records no
    /// commit marker records as synced (a power cut mid group commit: see the module's
    /// doc); other damage is an error, because dropping it could lose acknowledged writes.
    /// The file is fdatasync'd before it is returned: what was loaded is durable.
    pub fn open(
        dir: &Path,
        apply: impl FnMut(Entry) -> Result<(), StoreError>,
    ) -> Result<Self, StoreError> {
        let path = dir.join(LOG_FILE);
        // A crash mid-compaction leaves a temp file that was never renamed: the log is intact.
        let _ = fs::remove_file(dir.join(TMP_FILE));
        // A log without one complete line never got past its format record, so nothing in
        // it was ever acknowledged: (re)create it, atomically, as a temp file renamed in place.
        let uninitialised = match File::open(&path) {
            Ok(f) => {
                // The format record is short: its newline is within the first bytes.
                let mut head = Vec::new();
                f.take(4096)
                    .read_to_end(&mut head)
                    .map_err(io_err(format!("read {}", path.display())))?;
                !head.contains(&b'\n')
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        if uninitialised {
            let tmp = dir.join(TMP_FILE);
            let created = create_private(&tmp).and_then(|mut file| {
                file.write_all(&encode(&Entry::Format {
                    version: FORMAT_VERSION,
                }))?;
                file.sync_all()?;
                fs::rename(&tmp, &path)
            });
            created.map_err(io_err(format!("create {}", path.display())))?;
            sync_dir(dir)?;
        }
        // Streamed: a large store is never held in memory twice (file and state).
        let reader = io::BufReader::with_capacity(
            1 << 20,
            File::open(&path).map_err(io_err(format!("read {}", path.display())))?,
        );
        let scan = parse_stream(reader, &path, apply)?;
        let file = Arc::new(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(format!("open {}", path.display())))?,
        );
        let repaired = scan.good_len < scan.total_len;
        if scan.dropped_after_damage > 0 {
            tracing::warn!(
                path = %path.display(),
                damaged_at = scan.good_len,
                dropped_bytes = scan.total_len - scan.good_len,
                dropped_records = scan.dropped_after_damage,
                "dropping a damaged record and the valid ones after it at the end of the store log: \
                 no commit marker records them as synced, so none was acknowledged (a power cut \
                 during a group commit)"
            );
        } else if repaired {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = scan.total_len - scan.good_len,
                "dropping a torn record at the end of the store log (an unacknowledged write cut off by a crash)"
            );
        }
        // After a kill -9 the file may hold appends that are only in the page cache: made
        // durable here, so the first commit marker may claim the whole file.
        let synced = if repaired {
            file.set_len(scan.good_len).and_then(|_| file.sync_all())
        } else {
            file.sync_data()
        };
        synced.map_err(io_err(format!("sync {}", path.display())))?;
        let log = Self {
            dir: dir.to_owned(),
            file,
            len: scan.good_len,
            entries: scan.records,
            version: scan.version,
            sealed: 0,
            broken: false,
        };
        Ok(log)
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The file's length: what has been appended (not necessarily durable yet).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file's format version (1 until a compaction rewrites an old log).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The file appends go to, for the `Syncer`.
    pub fn handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Appends entries to the file (not yet durable: see `Syncer`). `synced` is how far the
    /// file is known durable (the syncer's last completed fdatasync): if that moved since the
    /// last commit marker, a new one goes first, in the same write (see the module's doc).
    /// A failed write is rolled back so later appends do not follow a partial line.
    pub fn write(&mut self, entries: &[Entry], synced: u64) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.broken {
            return Err(StoreError::Unavailable(io::Error::other(
                "an earlier write failed and could not be rolled back; restart to recover",
            )));
        }
        debug_assert!(synced <= self.len, "synced beyond the end of the file");
        let mark = self.version >= FORMAT_VERSION && synced > self.sealed;
        let mut buf = if mark {
            encode_synced(synced)
        } else {
            Vec::new()
        };
        buf.extend(entries.iter().flat_map(encode));
        let written = (&*self.file).write_all(&buf);
        if let Err(e) = written {
            if self
                .file
                .set_len(self.len)
                .and_then(|_| self.file.sync_data())
                .is_err()
            {
                self.broken = true;
            }
            return Err(StoreError::Unavailable(e));
        }
        self.len += buf.len() as u64;
        self.entries += entries.len() as u64;
        if mark {
            self.sealed = synced;
        }
        Ok(())
    }

    /// Replaces the log with `entries` (the live state), in the current format (so an old
    /// log becomes format 2 here): write a temp file, fsync it, rename it over the log,
    /// fsync the directory. A crash at any point leaves either the old or the new log,
    /// both complete.
    pub fn rewrite(&mut self, entries: impl Iterator<Item = Entry>) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP_FILE);
        let path = self.dir.join(LOG_FILE);
        let result = (|| {
            let mut out = io::BufWriter::new(create_private(&tmp)?);
            let mut count = 1;
            out.write_all(&encode(&Entry::Format {
                version: FORMAT_VERSION,
            }))?;
            for entry in entries {
                out.write_all(&encode(&entry))?;
                count += 1;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok::<_, io::Error>(count)
        })();
        let count = match result {
            Ok(count) => count,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::Unavailable(e));
            }
        };
        // The rename happened: the old handle now points at an unlinked file. Until the new
        // one is open and durable, no append may be acknowledged.
        self.broken = true;
        sync_dir(&self.dir)?;
        self.file = Arc::new(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(format!("reopen {}", path.display())))?,
        );
        self.len = self
            .file
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?
            .len();
        self.entries = count;
        self.version = FORMAT_VERSION;
        // A new file: no marker in it yet (the next append writes one claiming all of it).
        self.sealed = 0;
        self.broken = false;
        Ok(())
    }
}

/// The entries of the log in `dir` without opening it for writing (another process may
/// hold it): a torn tail is ignored, not repaired.
pub fn read_entries(dir: &Path) -> Result<Vec<Entry>, StoreError> {
    let path = dir.join(LOG_FILE);
    match fs::read(&path) {
        Ok(data) => parse(&data, &path).map(|(entries, _)| entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(format!("read {}", path.display()))(e)),
    }
}

#[cfg(test)]
impl Log {
    /// Swaps the append handle for a read-only one, so every write fails as on a full or
    /// read-only disk.
    pub fn break_writes_for_test(&mut self) {
        self.file = Arc::new(File::open(self.dir.join(LOG_FILE)).unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_cut_off_before_its_first_line_is_recreated() {
        for content in [&b""[..], b"0000", b"1234abcd {\"op\":\"for"] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(LOG_FILE), content).unwrap();
            let mut entries = Vec::new();
            let log = Log::open(dir.path(), |e| {
                entries.push(e);
                Ok(())
            })
            .expect("a store that never acked anything loads");
            assert!(entries.is_empty());
            assert_eq!(log.entries(), 1);
        }
    }
}
