//! The file store's memory: every live record with its indexes, how a log entry changes
//! it, what pruning drops, and the live records as log entries again (compaction).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::codec::{AssertionKey, Entry};
use super::email_index::EmailIndex;
use super::ordered::Ordered;
use crate::domain::{
    Client, ClientId, Consent, QueuedMail, RefreshToken, Scopes, Session, User, UserId,
};
use crate::store::record::{ClientRecord, MailRecord, SessionRecord, UserRecord};

#[derive(Default)]
pub(super) struct State {
    /// Shared with readers: a request checking a token takes a reference, not a copy.
    pub(super) users: HashMap<UserId, Arc<User>>,
    pub(super) by_email: EmailIndex,
    /// Pending new address (its key) → the accounts waiting to move there. Small: a
    /// change of address is rare and short-lived.
    pub(super) moving_to: HashMap<String, Vec<UserId>>,
    pub(super) by_created: Ordered<(DateTime<Utc>, UserId)>,
    /// Sessions by id: a refresh token names its session (`auth::refresh`).
    pub(super) sessions: HashMap<Uuid, Session>,
    /// Revoked access-token ids → when they expire anyway.
    pub(super) revoked_jtis: HashMap<String, DateTime<Utc>>,
    pub(super) clients: HashMap<ClientId, Client>,
    /// Used `private_key_jwt` assertions → their `exp` (Unix seconds). A busy client may
    /// use thousands a second, each kept up to an hour, so each costs a 16-byte digest
    /// and 8 bytes (about 40 with the table's slack), not copies of its client id and
    /// `jti`.
    pub(super) used_assertions: HashMap<AssertionKey, i64>,
    /// What each person allowed third-party clients (browser sign-in).
    pub(super) consents: HashMap<UserId, HashMap<ClientId, Consent>>,
    /// Messages waiting to be delivered, by id (UUIDv7: oldest first).
    pub(super) mail: std::collections::BTreeMap<Uuid, QueuedMail>,
}

impl State {
    pub(super) fn apply(&mut self, entry: Entry) -> Result<(), String> {
        match entry {
            Entry::Format { .. } => {}
            Entry::UserPut { user } => {
                let user = Arc::new(User::try_from(user)?);
                if let Some(old) = self.users.insert(user.id, Arc::clone(&user)) {
                    self.unindex(&old);
                }
                self.by_email
                    .insert(&user.email.key(), user.id, &self.users);
                self.by_created.insert((user.created_at, user.id));
                if let Some(change) = &user.mail_codes.email_change {
                    let ids = self.moving_to.entry(change.new_email.key()).or_default();
                    ids.push(user.id);
                }
            }
            Entry::UserDelete { id } => {
                self.remove_user(id);
            }
            Entry::SessionPut { session } => {
                let session = Session::try_from(session)?;
                self.sessions.insert(session.id, session);
            }
            Entry::SessionRotate {
                id,
                at,
                new,
                grace_ms,
                ..
            } => {
                let Some(session) = self.sessions.get_mut(&id) else {
                    return Ok(()); // pruned since: nothing left to update
                };
                let grace = chrono::Duration::milliseconds(grace_ms as i64);
                session.rotate(RefreshToken::from(new), at, grace);
            }
            Entry::SessionRevoke { id, at } => {
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.revoked_at.get_or_insert(at);
                }
            }
            Entry::JtiRevoke { jti, expires_at } => {
                self.revoked_jtis.insert(jti, expires_at);
            }
            Entry::ClientPut { client } => {
                let client = Client::try_from(client)?;
                self.clients.insert(client.id, client);
            }
            Entry::ClientDelete { id } => {
                self.clients.remove(&id);
                // What people allowed it goes with it (as PostgreSQL's foreign key does).
                self.consents.retain(|_, consents| {
                    consents.remove(&id);
                    !consents.is_empty()
                });
            }
            Entry::ConsentPut {
                user,
                client,
                scope,
                at,
            } => {
                let scope = Scopes::parse(&scope)
                    .map_err(|s| format!("consent of {user}: unknown scope {s}"))?;
                let consent = Consent {
                    client_id: client,
                    scope,
                    granted_at: at,
                };
                self.consents
                    .entry(user)
                    .or_default()
                    .insert(client, consent);
            }
            Entry::ConsentDelete { user, client } => {
                if let Some(consents) = self.consents.get_mut(&user) {
                    consents.remove(&client);
                    if consents.is_empty() {
                        self.consents.remove(&user);
                    }
                }
            }
            Entry::AssertionUse { key, exp } => {
                // Over an expired use of the same assertion, if not yet pruned.
                self.used_assertions.insert(key, exp);
            }
            Entry::MailPut { mail } => {
                self.mail.insert(mail.id, QueuedMail::from(mail));
            }
            Entry::MailRetry {
                id,
                attempts,
                next_attempt_at,
            } => {
                if let Some(mail) = self.mail.get_mut(&id) {
                    mail.attempts = attempts;
                    mail.next_attempt_at = next_attempt_at;
                }
            }
            Entry::MailDelete { id } => {
                self.mail.remove(&id);
            }
        }
        Ok(())
    }

    /// Whether the assertion `key` was used and still counts at `now`.
    pub(super) fn assertion_used(&self, key: &AssertionKey, now: DateTime<Utc>) -> bool {
        self.used_assertions
            .get(key)
            .is_some_and(|&exp| still_accepted(exp, now))
    }

    /// Drops what can no longer matter: dead sessions (revoked, expired, user gone), and
    /// `jti`s and used assertions past their expiry. A pure function of time, so replaying the log and pruning
    /// again gives the same state.
    pub(super) fn prune(
        &mut self,
        now: DateTime<Utc>,
        revoked_retention: chrono::Duration,
    ) -> usize {
        let dead: Vec<Uuid> = self
            .sessions
            .values()
            .filter(|s| {
                let expired = s.tokens.last().is_none_or(|t| t.expires_at <= now);
                let forgotten = s.revoked_at.is_some_and(|at| at + revoked_retention <= now);
                expired || forgotten || !self.users.contains_key(&s.user_id)
            })
            .map(|s| s.id)
            .collect();
        for id in &dead {
            self.sessions.remove(id);
        }
        let before = self.revoked_jtis.len();
        // Kept past `exp` for as long as a token is still accepted after it (the leeway).
        let accepted_until = chrono::Duration::seconds(crate::domain::LEEWAY_SECS as i64);
        self.revoked_jtis
            .retain(|_, exp| *exp + accepted_until > now);
        let before_assertions = self.used_assertions.len();
        self.used_assertions
            .retain(|_, &mut exp| still_accepted(exp, now));
        dead.len() + before - self.revoked_jtis.len() + before_assertions
            - self.used_assertions.len()
    }

    fn remove_user(&mut self, id: UserId) -> Option<Arc<User>> {
        self.consents.remove(&id);
        let old = self.users.remove(&id)?;
        self.unindex(&old);
        Some(old)
    }

    /// Drops a user's entries from the secondary indexes (the user left `users`, or is
    /// being replaced there).
    fn unindex(&mut self, old: &User) {
        self.by_email.remove(&old.email.key(), old.id);
        self.by_created.remove(&(old.created_at, old.id));
        if let Some(change) = &old.mail_codes.email_change {
            let key = change.new_email.key();
            if let Some(ids) = self.moving_to.get_mut(&key) {
                ids.retain(|id| *id != old.id);
                if ids.is_empty() {
                    self.moving_to.remove(&key);
                }
            }
        }
    }

    pub(super) fn live_records(&self) -> u64 {
        (self.users.len()
            + self.sessions.len()
            + self.revoked_jtis.len()
            + self.clients.len()
            + self.used_assertions.len()
            + self.mail.len()
            + self.consents.values().map(HashMap::len).sum::<usize>()) as u64
    }

    /// The live records as log entries, made one at a time (a million users are never
    /// copied at once).
    pub(super) fn snapshot(&self) -> impl Iterator<Item = Entry> + '_ {
        let users = self.by_created.iter().map(|(_, id)| Entry::UserPut {
            user: UserRecord::from(&*self.users[id]),
        });
        let sessions = self.sessions.values().map(|s| Entry::SessionPut {
            session: SessionRecord::from(s),
        });
        let jtis = self.revoked_jtis.iter().map(|(jti, exp)| Entry::JtiRevoke {
            jti: jti.clone(),
            expires_at: *exp,
        });
        let clients = self.clients.values().map(|c| Entry::ClientPut {
            client: ClientRecord::from(c),
        });
        let assertions = self
            .used_assertions
            .iter()
            .map(|(&key, &exp)| Entry::AssertionUse { key, exp });
        let consents = self.consents.iter().flat_map(|(&user, consents)| {
            consents.values().map(move |c| Entry::ConsentPut {
                user,
                client: c.client_id,
                scope: c.scope.to_string(),
                at: c.granted_at,
            })
        });
        let mail = self.mail.values().map(|m| Entry::MailPut {
            mail: MailRecord::from(m),
        });
        users
            .chain(consents)
            .chain(clients)
            .chain(sessions)
            .chain(jtis)
            .chain(assertions)
            .chain(mail)
    }
}

/// Whether a token or assertion expiring at `exp` (Unix seconds) may still be accepted at
/// `now`: verifiers allow `LEEWAY_SECS` of clock skew past `exp`, judged in whole seconds,
/// so a used assertion must be remembered that long too or its replay would get through.
pub(super) fn still_accepted(exp: i64, now: DateTime<Utc>) -> bool {
    now.timestamp() <= exp.saturating_add(crate::domain::LEEWAY_SECS as i64)
}
