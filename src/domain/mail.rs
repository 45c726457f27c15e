use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::UserId;

/// A message waiting to be delivered (issue #19). It lives in the store, so a crash or a
/// restart loses nothing and, on PostgreSQL, any replica may deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    /// A UUIDv7: the queue's order.
    pub id: Uuid,
    /// The envelope's recipient.
    pub recipient: String,
    /// The whole RFC 5322 message, sealed (AES-256-GCM with the key in KEYS_DIR, the id as
    /// associated data): it may carry a one-time code, which no store reader may see.
    pub sealed: String,
    /// What it is for (`password_reset`, …), for the audit log.
    pub purpose: String,
    /// Whose account it is about, if anyone's.
    pub user_id: Option<UserId>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it may be tried (again). Claiming it moves this forward by a lease, so a
    /// worker that dies mid-send leaves it to another once the lease is over.
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A one-time code sent by mail: its SHA-256 (hex) and when it stops working. The code
/// itself exists only in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailCode {
    pub hash: String,
    pub expires_at: DateTime<Utc>,
}

impl MailCode {
    /// Whether `presented` (a code's hash) is this code, still in time. Constant time.
    pub fn matches(&self, presented: &str, now: DateTime<Utc>) -> bool {
        let same = aws_lc_rs::constant_time::verify_slices_are_equal(
            self.hash.as_bytes(),
            presented.as_bytes(),
        );
        self.expires_at > now && same.is_ok()
    }
}

/// A change of address waiting for its confirmation: the new address, and the code sent
/// to it. Whether the address is still free is judged when the code comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailChange {
    pub new_email: super::Email,
    pub code: MailCode,
}

/// The codes an account has in flight (one of each kind: a new one replaces the last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailCodes {
    pub password_reset: Option<MailCode>,
    /// Proves the account's current address (sent at sign-up, and on request).
    pub verification: Option<MailCode>,
    pub email_change: Option<EmailChange>,
}

impl MailCodes {
    /// Whether `presented` (a code's hash) is the password-reset code, in time.
    pub fn resets(&self, presented: &str, now: DateTime<Utc>) -> bool {
        let code = self.password_reset.as_ref();
        code.is_some_and(|c| c.matches(presented, now))
    }

    /// Whether `presented` is the code that proves the current address, in time.
    pub fn verifies(&self, presented: &str, now: DateTime<Utc>) -> bool {
        let code = self.verification.as_ref();
        code.is_some_and(|c| c.matches(presented, now))
    }

    /// The address asked for, if `presented` is the code sent to it and it is `to` (an
    /// `Email::key`), in time.
    pub fn moves_to(&self, to: &str, presented: &str, now: DateTime<Utc>) -> Option<&super::Email> {
        let change = self.email_change.as_ref();
        let right = change.filter(|c| c.new_email.key() == to && c.code.matches(presented, now));
        right.map(|c| &c.new_email)
    }
}
