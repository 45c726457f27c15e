//! argon2id hashing on a few dedicated threads (one per core), so a login storm can neither
//! starve the async runtime nor exhaust memory: each hash holds ARGON2_M_KIB of RAM, and
//! only that many threads ever allocate it (the tokio blocking pool would spread the
//! buffers over hundreds of threads and malloc arenas). A bounded queue sheds excess load
//! (503) instead of piling it up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};

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

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and their queue. The threads end when the last hasher clone drops
/// the job sender.
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Jobs queued or running, and how many may be at most: the queue's only bound (the
    /// channel itself is unbounded, but nothing enters it without a slot).
    depth: Arc<AtomicUsize>,
    max_depth: usize,
}

/// A place in the queue. It travels inside its job and is given back when the job has run
/// or been skipped, never when the caller's future is dropped: a job whose caller hung up
/// still holds its password and may still be hashing, so it still counts against the bound
/// and in the gauge.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Workers {
    fn start(threads: usize, max_depth: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                })
                .expect("spawning a hashing thread");
        }
        Self {
            jobs: tx,
            depth: Arc::new(AtomicUsize::new(0)),
            max_depth,
        }
    }

    /// A slot, if the queue has room.
    fn enter(&self) -> Option<Slot> {
        let slot = Slot(self.depth.clone());
        // On failure the slot's drop takes the increment back.
        (self.depth.fetch_add(1, Ordering::AcqRel) < self.max_depth).then_some(slot)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let slot = self.enter().ok_or(PasswordError::Busy)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                // The caller is gone (its client hung up while this waited): nobody would
                // read the answer, so do not spend a hash on it. Its password goes with
                // `f`, before the slot is given back.
                drop(f);
                drop(slot);
                return;
            }
            let answer = f();
            // Free before answering, so a caller that has its answer sees its slot free.
            drop(slot);
            let _ = tx.send(answer);
        });
        // Sent or (if the threads are gone) dropped, the job takes its slot with it.
        self.jobs
            .send(job)
            .map_err(|_| PasswordError::Hashing("the hashing threads are gone".into()))?;
        rx.await
            .map_err(|_| PasswordError::Hashing("a hashing thread panicked".into()))
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    workers: Arc<Workers>,
    /// Verified against when the account does not exist, so an unknown email costs the same
    /// time as a wrong password and does not reveal which accounts exist.
    dummy_hash: Arc<String>,
    /// What one check with the current parameters takes (see `verify`).
    current_cost: Arc<CostEstimate>,
}

/// A moving average of how long a check with the current parameters takes on this
/// machine: what a failed check of a hash with other parameters is padded to.
struct CostEstimate {
    nanos: AtomicU64,
}

impl CostEstimate {
    fn new(first: Duration) -> Self {
        Self {
            nanos: AtomicU64::new(first.as_nanos() as u64),
        }
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    /// One more measurement, weighted 1/4 (a lost race between two updates only loses one
    /// sample's weight).
    fn observe(&self, took: Duration) {
        let old = self.nanos.load(Ordering::Relaxed);
        let new = old - old / 4 + (took.as_nanos() as u64) / 4;
        self.nanos.store(new, Ordering::Relaxed);
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
        // On a short-lived thread, so its argon2 memory is released with it. A check of it
        // is timed as the first estimate of what a check costs: the second one, when the
        // thread's memory is warm as a hashing thread's is.
        let (dummy, first_cost) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let dummy = hash_phc(&params, b"dummy password for unknown accounts")?;
                    let mut took = Duration::ZERO;
                    for _ in 0..2 {
                        let started = Instant::now();
                        verify_phc(&dummy, b"not the dummy password");
                        took = started.elapsed();
                    }
                    Ok::<_, PasswordError>((dummy, took))
                })
                .join()
                .map_err(|_| PasswordError::Hashing("the hashing thread panicked".into()))?
        })?;
        let current_cost = Arc::new(CostEstimate::new(first_cost));
        let concurrency = concurrency.max(1);
        Ok(Self {
            params,
            workers: Arc::new(Workers::start(
                concurrency,
                concurrency.saturating_add(max_queue),
            )),
            dummy_hash: Arc::new(dummy),
            current_cost,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        self.workers.run(f).await
    }

    /// Hashes running or waiting now, those whose caller has gone included (until they
    /// are finished or skipped).
    pub fn queue_depth(&self) -> usize {
        self.workers.depth.load(Ordering::Acquire)
    }

    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh random salt.
    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let params = self.params.clone();
        let password = password.clone();
        self.blocking(move || hash_phc(&params, password.expose_secret().as_bytes()))
            .await?
    }

    /// Whether `password` matches `hash`; with `None` (unknown account) it verifies against
    /// the dummy hash and returns false, taking the same time. A wrong password for a hash
    /// made with other (older) parameters is padded to what a check with the current ones
    /// takes, so that after a change of parameters dormant accounts cannot be told from
    /// unknown ones by timing (a hash dearer than the current parameters is not: it can
    /// only be slower; it is upgraded at its next successful login).
    pub async fn verify(
        &self,
        hash: Option<&str>,
        password: &SecretString,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let outdated = hash.is_some_and(|h| self.needs_rehash(h));
        let hash = hash.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let password = password.clone();
        let (matched, took) = self
            .blocking(move || {
                let started = Instant::now();
                let matched = verify_phc(&hash, password.expose_secret().as_bytes());
                (matched, started.elapsed())
            })
            .await?;
        if !outdated {
            self.current_cost.observe(took);
        } else if !matched {
            let pad = self.current_cost.get().saturating_sub(took);
            if !pad.is_zero() {
                tokio::time::sleep(pad).await;
            }
        }
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

thread_local! {
    /// Each hashing thread keeps its argon2 memory between hashes: allocating 19 MiB afresh
    /// per hash makes malloc keep several freed copies per thread (measured: RSS grew by
    /// ~200 MiB in a 200-login storm with two threads).
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// argon2id of `password` with `salt` into `out`, in this thread's reusable memory.
fn compute(
    params: &Params,
    version: Version,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), PasswordError> {
    let argon = Argon2::new(Algorithm::Argon2id, version, params.clone());
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < params.block_count() {
            memory.resize(params.block_count(), Block::default());
        }
        argon
            .hash_password_into_with_memory(
                password,
                salt,
                out,
                &mut memory[..params.block_count()],
            )
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    })
}

fn hash_phc(params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let err = |e: &dyn std::fmt::Display| PasswordError::Hashing(e.to_string());
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|e| err(&e))?;
    let mut out = [0u8; 32];
    compute(params, Version::V0x13, password, &salt, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| err(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| err(&e))?),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a PHC string, with the parameters stored in it. Anything
/// unparsable, or not argon2id, is simply not a match.
fn verify_phc(phc: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    let version = parsed
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or(Version::V0x13);
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if compute(&params, version, password, salt, &mut out).is_err() {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(&out).is_ok_and(|actual| actual == *expected)
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

    #[test]
    fn hashes_interoperate_with_the_argon2_crates_own_phc_code() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(1024, 1, 1, None).unwrap();
        let ours = hash_phc(&params, b"s3cret-pass").unwrap();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon.verify_password(b"s3cret-pass", &parsed).is_ok());
        let theirs = argon.hash_password(b"s3cret-pass").unwrap().to_string();
        assert!(verify_phc(&theirs, b"s3cret-pass"));
        assert!(!verify_phc(&theirs, b"wrong"));
        assert!(!verify_phc("not a hash", b"s3cret-pass"));
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

    /// Polls `job` once, so that it is queued, runs `meanwhile`, then drops `job`: a caller
    /// whose client hung up.
    async fn abandon<T>(
        job: impl std::future::Future<Output = Result<T, PasswordError>>,
        meanwhile: impl FnOnce(),
    ) {
        let mut job = std::pin::pin!(job);
        std::future::poll_fn(|cx| {
            assert!(job.as_mut().poll(cx).is_pending(), "the job was not queued");
            std::task::Poll::Ready(())
        })
        .await;
        meanwhile();
    }

    /// Occupies the one hashing thread of `h` until the returned sender is dropped, with a
    /// job whose caller hung up once it was running.
    async fn occupy(h: &PasswordHasher) -> std::sync::mpsc::Sender<()> {
        let (started, running) = std::sync::mpsc::channel();
        let (gate, wait) = std::sync::mpsc::channel::<()>();
        let job = h.blocking(move || {
            started.send(()).unwrap();
            let _ = wait.recv();
        });
        abandon(job, || running.recv().unwrap()).await;
        gate
    }

    async fn drained(h: &PasswordHasher) {
        let start = std::time::Instant::now();
        while h.queue_depth() > 0 {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn jobs_whose_caller_hung_up_hold_their_slots_until_they_end() {
        // One thread and room for two more: three jobs fill it.
        let h = PasswordHasher::with_queue(1024, 1, 1, 1, 2).unwrap();
        let pw = SecretString::from("password1");
        let gate = occupy(&h).await;
        abandon(h.hash(&pw), || ()).await;
        abandon(h.verify(None, &pw), || ()).await;
        assert_eq!(h.queue_depth(), 3, "the gauge counts abandoned jobs");
        // Their callers are gone but their jobs (and passwords) are not: no room.
        let late = tokio::time::timeout(std::time::Duration::from_secs(2), h.hash(&pw)).await;
        assert!(
            matches!(late, Ok(Err(PasswordError::Busy))),
            "a new caller was let in past abandoned jobs"
        );
        drop(gate);
        drained(&h).await;
        assert!(h.hash(&pw).await.is_ok());
        assert_eq!(h.queue_depth(), 0);
    }

    #[tokio::test]
    async fn queued_jobs_whose_caller_hung_up_are_skipped_not_hashed() {
        let h = PasswordHasher::with_queue(1024, 1, 1, 1, 8).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let gate = occupy(&h).await;
        for _ in 0..4 {
            let ran = ran.clone();
            abandon(
                h.blocking(move || ran.fetch_add(1, Ordering::SeqCst)),
                || (),
            )
            .await;
        }
        drop(gate);
        // Queued behind the abandoned ones (one thread, first come first served): when it
        // is answered, they have all been dealt with.
        let pw = SecretString::from("password1");
        let hash = tokio::time::timeout(std::time::Duration::from_secs(10), h.hash(&pw))
            .await
            .expect("the queue drains")
            .unwrap();
        assert!(h.verify(Some(&hash), &pw).await.unwrap());
        assert_eq!(ran.load(Ordering::SeqCst), 0, "abandoned jobs were run");
        assert_eq!(h.queue_depth(), 0);
    }

    #[test]
    fn impossible_parameters_are_refused() {
        assert!(PasswordHasher::new(1, 1, 1, 1).is_err());
    }
}
