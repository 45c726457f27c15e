//! Brute-force throttling of password logins: per account and per client address, in
//! fixed windows, checked before any password hash is computed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{FailureCounts, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

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

    fn keys(account: &str, address: Option<IpAddr>) -> impl Iterator<Item = (Key, bool)> {
        let account = Key::Account(account.trim().to_lowercase());
        std::iter::once((account, true)).chain(address.map(|a| (Key::Address(a), false)))
    }

    fn limit(&self, is_account: bool) -> u32 {
        if is_account {
            self.account_limit
        } else {
            self.address_limit
        }
    }

    /// `Err(retry_after)` when the account or the address has used up its failures.
    pub fn check(&self, account: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for (key, is_account) in Self::keys(account, address) {
            let limit = self.limit(is_account);
            if let Some(w) = entries.get(&key) {
                let ends = w.start + self.window;
                if ends > now && w.failures >= limit {
                    wait = wait.max(ends - now);
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    pub fn record_failure(&self, account: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() + 2 > self.max_entries {
            self.evict(&mut entries, now);
        }
        for (key, _) in Self::keys(account, address) {
            let w = entries.entry(key).or_insert(Window {
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
    }

    /// A successful login clears the account's count, never the address's: an attacker
    /// who also owns one account cannot reset their budget by logging into it.
    pub fn record_success(&self, account: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&Key::Account(account.trim().to_lowercase()));
    }

    fn evict(&self, entries: &mut HashMap<Key, Window>, now: Instant) {
        entries.retain(|_, w| w.start + self.window > now);
        while entries.len() + 2 > self.max_entries {
            let oldest = entries
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone());
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
}

impl LoginThrottle {
    pub fn new(local: Throttle, store: &Arc<dyn Store>) -> Self {
        let shared = store.failure_counts().map(|_| Arc::clone(store));
        Self { local, shared }
    }

    fn shared(&self) -> Option<&dyn FailureCounts> {
        self.shared.as_deref().and_then(|s| s.failure_counts())
    }

    fn shared_keys(account: &str, address: Option<IpAddr>) -> impl Iterator<Item = (String, bool)> {
        Throttle::keys(account, address).map(|(key, is_account)| {
            let name = match key {
                Key::Account(a) => format!("account:{a}"),
                Key::Address(a) => format!("address:{a}"),
            };
            (name, is_account)
        })
    }

    /// `Some(retry_after)` when the account or the address has used up its failures.
    pub async fn check(
        &self,
        account: &str,
        address: Option<IpAddr>,
    ) -> Result<Option<Duration>, StoreError> {
        let Some(shared) = self.shared() else {
            return Ok(self.local.check(account, address).err());
        };
        let keys: Vec<(String, u32)> = Self::shared_keys(account, address)
            .map(|(key, is_account)| (key, self.local.limit(is_account)))
            .collect();
        shared.blocked(&keys).await
    }

    pub async fn record_failure(
        &self,
        account: &str,
        address: Option<IpAddr>,
    ) -> Result<(), StoreError> {
        let Some(shared) = self.shared() else {
            self.local.record_failure(account, address);
            return Ok(());
        };
        let keys: Vec<String> = Self::shared_keys(account, address)
            .map(|(key, _)| key)
            .collect();
        shared.record_failure(&keys, self.local.window).await
    }

    pub async fn record_success(&self, account: &str) -> Result<(), StoreError> {
        let Some(shared) = self.shared() else {
            self.local.record_success(account);
            return Ok(());
        };
        let (key, _) = Self::shared_keys(account, None)
            .next()
            .expect("an account key");
        shared.clear(&key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_account_is_throttled_after_its_failures_and_others_are_not() {
        let t = Throttle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(t.check("Ada@Example.com", None).is_ok());
            t.record_failure("ada@example.com", None);
        }
        let wait = t.check(" ADA@example.com", None).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait >= Duration::from_secs(1));
        assert!(t.check("bob@example.com", None).is_ok());
        t.record_success("ada@example.com");
        assert!(t.check("ada@example.com", None).is_ok());
    }

    #[test]
    fn an_address_spraying_accounts_is_throttled_and_success_does_not_reset_it() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let attacker = Some(ip("203.0.113.9"));
        for i in 0..2 * ADDRESS_FACTOR {
            t.record_failure(&format!("victim{i}@example.com"), attacker);
        }
        t.record_success("own@example.com");
        assert!(t.check("fresh@example.com", attacker).is_err());
        assert!(t
            .check("fresh@example.com", Some(ip("198.51.100.1")))
            .is_ok());
    }

    #[test]
    fn windows_expire_and_memory_stays_bounded() {
        let mut t = Throttle::new(1, Duration::from_millis(30));
        t.record_failure("a@example.com", None);
        assert!(t.check("a@example.com", None).is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.check("a@example.com", None).is_ok());
        t.max_entries = 10;
        for i in 0..100 {
            t.record_failure(&format!("u{i}@example.com"), Some(ip("192.0.2.1")));
        }
        assert!(t.len() <= 10, "{} entries", t.len());
    }
}
