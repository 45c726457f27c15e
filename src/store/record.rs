//! The stored form of users, sessions and clients, kept apart from the domain types so
//! the file format can evolve. The file store's log lines carry them (`file::codec`);
//! PostgreSQL rows are read back through them too, checked the same way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    AuthCode, Client, ClientKeys, ClientName, Credential, Email, EmailChange, MailCode, MailCodes,
    Mfa, PasskeyCredential, PersonName, QueuedMail, RedirectUri, RefreshToken, Role, Scopes,
    Session, SignIn, Totp, User,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    /// Absent (false) in records from before verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_verified: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub tokens_valid_after: DateTime<Utc>,
    #[serde(default)]
    pub kept_session: Option<Uuid>,
    /// Second factors; absent when there are none (and in records from before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaRecord>,
    /// One-time codes sent by mail; absent when there are none. Boxed: most accounts
    /// have none, and a log entry is as large as its largest kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_codes: Option<Box<MailCodesRecord>>,
}

/// An account's codes in flight as stored (PostgreSQL: JSON in `users.mail_codes`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailCodesRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_reset: Option<MailCodeRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<MailCodeRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_change: Option<EmailChangeRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmailChangeRecord {
    pub new_email: String,
    #[serde(flatten)]
    pub code: MailCodeRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailCodeRecord {
    pub hash: String,
    pub expires_at: DateTime<Utc>,
}

impl MailCodesRecord {
    /// `None` for an account without codes in flight.
    pub fn of(codes: &MailCodes) -> Option<Self> {
        let code = |c: &MailCode| MailCodeRecord {
            hash: c.hash.clone(),
            expires_at: c.expires_at,
        };
        (codes != &MailCodes::default()).then(|| Self {
            password_reset: codes.password_reset.as_ref().map(code),
            verification: codes.verification.as_ref().map(code),
            email_change: codes.email_change.as_ref().map(|c| EmailChangeRecord {
                new_email: c.new_email.as_str().to_owned(),
                code: code(&c.code),
            }),
        })
    }

    pub fn into_codes(record: Option<Self>) -> MailCodes {
        let Some(r) = record else {
            return MailCodes::default();
        };
        let code = |c: MailCodeRecord| MailCode {
            hash: c.hash,
            expires_at: c.expires_at,
        };
        // A pending address that no longer parses (none should) is dropped: the change
        // is asked for again.
        let email_change = r.email_change.and_then(|c| {
            Some(EmailChange {
                new_email: Email::parse(&c.new_email).ok()?,
                code: code(c.code),
            })
        });
        MailCodes {
            password_reset: r.password_reset.map(code),
            verification: r.verification.map(code),
            email_change,
        }
    }
}

/// A person's second factors as stored (PostgreSQL keeps this as JSON in `users.mfa`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MfaRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<PasskeyRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PasskeyRecord {
    pub id: Uuid,
    pub name: String,
    pub credential_id: String,
    pub credential: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TotpRecord {
    pub sealed_secret: String,
    pub confirmed: bool,
    pub last_step: i64,
}

impl MfaRecord {
    /// `None` for an account without second factors.
    pub fn of(mfa: &Mfa) -> Option<Self> {
        (mfa != &Mfa::default()).then(|| Self {
            totp: mfa.totp.as_ref().map(|t| TotpRecord {
                sealed_secret: t.sealed_secret.clone(),
                confirmed: t.confirmed,
                last_step: t.last_step,
            }),
            recovery_codes: mfa.recovery_codes.clone(),
            passkeys: mfa
                .passkeys
                .iter()
                .map(|p| PasskeyRecord {
                    id: p.id,
                    name: p.name.as_str().to_owned(),
                    credential_id: p.credential_id.clone(),
                    credential: p.credential.clone(),
                    created_at: p.created_at,
                    last_used_at: p.last_used_at,
                })
                .collect(),
        })
    }

    pub fn into_mfa(record: Option<Self>) -> Mfa {
        let Some(r) = record else {
            return Mfa::default();
        };
        Mfa {
            totp: r.totp.map(|t| Totp {
                sealed_secret: t.sealed_secret,
                confirmed: t.confirmed,
                last_step: t.last_step,
            }),
            recovery_codes: r.recovery_codes,
            // A name that no longer parses (none should) reads back as "Passkey".
            passkeys: r
                .passkeys
                .into_iter()
                .map(|p| PasskeyCredential {
                    id: p.id,
                    name: PersonName::parse(&p.name, "name")
                        .ok()
                        .flatten()
                        .unwrap_or_else(PersonName::passkey),
                    credential_id: p.credential_id,
                    credential: p.credential,
                    created_at: p.created_at,
                    last_used_at: p.last_used_at,
                })
                .collect(),
        }
    }
}

impl From<&User> for UserRecord {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.as_str().to_owned(),
            email_verified: user.email_verified,
            first_name: user.first_name.as_ref().map(|n| n.as_str().to_owned()),
            last_name: user.last_name.as_ref().map(|n| n.as_str().to_owned()),
            role: user.role,
            password_hash: user.password_hash.clone(),
            created_at: user.created_at,
            updated_at: user.updated_at,
            tokens_valid_after: user.tokens_valid_after,
            kept_session: user.kept_session,
            mfa: MfaRecord::of(&user.mfa),
            mail_codes: MailCodesRecord::of(&user.mail_codes).map(Box::new),
        }
    }
}

impl TryFrom<UserRecord> for User {
    type Error = String;

    /// Records were validated before they were written; re-checking guards against
    /// hand-edited files without trusting them.
    fn try_from(r: UserRecord) -> Result<Self, String> {
        let name = |raw: Option<String>, field| match raw {
            Some(raw) => PersonName::parse(&raw, field).map_err(|e| e.to_string()),
            None => Ok(None),
        };
        Ok(User {
            id: r.id,
            email: Email::parse(&r.email).map_err(|e| format!("user {}: {e}", r.id))?,
            email_verified: r.email_verified,
            first_name: name(r.first_name, "first_name")?,
            last_name: name(r.last_name, "last_name")?,
            role: r.role,
            password_hash: r.password_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
            tokens_valid_after: r.tokens_valid_after,
            kept_session: r.kept_session,
            mfa: MfaRecord::into_mfa(r.mfa),
            mail_codes: MailCodesRecord::into_codes(r.mail_codes.map(|b| *b)),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub scope: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// SHA-256 of the family secret; absent in records written before families.
    #[serde(default)]
    pub family: Option<String>,
    /// The client it was granted to (the authorization code flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Uuid>,
    /// How the person signed in (absent before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    pub tokens: Vec<RefreshRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl From<&RefreshToken> for RefreshRecord {
    fn from(t: &RefreshToken) -> Self {
        Self {
            hash: t.hash.clone(),
            issued_at: t.issued_at,
            expires_at: t.expires_at,
            rotated_at: t.rotated_at,
        }
    }
}

impl From<RefreshRecord> for RefreshToken {
    fn from(r: RefreshRecord) -> Self {
        Self {
            hash: r.hash,
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            rotated_at: r.rotated_at,
        }
    }
}

impl From<&Session> for SessionRecord {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            scope: s.scope.to_string(),
            created_at: s.created_at,
            revoked_at: s.revoked_at,
            family: s.family.clone(),
            client_id: s.client_id,
            amr: s.amr.clone(),
            tokens: s.tokens.iter().map(RefreshRecord::from).collect(),
        }
    }
}

impl TryFrom<SessionRecord> for Session {
    type Error = String;

    fn try_from(r: SessionRecord) -> Result<Self, String> {
        let mut tokens: Vec<RefreshToken> = r.tokens.into_iter().map(RefreshToken::from).collect();
        if r.family.is_none() {
            // From before families: its tokens are refused, only the newest's expiry
            // still counts (how long the session is kept).
            tokens.drain(..tokens.len().saturating_sub(1));
        }
        Ok(Session {
            id: r.id,
            user_id: r.user_id,
            scope: Scopes::parse(&r.scope)
                .map_err(|s| format!("session {}: unknown scope {s}", r.id))?,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            family: r.family,
            client_id: r.client_id,
            amr: r.amr,
            tokens,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: Uuid,
    pub name: String,
    pub scope: String,
    /// A secret's stored form; absent for a client with public keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// A `private_key_jwt` client's keys, as a JWK Set; absent for a client with a secret
    /// (and in every record written before public keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    pub created_at: DateTime<Utc>,
    pub secret_rotated_at: DateTime<Utc>,
    /// A public client (no secret, no keys); absent in records written before them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// Browser sign-in (absent before the authorization code flow, and for services).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_party: bool,
}

impl From<&Client> for ClientRecord {
    fn from(c: &Client) -> Self {
        Self {
            id: c.id,
            name: c.name.as_str().to_owned(),
            scope: c.scope.to_string(),
            secret_hash: c.secret_hash().map(str::to_owned),
            jwks: c.keys().map(ClientKeys::to_jwks),
            created_at: c.created_at,
            secret_rotated_at: c.secret_rotated_at,
            public: c.is_public(),
            redirect_uris: uris(&c.sign_in.redirect_uris),
            post_logout_redirect_uris: uris(&c.sign_in.post_logout_redirect_uris),
            first_party: c.sign_in.first_party,
        }
    }
}

fn uris(uris: &[RedirectUri]) -> Vec<String> {
    uris.iter().map(|u| u.as_str().to_owned()).collect()
}

impl TryFrom<ClientRecord> for Client {
    type Error = String;

    fn try_from(r: ClientRecord) -> Result<Self, String> {
        let parse = |uris: Vec<String>| {
            uris.iter()
                .map(|u| RedirectUri::parse(u).map_err(|e| format!("client {}: {e}", r.id)))
                .collect::<Result<Vec<_>, _>>()
        };
        let sign_in = SignIn {
            redirect_uris: parse(r.redirect_uris)?,
            post_logout_redirect_uris: parse(r.post_logout_redirect_uris)?,
            first_party: r.first_party,
        };
        Ok(Client {
            id: r.id,
            name: ClientName::parse(&r.name).map_err(|e| format!("client {}: {e}", r.id))?,
            scope: Scopes::parse(&r.scope)
                .map_err(|s| format!("client {}: unknown scope {s}", r.id))?,
            credential: match (r.secret_hash, r.jwks) {
                (None, None) if r.public => Credential::Public,
                (Some(hash), None) => Credential::Secret(hash),
                (None, Some(jwks)) => Credential::Keys(
                    ClientKeys::parse_jwks(&jwks).map_err(|e| format!("client {}: {e}", r.id))?,
                ),
                _ => {
                    return Err(format!(
                        "client {}: needs exactly one of a secret and public keys, or neither if public",
                        r.id
                    ))
                }
            },
            created_at: r.created_at,
            secret_rotated_at: r.secret_rotated_at,
            sign_in,
        })
    }
}

/// An authorization code's binding as PostgreSQL keeps it (JSON, read back whole).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthCodeRecord {
    pub client_id: Uuid,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub user_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub auth_time: DateTime<Utc>,
    pub sso_session: Uuid,
    pub amr: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

impl From<&AuthCode> for AuthCodeRecord {
    fn from(c: &AuthCode) -> Self {
        Self {
            client_id: c.client_id,
            redirect_uri: c.redirect_uri.clone(),
            code_challenge: c.code_challenge.clone(),
            scope: c.scope.to_string(),
            user_id: c.user_id,
            nonce: c.nonce.clone(),
            auth_time: c.auth_time,
            sso_session: c.sso_session,
            amr: c.amr.clone(),
            expires_at: c.expires_at,
        }
    }
}

impl AuthCodeRecord {
    pub fn into_code(self, hash: String) -> Result<AuthCode, String> {
        Ok(AuthCode {
            hash,
            client_id: self.client_id,
            redirect_uri: self.redirect_uri,
            code_challenge: self.code_challenge,
            scope: Scopes::parse(&self.scope).map_err(|s| format!("code: unknown scope {s}"))?,
            user_id: self.user_id,
            nonce: self.nonce,
            auth_time: self.auth_time,
            sso_session: self.sso_session,
            amr: self.amr,
            expires_at: self.expires_at,
        })
    }
}

/// A queued message as stored (the file store's log line; PostgreSQL has a row).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailRecord {
    pub id: Uuid,
    pub recipient: String,
    pub sealed: String,
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<&QueuedMail> for MailRecord {
    fn from(m: &QueuedMail) -> Self {
        Self {
            id: m.id,
            recipient: m.recipient.clone(),
            sealed: m.sealed.clone(),
            purpose: m.purpose.clone(),
            user_id: m.user_id,
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at,
            created_at: m.created_at,
        }
    }
}

impl From<MailRecord> for QueuedMail {
    fn from(r: MailRecord) -> Self {
        Self {
            id: r.id,
            recipient: r.recipient,
            sealed: r.sealed,
            purpose: r.purpose,
            user_id: r.user_id,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
        }
    }
}
