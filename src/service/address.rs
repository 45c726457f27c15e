//! The account's address (issue #19): proving it (a code sent at sign-up, again on
//! request, and after a sign-in refused for want of it) and changing it (a code to the new
//! address, a notice to the old one; the change happens when the code comes back, if the
//! new address is still free then). Codes are `mail::new_code`'s: 128 bits, hashed,
//! 15 minutes, single use, the last one sent the only one that works.

use secrecy::SecretString;
use serde_json::json;

use super::mail::{code_hash, new_code, CodeRefusal, MailRequested};
use super::{AppState, Attempt, Letter, ServiceError, Verdict};
use crate::audit;
use crate::domain::{Email, EmailChange, MailCodes, User};
use crate::store::StoreError;

/// What a code sent by mail confirmed.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The account's address is verified.
    Address,
    /// The account moved to the address the code was sent to.
    Moved,
}

/// Why a change of address was not started.
#[derive(Debug, PartialEq, Eq)]
pub enum AddressChange {
    /// The code is on its way to the new address, the notice to the old one.
    Requested,
    /// The password is wrong.
    WrongPassword,
    /// The new address is the account's address already.
    Same,
    Throttled(std::time::Duration),
}

impl AppState {
    /// Whether `user` may not have tokens: REQUIRE_VERIFIED_EMAIL is on and the address
    /// is unproven. If so, a new code goes to the address (within the mail limits), so a
    /// person whose first message expired or got lost gets another by signing in.
    pub async fn refuse_unverified(&self, user: &User, ctx: &audit::Context) -> bool {
        if !self.config.require_verified_email || user.email_verified {
            return false;
        }
        self.audit.record(
            "token_refused_unverified",
            Some(&user.id.to_string()),
            ctx,
            json!({}),
        );
        match self.send_verification(user, ctx).await {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "a verification code could not be queued"),
        }
        true
    }

    /// A new verification code for `user`'s address, counted against the mail limits.
    pub async fn send_verification(
        &self,
        user: &User,
        ctx: &audit::Context,
    ) -> Result<MailRequested, ServiceError> {
        if let Some(wait) = self.count_mail(&[user.email.as_str()], ctx).await? {
            return Ok(MailRequested::Throttled(wait));
        }
        let (code, stored) = new_code();
        let address = user.email.clone();
        let updated = self
            .store
            .update_user(
                user.id,
                Box::new(move |u| {
                    // The address it was meant for, still unproven: else nothing to send.
                    if u.email == address && !u.email_verified {
                        u.mail_codes.verification = Some(stored);
                    }
                }),
            )
            .await?;
        if updated.email != user.email || updated.email_verified {
            return Ok(MailRequested::Accepted);
        }
        let link = self.page_link("/signin/verify", updated.email.as_str(), Some(&code));
        self.send_mail(Letter {
            purpose: "verify_email",
            subject: "Confirm your email address",
            to: updated.email.as_str(),
            user: Some(updated.id),
            context: json!({ "code": code, "email": updated.email.as_str(), "link": link }),
        })
        .await?;
        self.audit.record(
            "verification_sent",
            Some(&updated.id.to_string()),
            ctx,
            json!({}),
        );
        Ok(MailRequested::Accepted)
    }

    /// `POST /api/v1/auth/verify-email`: a code sent to `email`, either to prove an
    /// account's address or to confirm a move to it. Counted before judged (per address
    /// given and per client address); the same refusal whatever was wrong.
    pub async fn confirm_email(
        &self,
        email: &str,
        code: &str,
        ctx: &audit::Context,
    ) -> Result<Result<Confirmed, CodeRefusal>, ServiceError> {
        let attempt = match self.count_code_attempt("verify", email, ctx).await? {
            Ok(attempt) => attempt,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let Ok(email) = Email::parse(email) else {
            return Ok(Err(CodeRefusal::InvalidCode));
        };
        let presented = code_hash(code);
        let now = crate::domain::now();
        let mut outcome = Err(CodeRefusal::InvalidCode);
        // Judged first on the record as read, and written (judged again under the store's
        // lock) only when right: a wrong code costs the same whether or not the address
        // has an account, and writes nothing.
        let to = email.key();
        if let Some(user) = self.store.user_by_email(email.as_str()).await? {
            let proves = user.mail_codes.verifies(&presented, now);
            if proves && self.prove_address(&user, &presented).await? {
                outcome = Ok((Confirmed::Address, user));
            }
        }
        if outcome.is_err() {
            let moving = self.store.users_moving_to(email.as_str()).await?;
            let moves = |u: &User| u.mail_codes.moves_to(&to, &presented, now).is_some();
            for user in moving.into_iter().filter(moves) {
                match self.move_address(&user, &email, &presented).await {
                    Ok(true) => {
                        outcome = Ok((Confirmed::Moved, user));
                        break;
                    }
                    Ok(false) => {}
                    Err(ServiceError::Store(StoreError::DuplicateEmail)) => {
                        outcome = Err(CodeRefusal::AddressTaken);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        match outcome {
            Ok((confirmed, user)) => {
                self.code_attempt_succeeded(&attempt).await;
                let event = match confirmed {
                    Confirmed::Address => "email_verified",
                    Confirmed::Moved => "email_changed",
                };
                self.audit
                    .record(event, Some(&user.id.to_string()), ctx, json!({}));
                Ok(Ok(confirmed))
            }
            Err(refusal) => {
                self.audit.record(
                    "email_code_failed",
                    None,
                    ctx,
                    json!({ "taken": refusal == CodeRefusal::AddressTaken }),
                );
                Ok(Err(refusal))
            }
        }
    }

    /// Marks `user`'s address verified if `presented` is its verification code (judged
    /// under the store's lock: a code works once).
    async fn prove_address(&self, user: &User, presented: &str) -> Result<bool, ServiceError> {
        let presented = presented.to_owned();
        let now = crate::domain::now();
        self.update_user_if(user.id, move |u| {
            let right = u.mail_codes.verifies(&presented, now);
            if right {
                u.mail_codes.verification = None;
                u.email_verified = true;
                u.updated_at = now;
            }
            right
        })
        .await
    }

    /// Moves `user` to `to` if `presented` is the code of its pending change to `to`.
    /// `DuplicateEmail` if the address was taken meanwhile (the store decides, atomically).
    async fn move_address(
        &self,
        user: &User,
        to: &Email,
        presented: &str,
    ) -> Result<bool, ServiceError> {
        let (presented, to) = (presented.to_owned(), to.key());
        let now = crate::domain::now();
        self.update_user_if(user.id, move |u| {
            // The address as it was asked for (not as the confirmation typed it).
            let asked = u.mail_codes.moves_to(&to, &presented, now).cloned();
            let Some(new_email) = asked else {
                return false;
            };
            // Codes sent to the old address are for the old address.
            u.mail_codes = MailCodes::default();
            u.email = new_email;
            u.email_verified = true;
            u.updated_at = now;
            true
        })
        .await
    }

    /// `POST /api/v1/users/me/email`: with the password, a move of `user` to `new`. A code
    /// goes to `new` and a notice to the account's address; nothing changes until the code
    /// comes back. Whether `new` has an account is not said (it is judged when the code
    /// comes back, by whoever reads mail there).
    pub async fn request_address_change(
        &self,
        user: &User,
        new: Email,
        password: &SecretString,
        ctx: &audit::Context,
    ) -> Result<AddressChange, ServiceError> {
        let lookup = async { Ok(Some(user)) };
        let email = user.email.as_str();
        match self
            .check(Attempt::Reauthenticate, email, password, ctx, lookup)
            .await?
        {
            Verdict::Ok(_) => {}
            Verdict::Invalid => return Ok(AddressChange::WrongPassword),
            Verdict::Throttled(wait) => return Ok(AddressChange::Throttled(wait)),
        }
        if new.key() == user.email.key() {
            return Ok(AddressChange::Same);
        }
        // Both addresses receive a message: each counts (or neither).
        let addresses = [user.email.as_str(), new.as_str()];
        if let Some(wait) = self.count_mail(&addresses, ctx).await? {
            return Ok(AddressChange::Throttled(wait));
        }
        let (code, stored) = new_code();
        let change = EmailChange {
            new_email: new.clone(),
            code: stored,
        };
        let updated = self
            .store
            .update_user(
                user.id,
                Box::new(move |u| u.mail_codes.email_change = Some(change)),
            )
            .await?;
        let link = self.page_link("/signin/verify", new.as_str(), Some(&code));
        self.send_mail(Letter {
            purpose: "email_change",
            subject: "Confirm your new email address",
            to: new.as_str(),
            user: Some(updated.id),
            context: json!({ "code": code, "email": new.as_str(), "old_email": updated.email.as_str(), "link": link }),
        })
        .await?;
        let link = self.page_link("/signin/forgot", updated.email.as_str(), None);
        self.send_mail(Letter {
            purpose: "email_change_notice",
            subject: "A change of your email address was asked for",
            to: updated.email.as_str(),
            user: Some(updated.id),
            context: json!({ "email": updated.email.as_str(), "new_email": new.as_str(), "link": link }),
        })
        .await?;
        self.audit.record(
            "email_change_requested",
            Some(&updated.id.to_string()),
            ctx,
            json!({}),
        );
        Ok(AddressChange::Requested)
    }
}
