//! Account changes that need a password hash: creating accounts (sign-up, admins, the
//! CLI, the ADMIN_EMAIL bootstrap), changing a password, upgrading outdated hashes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use super::login::{Attempt, Verdict};
use super::{AppState, ServiceError};
use crate::audit;
use crate::domain::{Email, NewPassword, PersonName, Role, User};
use crate::store::StoreError;

/// A new account, validated.
pub struct NewAccount {
    pub email: Email,
    pub password: NewPassword,
    pub role: Role,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
    /// Vouched for by an admin or the operator: no verification message.
    pub email_verified: bool,
}

impl AppState {
    /// Creates an account (sign-up, an admin, the CLI, the ADMIN_EMAIL bootstrap).
    /// `DuplicateEmail` when the email is taken, whatever its case.
    pub async fn create_account(&self, new: NewAccount) -> Result<User, ServiceError> {
        // Cheap duplicate check first, so a taken email costs no argon2 run; the store
        // re-checks atomically.
        if self
            .store
            .user_by_email(new.email.as_str())
            .await?
            .is_some()
        {
            return Err(StoreError::DuplicateEmail.into());
        }
        let hash = self.passwords.hash(new.password.secret()).await?;
        let mut user = User::new(new.email, hash, new.role, new.first_name, new.last_name);
        user.email_verified = new.email_verified;
        self.store.create_user(user.clone()).await?;
        Ok(user)
    }

    /// A sign-up (the API or the hosted page) or an admin's new account, `by` whom:
    /// created, audited, and a verification message sent to an address nobody vouched for.
    pub async fn sign_up(
        &self,
        new: NewAccount,
        by: Option<String>,
        ctx: &audit::Context,
    ) -> Result<User, ServiceError> {
        let user = self.create_account(new).await?;
        let fields = json!({ "by": by, "role": user.role.as_str() });
        let subject = user.id.to_string();
        self.audit
            .record("user_created", Some(&subject), ctx, fields);
        if !user.email_verified {
            // The account exists either way, so this cannot fail the sign-up: a message
            // the limits hold back (or that cannot be queued) is sent again on request
            // (`resendVerification`), or by a sign-in REQUIRE_VERIFIED_EMAIL refuses.
            if let Err(error) = self.send_verification(&user, ctx).await {
                tracing::warn!(%error, "a verification message could not be queued");
            }
        }
        Ok(user)
    }

    /// Creates an account from plain inputs (CLI and ADMIN_EMAIL bootstrap), with errors
    /// that name the input at fault. The operator typed the address: it counts as
    /// verified.
    pub async fn create_user(
        &self,
        email: &str,
        password: SecretString,
        role: Role,
        names: (Option<PersonName>, Option<PersonName>),
    ) -> anyhow::Result<User> {
        let email = Email::parse(email).context("email")?;
        let password = NewPassword::parse(password).context("password")?;
        let (first_name, last_name) = names;
        let new = NewAccount {
            email,
            password,
            role,
            first_name,
            last_name,
            email_verified: true,
        };
        Ok(self.create_account(new).await?)
    }

    /// ADMIN_EMAIL/ADMIN_PASSWORD: create the admin if missing. An existing account with
    /// that email is promoted only if ADMIN_PASSWORD is its password: with open sign-up,
    /// anyone could have registered that email first. Its password is never overwritten
    /// from the environment (changing it stays an explicit act).
    pub async fn ensure_admin(&self) -> anyhow::Result<()> {
        let (Some(email), Some(password)) = (&self.config.admin_email, &self.config.admin_password)
        else {
            return Ok(());
        };
        let password = SecretString::from(password.clone());
        // Replicas starting together may both find no account: the one whose creation
        // loses (the email is taken) looks again and finds the other's.
        let mut found = self.store.user_by_email(email).await?;
        if found.is_none() {
            match self
                .create_user(email, password.clone(), Role::Admin, (None, None))
                .await
            {
                Ok(user) => {
                    tracing::info!(user_id = %user.id, "ADMIN_EMAIL account created");
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.downcast_ref(),
                        Some(ServiceError::Store(StoreError::DuplicateEmail))
                    ) =>
                {
                    found = self.store.user_by_email(email).await?;
                }
                Err(e) => return Err(e.context("ADMIN_EMAIL/ADMIN_PASSWORD")),
            }
        }
        match found {
            Some(user) if user.role == Role::Admin => {}
            Some(user) => {
                let lookup = async { Ok(Some(&user)) };
                let ctx = audit::Context::default();
                let verdict = self
                    .check(Attempt::Bootstrap, email, &password, &ctx, lookup)
                    .await?;
                if !matches!(verdict, Verdict::Ok(_)) {
                    anyhow::bail!(
                        "ADMIN_EMAIL: an account with this email exists and ADMIN_PASSWORD is not its \
                         password; refusing to promote it (log in as that account and change its \
                         password, or choose another ADMIN_EMAIL)"
                    );
                }
                self.store
                    .update_user(
                        user.id,
                        Box::new(|u| {
                            u.role = Role::Admin;
                            u.updated_at = crate::domain::now();
                        }),
                    )
                    .await?;
                tracing::info!(user_id = %user.id, "ADMIN_EMAIL account promoted to admin");
            }
            None => anyhow::bail!("ADMIN_EMAIL: the account was created and deleted meanwhile"),
        }
        Ok(())
    }

    /// Changes `user`'s password after checking the current one (throttled like a login).
    /// Every other session ends; `keep` (the session making the change) goes on.
    pub async fn change_password(
        &self,
        user: &User,
        current: &SecretString,
        new: &NewPassword,
        keep: Option<Uuid>,
        ctx: &audit::Context,
    ) -> Result<Verdict<()>, ServiceError> {
        let lookup = async { Ok(Some(user)) };
        let email = user.email.as_str();
        match self
            .check(Attempt::Reauthenticate, email, current, ctx, lookup)
            .await?
        {
            Verdict::Ok(_) => {}
            Verdict::Invalid => return Ok(Verdict::Invalid),
            Verdict::Throttled(wait) => return Ok(Verdict::Throttled(wait)),
        }
        let hash = self.passwords.hash(new.secret()).await?;
        self.store
            .update_user(
                user.id,
                Box::new(move |u| {
                    let now = crate::domain::now();
                    u.password_hash = hash;
                    u.tokens_valid_after = now;
                    u.kept_session = keep;
                    // A change of address asked for with the old password is off.
                    u.mail_codes.email_change = None;
                    u.updated_at = now;
                }),
            )
            .await?;
        self.audit.record(
            "password_changed",
            Some(&user.id.to_string()),
            ctx,
            json!({}),
        );
        Ok(Verdict::Ok(()))
    }

    /// Applies `change` to the account as the store has it now (under its lock, so the
    /// decision and the write are one step), and says whether it changed anything:
    /// `change` returns whether it did.
    pub(super) async fn update_user_if(
        &self,
        id: crate::domain::UserId,
        change: impl FnOnce(&mut User) -> bool + Send + 'static,
    ) -> Result<bool, ServiceError> {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        self.store
            .update_user(
                id,
                Box::new(move |u| {
                    if change(u) {
                        flag.store(true, Ordering::SeqCst);
                    }
                }),
            )
            .await?;
        Ok(done.load(Ordering::SeqCst))
    }

    /// Upgrades a hash made with older argon2 parameters while the password is at hand.
    /// Best effort: a failure here must not fail the login.
    pub async fn rehash_if_outdated(&self, user: &User, password: &SecretString) {
        if !self.passwords.needs_rehash(&user.password_hash) {
            return;
        }
        let old = user.password_hash.clone();
        let outcome = match self.passwords.hash(password).await {
            Ok(hash) => self
                .store
                .update_user(
                    user.id,
                    // Only if the password did not change meanwhile: never resurrect an old one.
                    Box::new(move |u| {
                        if u.password_hash == old {
                            u.password_hash = hash;
                        }
                    }),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = outcome {
            tracing::warn!(user_id = %user.id, %error, "could not upgrade an outdated password hash");
        }
    }
}
