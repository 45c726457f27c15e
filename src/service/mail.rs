//! The service's mail (issue #19): a message is composed from templates, sealed and put in
//! the store's queue in the request that causes it (sending never blocks a request); a
//! worker on every replica claims due messages and delivers them, retrying transient
//! failures with back-off and giving up on permanent ones, audited either way.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use lettre::message::Mailbox;
use minijinja::Environment;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

use super::{AppState, ServiceError};
use crate::audit;
use crate::auth::throttle;
use crate::domain::{MailCode, QueuedMail, UserId};
use crate::mail::{compose, Transport};

/// How long a code sent by mail works (API.md: 15 minutes).
pub const CODE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The answer to a request that sends mail (the same whether or not an account exists).
pub enum MailRequested {
    Accepted,
    /// Too many messages for this address or account, or from this client, lately.
    Throttled(Duration),
}

/// Why a code sent by mail was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeRefusal {
    /// Unknown account, wrong, used or expired code: the caller cannot tell which.
    InvalidCode,
    Throttled(Duration),
    /// The code was right, but the new address has been taken since it was sent.
    AddressTaken,
}

/// A new code and what the account keeps of it: 128 random bits in base32 (26
/// characters, no padding, typed or pasted), kept as SHA-256, valid `CODE_TTL`.
pub(super) fn new_code() -> (String, MailCode) {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
    let code = crate::auth::totp::encoded(&bytes);
    let stored = MailCode {
        hash: code_hash(&code),
        expires_at: crate::domain::now() + CODE_TTL,
    };
    (code, stored)
}

/// What a presented code is compared as (case, spaces and dashes do not matter).
pub(super) fn code_hash(code: &str) -> String {
    crate::auth::totp::recovery_code_hash(code)
}

/// How long a claimed message is the claimer's (a delivery that takes longer is retried
/// by whoever claims it next).
const LEASE: chrono::TimeDelta = chrono::TimeDelta::seconds(120);
/// Messages one worker claims at a time.
const BATCH: usize = 10;
/// How often the worker looks for due messages when nothing woke it (retries, and
/// messages another replica queued).
const POLL: Duration = Duration::from_secs(5);
/// Attempts before a transiently failing message is given up (the back-off doubles from
/// 30 s to an hour: about 9 hours in all).
pub const MAX_ATTEMPTS: u32 = 12;

/// The transport, the sender and the worker's wake-up call.
pub struct Mailer {
    pub transport: Transport,
    /// MAIL_FROM, or `simple-api <no-reply@PUBLIC_URL's host>`: checked at start-up.
    pub from: Mailbox,
    wake: Notify,
}

impl Mailer {
    pub fn new(transport: Transport, from: Mailbox) -> Self {
        Self {
            transport,
            from,
            wake: Notify::new(),
        }
    }
}

/// The back-off before attempt `attempts + 1`: 30 s, doubling, at most an hour.
pub fn backoff(attempts: u32) -> chrono::TimeDelta {
    let secs = 30u64.saturating_mul(1 << attempts.saturating_sub(1).min(7));
    chrono::TimeDelta::seconds(secs.min(3600) as i64)
}

/// The mail templates: `<name>.txt` (plain text) and `<name>.html` (auto-escaped) each.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // A variable a template names and the letter lacks is an error, not an empty string.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in [
        ("base.html", include_str!("mail/base.html")),
        (
            "password_reset.txt",
            include_str!("mail/password_reset.txt"),
        ),
        (
            "password_reset.html",
            include_str!("mail/password_reset.html"),
        ),
        (
            "password_changed.txt",
            include_str!("mail/password_changed.txt"),
        ),
        (
            "password_changed.html",
            include_str!("mail/password_changed.html"),
        ),
        ("verify_email.txt", include_str!("mail/verify_email.txt")),
        ("verify_email.html", include_str!("mail/verify_email.html")),
        ("email_change.txt", include_str!("mail/email_change.txt")),
        ("email_change.html", include_str!("mail/email_change.html")),
        (
            "email_change_notice.txt",
            include_str!("mail/email_change_notice.txt"),
        ),
        (
            "email_change_notice.html",
            include_str!("mail/email_change_notice.html"),
        ),
    ] {
        env.add_template(name, source)
            .expect("the built-in mail templates parse");
    }
    env
});

/// A message to queue: which template, for whom, with what.
pub struct Letter<'a, C: Serialize> {
    /// Template name and audit purpose (`password_reset`, …).
    pub purpose: &'static str,
    pub subject: &'a str,
    pub to: &'a str,
    pub user: Option<UserId>,
    pub context: C,
}

impl AppState {
    /// Counts one message to each of `addresses` from `ctx`'s address against both mail
    /// limits (per account and, scaled, per client address); the wait if one of them is
    /// spent, and then nothing counted (what was counted before the refusal is taken back).
    pub(super) async fn count_mail(
        &self,
        addresses: &[&str],
        ctx: &audit::Context,
    ) -> Result<Option<Duration>, ServiceError> {
        let attempts: Vec<throttle::Attempt> = addresses
            .iter()
            .map(|a| {
                let key = format!("mail:{}", crate::domain::Email::key_of(a));
                throttle::Attempt::new(Some(&key), ctx.client_ip)
            })
            .collect();
        let mut counted = Vec::new();
        for attempt in &attempts {
            for limit in &self.mail_limits {
                if let Some(blocked) = limit.reserve(attempt).await? {
                    for (limit, attempt) in counted {
                        let limit: &throttle::LoginThrottle = limit;
                        if let Err(error) = limit.refund(attempt, false).await {
                            tracing::warn!(%error, "could not take back a counted message");
                        }
                    }
                    return Ok(Some(blocked.retry_after));
                }
                counted.push((limit, attempt));
            }
        }
        Ok(None)
    }

    /// Counts an attempt at a `kind` code for `email` (and from `ctx`'s address) before
    /// it is judged, under the login throttle: a guesser gets LOGIN_MAX_FAILURES tries a
    /// window, however many requests run at once.
    pub(super) async fn count_code_attempt(
        &self,
        kind: &str,
        email: &str,
        ctx: &audit::Context,
    ) -> Result<Result<throttle::Attempt, CodeRefusal>, ServiceError> {
        let key = format!("{kind}:{}", crate::domain::Email::key_of(email));
        let attempt = throttle::Attempt::new(Some(&key), ctx.client_ip);
        if let Some(blocked) = self.throttle.reserve(&attempt).await? {
            return Ok(Err(CodeRefusal::Throttled(blocked.retry_after)));
        }
        Ok(Ok(attempt))
    }

    /// A right code: its attempt is taken back (best effort: a failure only leaves one
    /// right attempt counted).
    pub(super) async fn code_attempt_succeeded(&self, attempt: &throttle::Attempt) {
        if let Err(error) = self.throttle.refund(attempt, true).await {
            tracing::warn!(%error, "could not take back a code attempt");
        }
    }

    /// A hosted page's URL for `email` (and `code`, which the page only fills in: a mail
    /// scanner opening the link uses nothing up).
    pub(super) fn page_link(&self, path: &str, email: &str, code: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("email", email);
        if let Some(code) = code {
            query.append_pair("code", code);
        }
        format!(
            "{}{path}?{}",
            self.public_url.trim_end_matches('/'),
            query.finish()
        )
    }

    /// Composes `letter` from its templates, seals it and queues it; the worker delivers
    /// it. Never waits for the mail server.
    pub async fn send_mail<C: Serialize>(&self, letter: Letter<'_, C>) -> Result<(), ServiceError> {
        let render = |kind: &str| {
            let ctx = minijinja::context! {
                service => &self.config.service_name,
                public_url => &self.public_url,
                subject => letter.subject,
                ..minijinja::Value::from_serialize(&letter.context)
            };
            TEMPLATES
                .get_template(&format!("{}.{kind}", letter.purpose))
                .and_then(|t| t.render(ctx))
                .map_err(|e| ServiceError::Mail(format!("template {}: {e}", letter.purpose)))
        };
        let raw = compose(
            &self.mailer.from,
            letter.to,
            letter.subject,
            render("txt")?,
            render("html")?,
        )
        .map_err(ServiceError::Mail)?;
        let seal = self.seal.as_ref().ok_or_else(|| {
            ServiceError::Mail("KEYS_DIR holds no mfa-seal.key to seal queued mail with".into())
        })?;
        let id = uuid::Uuid::now_v7();
        let now = crate::domain::now();
        let mail = QueuedMail {
            id,
            recipient: letter.to.to_owned(),
            sealed: seal.seal(id, &raw),
            purpose: letter.purpose.to_owned(),
            user_id: letter.user,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
        };
        self.store.enqueue_mail(mail).await?;
        self.metrics.mail("queued");
        self.mailer.wake.notify_one();
        Ok(())
    }

    /// Delivers what is due, until nothing is: one pass of the worker. Returns how many
    /// messages it handled.
    pub async fn deliver_due_mail(&self) -> Result<usize, ServiceError> {
        let mut handled = 0;
        loop {
            let now = crate::domain::now();
            let due = self.store.claim_mail(now, LEASE, BATCH).await?;
            if due.is_empty() {
                return Ok(handled);
            }
            handled += due.len();
            for mail in due {
                self.deliver(mail).await?;
            }
        }
    }

    /// One delivery attempt of a claimed message, and what follows from it.
    async fn deliver(&self, mail: QueuedMail) -> Result<(), ServiceError> {
        let subject = mail.user_id.map(|u| u.to_string());
        let fields = |extra: serde_json::Value| {
            let mut f = json!({ "mail_id": mail.id, "purpose": mail.purpose, "attempts": mail.attempts + 1 });
            if let (Some(map), Some(extra)) = (f.as_object_mut(), extra.as_object()) {
                map.extend(extra.clone());
            }
            f
        };
        let ctx = crate::audit::Context::default();
        let Some(raw) = self
            .seal
            .as_ref()
            .and_then(|s| s.open(mail.id, &mail.sealed))
        else {
            tracing::error!(mail_id = %mail.id, "a queued message cannot be opened: was KEYS_DIR's mfa-seal.key replaced?");
            self.store.delete_mail(mail.id).await?;
            self.metrics.mail("failed");
            self.audit.record(
                "mail_failed",
                subject.as_deref(),
                &ctx,
                fields(json!({ "reason": "the message cannot be unsealed", "permanent": true })),
            );
            return Ok(());
        };
        let from = &self.mailer.from.email;
        match self
            .mailer
            .transport
            .deliver(from, &mail.recipient, &raw, &mail.id.to_string())
            .await
        {
            Ok(()) => {
                self.store.delete_mail(mail.id).await?;
                self.metrics.mail("sent");
                self.audit
                    .record("mail_sent", subject.as_deref(), &ctx, fields(json!({})));
            }
            Err(e) if e.permanent || mail.attempts + 1 >= MAX_ATTEMPTS => {
                self.store.delete_mail(mail.id).await?;
                self.metrics.mail("failed");
                tracing::warn!(mail_id = %mail.id, error = %e, "a message was given up");
                self.audit.record(
                    "mail_failed",
                    subject.as_deref(),
                    &ctx,
                    fields(json!({ "reason": e.reason, "permanent": e.permanent })),
                );
            }
            Err(e) => {
                let attempts = mail.attempts + 1;
                let next = crate::domain::now() + backoff(attempts);
                self.store.retry_mail(mail.id, attempts, next).await?;
                self.metrics.mail("retried");
                tracing::info!(mail_id = %mail.id, error = %e, attempts, "a message will be tried again");
                self.audit.record(
                    "mail_deferred",
                    subject.as_deref(),
                    &ctx,
                    fields(json!({ "reason": e.reason, "next_attempt_at": next })),
                );
            }
        }
        Ok(())
    }
}

/// The delivery worker: runs until the task is dropped. Woken by a queued message, and
/// every few seconds for retries and other replicas' messages.
pub async fn run_mail_worker(state: Arc<AppState>) {
    tracing::info!(to = %state.mailer.transport.describe(), "mail goes to");
    loop {
        if let Err(error) = state.deliver_due_mail().await {
            tracing::warn!(%error, "delivering mail failed; trying again shortly");
        }
        tokio::select! {
            _ = state.mailer.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_up_to_an_hour() {
        let secs: Vec<i64> = (1..=10).map(|a| backoff(a).num_seconds()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    }

    #[test]
    fn every_template_renders() {
        for name in TEMPLATES
            .templates()
            .map(|(n, _)| n.to_owned())
            .collect::<Vec<_>>()
        {
            if name == "base.html" {
                continue;
            }
            let out = TEMPLATES
                .get_template(&name)
                .unwrap()
                .render(minijinja::context! { service => "s", public_url => "http://x", subject => "S", code => "123456", email => "<a@b>", old_email => "<o@b>", new_email => "<n@b>", link => "http://x/reset?x=1&y=2" })
                .unwrap();
            assert!(!out.trim().is_empty(), "{name}");
            if name.ends_with(".html") {
                assert!(
                    !out.contains("<a@b>") && !out.contains("<n@b>") && !out.contains("<o@b>"),
                    "{name} escapes"
                );
            }
        }
    }
}
