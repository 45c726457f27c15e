//! An append-only log of JSON lines, each prefixed with its CRC-32 (see `codec`), so a
//! write costs O(record) and a write torn by a crash is recognisable on load.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{encode, parse, parse_stream, Entry, FORMAT_VERSION};
use crate::store::StoreError;

const LOG_FILE: &str = "store.log";
const TMP_FILE: &str = "store.log.tmp";

pub struct Log {
    dir: PathBuf,
    /// Shared with the `Syncer`, which fsyncs it outside the writers' lock.
    file: Arc<File>,
    len: u64,
    /// Lines in the file, the Format line included: the compaction trigger.
    entries: u64,
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
    /// tail (a crash mid-append) is cut off; damage before the last good line is an error,
    /// because that would be silent loss of acknowledged writes.
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
        let (count, good_len, total_len) = parse_stream(reader, &path, apply)?;
        let file = Arc::new(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(format!("open {}", path.display())))?,
        );
        if good_len < total_len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = total_len - good_len,
                "dropping a torn record at the end of the store log (an unacknowledged write cut off by a crash)"
            );
            file.set_len(good_len)
                .and_then(|_| file.sync_all())
                .map_err(io_err(format!("truncate {}", path.display())))?;
        }
        let log = Self {
            dir: dir.to_owned(),
            file,
            len: good_len,
            entries: count,
            broken: false,
        };
        Ok(log)
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The file appends go to, for the `Syncer`.
    pub fn handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Appends entries to the file (not yet durable: see `Syncer`). A failed write is rolled
    /// back so later appends do not follow a partial line.
    pub fn write(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.broken {
            return Err(StoreError::Unavailable(io::Error::other(
                "an earlier write failed and could not be rolled back; restart to recover",
            )));
        }
        let buf: Vec<u8> = entries.iter().flat_map(encode).collect();
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
        Ok(())
    }

    /// Replaces the log with `entries` (the live state): write a temp file, fsync it,
    /// rename it over the log, fsync the directory. A crash at any point leaves either
    /// the old or the new log, both complete.
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
