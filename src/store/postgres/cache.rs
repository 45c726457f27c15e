//! This replica's cache of what every authenticated request checks (the user, whether the
//! token's `jti` or session is revoked, the client behind a client token or a client
//! authentication), kept coherent with the database by LISTEN/NOTIFY: the database's
//! triggers (migrations 2, 3 and 5) notify each change, and the listener drops what it
//! was told about.
//!
//! Two rules keep it from ever serving stale state:
//! - it is only used while the listener is connected; when that connection drops, every
//!   read goes to the database until the listener has reconnected, is LISTENing again and
//!   has emptied the cache (what changed meanwhile was never heard of);
//! - a value read from the database is cached only if no invalidation happened since the
//!   read began (the generation counter), so a notification that overtakes a slow read
//!   cannot be undone by it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::{Client, ClientId, User, UserId};
use crate::store::TokenStanding;

/// The channel migration 2's triggers notify.
pub const CHANNEL: &str = "simple_api";
/// Entries kept at most (users, sessions, token ids and clients together); beyond that
/// the cache starts over, which costs only misses.
const MAX_ENTRIES: usize = 200_000;
/// How often the listener proves that notifications reach it...
const HEARTBEAT: Duration = Duration::from_millis(200);
/// ...and how long one may take: a listener that silently stopped hearing is noticed
/// within this plus one `HEARTBEAT`, so a change on another replica is refused here
/// within a second even then.
const HEARTBEAT_LIMIT: Duration = Duration::from_millis(600);
/// Pause between reconnection attempts.
const RECONNECT: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Entries {
    users: HashMap<UserId, Option<Arc<User>>>,
    /// Session id → revoked.
    sessions: HashMap<Uuid, bool>,
    /// Access-token id → revoked.
    jtis: HashMap<String, bool>,
    /// Clients that exist. Absence is not cached: client authentication looks up ids
    /// that anyone may make up, and caching each would let them churn the cache; an
    /// unknown id costs the one read it costs without a cache.
    clients: HashMap<ClientId, Client>,
}

impl Entries {
    fn len(&self) -> usize {
        self.users.len() + self.sessions.len() + self.jtis.len() + self.clients.len()
    }
}

/// What the database said about an access token (see `sessions::token_state`).
pub struct TokenState {
    pub jti_revoked: bool,
    pub session_revoked: bool,
    pub user: Option<User>,
}

pub struct Cache {
    enabled: bool,
    /// The listener is connected and LISTENing, and the entries were emptied since.
    live: AtomicBool,
    /// Bumped (under the write lock) by every invalidation.
    generation: AtomicU64,
    entries: RwLock<Entries>,
}

impl Cache {
    pub fn new() -> Self {
        Self {
            enabled: true,
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            entries: RwLock::new(Entries::default()),
        }
    }

    /// A cache that never holds anything (one-off commands have no listener).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new()
        }
    }

    pub fn is_live(&self) -> bool {
        self.enabled && self.live.load(Ordering::Acquire)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Read before going to the database; hand back to `fill_*`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn user(&self, id: UserId) -> Option<Option<Arc<User>>> {
        if !self.is_live() {
            return None;
        }
        self.read().users.get(&id).cloned()
    }

    /// The client, if it is cached (only clients that exist are).
    pub fn client(&self, id: ClientId) -> Option<Client> {
        if !self.is_live() {
            return None;
        }
        self.read().clients.get(&id).cloned()
    }

    /// Whether a token id is revoked, if that is cached (client tokens ask only this).
    pub fn jti_revoked(&self, jti: &str) -> Option<bool> {
        if !self.is_live() {
            return None;
        }
        self.read().jtis.get(jti).copied()
    }

    /// The cached answer for an access token, if every part of it is cached.
    pub fn user_token(
        &self,
        jti: &str,
        user: UserId,
        session: Option<Uuid>,
    ) -> Option<TokenStanding> {
        if !self.is_live() {
            return None;
        }
        let entries = self.read();
        let jti_revoked = *entries.jtis.get(jti)?;
        let session_revoked = match session {
            Some(id) => *entries.sessions.get(&id)?,
            None => false,
        };
        let user = entries.users.get(&user)?.clone();
        Some(answer(jti_revoked, session_revoked, user))
    }

    /// Runs `fill` on the entries if nothing was invalidated since `generation` was read.
    fn fill(&self, generation: u64, fill: impl FnOnce(&mut Entries)) {
        if !self.is_live() {
            return;
        }
        let mut entries = self.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            *entries = Entries::default();
        }
        fill(&mut entries);
    }

    pub fn fill_user(&self, generation: u64, id: UserId, user: Option<Arc<User>>) {
        self.fill(generation, |e| {
            e.users.insert(id, user);
        });
    }

    /// Caches whether a token id is revoked, unless anything was forgotten since
    /// `generation` was read (a revocation's notification then wins).
    pub fn fill_jti(&self, generation: u64, jti: &str, revoked: bool) {
        self.fill(generation, |e| {
            e.jtis.insert(jti.to_owned(), revoked);
        });
    }

    /// Caches a client read from the database, unless anything was forgotten since
    /// `generation` was read.
    pub fn fill_client(&self, generation: u64, client: &Client) {
        self.fill(generation, |e| {
            e.clients.insert(client.id, client.clone());
        });
    }

    /// Caches what the database said about a token, and answers from it.
    pub fn fill_token(
        &self,
        generation: u64,
        jti: &str,
        user: UserId,
        session: Option<Uuid>,
        state: TokenState,
    ) -> TokenStanding {
        let found = state.user.map(Arc::new);
        self.fill(generation, |e| {
            e.jtis.insert(jti.to_owned(), state.jti_revoked);
            if let Some(id) = session {
                e.sessions.insert(id, state.session_revoked);
            }
            e.users.insert(user, found.clone());
        });
        answer(state.jti_revoked, state.session_revoked, found)
    }

    fn forget(&self, forget: impl FnOnce(&mut Entries)) {
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        forget(&mut entries);
    }

    pub fn forget_user(&self, id: UserId) {
        self.forget(|e| {
            e.users.remove(&id);
        });
    }

    pub fn forget_session(&self, id: Uuid) {
        self.forget(|e| {
            e.sessions.remove(&id);
        });
    }

    pub fn forget_jti(&self, jti: &str) {
        self.forget(|e| {
            e.jtis.remove(jti);
        });
    }

    /// Drops a client: its notification, or this replica's own write of it.
    pub fn forget_client(&self, id: ClientId) {
        self.forget(|e| {
            e.clients.remove(&id);
        });
    }

    /// Applies one notification payload (`u:<id>`, `s:<id>`, `c:<id>`, `j:<jti>`).
    /// Anything else (`flush`, or what this build does not know) empties the cache: when
    /// in doubt, forget.
    fn notified(&self, payload: &str) {
        match Notified::parse(payload) {
            Some(Notified::User(id)) => self.forget_user(id),
            Some(Notified::Session(id)) => self.forget_session(id),
            Some(Notified::Client(id)) => self.forget_client(id),
            Some(Notified::Jti(jti)) => self.forget_jti(jti),
            None => self.forget(|e| *e = Entries::default()),
        }
    }

    /// The listener is gone: stop using the cache at once.
    fn lost(&self) {
        self.live.store(false, Ordering::Release);
    }

    /// The listener is LISTENing again: start over from an empty cache.
    fn resynchronised(&self) {
        self.forget(|e| *e = Entries::default());
        self.live.store(true, Ordering::Release);
    }
}

/// What one notification names.
enum Notified<'a> {
    User(UserId),
    Session(Uuid),
    Client(ClientId),
    Jti(&'a str),
}

impl<'a> Notified<'a> {
    /// `None` for anything but a key this build knows, well formed.
    fn parse(payload: &'a str) -> Option<Self> {
        let (kind, key) = payload.split_once(':')?;
        let id = || Uuid::parse_str(key).ok();
        Some(match kind {
            "u" => Self::User(id()?),
            "s" => Self::Session(id()?),
            "c" => Self::Client(id()?),
            "j" => Self::Jti(key),
            _ => return None,
        })
    }
}

fn answer(jti_revoked: bool, session_revoked: bool, user: Option<Arc<User>>) -> TokenStanding {
    if jti_revoked || session_revoked {
        return TokenStanding::Revoked;
    }
    match user {
        Some(user) => TokenStanding::Live(user),
        None => TokenStanding::NoUser,
    }
}

/// This replica's listener, for as long as the store lives: connects, LISTENs, keeps the
/// cache live while the connection is, and reconnects when it drops.
pub async fn listen(config: tokio_postgres::Config, cache: Arc<Cache>) {
    // Each outage is reported once (then at debug level while it lasts).
    let mut reported = false;
    loop {
        let ended = listen_once(&config, &cache).await;
        if cache.is_live() {
            cache.lost();
            reported = false;
        }
        if reported {
            tracing::debug!(reason = %ended, "PostgreSQL listener still down");
        } else {
            tracing::warn!(reason = %ended, "PostgreSQL listener down: this replica reads through to the database until it is back");
            reported = true;
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// One connection's worth of listening; returns why it ended.
async fn listen_once(config: &tokio_postgres::Config, cache: &Cache) -> String {
    let (client, mut connection) = match config.connect(tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => return e.to_string(),
    };
    // The connection is driven by a task that passes its notifications to this loop; the
    // channel closes (after the error, if any) when the connection ends.
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = AbortOnDrop(tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            let forward = match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    Ok((n.channel().to_owned(), n.payload().to_owned()))
                }
                Ok(_) => continue,
                Err(e) => Err(e.to_string()),
            };
            let failed = forward.is_err();
            if tx.send(forward).is_err() || failed {
                return;
            }
        }
    }));
    // The heartbeat: a notification this listener sends itself, on a channel of its own
    // (other replicas never see it), on the same connection as the change notifications.
    // Its arrival shows this session's notifications are being delivered and read;
    // while one is late, the cache is not used.
    let heartbeat_channel = format!("{CHANNEL}_hb_{}", Uuid::new_v4().simple());
    let listen = format!("LISTEN {CHANNEL}; LISTEN {heartbeat_channel}");
    if let Err(e) = client.batch_execute(&listen).await {
        return e.to_string();
    }
    let notify = match client.prepare("SELECT pg_notify($1, $2)").await {
        Ok(statement) => statement,
        Err(e) => return e.to_string(),
    };
    let mut sent: u64 = 0;
    // The heartbeat in flight and when it was sent.
    let mut awaiting: Option<(String, Instant)> = None;
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            // Notifications first: a heartbeat that arrived is never judged late.
            biased;
            message = notifications.recv() => match message {
                Some(Ok((channel, payload))) if channel == heartbeat_channel => {
                    if awaiting.as_ref().is_some_and(|(expected, _)| *expected == payload) {
                        awaiting = None;
                        if !cache.is_live() {
                            cache.resynchronised();
                            tracing::info!("PostgreSQL listener connected: this replica's cache is in use");
                        }
                    }
                }
                Some(Ok((_, payload))) => cache.notified(&payload),
                Some(Err(e)) => break e,
                None => break "the connection closed".to_owned(),
            },
            _ = tick.tick() => {
                match &awaiting {
                    Some((_, at)) if at.elapsed() > HEARTBEAT_LIMIT => {
                        break format!("a heartbeat notification took over {HEARTBEAT_LIMIT:?}");
                    }
                    Some(_) => continue,
                    None => {}
                }
                sent += 1;
                let payload = sent.to_string();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                    [&heartbeat_channel, &payload];
                let at = Instant::now();
                match tokio::time::timeout(HEARTBEAT_LIMIT, client.execute(&notify, &params)).await {
                    Ok(Ok(_)) => awaiting = Some((payload, at)),
                    Ok(Err(e)) => break e.to_string(),
                    Err(_) => break "no answer to a heartbeat".to_owned(),
                }
            }
        }
    };
    drop(driver);
    ended
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientName, Credential, Email, Role, Scope, Scopes};

    fn user() -> User {
        User::new(
            Email::parse("a@example.com").unwrap(),
            "hash".into(),
            Role::User,
            None,
            None,
        )
    }

    fn client() -> Client {
        let now = crate::domain::now();
        Client {
            id: Uuid::now_v7(),
            name: ClientName::parse("billing").unwrap(),
            scope: Scopes::of([Scope::UsersRead]),
            credential: Credential::Secret("sha256$x".into()),
            created_at: now,
            secret_rotated_at: now,
            sign_in: Default::default(),
        }
    }

    fn live() -> Cache {
        let cache = Cache::new();
        cache.resynchronised();
        cache
    }

    fn state(user: &User) -> TokenState {
        TokenState {
            jti_revoked: false,
            session_revoked: false,
            user: Some(user.clone()),
        }
    }

    #[test]
    fn answers_from_cache_only_while_live() {
        let cache = live();
        let u = user();
        let sid = Uuid::now_v7();
        assert!(cache.user_token("j", u.id, Some(sid)).is_none());
        let g = cache.generation();
        cache.fill_token(g, "j", u.id, Some(sid), state(&u));
        assert!(matches!(
            cache.user_token("j", u.id, Some(sid)),
            Some(TokenStanding::Live(_))
        ));
        cache.lost();
        assert!(cache.user_token("j", u.id, Some(sid)).is_none());
        cache.resynchronised();
        assert!(
            cache.user_token("j", u.id, Some(sid)).is_none(),
            "emptied on resync"
        );
        assert!(Cache::disabled().user(u.id).is_none());
    }

    #[test]
    fn a_notification_that_overtakes_a_read_wins() {
        let cache = live();
        let u = user();
        let before = cache.generation();
        cache.notified(&format!("u:{}", u.id)); // arrives while the read is in flight
        cache.fill_token(before, "j", u.id, None, state(&u));
        assert!(cache.user_token("j", u.id, None).is_none());
        assert!(cache.user(u.id).is_none());
    }

    #[test]
    fn notifications_drop_what_they_name() {
        let cache = live();
        let u = user();
        let sid = Uuid::now_v7();
        cache.fill_token(cache.generation(), "j", u.id, Some(sid), state(&u));
        cache.notified(&format!("s:{sid}"));
        assert!(cache.user_token("j", u.id, Some(sid)).is_none());
        cache.fill_token(cache.generation(), "j", u.id, Some(sid), state(&u));
        cache.notified("j:j");
        assert!(cache.user_token("j", u.id, Some(sid)).is_none());
        cache.fill_token(cache.generation(), "j", u.id, Some(sid), state(&u));
        cache.notified("garbage");
        assert!(cache.user(u.id).is_none());
    }

    #[test]
    fn a_client_tokens_jti_is_answered_while_live_and_dropped_when_revoked() {
        let cache = live();
        assert_eq!(cache.jti_revoked("j"), None);
        cache.fill_jti(cache.generation(), "j", false);
        assert_eq!(cache.jti_revoked("j"), Some(false));
        cache.notified("j:j");
        assert_eq!(
            cache.jti_revoked("j"),
            None,
            "the revocation's notification wins"
        );
        let before = cache.generation();
        cache.notified("j:k"); // arrives while the read of k is in flight
        cache.fill_jti(before, "k", false);
        assert_eq!(cache.jti_revoked("k"), None);
        cache.lost();
        cache.fill_jti(cache.generation(), "k", false);
        assert_eq!(
            cache.jti_revoked("k"),
            None,
            "not used while the listener is gone"
        );
    }

    #[test]
    fn clients_are_answered_while_live_and_dropped_when_named() {
        let cache = live();
        let (c, other) = (client(), client());
        assert!(cache.client(c.id).is_none());
        for each in [&c, &other] {
            cache.fill_client(cache.generation(), each);
        }
        assert_eq!(cache.read().len(), 2, "clients count towards MAX_ENTRIES");
        assert_eq!(cache.client(c.id), Some(c.clone()));
        cache.notified(&format!("c:{}", c.id));
        assert!(cache.client(c.id).is_none());
        assert_eq!(
            cache.client(other.id),
            Some(other.clone()),
            "only what it names"
        );
        // A user's notification leaves clients alone; a flush does not.
        cache.notified(&format!("u:{}", other.id));
        assert!(cache.client(other.id).is_some());
        cache.notified("flush");
        assert!(cache.client(other.id).is_none());
        cache.fill_client(cache.generation(), &c);
        cache.notified("c:not-a-uuid");
        assert!(cache.client(c.id).is_none(), "a malformed key empties all");
        cache.fill_client(cache.generation(), &c);
        cache.lost();
        assert!(
            cache.client(c.id).is_none(),
            "not used while the listener is down"
        );
        cache.fill_client(cache.generation(), &c);
        cache.resynchronised();
        assert!(cache.client(c.id).is_none(), "nothing filled while down");
        assert!(Cache::disabled().client(c.id).is_none());
    }

    #[test]
    fn a_client_notification_that_overtakes_a_read_wins() {
        let cache = live();
        let c = client();
        let before = cache.generation();
        cache.notified(&format!("c:{}", c.id)); // the rotation lands during the read
        cache.fill_client(before, &c);
        assert!(cache.client(c.id).is_none());
        // This replica's own write: forgotten without waiting for the notification.
        cache.fill_client(cache.generation(), &c);
        cache.forget_client(c.id);
        assert!(cache.client(c.id).is_none());
    }
}
