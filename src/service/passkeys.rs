//! Passkeys (issue #18): registration for the signed-in person, removal, and the
//! authentication ceremony, used two ways: as the second factor after a password
//! (`check_second_factor` judges it like a code) and alone, "Sign in with a passkey" (a
//! discoverable credential names its account; user verification makes it two factors).
//!
//! A ceremony's state travels signed in its `ceremony` value (ten minutes) and is used
//! once: the store's record of used assertions remembers its id (`CEREMONIES`), decided
//! in one place, so two answers to one challenge cannot both pass, on any replica.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::DateTime;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;
use webauthn_rs::prelude::{DiscoverableAuthentication, Passkey, PasskeyRegistration};

use super::mfa::{end_password_only_sessions, CeremonyUse, PasskeyAnswer, Proof};
use super::{AppState, MfaRefusal, ServiceError};
use crate::audit;
use crate::auth::passkeys::{self, RelyingParty};
use crate::auth::totp::{new_recovery_codes, recovery_code_hash};
use crate::auth::{throttle, Authentication};
use crate::domain::{ClientId, PasskeyCredential, PersonName, User, UserId, MAX_PASSKEYS};
use crate::store::StoreError;

const REGISTRATION_TYP: &str = "webauthn-registration+jwt";
const AUTHENTICATION_TYP: &str = "webauthn-authentication+jwt";
/// How long a ceremony may take: the browser's own timeout (5 minutes) and some reading.
const CEREMONY_TTL_SECS: i64 = 600;
/// The "client" under which the store remembers used ceremony ids (with the assertions of
/// `private_key_jwt`, which are keyed by client): no client has this id.
const CEREMONIES: ClientId = Uuid::from_u128(0x5177_d0c5_0000_4000_8000_0000_0000_00a5);

/// A ceremony begun: the options for the browser's `navigator.credentials.create`/`get`
/// (JSON with base64url members, as WebAuthn L3's `toJSON` forms them) and the signed
/// state to send back with the answer.
pub struct Ceremony {
    pub ceremony: String,
    pub options: Value,
}

/// A registration under way.
#[derive(Serialize, Deserialize)]
struct Registration {
    jti: String,
    sub: UserId,
    name: String,
    state: PasskeyRegistration,
}

/// An authentication under way; `sub` when it is for a known account (second factor or
/// proof), none for "Sign in with a passkey".
#[derive(Serialize, Deserialize)]
struct Authenticating {
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<UserId>,
    purpose: CeremonyUse,
    state: DiscoverableAuthentication,
}

/// The answer to "Sign in with a passkey".
pub enum PasskeySignIn {
    Ok(Arc<User>, Authentication),
    /// Not a passkey of any account here, or it does not verify, or the ceremony is
    /// expired or used: the caller cannot tell which.
    Invalid,
    Throttled(Duration),
}

impl AppState {
    fn relying_party(&self) -> Result<&RelyingParty, MfaRefusal> {
        self.passkeys
            .as_ref()
            .ok_or(MfaRefusal::PasskeysUnavailable)
    }

    /// Starts registering a passkey named `name`, with the current password (as TOTP
    /// enrolment does: a stolen token must not add its thief's key).
    pub async fn begin_passkey(
        &self,
        user: &User,
        password: &SecretString,
        name: Option<PersonName>,
        ctx: &audit::Context,
    ) -> Result<Result<Ceremony, MfaRefusal>, ServiceError> {
        let rp = match self.relying_party() {
            Ok(rp) => rp,
            Err(refused) => return Ok(Err(refused)),
        };
        if user.mfa.passkeys.len() >= MAX_PASSKEYS {
            return Ok(Err(MfaRefusal::TooManyPasskeys));
        }
        if let Err(refused) = self
            .proven(user, Proof::Password(password.clone()), ctx)
            .await?
        {
            return Ok(Err(refused));
        }
        let existing: Vec<Passkey> = user.mfa.passkeys.iter().filter_map(parsed).collect();
        let display = display_name(user);
        let (options, state) =
            match rp.start_registration(user.id, user.email.as_str(), &display, &existing) {
                Ok(started) => started,
                Err(e) => {
                    tracing::error!(error = %e, "a passkey registration could not be started");
                    return Ok(Err(MfaRefusal::PasskeysUnavailable));
                }
            };
        let registration = Registration {
            jti: Uuid::new_v4().to_string(),
            sub: user.id,
            name: name.unwrap_or_else(PersonName::passkey).as_str().to_owned(),
            state,
        };
        let ceremony = self
            .tokens
            .sign_value(REGISTRATION_TYP, registration, CEREMONY_TTL_SECS)?;
        Ok(Ok(Ceremony { ceremony, options }))
    }

    /// Finishes a registration with the browser's answer: the passkey is the account's.
    /// If it is the account's first second factor, recovery codes come with it (returned
    /// once) and every other session ends (`keep` goes on), as with TOTP.
    pub async fn finish_passkey(
        &self,
        user: &User,
        ceremony: &str,
        credential: &Value,
        keep: Option<Uuid>,
        ctx: &audit::Context,
    ) -> Result<Result<(PasskeyCredential, Vec<String>), MfaRefusal>, ServiceError> {
        let rp = match self.relying_party() {
            Ok(rp) => rp,
            Err(refused) => return Ok(Err(refused)),
        };
        let Ok(envelope) = self
            .tokens
            .verify_value::<Registration>(REGISTRATION_TYP, ceremony)
        else {
            return Ok(Err(MfaRefusal::CeremonyExpired));
        };
        let registration = envelope.value;
        if registration.sub != user.id {
            return Ok(Err(MfaRefusal::CeremonyExpired));
        }
        let passkey = match rp.finish_registration(credential, &registration.state) {
            Ok(passkey) => passkey,
            Err(e) => {
                tracing::info!(error = %e, user_id = %user.id, "a passkey registration was refused");
                self.audit.record(
                    "mfa_failed",
                    Some(&user.id.to_string()),
                    ctx,
                    json!({ "factor": "passkey", "during": "enrolment" }),
                );
                return Ok(Err(MfaRefusal::WrongProof));
            }
        };
        if !self.use_ceremony(&registration.jti, envelope.exp).await? {
            return Ok(Err(MfaRefusal::CeremonyExpired));
        }
        let now = crate::domain::now();
        let added = PasskeyCredential {
            id: Uuid::now_v7(),
            name: PersonName::parse(&registration.name, "name")
                .ok()
                .flatten()
                .unwrap_or_else(PersonName::passkey),
            credential_id: passkeys::credential_id(&passkey),
            credential: serde_json::to_string(&passkey)
                .map_err(|e| crate::auth::TokenError::Signing(e.to_string()))?,
            created_at: now,
            last_used_at: None,
        };
        let codes = new_recovery_codes();
        let hashes: Vec<String> = codes.iter().map(|c| recovery_code_hash(c)).collect();
        // What the update decided: refused, or added (with codes given or not).
        let outcome: Arc<Mutex<Option<Result<bool, MfaRefusal>>>> = Arc::default();
        let decided = Arc::clone(&outcome);
        let record = added.clone();
        self.store
            .update_user(
                user.id,
                Box::new(move |u| {
                    let mut decided = decided.lock().unwrap_or_else(|e| e.into_inner());
                    if u.mfa.passkeys.len() >= MAX_PASSKEYS {
                        *decided = Some(Err(MfaRefusal::TooManyPasskeys));
                        return;
                    }
                    if u.mfa
                        .passkeys
                        .iter()
                        .any(|p| p.credential_id == record.credential_id)
                    {
                        *decided = Some(Err(MfaRefusal::PasskeyRegistered));
                        return;
                    }
                    let first = !u.mfa.enrolled();
                    u.mfa.passkeys.push(record);
                    let gave_codes = u.mfa.recovery_codes.is_empty();
                    if gave_codes {
                        u.mfa.recovery_codes = hashes;
                    }
                    if first {
                        end_password_only_sessions(u, keep);
                    }
                    *decided = Some(Ok(gave_codes));
                }),
            )
            .await?;
        let decided = outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
        match decided {
            Some(Ok(gave_codes)) => {
                self.audit.record(
                    "mfa_enrolled",
                    Some(&user.id.to_string()),
                    ctx,
                    json!({ "factor": "passkey", "passkey_id": added.id }),
                );
                let codes = if gave_codes { codes } else { Vec::new() };
                Ok(Ok((added, codes)))
            }
            Some(Err(refused)) => Ok(Err(refused)),
            None => Ok(Err(MfaRefusal::NotStarted)),
        }
    }

    /// Removes the passkey `id`, with a fresh proof. The recovery codes go when the
    /// account's last second factor does.
    pub async fn remove_passkey(
        &self,
        user: &User,
        id: Uuid,
        proof: Proof,
        ctx: &audit::Context,
    ) -> Result<Result<(), MfaRefusal>, ServiceError> {
        if !user.mfa.passkeys.iter().any(|p| p.id == id) {
            return Ok(Err(MfaRefusal::NotStarted));
        }
        if let Err(refused) = self.proven(user, proof, ctx).await? {
            return Ok(Err(refused));
        }
        let fields = json!({ "factor": "passkey", "passkey_id": id });
        self.remove_factor(
            user,
            move |m| m.passkeys.retain(|p| p.id != id),
            fields,
            ctx,
        )
        .await?;
        Ok(Ok(()))
    }

    /// Starts an authentication for `purpose`: for `user`'s passkeys (a second factor, or
    /// a proof), or for any discoverable passkey ("Sign in with a passkey", no user).
    pub fn passkey_challenge(
        &self,
        purpose: CeremonyUse,
        user: Option<&User>,
    ) -> Result<Ceremony, MfaRefusal> {
        let rp = self.relying_party()?;
        if (purpose == CeremonyUse::SignIn) != user.is_none() {
            return Err(MfaRefusal::NotStarted);
        }
        let allowed: Vec<Passkey> = user
            .map(|u| u.mfa.passkeys.iter().filter_map(parsed).collect())
            .unwrap_or_default();
        if user.is_some() && allowed.is_empty() {
            return Err(MfaRefusal::NotStarted);
        }
        let (options, state) = rp.start_authentication(&allowed).map_err(|e| {
            tracing::error!(error = %e, "a passkey authentication could not be started");
            MfaRefusal::PasskeysUnavailable
        })?;
        let authenticating = Authenticating {
            jti: Uuid::new_v4().to_string(),
            sub: user.map(|u| u.id),
            purpose,
            state,
        };
        let ceremony = self
            .tokens
            .sign_value(AUTHENTICATION_TYP, authenticating, CEREMONY_TTL_SECS)
            .map_err(|e| {
                tracing::error!(error = %e, "a passkey ceremony could not be signed");
                MfaRefusal::PasskeysUnavailable
            })?;
        Ok(Ceremony { ceremony, options })
    }

    /// Judges a passkey's answer, for `expected` (a second factor) or for whichever
    /// account it names (`None`). Right: the account, and the RFC 8176 methods it proves;
    /// the ceremony is used up and the credential's counter and last use are kept.
    pub(super) async fn judge_passkey(
        &self,
        expected: Option<&User>,
        answer: &PasskeyAnswer,
    ) -> Result<Option<(Arc<User>, [&'static str; 2])>, ServiceError> {
        let Ok(rp) = self.relying_party() else {
            return Ok(None);
        };
        let Ok(envelope) = self
            .tokens
            .verify_value::<Authenticating>(AUTHENTICATION_TYP, &answer.ceremony)
        else {
            return Ok(None);
        };
        let authenticating = envelope.value;
        // A ceremony begun for one account finishes for that account only, and for what it
        // was begun for: one of "Sign in with a passkey" does not stand in for a second
        // factor, nor a proof's for a sign-in's second step, nor the reverse.
        if authenticating.sub != expected.map(|u| u.id) || authenticating.purpose != answer.purpose
        {
            return Ok(None);
        }
        let Ok((handle, credential_id)) = RelyingParty::identify(&answer.credential) else {
            return Ok(None);
        };
        let user = match (expected, handle) {
            // The user handle, when the authenticator gives one, must name the account too.
            (Some(user), Some(handle)) if handle != user.id => return Ok(None),
            (Some(user), _) => match self.store.user(user.id).await? {
                Some(user) => user,
                None => return Ok(None),
            },
            (None, Some(handle)) => match self.store.user(handle).await? {
                Some(user) => user,
                None => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        let Some(stored) = user
            .mfa
            .passkeys
            .iter()
            .find(|p| p.credential_id == credential_id)
        else {
            return Ok(None);
        };
        let Some(passkey) = parsed(stored) else {
            return Ok(None);
        };
        let result =
            match rp.finish_authentication(&answer.credential, authenticating.state, &passkey) {
                Ok(result) => result,
                Err(e) => {
                    tracing::info!(error = %e, user_id = %user.id, "a passkey answer was refused");
                    return Ok(None);
                }
            };
        if !self.use_ceremony(&authenticating.jti, envelope.exp).await? {
            return Ok(None);
        }
        let methods = passkeys::methods(&result);
        let stored_id = stored.id;
        let now = crate::domain::now();
        // The counter is judged again under the store's lock, against the record as it is
        // now: two answers of a cloned key racing each other cannot both pass.
        let accepted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&accepted);
        let kept = self
            .store
            .update_user(
                user.id,
                Box::new(move |u| {
                    let Some(p) = u.mfa.passkeys.iter_mut().find(|p| p.id == stored_id) else {
                        return;
                    };
                    let Some(mut current) = parsed(p) else {
                        return;
                    };
                    let (seen, count) = (passkeys::counter(&p.credential), result.counter());
                    if (count > 0 || seen > 0) && count <= seen {
                        return;
                    }
                    if current.update_credential(&result) == Some(true) {
                        if let Ok(json) = serde_json::to_string(&current) {
                            p.credential = json;
                        }
                    }
                    p.last_used_at = Some(now);
                    flag.store(true, Ordering::SeqCst);
                }),
            )
            .await;
        match kept {
            Ok(_) | Err(StoreError::NotFound) => {}
            // Unrecorded, the counter would let this answer's clone pass: no sign-in.
            Err(e) => return Err(e.into()),
        }
        if !accepted.load(Ordering::SeqCst) {
            tracing::info!(user_id = %user.id, "a passkey answer lost to another (its counter is not beyond the last one)");
            return Ok(None);
        }
        Ok(Some((user, methods)))
    }

    /// "Sign in with a passkey": a discoverable passkey, verified by its person, is the
    /// whole sign-in. Attempts are counted against the address before they are judged
    /// (not against the account the answer names: a forged answer cannot be guessed
    /// right, and strangers must not be able to lock an account's sign-in).
    pub async fn sign_in_with_passkey(
        &self,
        answer: &PasskeyAnswer,
        ctx: &audit::Context,
    ) -> Result<PasskeySignIn, ServiceError> {
        // Without a known address (no peer address, an untrusted proxy chain) every such
        // attempt shares one key: never unthrottled.
        let counted = throttle::Attempt::new(
            ctx.client_ip.is_none().then_some("passkey:unknown-address"),
            ctx.client_ip,
        );
        if let Some(blocked) = self.throttle.reserve(&counted).await? {
            self.metrics.login("throttled");
            return Ok(PasskeySignIn::Throttled(blocked.retry_after));
        }
        let judged = match self.judge_passkey(None, answer).await {
            Ok(judged) => judged,
            Err(e) => {
                if let Err(error) = self.throttle.refund(&counted, false).await {
                    tracing::warn!(%error, "could not take back a passkey attempt");
                }
                return Err(e);
            }
        };
        let Some((user, methods)) = judged else {
            self.metrics.login("failed");
            self.audit
                .record("login_failed", None, ctx, json!({ "via": "passkey" }));
            return Ok(PasskeySignIn::Invalid);
        };
        if let Err(error) = self.throttle.refund(&counted, true).await {
            tracing::warn!(%error, "could not take back a passkey attempt");
        }
        self.metrics.login("ok");
        self.metrics.mfa("ok");
        self.audit.record(
            "login_ok",
            Some(&user.id.to_string()),
            ctx,
            json!({ "via": "passkey" }),
        );
        let authn = Authentication::with_methods(&methods, false);
        Ok(PasskeySignIn::Ok(user, authn))
    }

    /// Marks a ceremony used (`false`: it was already).
    async fn use_ceremony(&self, jti: &str, exp: i64) -> Result<bool, ServiceError> {
        let until = DateTime::from_timestamp(exp, 0).unwrap_or_else(crate::domain::now);
        Ok(self.store.use_assertion(CEREMONIES, jti, until).await?)
    }
}

/// A stored passkey as webauthn-rs reads it (`None`, logged: a record it cannot read).
fn parsed(stored: &PasskeyCredential) -> Option<Passkey> {
    serde_json::from_str(&stored.credential)
        .inspect_err(|e| tracing::error!(error = %e, passkey_id = %stored.id, "a stored passkey cannot be read"))
        .ok()
}

/// The name an authenticator shows for the account.
fn display_name(user: &User) -> String {
    let names: Vec<&str> = [&user.first_name, &user.last_name]
        .into_iter()
        .flatten()
        .map(PersonName::as_str)
        .collect();
    if names.is_empty() {
        user.email.as_str().to_owned()
    } else {
        names.join(" ")
    }
}
