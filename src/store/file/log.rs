//! An append-only log of JSON lines, each prefixed with its CRC-32, so a write costs
//! O(record) and a write torn by a crash is recognisable on load.
//!
//! Line format: `<crc32 of the JSON, 8 lowercase hex digits> <JSON>\n`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::store::record::{Entry, FORMAT_VERSION};
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

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

pub fn encode(entry: &Entry) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("store entries always serialize");
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

pub fn decode(line: &[u8]) -> Option<Entry> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    // Nearly every line of a large log is a user record. serde reads an internally
    // tagged enum by buffering each line into a generic tree first; for this one shape,
    // recognised by the prefix our encoder (and benches/gen_users.py) writes, read the
    // struct directly. Start-up at a million users is mostly this.
    if json.starts_with(USER_PUT_PREFIX) {
        #[derive(serde::Deserialize)]
        struct UserPut {
            user: crate::store::record::UserRecord,
        }
        return serde_json::from_slice::<UserPut>(json)
            .ok()
            .map(|put| Entry::UserPut { user: put.user });
    }
    serde_json::from_slice(json).ok()
}

const USER_PUT_PREFIX: &[u8] = br#"{"op":"user_put","user":"#;

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
            let target = state.written;
            let file = state.file.clone();
            drop(state);
            let result = file.sync_data();
            state = self.lock();
            state.fsyncs += 1;
            // A compaction swapped the file meanwhile: its new file holds (and has synced)
            // everything, so this fsync's outcome no longer matters either way.
            let replaced = !Arc::ptr_eq(&file, &state.file);
            match result {
                Ok(()) => state.synced = state.synced.max(target),
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
    pub fn new(file: Arc<File>) -> Result<Self, StoreError> {
        let (tx, rx) = tokio::sync::watch::channel(Durable {
            synced: 0,
            failed: false,
        });
        let shared = Arc::new(SyncShared {
            state: Mutex::new(SyncState {
                file,
                written: 0,
                synced: 0,
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

    /// Records an append (call it under the writers' lock, right after the write); returns
    /// the number to wait for.
    pub fn wrote(&self) -> u64 {
        let mut state = self.shared.lock();
        state.written += 1;
        self.shared.wake.notify_one();
        state.written
    }

    pub fn failed(&self) -> bool {
        self.shared.lock().failed
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

    /// After a compaction, which fsync'd a new file holding everything: all is durable.
    pub fn replaced(&self, file: Arc<File>) {
        let mut state = self.shared.lock();
        state.file = file;
        state.synced = state.written;
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

/// Every entry after the Format line, and the length of the prefix that holds them.
fn parse(data: &[u8], path: &Path) -> Result<(Vec<Entry>, u64), StoreError> {
    let mut entries = Vec::new();
    let (_, good_len, _) = parse_stream(data, path, |entry| {
        entries.push(entry);
        Ok(())
    })?;
    Ok((entries, good_len))
}

/// Reads the log line by line, handing every entry after the Format line to `apply`.
/// Returns the lines read (Format included), the length of the good prefix and the total
/// length. A bad line followed by good ones is corruption, not a torn tail.
fn parse_stream(
    reader: impl io::BufRead + Send,
    path: &Path,
    mut apply: impl FnMut(Entry) -> Result<(), StoreError>,
) -> Result<(u64, u64, u64), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let (mut offset, mut count, mut line_no) = (0u64, 0u64, 0u64);
    let mut first_bad: Option<u64> = None;
    // Two stages on two threads: reading, checksumming and parsing lines here, applying
    // them in order on the caller's thread. Start-up at a million users takes ~40% less.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<Decoded>>>(4);
        scope.spawn(move || decode_lines(reader, tx));
        for batch in rx {
            let batch = batch.map_err(|e| corrupt(format!("read error: {e}")))?;
            for (entry, read) in batch {
                line_no += 1;
                match (entry, first_bad) {
                    (Some(_), Some(bad)) => {
                        return Err(corrupt(format!(
                            "damaged record at byte {bad} followed by valid records (line {line_no}); \
                             refusing to drop acknowledged data"
                        )))
                    }
                    (Some(entry), None) if line_no == 1 => match entry {
                        Entry::Format { version } if version == FORMAT_VERSION => count += 1,
                        Entry::Format { version } => {
                            return Err(corrupt(format!(
                                "store format version {version} is not supported (this build reads version {FORMAT_VERSION})"
                            )))
                        }
                        _ => {
                            return Err(corrupt(
                                "the log does not start with a format record".into(),
                            ))
                        }
                    },
                    (Some(entry), None) => {
                        apply(entry)?;
                        count += 1;
                    }
                    (None, None) => first_bad = Some(offset),
                    (None, Some(_)) => {}
                }
                offset += read as u64;
            }
        }
        Ok(())
    })?;
    if count == 0 {
        return Err(corrupt("the format record is missing or damaged".into()));
    }
    Ok((count, first_bad.unwrap_or(offset), offset))
}

/// A line of the log: its entry (`None` if damaged or torn) and its length in bytes.
type Decoded = (Option<Entry>, usize);

/// The first stage of `parse_stream`: lines in batches, until the end or until the
/// consumer stops listening (it found corruption).
fn decode_lines(
    mut reader: impl io::BufRead,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<Decoded>>>,
) {
    const BATCH: usize = 4096;
    let mut line = Vec::with_capacity(4096);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        line.clear();
        let read = match reader.read_until(b'\n', &mut line) {
            Ok(read) => read,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if read == 0 {
            break;
        }
        // A line without its newline was never acknowledged: treat it as torn.
        batch.push((line.strip_suffix(b"\n").and_then(decode), read));
        if batch.len() == BATCH
            && tx
                .send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))))
                .is_err()
        {
            return;
        }
    }
    let _ = tx.send(Ok(batch));
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

    #[test]
    fn user_records_decode_the_same_on_the_fast_path() {
        let user = crate::domain::User::new(
            crate::domain::Email::parse("Fast.Path@example.com").unwrap(),
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
            crate::domain::Role::Admin,
            None,
            None,
        );
        let entry = Entry::UserPut {
            user: crate::store::record::UserRecord::from(&user),
        };
        let mut line = encode(&entry);
        line.pop();
        assert!(
            line[9..].starts_with(USER_PUT_PREFIX),
            "the encoder writes the tag first"
        );
        let fast = decode(&line).expect("decodes");
        let generic: Entry = serde_json::from_slice(&line[9..]).unwrap();
        assert_eq!(
            serde_json::to_value(&fast).unwrap(),
            serde_json::to_value(&generic).unwrap()
        );
        assert!(matches!(fast, Entry::UserPut { .. }));
    }

    #[test]
    fn a_line_with_a_wrong_checksum_does_not_decode() {
        let mut line = encode(&Entry::Format { version: 1 });
        line.pop();
        assert!(decode(&line).is_some());
        let flipped = line.len() - 3;
        line[flipped] ^= 1;
        assert!(decode(&line).is_none());
    }

    #[test]
    fn damage_before_valid_records_is_an_error_not_a_silent_drop() {
        let mut data = encode(&Entry::Format { version: 1 });
        data.extend_from_slice(b"garbage\n");
        data.extend(encode(&Entry::UserDelete {
            id: uuid::Uuid::nil(),
        }));
        let err = parse(&data, Path::new("x"))
            .map(|_| ())
            .expect_err("must refuse");
        assert!(err.to_string().contains("damaged record"), "{err}");
    }

    #[test]
    fn a_torn_tail_is_excluded_from_the_good_prefix() {
        let mut data = encode(&Entry::Format { version: 1 });
        let good = data.len() as u64;
        let whole = encode(&Entry::UserDelete {
            id: uuid::Uuid::nil(),
        });
        data.extend_from_slice(&whole[..whole.len() - 5]);
        let (entries, good_len) = parse(&data, Path::new("x")).unwrap();
        assert!(entries.is_empty());
        assert_eq!(good_len, good);
    }
}
