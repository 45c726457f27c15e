//! Where a page of users ends, for keyset paging (`GET /users?after=`).
//!
//! Users are listed by `created_at`, then id; a page resumes strictly after the position
//! of the previous page's last user. The position is a value, not a reference to a user:
//! that user may have been deleted since, and the next page is still exactly the users
//! after it. Clients see it as an opaque cursor: base64url (no padding) of 29 bytes, a
//! format version (1), `created_at` as seconds since the epoch (i64, big-endian) and
//! nanoseconds (u32), and the id (16 bytes). Nanoseconds, not PostgreSQL's microseconds:
//! a file store written before timestamps were truncated to microseconds holds users whose
//! `created_at` has nanoseconds, and a cursor that rounded them would repeat a user.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Datelike;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DomainError, User, UserId};

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 + 4 + 16;

/// A position in the users' order: a page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserCursor {
    pub created_at: DateTime<Utc>,
    pub id: UserId,
}

impl UserCursor {
    /// The position of `user` (the last of a page: the next one starts after it).
    pub fn of(user: &User) -> Self {
        Self {
            created_at: user.created_at,
            id: user.id,
        }
    }

    /// A cursor as `encode` writes it; anything else is `InvalidCursor`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        // Strict base64url (no padding, no stray bits): one spelling per position.
        let bytes = URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| DomainError::InvalidCursor)?;
        let bytes: [u8; LEN] = bytes.try_into().map_err(|_| DomainError::InvalidCursor)?;
        if bytes[0] != VERSION {
            return Err(DomainError::InvalidCursor);
        }
        let secs = i64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let nanos = u32::from_be_bytes(bytes[9..13].try_into().expect("4 bytes"));
        let id = Uuid::from_bytes(bytes[13..].try_into().expect("16 bytes"));
        // chrono reads nanoseconds of 1e9 and above as a leap second: not one spelling.
        if nanos >= 1_000_000_000 {
            return Err(DomainError::InvalidCursor);
        }
        let created_at = DateTime::from_timestamp(secs, nanos).ok_or(DomainError::InvalidCursor)?;
        // No account was made outside these years, and PostgreSQL's timestamps cannot
        // hold every instant chrono can: such a cursor is not one this service wrote.
        if !(1..=9999).contains(&created_at.year()) {
            return Err(DomainError::InvalidCursor);
        }
        Ok(Self { created_at, id })
    }

    /// The opaque cursor: 39 characters of base64url, safe in a query string as it is.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&self.created_at.timestamp().to_be_bytes());
        bytes[9..13].copy_from_slice(&self.created_at.timestamp_subsec_nanos().to_be_bytes());
        bytes[13..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> UserCursor {
        UserCursor {
            created_at: DateTime::from_timestamp(secs, nanos).unwrap(),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_cursor_reads_back_exactly_to_the_nanosecond() {
        for cursor in [
            at(1_764_000_000, 123_456_789),
            at(1_764_000_000, 0),
            at(0, 999_999_999),
            at(-1, 1),
        ] {
            let raw = cursor.encode();
            assert_eq!(raw.len(), 39);
            assert!(raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(UserCursor::parse(&raw), Ok(cursor));
        }
    }

    #[test]
    fn anything_but_an_issued_cursor_is_refused() {
        let good = at(1_764_000_000, 5).encode();
        let mut bytes = URL_SAFE_NO_PAD.decode(&good).unwrap();
        let spell = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        let mut leap_second = bytes.clone();
        leap_second[9..13].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        let mut out_of_range = bytes.clone();
        out_of_range[1..9].copy_from_slice(&i64::MAX.to_be_bytes());
        let short = spell(&bytes[..LEN - 1]);
        bytes.push(0);
        let long = spell(&bytes);
        for raw in [
            "".to_owned(),
            "not a cursor".to_owned(),
            format!("{good}="),          // padding
            format!("{}+", &good[..38]), // not in the base64url alphabet
            format!("{}B", &good[..38]), // stray bits in the last character
            format!(" {good}"),
            spell(&other_version),
            spell(&leap_second),
            spell(&out_of_range),
            short,
            long,
        ] {
            assert_eq!(
                UserCursor::parse(&raw),
                Err(DomainError::InvalidCursor),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn cursors_dated_outside_any_account_are_refused() {
        // Year 0 and year 10000: chrono holds them, PostgreSQL's timestamptz may not.
        for secs in [-62_198_755_200, 253_402_300_800] {
            assert_eq!(
                UserCursor::parse(&at(secs, 0).encode()),
                Err(DomainError::InvalidCursor),
                "{secs}"
            );
        }
    }

    #[test]
    fn positions_order_by_time_then_id() {
        let (a, b) = (at(10, 0), at(10, 1));
        assert!(a < b);
        let mut same_time = a;
        same_time.id = Uuid::max();
        assert!(a < same_time && same_time < b);
    }
}
