//! Second factors (issue #18): TOTP enrolment and removal, recovery codes, and the one
//! check every sign-in path makes after a right password (`check_second_factor`): the
//! token endpoint's password grant, the cookie login and the hosted sign-in page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};

use super::{AppState, ServiceError, Verdict};
use crate::audit;
use crate::auth::throttle;
use crate::auth::totp::{self, accepted_step, recovery_code_hash};
use crate::auth::Authentication;
use crate::domain::{Mfa, Totp, User};
use crate::store::StoreError;

/// A second factor as presented (never printed: see its `Debug`).
#[derive(Clone)]
pub enum SecondFactor {
    /// A 6-digit TOTP code.
    Totp(String),
    /// One of the recovery codes (single use).
    RecoveryCode(String),
    /// A passkey's answer to a ceremony begun for the account.
    Passkey(PasskeyAnswer),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Totp(_) => "Totp([redacted])",
            Self::RecoveryCode(_) => "RecoveryCode([redacted])",
            Self::Passkey(_) => "Passkey([redacted])",
        })
    }
}

impl SecondFactor {
    /// The factor a form sends: `otp` (a TOTP code) or `recovery_code`; `otp` wins if
    /// both are there; empty ones count as absent. `Err`: an `otp` longer than
    /// `MAX_OTP_CHARS` (checked before anything is hashed or counted).
    pub fn from_form(
        otp: Option<&str>,
        recovery_code: Option<&str>,
    ) -> Result<Option<Self>, &'static str> {
        if otp.is_some_and(|otp| otp.chars().count() > MAX_OTP_CHARS) {
            return Err("otp is longer than 64 characters");
        }
        let present = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Ok(present(otp)
            .map(Self::Totp)
            .or_else(|| present(recovery_code).map(Self::RecoveryCode)))
    }
}

/// What an authentication ceremony is for: an answer counts only where its ceremony was
/// begun for (a proof for a removal is not a sign-in's second step, nor the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CeremonyUse {
    /// "Sign in with a passkey": no account named beforehand.
    SignIn,
    /// The second step of a sign-in whose password was right.
    SecondFactor,
    /// Proving the signed-in person is there (removing a factor, new recovery codes).
    Proof,
}

/// A passkey's answer to an authentication ceremony.
#[derive(Clone)]
pub struct PasskeyAnswer {
    /// The `ceremony` value the options came with.
    pub ceremony: String,
    /// The browser's `PublicKeyCredential`, as JSON.
    pub credential: Value,
    /// What it is presented for (it must be what the ceremony was begun for).
    pub purpose: CeremonyUse,
}

impl PasskeyAnswer {
    /// From a form's `passkey_ceremony` and `passkey_credential` (JSON text), presented
    /// for `purpose`; `None` if either is missing, `Err` if the credential is not JSON.
    pub fn from_form(
        ceremony: Option<&str>,
        credential: Option<&str>,
        purpose: CeremonyUse,
    ) -> Result<Option<Self>, &'static str> {
        let (Some(ceremony), Some(credential)) = (
            ceremony.filter(|c| !c.is_empty()),
            credential.filter(|c| !c.is_empty()),
        ) else {
            return Ok(None);
        };
        let credential =
            serde_json::from_str(credential).map_err(|_| "passkey_credential is not JSON")?;
        Ok(Some(Self {
            ceremony: ceremony.to_owned(),
            credential,
            purpose,
        }))
    }
}

/// The longest `otp` a form may carry (a code is 6 digits, spaces allowed).
pub const MAX_OTP_CHARS: usize = 64;

/// The answer to a right password's second step.
#[derive(Debug)]
pub enum FactorCheck {
    /// The account has no second factor: the password was enough.
    NotEnrolled,
    /// The account has one and none was sent.
    Required,
    /// Right: how the person signed in.
    Passed(Authentication),
    /// Wrong (or a code used already).
    Invalid,
    /// Too many wrong second factors for the account or the address.
    Throttled(Duration),
}

impl FactorCheck {
    /// How the person signed in when the check let them in (no second factor, or the
    /// right one); `Err(self)` otherwise, for the caller to answer in its own words.
    pub fn signed_in(self) -> Result<Authentication, FactorCheck> {
        match self {
            Self::NotEnrolled => Ok(Authentication::now(false)),
            Self::Passed(authn) => Ok(authn),
            refused => Err(refused),
        }
    }
}

/// A TOTP enrolment begun: shown once, to put into an authenticator app.
pub struct TotpEnrolment {
    /// The secret, base32.
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

/// Why an enrolment change was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum MfaRefusal {
    /// TOTP is confirmed already: remove it first.
    AlreadyEnrolled,
    /// Nothing to confirm or remove.
    NotStarted,
    /// The code (or password) given is wrong.
    WrongProof,
    Throttled(Duration),
    /// KEYS_DIR has no key to seal TOTP secrets with.
    Unavailable,
    /// PUBLIC_URL's host is an IP address, which WebAuthn does not allow.
    PasskeysUnavailable,
    /// The account has `MAX_PASSKEYS` already.
    TooManyPasskeys,
    /// This credential is registered to the account already.
    PasskeyRegistered,
    /// The ceremony expired, was used, or is another account's: start again.
    CeremonyExpired,
}

/// What proves the person is there when removing a factor or renewing recovery codes.
pub enum Proof {
    Password(SecretString),
    Factor(SecondFactor),
}

impl AppState {
    /// After a right password: whether `user`'s second factor (if they have one) is right
    /// too. Attempts are counted against the account and the address before they are
    /// judged, as passwords are, and taken back when right. A TOTP code is accepted once
    /// (its time step is remembered), a recovery code is used up; both decided under the
    /// store's lock on the user, so two concurrent uses of one code cannot both pass.
    pub async fn check_second_factor(
        &self,
        user: &User,
        presented: Option<SecondFactor>,
        ctx: &audit::Context,
    ) -> Result<FactorCheck, ServiceError> {
        let fresh;
        let user = if user.mfa.enrolled() {
            user
        } else {
            // The account as it is now: a first second factor may have been enrolled while
            // the password was being hashed (the caller read the account before).
            match self.store.user(user.id).await? {
                Some(now) if now.mfa.enrolled() => {
                    fresh = now;
                    &fresh
                }
                _ => return Ok(FactorCheck::NotEnrolled),
            }
        };
        let Some(presented) = presented else {
            return Ok(FactorCheck::Required);
        };
        let counted = second_factor_attempt(user, ctx);
        if let Some(blocked) = self.throttle.reserve(&counted).await? {
            self.audit.record_repeatable(
                "mfa_throttled",
                &blocked.key,
                &user.id.to_string(),
                ctx,
                json!({}),
            );
            return Ok(FactorCheck::Throttled(blocked.retry_after));
        }
        let judged = self.use_factor(user, &presented).await;
        let subject = user.id.to_string();
        let kind = match presented {
            SecondFactor::Totp(_) => "totp",
            SecondFactor::RecoveryCode(_) => "recovery_code",
            SecondFactor::Passkey(_) => "passkey",
        };
        match judged {
            Ok(Some(methods)) => {
                if let Err(error) = self.throttle.refund(&counted, true).await {
                    tracing::warn!(%error, "could not take back a second-factor attempt");
                }
                self.metrics.mfa("ok");
                let event = match kind {
                    "recovery_code" => "mfa_recovery_code_used",
                    _ => "mfa_ok",
                };
                self.audit
                    .record(event, Some(&subject), ctx, json!({ "factor": kind }));
                Ok(FactorCheck::Passed(Authentication::with_methods(
                    &methods, true,
                )))
            }
            Ok(None) => {
                self.metrics.mfa("failed");
                self.audit
                    .record("mfa_failed", Some(&subject), ctx, json!({ "factor": kind }));
                Ok(FactorCheck::Invalid)
            }
            Err(e) => {
                if let Err(error) = self.throttle.refund(&counted, false).await {
                    tracing::warn!(%error, "could not take back a second-factor attempt");
                }
                Err(e)
            }
        }
    }

    /// Judges `presented` for `user` and, if right, uses it up: atomically, under the
    /// store's lock on the user (the TOTP step must be newer than the last accepted one,
    /// the recovery code must still be there), or, for a passkey, its ceremony. Right:
    /// the RFC 8176 methods it proves.
    async fn use_factor(
        &self,
        user: &User,
        presented: &SecondFactor,
    ) -> Result<Option<Vec<&'static str>>, ServiceError> {
        let accepted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&accepted);
        match presented {
            SecondFactor::Passkey(answer) => {
                return Ok(self
                    .judge_passkey(Some(user), answer)
                    .await?
                    .map(|(_, methods)| methods.to_vec()));
            }
            SecondFactor::Totp(code) => {
                let Some(secret) = self.totp_secret(user) else {
                    return Ok(None);
                };
                let sealed = user.mfa.totp.as_ref().map(|t| t.sealed_secret.clone());
                let code = code.trim().to_owned();
                let now = crate::domain::now().timestamp();
                let updated = self
                    .store
                    .update_user(
                        user.id,
                        Box::new(move |u| {
                            // The enrolment the code was checked against, still confirmed.
                            let Some(t) = u.mfa.totp.as_mut().filter(|t| {
                                t.confirmed && Some(&t.sealed_secret) == sealed.as_ref()
                            }) else {
                                return;
                            };
                            if let Some(step) = accepted_step(&secret, &code, now, t.last_step) {
                                t.last_step = step;
                                flag.store(true, Ordering::SeqCst);
                            }
                        }),
                    )
                    .await;
                absent_is_false(updated)?;
            }
            SecondFactor::RecoveryCode(code) => {
                let hash = recovery_code_hash(code);
                let updated = self
                    .store
                    .update_user(
                        user.id,
                        Box::new(move |u| {
                            let before = u.mfa.recovery_codes.len();
                            u.mfa.recovery_codes.retain(|h| h != &hash);
                            if u.mfa.recovery_codes.len() < before {
                                flag.store(true, Ordering::SeqCst);
                            }
                        }),
                    )
                    .await;
                absent_is_false(updated)?;
            }
        }
        Ok(accepted.load(Ordering::SeqCst).then(|| vec!["otp"]))
    }

    /// The user's TOTP secret, opened with the seal key (`None`: none, or not openable).
    fn totp_secret(&self, user: &User) -> Option<Vec<u8>> {
        let sealed = &user.mfa.totp.as_ref()?.sealed_secret;
        let secret = self.seal.as_ref()?.open(user.id, sealed);
        if secret.is_none() {
            tracing::error!(user_id = %user.id, "a TOTP secret cannot be opened: was KEYS_DIR's mfa-seal.key replaced?");
        }
        secret
    }

    /// Starts (or restarts) a TOTP enrolment, with the current password (a stolen token
    /// must not put its thief's authenticator on the account): a new secret, stored sealed
    /// and unconfirmed. Refused while a confirmed one exists (remove it first).
    pub async fn begin_totp(
        &self,
        user: &User,
        password: &SecretString,
        ctx: &audit::Context,
    ) -> Result<Result<TotpEnrolment, MfaRefusal>, ServiceError> {
        if user.mfa.totp_enrolled() {
            return Ok(Err(MfaRefusal::AlreadyEnrolled));
        }
        let Some(seal) = self.seal.as_ref() else {
            return Ok(Err(MfaRefusal::Unavailable));
        };
        if let Err(refused) = self
            .proven(user, Proof::Password(password.clone()), ctx)
            .await?
        {
            return Ok(Err(refused));
        }
        let secret = totp::new_secret();
        let sealed = seal.seal(user.id, &secret);
        let begun = self
            .update_user_if(user.id, move |u| {
                if u.mfa.totp_enrolled() {
                    return false;
                }
                u.mfa.totp = Some(Totp {
                    sealed_secret: sealed,
                    confirmed: false,
                    last_step: 0,
                });
                true
            })
            .await?;
        if !begun {
            return Ok(Err(MfaRefusal::AlreadyEnrolled));
        }
        self.audit.record(
            "mfa_enrolment_started",
            Some(&user.id.to_string()),
            ctx,
            json!({ "factor": "totp" }),
        );
        let uri = totp::otpauth_uri(&self.config.service_name, user.email.as_str(), &secret);
        Ok(Ok(TotpEnrolment {
            secret: totp::encoded(&secret),
            qr_svg: totp::qr_svg(&uri),
            otpauth_uri: uri,
        }))
    }

    /// Confirms a TOTP enrolment with a first right code. At the first enrolment the
    /// account also gets its recovery codes, returned here once (stored hashed). If it is
    /// the account's first second factor, every other session of the person ends (`keep`,
    /// the one confirming, goes on): sessions begun with the password alone must not
    /// outlive it.
    pub async fn confirm_totp(
        &self,
        user: &User,
        code: &str,
        keep: Option<uuid::Uuid>,
        ctx: &audit::Context,
    ) -> Result<Result<Vec<String>, MfaRefusal>, ServiceError> {
        let Some(pending) = user.mfa.totp.as_ref() else {
            return Ok(Err(MfaRefusal::NotStarted));
        };
        if pending.confirmed {
            return Ok(Err(MfaRefusal::AlreadyEnrolled));
        }
        let Some(secret) = self.totp_secret(user) else {
            return Ok(Err(MfaRefusal::Unavailable));
        };
        let counted = second_factor_attempt(user, ctx);
        if let Some(blocked) = self.throttle.reserve(&counted).await? {
            return Ok(Err(MfaRefusal::Throttled(blocked.retry_after)));
        }
        let codes = totp::new_recovery_codes();
        let hashes: Vec<String> = codes.iter().map(|c| recovery_code_hash(c)).collect();
        let code = code.trim().to_owned();
        let now = crate::domain::now().timestamp();
        let confirmed = Arc::new(AtomicBool::new(false));
        let gave_codes = Arc::new(AtomicBool::new(false));
        let (flag, codes_flag) = (Arc::clone(&confirmed), Arc::clone(&gave_codes));
        let sealed = pending.sealed_secret.clone();
        let updated = self
            .store
            .update_user(
                user.id,
                Box::new(move |u| {
                    // The enrolment confirmed is the one the code was computed for.
                    let Some(t) = u
                        .mfa
                        .totp
                        .as_mut()
                        .filter(|t| !t.confirmed && t.sealed_secret == sealed)
                    else {
                        return;
                    };
                    if let Some(step) = accepted_step(&secret, &code, now, t.last_step) {
                        t.confirmed = true;
                        t.last_step = step;
                        flag.store(true, Ordering::SeqCst);
                        let first = u.mfa.passkeys.is_empty();
                        if u.mfa.recovery_codes.is_empty() {
                            u.mfa.recovery_codes = hashes;
                            codes_flag.store(true, Ordering::SeqCst);
                        }
                        if first {
                            end_password_only_sessions(u, keep);
                        }
                    }
                }),
            )
            .await;
        if let Err(e) = updated {
            // Not judged: nothing was learnt about the code.
            if let Err(error) = self.throttle.refund(&counted, false).await {
                tracing::warn!(%error, "could not take back a second-factor attempt");
            }
            return Err(e.into());
        }
        if !confirmed.load(Ordering::SeqCst) {
            self.audit.record(
                "mfa_failed",
                Some(&user.id.to_string()),
                ctx,
                json!({ "factor": "totp", "during": "enrolment" }),
            );
            return Ok(Err(MfaRefusal::WrongProof));
        }
        if let Err(error) = self.throttle.refund(&counted, true).await {
            tracing::warn!(%error, "could not take back a second-factor attempt");
        }
        self.audit.record(
            "mfa_enrolled",
            Some(&user.id.to_string()),
            ctx,
            json!({ "factor": "totp" }),
        );
        Ok(Ok(if gave_codes.load(Ordering::SeqCst) {
            codes
        } else {
            Vec::new()
        }))
    }

    /// Whether `proof` is right for `user` now: the current password (throttled as a
    /// re-authentication) or a second factor (used up).
    pub(super) async fn proven(
        &self,
        user: &User,
        proof: Proof,
        ctx: &audit::Context,
    ) -> Result<Result<(), MfaRefusal>, ServiceError> {
        match proof {
            Proof::Password(password) => {
                let lookup = async { Ok(Some(user)) };
                let verdict = self
                    .check(
                        super::Attempt::Reauthenticate,
                        user.email.as_str(),
                        &password,
                        ctx,
                        lookup,
                    )
                    .await?;
                Ok(match verdict {
                    Verdict::Ok(_) => Ok(()),
                    Verdict::Throttled(wait) => Err(MfaRefusal::Throttled(wait)),
                    Verdict::Invalid => Err(MfaRefusal::WrongProof),
                })
            }
            Proof::Factor(factor) => Ok(
                match self.check_second_factor(user, Some(factor), ctx).await? {
                    FactorCheck::Passed(_) => Ok(()),
                    FactorCheck::Throttled(wait) => Err(MfaRefusal::Throttled(wait)),
                    _ => Err(MfaRefusal::WrongProof),
                },
            ),
        }
    }

    /// Removes TOTP, with a fresh proof (an unconfirmed one needs none); the recovery
    /// codes go with the account's last second factor.
    pub async fn remove_totp(
        &self,
        user: &User,
        proof: Proof,
        ctx: &audit::Context,
    ) -> Result<Result<(), MfaRefusal>, ServiceError> {
        if user.mfa.totp.is_none() {
            return Ok(Err(MfaRefusal::NotStarted));
        }
        if user.mfa.totp_enrolled() {
            if let Err(refused) = self.proven(user, proof, ctx).await? {
                return Ok(Err(refused));
            }
        }
        self.remove_factor(user, |m| m.totp = None, json!({ "factor": "totp" }), ctx)
            .await?;
        Ok(Ok(()))
    }

    /// Removes one second factor (`remove` takes it out of the record) and audits it
    /// (`fields`); the recovery codes go with the account's last one.
    pub(super) async fn remove_factor(
        &self,
        user: &User,
        remove: impl FnOnce(&mut Mfa) + Send + 'static,
        fields: Value,
        ctx: &audit::Context,
    ) -> Result<(), ServiceError> {
        self.store
            .update_user(
                user.id,
                Box::new(move |u| {
                    remove(&mut u.mfa);
                    if !u.mfa.enrolled() {
                        u.mfa.recovery_codes.clear();
                    }
                }),
            )
            .await?;
        self.audit
            .record("mfa_removed", Some(&user.id.to_string()), ctx, fields);
        Ok(())
    }

    /// New recovery codes (the old ones stop working), with a fresh proof; only for an
    /// account with a second factor.
    pub async fn renew_recovery_codes(
        &self,
        user: &User,
        proof: Proof,
        ctx: &audit::Context,
    ) -> Result<Result<Vec<String>, MfaRefusal>, ServiceError> {
        if !user.mfa.enrolled() {
            return Ok(Err(MfaRefusal::NotStarted));
        }
        if let Err(refused) = self.proven(user, proof, ctx).await? {
            return Ok(Err(refused));
        }
        let codes = totp::new_recovery_codes();
        let hashes: Vec<String> = codes.iter().map(|c| recovery_code_hash(c)).collect();
        self.store
            .update_user(user.id, Box::new(move |u| u.mfa.recovery_codes = hashes))
            .await?;
        self.audit.record(
            "mfa_recovery_codes_renewed",
            Some(&user.id.to_string()),
            ctx,
            json!({}),
        );
        Ok(Ok(codes))
    }

    /// `simple-api users mfa reset`: removes every second factor of the account (an
    /// operator's act, for a person who lost theirs); `false` if it had none.
    pub async fn reset_mfa(&self, user: &User) -> Result<bool, ServiceError> {
        self.update_user_if(user.id, |u| {
            let had = u.mfa != Default::default();
            u.mfa = Default::default();
            had
        })
        .await
    }
}

/// A first second factor ends every session begun with the password alone, but `keep`
/// (the one enrolling): they must not outlive it.
pub(super) fn end_password_only_sessions(u: &mut User, keep: Option<uuid::Uuid>) {
    u.tokens_valid_after = crate::domain::now();
    u.kept_session = keep;
}

/// What a second-factor attempt is counted against: the account (apart from its
/// password's count) and the address.
fn second_factor_attempt(user: &User, ctx: &audit::Context) -> throttle::Attempt {
    throttle::Attempt::new(Some(&format!("mfa:{}", user.id)), ctx.client_ip)
}

/// A user deleted meanwhile has no factor to use.
fn absent_is_false(updated: Result<User, StoreError>) -> Result<(), ServiceError> {
    match updated {
        Ok(_) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
