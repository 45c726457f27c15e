//! The log's line format: each entry as JSON prefixed with its CRC-32, so a write torn by
//! a crash is recognisable on load.
//!
//! Line format: `<crc32 of the JSON, 8 lowercase hex digits> <JSON>\n`.

use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::record::{ClientRecord, RefreshRecord, SessionRecord, UserRecord};
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
}

pub const FORMAT_VERSION: u32 = 1;

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
    let (_, good_len, _) = parse_stream(data, path, |entry| {
        entries.push(entry);
        Ok(())
    })?;
    Ok((entries, good_len))
}

/// Reads the log line by line, handing every entry after the Format line to `apply`.
/// Returns the lines read (Format included), the length of the good prefix and the total
/// length. A bad line followed by good ones is corruption, not a torn tail.
pub fn parse_stream(
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
