//! argon2id hashing on the blocking pool, behind a semaphore so a login storm cannot
//! exhaust memory (each hash holds ARGON2_M_KIB of RAM) or starve the async runtime, and
//! behind a bounded queue so excess load is shed (503) instead of piling up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// Password checks that may wait for a hashing slot; beyond that, 503 + Retry-After.
pub const DEFAULT_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// More hashes are waiting than the queue holds: shed load instead of queueing forever.
    #[error("too many password checks in progress")]
    Busy,
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// Hashes running or waiting, and how many may be at most.
    depth: Arc<AtomicUsize>,
    max_depth: usize,
    /// Verified against when the account does not exist, so an unknown email costs the same
    /// time as a wrong password and does not reveal which accounts exist.
    dummy_hash: Arc<String>,
}

/// Leaves the queue however the future ends (done, or dropped with a vanished client).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordHasher {
    /// `concurrency` hashes may run at once (one per core is the useful maximum), so hashing
    /// memory never exceeds `concurrency × m_kib`.
    pub fn new(m_kib: u32, t: u32, p: u32, concurrency: usize) -> Result<Self, PasswordError> {
        Self::with_queue(m_kib, t, p, concurrency, DEFAULT_QUEUE)
    }

    /// As `new`, with at most `max_queue` checks waiting for a slot.
    pub fn with_queue(
        m_kib: u32,
        t: u32,
        p: u32,
        concurrency: usize,
        max_queue: usize,
    ) -> Result<Self, PasswordError> {
        let params =
            Params::new(m_kib, t, p, None).map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy = argon
            .hash_password(b"dummy password for unknown accounts")
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
            .to_string();
        let concurrency = concurrency.max(1);
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            depth: Arc::new(AtomicUsize::new(0)),
            max_depth: concurrency + max_queue,
            dummy_hash: Arc::new(dummy),
        })
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        if self.depth.fetch_add(1, Ordering::AcqRel) >= self.max_depth {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(PasswordError::Busy);
        }
        let _leave = Leave(&self.depth);
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        Ok(tokio::task::spawn_blocking(f)
            .await
            .expect("argon2 does not panic"))
    }

    /// Hashes running or waiting now.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh random salt.
    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let argon = self.argon();
        let password = password.clone();
        self.blocking(move || {
            argon
                .hash_password(password.expose_secret().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hashing(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `hash`; with `None` (unknown account) it verifies against
    /// the dummy hash and returns false, taking the same time.
    pub async fn verify(
        &self,
        hash: Option<&str>,
        password: &SecretString,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let password = password.clone();
        let argon = self.argon();
        let matched = self
            .blocking(move || {
                PasswordHash::new(&hash)
                    .map(|parsed| {
                        argon
                            .verify_password(password.expose_secret().as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await?;
        Ok(known && matched)
    }

    /// Whether `hash` was made with other parameters than the configured ones, so it should
    /// be replaced on the next successful login.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return true;
        };
        match Params::try_from(&parsed) {
            Ok(p) => {
                parsed.algorithm.as_str() != "argon2id"
                    || p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(1024, 1, 1, 2).unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify_and_wrong_password_fails() {
        let h = cheap();
        let pw = SecretString::from("correct horse battery");
        let hash = h.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(h.verify(Some(&hash), &pw).await.unwrap());
        assert!(!h
            .verify(Some(&hash), &SecretString::from("wrong horse"))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn unknown_accounts_never_verify_even_with_the_dummy_password() {
        let h = cheap();
        let dummy = SecretString::from("dummy password for unknown accounts");
        assert!(!h.verify(None, &dummy).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_need_rehash() {
        let old = cheap();
        let hash = old.hash(&SecretString::from("password1")).await.unwrap();
        assert!(!old.needs_rehash(&hash));
        let stronger = PasswordHasher::new(2048, 1, 1, 1).unwrap();
        assert!(stronger.needs_rehash(&hash));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_sheds_load_instead_of_growing() {
        let h = PasswordHasher::with_queue(8192, 2, 1, 1, 2).unwrap();
        let pw = SecretString::from("password1");
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (h, pw) = (h.clone(), pw.clone());
                tokio::spawn(async move { h.hash(&pw).await })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(PasswordError::Busy)) {
                busy += 1;
            }
        }
        assert!(busy >= 15, "only {busy} of 20 were shed with room for 3");
        assert_eq!(h.queue_depth(), 0);
    }

    #[test]
    fn impossible_parameters_are_refused() {
        assert!(PasswordHasher::new(1, 1, 1, 1).is_err());
    }
}
