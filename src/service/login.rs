//! The one path every presented secret takes: count the attempt (or refuse it) → verify →
//! take it back if right → metrics → audit. Password logins (token endpoint and cookie), client authentication, the
//! password re-entered to change it and the admin bootstrap all come through `check`, so
//! an attempt is counted in exactly one place.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{AppState, ServiceError};
use crate::audit;
use crate::auth::clients::{self, StoredSecret};
use crate::auth::throttle;
use crate::domain::{Client, User};
use crate::store::StoreError;

/// The answer to a presented secret.
pub enum Verdict<T> {
    /// The secret is right: here is whom it belongs to.
    Ok(T),
    /// Unknown account or wrong secret: the caller cannot tell which.
    Invalid,
    /// Too many recent failures for the account or the address: retry after this long.
    Throttled(Duration),
}

/// Who presents a secret, and so what is throttled and what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A person's password login; `via` is the grant (`password`, `cookie`).
    Login { via: &'static str },
    /// A registered client's secret (client authentication at the token endpoints).
    Client,
    /// The signed-in user's current password, re-entered to change it: a stolen access
    /// token must not become a way to guess the password.
    Reauthenticate,
    /// ADMIN_EMAIL/ADMIN_PASSWORD at start-up: local, so neither throttled nor recorded.
    Bootstrap,
}

/// How an attempt ended, for the metrics and the audit log.
#[derive(Clone, Copy)]
enum Outcome<'a> {
    /// Refused by this throttle key.
    Throttled(&'a str),
    Ok,
    Failed,
}

impl Attempt {
    /// What the attempt is counted against, if it is throttled at all: the account and
    /// the address, except for clients, which are throttled per address only (client ids
    /// are public: a stranger must not be able to lock a service out).
    fn throttle_keys(self, account: &str, address: Option<IpAddr>) -> Option<throttle::Attempt> {
        match self {
            Self::Login { .. } | Self::Reauthenticate => {
                Some(throttle::Attempt::new(Some(account), address))
            }
            Self::Client => Some(throttle::Attempt::new(None, address)),
            Self::Bootstrap => None,
        }
    }

    /// Whether a success clears the account's failures. (Re-entering a password does
    /// not: it proves the token holder knows it, not that earlier guesses were theirs.)
    fn success_clears_failures(self) -> bool {
        match self {
            Self::Login { .. } | Self::Client => true,
            Self::Reauthenticate | Self::Bootstrap => false,
        }
    }

    /// The `simple_api_logins_total` label and the audit event of an outcome, if any.
    fn trail(self, outcome: Outcome) -> (Option<&'static str>, Option<&'static str>) {
        match (self, outcome) {
            (Self::Login { .. }, Outcome::Throttled(_)) => {
                (Some("throttled"), Some("login_throttled"))
            }
            (Self::Login { .. }, Outcome::Ok) => (Some("ok"), Some("login_ok")),
            (Self::Login { .. }, Outcome::Failed) => (Some("failed"), Some("login_failed")),
            (Self::Client, Outcome::Throttled(_)) => (Some("throttled"), None),
            (Self::Client, Outcome::Ok) => (None, None),
            (Self::Client, Outcome::Failed) => (None, Some("client_auth_failed")),
            (Self::Reauthenticate | Self::Bootstrap, _) => (None, None),
        }
    }

    fn audit_fields(self) -> serde_json::Value {
        match self {
            Self::Login { via } => json!({ "via": via }),
            _ => json!({}),
        }
    }
}

/// Something that holds a secret's hash.
pub(super) trait Holder {
    /// `None` for a holder without a secret (a client with public keys): no secret is its.
    fn secret_hash(&self) -> Option<&str>;
    /// Its id, as the audit log names it.
    fn id(&self) -> String;
}

impl Holder for User {
    fn secret_hash(&self) -> Option<&str> {
        Some(&self.password_hash)
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Holder for Client {
    fn secret_hash(&self) -> Option<&str> {
        Client::secret_hash(self)
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl<T: Holder> Holder for &T {
    fn secret_hash(&self) -> Option<&str> {
        (**self).secret_hash()
    }
    fn id(&self) -> String {
        (**self).id()
    }
}

impl AppState {
    /// A password login (token endpoint or cookie). Unknown emails are verified against a
    /// dummy hash: the same answer in the same time, so logins reveal nothing about which
    /// accounts exist.
    pub async fn login(
        &self,
        email: &str,
        password: &SecretString,
        ctx: &audit::Context,
        via: &'static str,
    ) -> Result<Verdict<User>, ServiceError> {
        let lookup = self.store.user_by_email(email);
        self.check(Attempt::Login { via }, email, password, ctx, lookup)
            .await
    }

    /// The one sequence: the attempt is counted (reserved) before any hash is computed,
    /// then the secret is verified (against a dummy hash when `lookup` finds nobody), the
    /// reservation is taken back if the secret was right, and the outcome is measured and
    /// audited as `attempt` says. A caller who hangs up mid-hash drops this future with
    /// the attempt still counted. `account` names the account for the throttle and is the
    /// audit subject of a refusal (an email or a client id). `lookup` is a future not yet
    /// polled: it runs only once the throttle has let the attempt through.
    pub(super) async fn check<T: Holder>(
        &self,
        attempt: Attempt,
        account: &str,
        secret: &SecretString,
        ctx: &audit::Context,
        lookup: impl Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Verdict<T>, ServiceError> {
        let counted = attempt.throttle_keys(account, ctx.client_ip);
        if let Some(counted) = &counted {
            if let Some(blocked) = self.throttle.reserve(counted).await? {
                self.leave_trail(attempt, Outcome::Throttled(&blocked.key), account, ctx);
                return Ok(Verdict::Throttled(blocked.retry_after));
            }
        }
        let judged = self.judge(attempt, secret, lookup).await;
        match judged {
            Ok(Some(holder)) => {
                if let Some(counted) = &counted {
                    self.refund(counted, attempt.success_clears_failures())
                        .await;
                }
                self.leave_trail(attempt, Outcome::Ok, &holder.id(), ctx);
                Ok(Verdict::Ok(holder))
            }
            Ok(None) => {
                self.leave_trail(attempt, Outcome::Failed, account, ctx);
                Ok(Verdict::Invalid)
            }
            // Not judged (the hashing queue is full, the store failed): nothing was learnt
            // about the secret, so the attempt is not held against anyone.
            Err(e) => {
                if let Some(counted) = &counted {
                    self.refund(counted, false).await;
                }
                Err(e)
            }
        }
    }

    /// The holder of `secret`, if it is theirs.
    async fn judge<T: Holder>(
        &self,
        attempt: Attempt,
        secret: &SecretString,
        lookup: impl Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<T>, ServiceError> {
        let holder = lookup.await?;
        let hash = holder.as_ref().and_then(Holder::secret_hash);
        // Client secrets are digests, compared in constant time (unknown ids too); people's
        // passwords and older client hashes are argon2, where unknown holders and hashes
        // made with older parameters cost what a current check costs
        // (`PasswordHasher::verify`): timing tells nothing about who exists.
        let digest = match (attempt, hash.map(StoredSecret::of)) {
            (Attempt::Client, None) => Some(None),
            (Attempt::Client, Some(StoredSecret::Digest(digest))) => Some(Some(digest)),
            _ => None,
        };
        let verified = match digest {
            Some(stored) => clients::digest_matches(stored, secret.expose_secret()),
            None => self.passwords.verify(hash, secret).await?,
        };
        Ok(holder.filter(|_| verified))
    }

    /// Takes an attempt back. A failure to do so is logged, not answered: it only leaves
    /// one right attempt counted, which must not turn a right secret into an error.
    async fn refund(&self, counted: &throttle::Attempt, clear_account: bool) {
        if let Err(error) = self.throttle.refund(counted, clear_account).await {
            tracing::warn!(%error, "could not take back a login attempt");
        }
    }

    fn leave_trail(&self, attempt: Attempt, outcome: Outcome, subject: &str, ctx: &audit::Context) {
        let (metric, event) = attempt.trail(outcome);
        if let Some(result) = metric {
            self.metrics.login(result);
        }
        match (event, outcome) {
            // Refusals cost nothing and can be repeated at will: one line a window for each
            // key that refuses (an address spraying new usernames is one key).
            (Some(event), Outcome::Throttled(key)) => {
                self.audit
                    .record_repeatable(event, key, subject, ctx, attempt.audit_fields())
            }
            (Some(event), _) => {
                self.audit
                    .record(event, Some(subject), ctx, attempt.audit_fields())
            }
            (None, _) => {}
        }
    }
}
