//! Durable state behind one trait, so the file store (default) and later backends are
//! interchangeable.

mod file;
mod log;
mod record;

use async_trait::async_trait;

use crate::domain::{User, UserId};

pub use file::{FileStore, FileStoreOptions};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already exists")]
    DuplicateEmail,
    #[error("not found")]
    NotFound,
    /// The store cannot accept writes (disk full, read-only, an earlier failed write it could
    /// not roll back). Reads keep working.
    #[error("the store cannot write: {0}")]
    Unavailable(#[source] std::io::Error),
    /// DATA_DIR is held by another process.
    #[error("{0} is in use by another simple-api process (lock file {0}/.lock)")]
    Locked(String),
    /// The data on disk cannot be read back (not a torn tail: that is repaired).
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A change to a user applied atomically under the store's write lock, so concurrent
/// updates of different fields never overwrite each other.
pub type UserUpdate = Box<dyn FnOnce(&mut User) + Send>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Adds a user; `DuplicateEmail` when the email (case-insensitively) is taken.
    async fn create_user(&self, user: User) -> Result<(), StoreError>;
    /// Applies `update` to the current record and persists it; returns the new record.
    async fn update_user(&self, id: UserId, update: UserUpdate) -> Result<User, StoreError>;
    /// Removes a user; returns the removed record.
    async fn delete_user(&self, id: UserId) -> Result<User, StoreError>;
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// Looks up by email, ignoring case and surrounding spaces.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Users ordered by `created_at` (then id), a page at a time.
    async fn list_users(&self, offset: usize, limit: usize) -> Result<Vec<User>, StoreError>;
    async fn count_users(&self) -> Result<usize, StoreError>;
}
