//! Password reset by mail (issue #19). A request always answers the same, at once: the
//! account is looked up and the message queued after the answer, so neither the answer
//! nor its timing says whether the address has an account. The code is 128 random bits,
//! kept as SHA-256, valid 15 minutes, used once; a new request replaces the last code.
//! Confirming sets the password, ends every session and sends a notice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{AppState, Letter, ServiceError};
use crate::audit;
use crate::auth::throttle;
use crate::auth::totp::recovery_code_hash;
use crate::domain::{Email, MailCode, NewPassword};

/// How long a reset code works.
pub const RESET_CODE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The answer to a reset request (the same whether or not the account exists).
pub enum ResetRequested {
    Accepted,
    /// Too many messages for this address or account lately.
    Throttled(Duration),
}

/// Why a confirmation was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ResetRefusal {
    /// Unknown account, wrong, used or expired code: the caller cannot tell which.
    InvalidCode,
    Throttled(Duration),
}

/// A new code: 128 random bits in base32 (26 characters, no padding), typed or pasted.
fn new_code() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system CSPRNG is available");
    crate::auth::totp::encoded(&bytes)
}

impl AppState {
    /// Counts one message to `email` from `ctx`'s address against both mail limits.
    async fn count_mail(
        &self,
        email: &str,
        ctx: &audit::Context,
    ) -> Result<Option<Duration>, ServiceError> {
        let attempt = throttle::Attempt::new(Some(&format!("mail:{email}")), ctx.client_ip);
        for limit in &self.mail_limits {
            if let Some(blocked) = limit.reserve(&attempt).await? {
                return Ok(Some(blocked.retry_after));
            }
        }
        Ok(None)
    }

    /// `POST /api/v1/auth/password-reset`: counted against the limits, then answered;
    /// the rest happens after the answer.
    pub async fn request_password_reset(
        self: &Arc<Self>,
        email: &str,
        ctx: &audit::Context,
    ) -> Result<ResetRequested, ServiceError> {
        if let Some(wait) = self.count_mail(email, ctx).await? {
            return Ok(ResetRequested::Throttled(wait));
        }
        let (state, email, ctx) = (Arc::clone(self), email.to_owned(), ctx.clone());
        tokio::spawn(async move {
            if let Err(error) = state.send_reset_code(&email, &ctx).await {
                tracing::error!(%error, "a password reset could not be queued");
            }
        });
        Ok(ResetRequested::Accepted)
    }

    /// A new code for `email`'s account, if it has one, and the message that carries it.
    async fn send_reset_code(&self, email: &str, ctx: &audit::Context) -> Result<(), ServiceError> {
        let Some(user) = self.store.user_by_email(email).await? else {
            self.audit.record(
                "password_reset_requested",
                None,
                ctx,
                json!({ "known": false }),
            );
            return Ok(());
        };
        let code = new_code();
        let stored = MailCode {
            hash: recovery_code_hash(&code),
            expires_at: crate::domain::now() + RESET_CODE_TTL,
        };
        self.store
            .update_user(
                user.id,
                Box::new(move |u| u.mail_codes.password_reset = Some(stored)),
            )
            .await?;
        let link = format!(
            "{}/signin/reset?email={}",
            self.public_url.trim_end_matches('/'),
            form_urlencoded::byte_serialize(user.email.as_str().as_bytes()).collect::<String>()
        );
        self.send_mail(Letter {
            purpose: "password_reset",
            subject: "Reset your password",
            to: user.email.as_str(),
            user: Some(user.id),
            context: json!({ "code": code, "email": user.email.as_str(), "link": link }),
        })
        .await?;
        self.audit.record(
            "password_reset_requested",
            Some(&user.id.to_string()),
            ctx,
            json!({ "known": true }),
        );
        Ok(())
    }

    /// `POST /api/v1/auth/password-reset/confirm`: the code from the message, and the new
    /// password. Attempts are counted before they are judged (per address and per
    /// address given); the new password is hashed whether or not the account exists.
    pub async fn confirm_password_reset(
        &self,
        email: &str,
        code: &str,
        new_password: NewPassword,
        ctx: &audit::Context,
    ) -> Result<Result<(), ResetRefusal>, ServiceError> {
        let attempt = throttle::Attempt::new(Some(&format!("reset:{email}")), ctx.client_ip);
        if let Some(blocked) = self.throttle.reserve(&attempt).await? {
            return Ok(Err(ResetRefusal::Throttled(blocked.retry_after)));
        }
        let hash = self.passwords.hash(new_password.secret()).await?;
        let presented = recovery_code_hash(code.trim());
        let user = match Email::parse(email) {
            Ok(_) => self.store.user_by_email(email).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            return Ok(Err(ResetRefusal::InvalidCode));
        };
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let now = crate::domain::now();
        self.store
            .update_user(
                user.id,
                Box::new(move |u| {
                    let right = u.mail_codes.password_reset.as_ref().is_some_and(|c| {
                        c.expires_at > now
                            && crate::auth::clients::same_bytes(
                                c.hash.as_bytes(),
                                presented.as_bytes(),
                            )
                    });
                    if right {
                        u.mail_codes.password_reset = None;
                        u.password_hash = hash;
                        u.updated_at = now;
                        // Every session ends: whoever had the old password is out.
                        u.tokens_valid_after = now;
                        u.kept_session = None;
                        flag.store(true, Ordering::SeqCst);
                    }
                }),
            )
            .await?;
        let subject = user.id.to_string();
        if !done.load(Ordering::SeqCst) {
            self.audit
                .record("password_reset_failed", Some(&subject), ctx, json!({}));
            return Ok(Err(ResetRefusal::InvalidCode));
        }
        if let Err(error) = self.throttle.refund(&attempt, true).await {
            tracing::warn!(%error, "could not take back a reset attempt");
        }
        self.audit
            .record("password_reset", Some(&subject), ctx, json!({}));
        let link = format!("{}/signin/reset", self.public_url.trim_end_matches('/'));
        self.send_mail(Letter {
            purpose: "password_changed",
            subject: "Your password was changed",
            to: user.email.as_str(),
            user: Some(user.id),
            context: json!({ "email": user.email.as_str(), "link": link }),
        })
        .await?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_128_bits_of_base32() {
        let a = new_code();
        assert_eq!(a.len(), 26);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_ne!(a, new_code());
    }
}
