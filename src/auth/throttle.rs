//! Brute-force throttling of secrets (password logins, client authentication, password
//! re-entry): per account and per client address, in fixed windows. An attempt is
//! counted the moment it arrives, before any hash is computed (`reserve`), and taken back
//! only when it turns out right (`refund`): a burst of concurrent guesses, or a client
//! that hangs up mid-hash, spends its attempts like any other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{FailureCounts, Store, StoreError};

/// What an attempt is counted against. Accounts are kept as a fixed-size digest of the
/// normalised identifier, so sprayed identifiers cost the table the same few bytes each
/// whatever their length (and a PostgreSQL key stays far below its index's size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Account([u8; 16]),
    Address(IpAddr),
}

impl Key {
    fn account(identifier: &str) -> Self {
        let normalised = identifier.trim().to_lowercase();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, normalised.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.as_ref()[..16]);
        Self::Account(key)
    }

    fn is_account(&self) -> bool {
        matches!(self, Self::Account(_))
    }

    /// The key as the shared counters (PostgreSQL) store it.
    fn shared_name(&self) -> String {
        match self {
            Self::Account(digest) => {
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("account:{hex}")
            }
            Self::Address(ip) => format!("address:{ip}"),
        }
    }
}

/// Why an attempt was refused: how long to wait, and the key that refused it (what a
/// repeated refusal is recognised by: an address spraying new usernames is one key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub retry_after: Duration,
    pub key: String,
}

/// The keys one attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    keys: Vec<Key>,
}

impl Attempt {
    /// An attempt on `account` (an email; `None` for client authentication, which is
    /// throttled per address only: client ids are public) from `address`.
    pub fn new(account: Option<&str>, address: Option<IpAddr>) -> Self {
        let keys = account
            .map(Key::account)
            .into_iter()
            .chain(address.map(Key::Address))
            .collect();
        Self { keys }
    }

    fn account(&self) -> Option<Key> {
        self.keys.iter().copied().find(Key::is_account)
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// This process's counters (the file store's one process, or any store without shared
/// counters).
pub struct Throttle {
    account_limit: u32,
    address_limit: u32,
    window: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<Key, Window>>,
}

/// How many more failures one address may make than one account: a shared NAT or an
/// office must not lock itself out, while a single host still cannot spray many accounts.
pub const ADDRESS_FACTOR: u32 = 10;
/// Entries kept at most; beyond that, expired ones are dropped, then the oldest.
pub const MAX_ENTRIES: usize = 100_000;

impl Throttle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            account_limit: max_failures,
            address_limit: max_failures.saturating_mul(ADDRESS_FACTOR),
            window,
            max_entries: MAX_ENTRIES,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn limit(&self, key: &Key) -> u32 {
        if key.is_account() {
            self.account_limit
        } else {
            self.address_limit
        }
    }

    /// Counts the attempt against every key, all or nothing, under one lock: `Err` (and
    /// nothing counted) when a key has used up its failures in its current window.
    pub fn reserve(&self, attempt: &Attempt) -> Result<(), Blocked> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut blocked: Option<(Duration, Key)> = None;
        for key in &attempt.keys {
            if let Some(w) = entries.get(key) {
                let ends = w.start + self.window;
                if ends > now && w.failures >= self.limit(key) {
                    let wait = ends - now;
                    if blocked.is_none_or(|(longest, _)| wait > longest) {
                        blocked = Some((wait, *key));
                    }
                }
            }
        }
        if let Some((wait, key)) = blocked {
            return Err(Blocked {
                retry_after: wait.max(Duration::from_secs(1)),
                key: key.shared_name(),
            });
        }
        if entries.len() + attempt.keys.len() > self.max_entries {
            self.evict(&mut entries, now, attempt.keys.len());
        }
        for key in &attempt.keys {
            let w = entries.entry(*key).or_insert(Window {
                start: now,
                failures: 0,
            });
            if w.start + self.window <= now {
                *w = Window {
                    start: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        }
        Ok(())
    }

    /// Takes back a reserved attempt that turned out right; `clear_account` also forgets
    /// the account's earlier failures (a successful login). The address keeps its other
    /// failures: an attacker who owns one account cannot reset their budget with it.
    pub fn refund(&self, attempt: &Attempt, clear_account: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for key in &attempt.keys {
            if clear_account && key.is_account() {
                entries.remove(key);
            } else if let Some(w) = entries.get_mut(key) {
                w.failures = w.failures.saturating_sub(1);
                // An entry with nothing counted is forgotten, so refunded attempts (right
                // ones, or a full hashing queue's) cannot fill the table.
                if w.failures == 0 {
                    entries.remove(key);
                }
            }
        }
    }

    fn evict(&self, entries: &mut HashMap<Key, Window>, now: Instant, room: usize) {
        entries.retain(|_, w| w.start + self.window > now && w.failures > 0);
        while entries.len() + room > self.max_entries {
            let oldest = entries.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k);
            match oldest {
                Some(key) => entries.remove(&key),
                None => break,
            };
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The throttle a server uses: this process's counters, or, on a store that keeps them
/// (PostgreSQL), the counters every replica shares, so an attacker gains nothing by
/// spreading guesses over replicas.
pub struct LoginThrottle {
    local: Throttle,
    shared: Option<Arc<dyn Store>>,
    /// Prefixed to the shared counters' names, so that throttles with other windows and
    /// limits (the mail limits) never share a counter with this one.
    namespace: &'static str,
}

impl LoginThrottle {
    pub fn new(local: Throttle, store: &Arc<dyn Store>) -> Self {
        Self::namespaced(local, store, "")
    }

    /// A throttle whose shared counters are named `namespace…`.
    pub fn namespaced(local: Throttle, store: &Arc<dyn Store>, namespace: &'static str) -> Self {
        let shared = store.failure_counts().map(|_| Arc::clone(store));
        Self {
            local,
            shared,
            namespace,
        }
    }

    fn shared_name(&self, key: &Key) -> String {
        format!("{}{}", self.namespace, key.shared_name())
    }

    fn shared(&self) -> Option<&dyn FailureCounts> {
        self.shared.as_deref().and_then(|s| s.failure_counts())
    }

    /// Counts `attempt` before it is judged: `Some(blocked)` (and nothing counted) when
    /// the account or the address has used up its failures.
    pub async fn reserve(&self, attempt: &Attempt) -> Result<Option<Blocked>, StoreError> {
        let Some(shared) = self.shared() else {
            return Ok(self.local.reserve(attempt).err());
        };
        let keys: Vec<(String, u32)> = attempt
            .keys
            .iter()
            .map(|key| (self.shared_name(key), self.local.limit(key)))
            .collect();
        let blocked = shared.reserve(&keys, self.local.window).await?;
        Ok(blocked.map(|(retry_after, key)| Blocked { retry_after, key }))
    }

    /// Takes back a reserved attempt that turned out right (see `Throttle::refund`).
    pub async fn refund(&self, attempt: &Attempt, clear_account: bool) -> Result<(), StoreError> {
        let Some(shared) = self.shared() else {
            self.local.refund(attempt, clear_account);
            return Ok(());
        };
        let account = attempt.account().filter(|_| clear_account);
        let decrement: Vec<String> = attempt
            .keys
            .iter()
            .filter(|key| Some(**key) != account)
            .map(|key| self.shared_name(key))
            .collect();
        shared.refund(&decrement).await?;
        if let Some(account) = account {
            shared.clear(&self.shared_name(&account)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn on(account: &str, address: Option<IpAddr>) -> Attempt {
        Attempt::new(Some(account), address)
    }

    #[test]
    fn an_account_is_throttled_after_its_failures_and_others_are_not() {
        let t = Throttle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(t.reserve(&on("Ada@Example.com", None)).is_ok());
        }
        let wait = t
            .reserve(&on(" ADA@example.com", None))
            .unwrap_err()
            .retry_after;
        assert!(wait <= Duration::from_secs(60) && wait >= Duration::from_secs(1));
        assert!(t.reserve(&on("bob@example.com", None)).is_ok());
        t.refund(&on("ada@example.com", None), true);
        assert!(t.reserve(&on("ada@example.com", None)).is_ok());
    }

    #[test]
    fn a_refunded_attempt_is_not_a_failure_and_a_blocked_one_counts_nothing() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let address = Some(ip("192.0.2.7"));
        // Right answers, each reserved then refunded without clearing: never throttled.
        for _ in 0..10 {
            t.reserve(&on("ann@example.com", address)).unwrap();
            t.refund(&on("ann@example.com", address), false);
        }
        t.reserve(&on("ann@example.com", address)).unwrap();
        t.reserve(&on("ann@example.com", address)).unwrap();
        // Refused attempts count nothing: a hundred of them (five times the address's
        // limit) leave the address's budget as it was for another account.
        for _ in 0..100 {
            assert!(t.reserve(&on("ann@example.com", address)).is_err());
        }
        t.reserve(&on("bob@example.com", address)).unwrap();
    }

    #[test]
    fn an_address_spraying_accounts_is_throttled_and_success_does_not_reset_it() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let attacker = Some(ip("203.0.113.9"));
        for i in 0..2 * ADDRESS_FACTOR - 1 {
            t.reserve(&on(&format!("victim{i}@example.com"), attacker))
                .unwrap();
        }
        // Logging into an account of one's own from the address gives nothing back.
        t.reserve(&on("own@example.com", attacker)).unwrap();
        t.refund(&on("own@example.com", attacker), true);
        t.reserve(&on("fresh@example.com", attacker)).unwrap();
        assert!(t.reserve(&on("fresh2@example.com", attacker)).is_err());
        assert!(t
            .reserve(&on("fresh@example.com", Some(ip("198.51.100.1"))))
            .is_ok());
    }

    #[test]
    fn clients_are_throttled_per_address_only() {
        let t = Throttle::new(1, Duration::from_secs(60));
        let stranger = Some(ip("203.0.113.9"));
        for _ in 0..ADDRESS_FACTOR {
            t.reserve(&Attempt::new(None, stranger)).unwrap();
        }
        assert!(t.reserve(&Attempt::new(None, stranger)).is_err());
        assert!(t
            .reserve(&Attempt::new(None, Some(ip("198.51.100.1"))))
            .is_ok());
    }

    #[test]
    fn windows_expire_and_memory_stays_bounded() {
        let mut t = Throttle::new(1, Duration::from_millis(30));
        t.reserve(&on("a@example.com", None)).unwrap();
        assert!(t.reserve(&on("a@example.com", None)).is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.reserve(&on("a@example.com", None)).is_ok());
        t.max_entries = 10;
        for i in 0..100 {
            let _ = t.reserve(&on(&format!("u{i}@example.com"), Some(ip("192.0.2.1"))));
        }
        assert!(t.len() <= 10, "{} entries", t.len());
    }

    #[test]
    fn sprayed_identifiers_cost_a_fixed_size_each_and_the_table_stays_bounded() {
        // A key is the same few bytes whatever the identifier: memory is entries × this.
        assert!(std::mem::size_of::<Key>() <= 24);
        let mut t = Throttle::new(5, Duration::from_secs(60));
        t.max_entries = 1_000;
        let long = "x".repeat(320);
        for i in 0..5_000 {
            t.reserve(&on(&format!("{i}{long}"), None)).unwrap();
        }
        assert!(t.len() <= 1_000, "{} entries", t.len());
        // Distinct identifiers stay distinct; case and spaces do not make new ones.
        assert_eq!(Key::account(" A@x.org"), Key::account("a@x.org"));
        assert_ne!(Key::account("a@x.org"), Key::account("b@x.org"));
        assert_eq!(
            Key::account(&long).shared_name().len(),
            "account:".len() + 32
        );
    }
}
