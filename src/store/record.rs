//! The on-disk schema, kept apart from the domain types so the file format can evolve.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Email, PersonName, Role, User};

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
}

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub tokens_valid_after: DateTime<Utc>,
}

impl From<&User> for UserRecord {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.as_str().to_owned(),
            first_name: user.first_name.as_ref().map(|n| n.as_str().to_owned()),
            last_name: user.last_name.as_ref().map(|n| n.as_str().to_owned()),
            role: user.role,
            password_hash: user.password_hash.clone(),
            created_at: user.created_at,
            updated_at: user.updated_at,
            tokens_valid_after: user.tokens_valid_after,
        }
    }
}

impl TryFrom<UserRecord> for User {
    type Error = String;

    /// Records were validated before they were written; re-checking guards against
    /// hand-edited files without trusting them.
    fn try_from(r: UserRecord) -> Result<Self, String> {
        let name = |raw: Option<String>, field| match raw {
            Some(raw) => PersonName::parse(&raw, field).map_err(|e| e.to_string()),
            None => Ok(None),
        };
        Ok(User {
            id: r.id,
            email: Email::parse(&r.email).map_err(|e| format!("user {}: {e}", r.id))?,
            first_name: name(r.first_name, "first_name")?,
            last_name: name(r.last_name, "last_name")?,
            role: r.role,
            password_hash: r.password_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
            tokens_valid_after: r.tokens_valid_after,
        })
    }
}
