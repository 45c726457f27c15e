//! Password reset by mail (issue #19). A request always answers the same, at once: the
//! account is looked up and the message queued after the answer, so neither the answer
//! nor its timing says whether the address has an account. The code is 128 random bits,
//! kept as SHA-256, valid 15 minutes, used once; a new request replaces the last code.
//! Confirming sets the password, ends every session and sends a notice.

use std::sync::Arc;

use serde_json::json;

use super::mail::{code_hash, new_code, CodeRefusal, MailRequested};
use super::{AppState, Letter, ServiceError};
use crate::audit;
use crate::domain::{Email, NewPassword};

impl AppState {
    /// `POST /api/v1/auth/password-reset`: counted against the limits, then answered;
    /// the rest happens after the answer.
    pub async fn request_password_reset(
        self: &Arc<Self>,
        email: &str,
        ctx: &audit::Context,
    ) -> Result<MailRequested, ServiceError> {
        if let Some(wait) = self.count_mail(&[email], ctx).await? {
            return Ok(MailRequested::Throttled(wait));
        }
        let (state, email, ctx) = (Arc::clone(self), email.to_owned(), ctx.clone());
        tokio::spawn(async move {
            if let Err(error) = state.send_reset_code(&email, &ctx).await {
                tracing::error!(%error, "a password reset could not be queued");
            }
        });
        Ok(MailRequested::Accepted)
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
        let (code, stored) = new_code();
        self.store
            .update_user(
                user.id,
                Box::new(move |u| u.mail_codes.password_reset = Some(stored)),
            )
            .await?;
        let link = self.page_link("/signin/reset", user.email.as_str(), Some(&code));
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
    ) -> Result<Result<(), CodeRefusal>, ServiceError> {
        let attempt = match self.count_code_attempt("reset", email, ctx).await? {
            Ok(attempt) => attempt,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let hash = self.passwords.hash(new_password.secret()).await?;
        let presented = code_hash(code);
        let user = match Email::parse(email) {
            Ok(_) => self.store.user_by_email(email).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            return Ok(Err(CodeRefusal::InvalidCode));
        };
        let now = crate::domain::now();
        // Judged on the record as read first, written only when right (see `confirm_email`).
        let done = user.mail_codes.resets(&presented, now)
            && self
                .update_user_if(user.id, move |u| {
                    let codes = &mut u.mail_codes;
                    let right = codes.resets(&presented, now);
                    if right {
                        codes.password_reset = None;
                        // The code came to this address: it is the owner's. A change of
                        // address someone else asked for (with the old password) is off.
                        codes.email_change = None;
                        codes.verification = None;
                        u.email_verified = true;
                        u.password_hash = hash;
                        u.updated_at = now;
                        // Every session ends: whoever had the old password is out.
                        u.tokens_valid_after = now;
                        u.kept_session = None;
                    }
                    right
                })
                .await?;
        let subject = user.id.to_string();
        if !done {
            self.audit
                .record("password_reset_failed", Some(&subject), ctx, json!({}));
            return Ok(Err(CodeRefusal::InvalidCode));
        }
        self.code_attempt_succeeded(&attempt).await;
        self.audit
            .record("password_reset", Some(&subject), ctx, json!({}));
        let link = self.page_link("/signin/forgot", user.email.as_str(), None);
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
