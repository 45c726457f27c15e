//! The log's line format: each entry as JSON prefixed with its CRC-32, so a write torn by
//! a crash is recognisable on load.
//!
//! Line format: `<crc32 of the JSON, 8 lowercase hex digits> <JSON>\n`.
//!
//! Format 2 adds commit markers between the records, `{"op":"synced","through":N}`: "the
//! first N bytes of this file had been fdatasync'd before this line was written" (see
//! `log` for why that tells acknowledged records from unacknowledged ones after a power
//! cut). Format 1 logs have none; they are still read, with the rules they had.

use std::io;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::ClientId;
use crate::store::record::{ClientRecord, MailRecord, RefreshRecord, SessionRecord, UserRecord};
use crate::store::StoreError;

/// One line of the store's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    /// First line of every log file.
    Format {
        version: u32,
    },
    UserPut {
        user: UserRecord,
    },
    UserDelete {
        id: Uuid,
    },
    /// A new session, or a whole session in a compacted log.
    SessionPut {
        session: SessionRecord,
    },
    /// One refresh, `Session::rotate`: at `at`, `new` becomes the current token and the
    /// one it replaces counts as rotated; superseded tokens are kept by `grace_ms`, the
    /// grace window the rotation was decided with (absent, 0, in lines written before
    /// families: they keep none). `presented` (its hash) is for the record.
    SessionRotate {
        id: Uuid,
        presented: String,
        at: DateTime<Utc>,
        new: RefreshRecord,
        #[serde(default)]
        grace_ms: u64,
    },
    SessionRevoke {
        id: Uuid,
        at: DateTime<Utc>,
    },
    ClientPut {
        client: ClientRecord,
    },
    ClientDelete {
        id: Uuid,
    },
    /// An access token's `jti`, dead until its `exp`.
    JtiRevoke {
        jti: String,
        expires_at: DateTime<Utc>,
    },
    /// What a person allowed a third-party client (browser sign-in), replacing what they
    /// allowed it before.
    ConsentPut {
        user: Uuid,
        client: Uuid,
        scope: String,
        at: DateTime<Utc>,
    },
    ConsentDelete {
        user: Uuid,
        client: Uuid,
    },
    /// A client's `private_key_jwt` assertion was used (`Store::use_assertion`): a replay
    /// is refused until `exp` (its claim, Unix seconds) and the verifiers' leeway have
    /// passed. Only builds with `private_key_jwt` write it; older logs have none.
    AssertionUse {
        key: AssertionKey,
        exp: i64,
    },
    /// A message queued for delivery (its body sealed).
    MailPut {
        mail: MailRecord,
    },
    /// A queued message claimed or failed: tried (again) at `next_attempt_at`.
    MailRetry {
        id: Uuid,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    },
    /// A queued message delivered or given up.
    MailDelete {
        id: Uuid,
    },
}

/// Which assertion was used: the first 16 bytes of SHA-256(client id, 16 bytes ‖ `jti`),
/// base64url in the log.
///
/// The log carries this digest rather than the client id and `jti`: the `jti` is any
/// string a client chose, so a line of fixed, short length keeps client-chosen text out
/// of the disk and the log's size predictable, and the memory holds the same 16 bytes
/// (see `State::used_assertions`). Nothing needs the `jti` back: the digest is only ever
/// compared. 128 bits make an accidental collision negligible, and one would only refuse
/// an assertion, never accept a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AssertionKey([u8; 16]);

impl AssertionKey {
    /// The key of `client`'s assertion `jti`.
    pub fn of(client: ClientId, jti: &str) -> Self {
        // The client id has a fixed length, so id ‖ jti is unambiguous.
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        digest.update(client.as_bytes());
        digest.update(jti.as_bytes());
        let mut key = [0; 16];
        key.copy_from_slice(&digest.finish().as_ref()[..16]);
        Self(key)
    }
}

impl From<AssertionKey> for String {
    fn from(key: AssertionKey) -> Self {
        URL_SAFE_NO_PAD.encode(key.0)
    }
}

impl TryFrom<String> for AssertionKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let bytes = URL_SAFE_NO_PAD.decode(&text).map_err(|e| e.to_string())?;
        let key = bytes
            .try_into()
            .map_err(|_| format!("an assertion key is 16 bytes: {text}"))?;
        Ok(Self(key))
    }
}

/// The format this build writes: 2, with commit markers.
pub const FORMAT_VERSION: u32 = 2;
/// The format before commit markers, still read (and appended to, until a compaction
/// rewrites the log in the current format).
pub const FORMAT_WITHOUT_MARKERS: u32 = 1;

/// One line of the log as read back: a record, or (format 2) a commit marker.
#[derive(Debug)]
// One line at a time, while the log is read: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Line {
    Entry(Entry),
    /// The first `through` bytes of the file were durable when this line was written.
    Synced {
        through: u64,
    },
}

/// A commit marker's JSON: kept apart from `Entry`, which is what the state is made of.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Marker {
    Synced { through: u64 },
}

const SYNCED_PREFIX: &[u8] = br#"{"op":"synced","#;

pub fn encode(entry: &Entry) -> Vec<u8> {
    frame(&serde_json::to_vec(entry).expect("store entries always serialize"))
}

/// A commit marker line (see the module's doc and `log`).
pub fn encode_synced(through: u64) -> Vec<u8> {
    frame(&serde_json::to_vec(&Marker::Synced { through }).expect("markers always serialize"))
}

fn frame(json: &[u8]) -> Vec<u8> {
    let mut line = format!("{:08x} ", crc32fast::hash(json)).into_bytes();
    line.extend_from_slice(json);
    line.push(b'\n');
    line
}

/// The JSON of a line (without its newline) whose checksum matches.
fn checked(line: &[u8]) -> Option<&[u8]> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    (crc32fast::hash(json) == crc).then_some(json)
}

/// A line of the log (without its newline): `None` if damaged or unknown.
pub fn decode_line(line: &[u8]) -> Option<Line> {
    let json = checked(line)?;
    if json.starts_with(SYNCED_PREFIX) {
        let Marker::Synced { through } = serde_json::from_slice(json).ok()?;
        return Some(Line::Synced { through });
    }
    decode_json(json).map(Line::Entry)
}

/// A line holding an entry (without its newline): `None` if damaged, unknown or a marker.
pub fn decode(line: &[u8]) -> Option<Entry> {
    decode_json(checked(line)?)
}

fn decode_json(json: &[u8]) -> Option<Entry> {
    // Nearly every line of a large log is a user record. serde reads an internally
    // tagged enum by buffering each line into a generic tree first; for this one shape,
    // recognised by the prefix our encoder (and benches/gen_users.py) writes, read the
    // struct directly. Start-up at a million users is mostly this.
    if json.starts_with(USER_PUT_PREFIX) {
        #[derive(serde::Deserialize)]
        struct UserPut {
            user: UserRecord,
        }
        return serde_json::from_slice::<UserPut>(json)
            .ok()
            .map(|put| Entry::UserPut { user: put.user });
    }
    serde_json::from_slice(json).ok()
}

const USER_PUT_PREFIX: &[u8] = br#"{"op":"user_put","user":"#;

/// Every entry after the Format line, and the length of the prefix that holds them.
pub fn parse(data: &[u8], path: &Path) -> Result<(Vec<Entry>, u64), StoreError> {
    let mut entries = Vec::new();
    let scan = parse_stream(data, path, |entry| {
        entries.push(entry);
        Ok(())
    })?;
    Ok((entries, scan.good_len))
}

/// What `parse_stream` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// The log's format version.
    pub version: u32,
    /// Records kept (the Format line included, commit markers not).
    pub records: u64,
    /// The length of the prefix kept: everything before the first damaged line.
    pub good_len: u64,
    pub total_len: u64,
    /// Valid lines after the first damaged one, dropped with it: what a power cut leaves
    /// of a group commit it interrupted (0 for a torn tail).
    pub dropped_after_damage: u64,
}

/// Reads the log line by line, handing every entry after the Format line to `apply`, up
/// to the first damaged line; nothing after that is applied.
///
/// Damage with nothing valid after it is a torn tail: dropped. Damage followed by valid
/// lines is judged by the commit markers (format 2): if a valid marker after it records
/// the damaged bytes as synced, they were on disk before that marker was written, so no
/// power cut explains the damage and acknowledged data may be lost: an error. Otherwise
/// every line from the damage on was written after the last fdatasync that completed, so
/// none of it was acknowledged: dropped like a torn tail (see `log` for the reasoning).
/// A format 1 log has no markers to judge by: damage followed by valid lines is an error,
/// as it always was.
pub fn parse_stream(
    reader: impl io::BufRead + Send,
    path: &Path,
    mut apply: impl FnMut(Entry) -> Result<(), StoreError>,
) -> Result<Scan, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    // Until the Format line is read, the strictest rules (format 1).
    let mut version = FORMAT_WITHOUT_MARKERS;
    let (mut offset, mut records, mut line_no, mut dropped) = (0u64, 0u64, 0u64, 0u64);
    let mut first_bad: Option<u64> = None;
    // Two stages on two threads: reading, checksumming and parsing lines here, applying
    // them in order on the caller's thread. Start-up at a million users takes ~40% less.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<Decoded>>>(4);
        scope.spawn(move || decode_lines(reader, tx));
        for batch in rx {
            let batch = batch.map_err(|e| corrupt(format!("read error: {e}")))?;
            for (line, read) in batch {
                line_no += 1;
                let start = offset;
                offset += read as u64;
                let line = match line {
                    // Format 1 has no markers: one there is a line that version could not
                    // read, as damaged as any other.
                    Some(Line::Synced { .. }) if version == FORMAT_WITHOUT_MARKERS => None,
                    line => line,
                };
                if line_no == 1 {
                    match line {
                        Some(Line::Entry(Entry::Format { version: v }))
                            if v == FORMAT_VERSION || v == FORMAT_WITHOUT_MARKERS =>
                        {
                            version = v;
                            records += 1;
                        }
                        Some(Line::Entry(Entry::Format { version: v })) => {
                            return Err(corrupt(format!(
                                "store format version {v} is not supported (this build reads versions \
                                 {FORMAT_WITHOUT_MARKERS} and {FORMAT_VERSION})"
                            )))
                        }
                        Some(_) => {
                            return Err(corrupt(
                                "the log does not start with a format record".into(),
                            ))
                        }
                        None => first_bad = Some(start),
                    }
                    continue;
                }
                match (line, first_bad) {
                    (Some(Line::Entry(entry)), None) => {
                        apply(entry)?;
                        records += 1;
                    }
                    (Some(Line::Synced { through }), None) if through > start => {
                        return Err(corrupt(format!(
                            "the commit marker at line {line_no} (byte {start}) records {through} bytes \
                             as synced: more than precede it"
                        )))
                    }
                    (Some(Line::Synced { .. }), None) => {}
                    (Some(_), Some(bad)) if version == FORMAT_WITHOUT_MARKERS => {
                        return Err(corrupt(format!(
                            "damaged record at byte {bad} followed by valid records (line {line_no}); \
                             refusing to drop acknowledged data"
                        )))
                    }
                    (Some(Line::Synced { through }), Some(bad)) if through > bad => {
                        return Err(corrupt(format!(
                            "damaged record at byte {bad} followed by a commit marker (line {line_no}) \
                             recording the first {through} bytes as synced: acknowledged data is \
                             damaged; refusing to drop it"
                        )))
                    }
                    (Some(_), Some(_)) => dropped += 1,
                    (None, None) => first_bad = Some(start),
                    (None, Some(_)) => {}
                }
            }
        }
        Ok(())
    })?;
    if records == 0 {
        return Err(corrupt("the format record is missing or damaged".into()));
    }
    Ok(Scan {
        version,
        records,
        good_len: first_bad.unwrap_or(offset),
        total_len: offset,
        dropped_after_damage: dropped,
    })
}

/// A line of the log (`None` if damaged or torn) and its length in bytes.
type Decoded = (Option<Line>, usize);

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
        batch.push((line.strip_suffix(b"\n").and_then(decode_line), read));
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
mod tests {
    use super::*;

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
            user: UserRecord::from(&user),
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
    fn an_assertion_line_is_short_whatever_the_jti_and_reads_back_to_its_key() {
        let client = Uuid::now_v7();
        let line = |jti: &str| {
            let key = AssertionKey::of(client, jti);
            let mut line = encode(&Entry::AssertionUse { key, exp: 1 << 31 });
            line.pop();
            (key, line)
        };
        let (key, short) = line("j");
        let (_, long) = line(&"j".repeat(500));
        assert_eq!(short.len(), long.len());
        assert!(short.len() < 80, "{}", String::from_utf8_lossy(&short));
        let Some(Entry::AssertionUse { key: read, exp }) = decode(&short) else {
            panic!("{}", String::from_utf8_lossy(&short))
        };
        assert_eq!((read, exp), (key, 1 << 31));
        assert_ne!(AssertionKey::of(Uuid::now_v7(), "j"), key);
        // A key of any other length is a damaged line.
        let json = r#"{"op":"assertion_use","key":"AAAA","exp":1}"#;
        let framed = format!("{:08x} {json}", crc32fast::hash(json.as_bytes()));
        assert!(decode(framed.as_bytes()).is_none());
    }

    /// Builds before public keys wrote `secret_hash` as a plain string and no `jwks`.
    #[test]
    fn a_client_line_from_before_public_keys_decodes_as_a_client_with_a_secret() {
        let json = r#"{"op":"client_put","client":{"id":"0190f5a0-0000-7000-8000-000000000001","name":"old","scope":"users:read","secret_hash":"sha256$x","created_at":"2025-01-01T00:00:00Z","secret_rotated_at":"2025-01-01T00:00:00Z"}}"#;
        let line = format!("{:08x} {json}", crc32fast::hash(json.as_bytes()));
        let Some(Entry::ClientPut { client }) = decode(line.as_bytes()) else {
            panic!("does not decode: {line}")
        };
        let client = crate::domain::Client::try_from(client).unwrap();
        assert_eq!(client.secret_hash(), Some("sha256$x"));
        // Neither a secret nor keys is no client at all.
        let bare: Entry = serde_json::from_str(&json.replace(r#""secret_hash":"sha256$x","#, ""))
            .expect("the line itself still parses");
        let Entry::ClientPut { client } = bare else {
            unreachable!()
        };
        let refused = crate::domain::Client::try_from(client).unwrap_err();
        assert!(refused.contains("exactly one"), "{refused}");
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
