//! Client authentication, both ways a registered client may prove who it is: its secret
//! (`client_secret_basic`/`client_secret_post`, through the one login path, `check`) or an
//! assertion signed with its key (`private_key_jwt`, RFC 7523).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::login::Attempt;
use super::{AppState, ServiceError, Verdict};
use crate::audit;
use crate::auth::assertion::{self, AssertionError};
use crate::auth::clients::{self, RecentSecrets, StoredSecret};
use crate::auth::throttle;
use crate::domain::Client;

/// How long a right client secret is remembered (`RecentSecrets`).
pub const RECENT_SECRET_TTL: Duration = Duration::from_secs(5);
/// How much later than its `exp` a used assertion id is handed to the store (see
/// `judge_assertion`): a minute for clocks that disagree. The store itself keeps it the
/// verifier's leeway past that (`Store::use_assertion`), as it keeps revoked token ids.
const ASSERTION_MEMORY_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// How a client tried to authenticate.
pub enum ClientCredential<'a> {
    /// `client_id` and `client_secret` (HTTP Basic or form).
    Secret {
        id: &'a str,
        secret: &'a SecretString,
    },
    /// A `client_assertion` (`private_key_jwt`), sent to the endpoint at `endpoint_url`.
    Assertion {
        assertion: &'a str,
        endpoint_url: &'a str,
    },
}

/// The answer to a client's credential.
pub enum ClientVerdict {
    Authenticated(Client),
    /// Refused. `reason` is set only when the client itself can be told why: an assertion
    /// whose signature verified with its key (so only the key's holder reads it).
    Refused {
        reason: Option<String>,
    },
    /// Too many recent failures from this address.
    Throttled(Duration),
    /// A right assertion, but its client already has MAX_CLIENT_ASSERTIONS unexpired ones
    /// remembered (`AssertionHistory`): the wait until the first is forgotten.
    TooManyAssertions(Duration),
}

impl From<Verdict<Client>> for ClientVerdict {
    fn from(verdict: Verdict<Client>) -> Self {
        match verdict {
            Verdict::Ok(client) => Self::Authenticated(client),
            Verdict::Invalid => Self::Refused { reason: None },
            Verdict::Throttled(wait) => Self::Throttled(wait),
        }
    }
}

impl AppState {
    /// Authenticates a client by whichever credential it presented.
    pub async fn authenticate_client(
        &self,
        credential: ClientCredential<'_>,
        ctx: &audit::Context,
    ) -> Result<ClientVerdict, ServiceError> {
        match credential {
            ClientCredential::Secret { id, secret } => Ok(self
                .authenticate_client_secret(id, secret, ctx)
                .await?
                .into()),
            ClientCredential::Assertion {
                assertion,
                endpoint_url,
            } => {
                self.authenticate_client_assertion(assertion, endpoint_url, ctx)
                    .await
            }
        }
    }

    /// A client's id and secret. Unknown ids (and clients without a secret) cost the same
    /// digest comparison. A secret still stored as an argon2 hash (from before digests) is
    /// replaced by its digest once it has been presented right. A secret verified right in
    /// the last `RECENT_SECRET_TTL` is checked against the stored digest without being
    /// counted as an attempt (see `RecentSecrets`).
    async fn authenticate_client_secret(
        &self,
        id: &str,
        secret: &SecretString,
        ctx: &audit::Context,
    ) -> Result<Verdict<Client>, ServiceError> {
        let remembered = RecentSecrets::key(id, secret.expose_secret());
        if self.recent_client_secrets.contains(&remembered) {
            if let Some(client) = self.client_with_digest_of(id, secret).await? {
                return Ok(Verdict::Ok(client));
            }
        }
        let lookup = async {
            match uuid::Uuid::parse_str(id) {
                Ok(id) => self.store.client(id).await,
                Err(_) => Ok(None),
            }
        };
        let verdict = self.check(Attempt::Client, id, secret, ctx, lookup).await?;
        if let Verdict::Ok(client) = &verdict {
            if matches!(
                client.secret_hash().map(StoredSecret::of),
                Some(StoredSecret::Argon2)
            ) {
                self.store_client_secret_as_digest(client, secret).await;
            }
            self.recent_client_secrets.insert(remembered);
        }
        Ok(verdict)
    }

    /// The client `id` if its stored secret is, right now, the digest of `secret`.
    async fn client_with_digest_of(
        &self,
        id: &str,
        secret: &SecretString,
    ) -> Result<Option<Client>, ServiceError> {
        let Ok(id) = uuid::Uuid::parse_str(id) else {
            return Ok(None);
        };
        let client = self.store.client(id).await?;
        Ok(
            client.filter(|c| match c.secret_hash().map(StoredSecret::of) {
                Some(StoredSecret::Digest(digest)) => {
                    clients::digest_matches(Some(digest), secret.expose_secret())
                }
                _ => false,
            }),
        )
    }

    /// Best effort: a failure leaves the argon2 hash, which keeps working. Conditional on
    /// the client being as it was read, so a deletion or rotation meanwhile wins.
    async fn store_client_secret_as_digest(&self, client: &Client, secret: &SecretString) {
        let digest = clients::hash_secret(secret.expose_secret());
        match self.store.restore_client_secret(client, digest).await {
            Ok(true) => {
                tracing::info!(client_id = %client.id, "client secret now stored as a digest")
            }
            Ok(false) => {
                tracing::info!(client_id = %client.id, "client changed meanwhile; its secret was not restored")
            }
            Err(error) => {
                tracing::warn!(client_id = %client.id, %error, "could not store a client secret as a digest")
            }
        }
    }

    /// A `private_key_jwt` assertion: signed with a key of the client it names, for this
    /// service, unexpired, and never seen before (its `jti` is used up in the store), from a
    /// client within its allowance of remembered uses (`AssertionHistory`). An
    /// assertion cannot be guessed, so it is not counted against the shared (PostgreSQL)
    /// attempt count like a secret; but each refusal still costs signature checks (up to one
    /// per key of the client) and, for a made-up client id, a store read, so refusals are
    /// counted per address in this process (`assertion_failures`, before the check, taken
    /// back when it passes), and an address that has spent them waits like one guessing
    /// secrets. Refusals are audited once per address and window (`record_repeatable`), so
    /// a flood of forgeries cannot grow the audit log.
    async fn authenticate_client_assertion(
        &self,
        assertion: &str,
        endpoint_url: &str,
        ctx: &audit::Context,
    ) -> Result<ClientVerdict, ServiceError> {
        let counted = throttle::Attempt::new(None, ctx.client_ip);
        if let Err(blocked) = self.assertion_failures.reserve(&counted) {
            self.metrics.login("throttled");
            return Ok(ClientVerdict::Throttled(blocked.retry_after));
        }
        let verdict = self.judge_assertion(assertion, endpoint_url, ctx).await;
        if !matches!(
            verdict,
            Ok(ClientVerdict::Refused { .. } | ClientVerdict::TooManyAssertions(_))
        ) {
            // Right, or not judged (the store failed): not held against the address. Over
            // its client's allowance is held against it: such an answer comes before the
            // replay check, so replays of one captured assertion would otherwise cost
            // signature checks for free.
            self.assertion_failures.refund(&counted, false);
        }
        verdict
    }

    async fn judge_assertion(
        &self,
        assertion: &str,
        endpoint_url: &str,
        ctx: &audit::Context,
    ) -> Result<ClientVerdict, ServiceError> {
        let refuse = |error: AssertionError, subject: &str| {
            let address = ctx.client_ip.map(|ip| ip.to_string());
            self.audit.record_repeatable(
                "client_auth_failed",
                address.as_deref().unwrap_or(subject),
                subject,
                ctx,
                json!({ "method": "private_key_jwt", "reason": error.to_string() }),
            );
            let reason = error.is_signed_by_client().then(|| error.to_string());
            ClientVerdict::Refused { reason }
        };
        let id = match assertion::claimed_client(assertion) {
            Ok(id) => id,
            Err(error) => return Ok(refuse(error, "unknown")),
        };
        let subject = id.to_string();
        let client = self.store.client(id).await?;
        let Some((client, keys)) = client.as_ref().and_then(|c| c.keys().map(|keys| (c, keys)))
        else {
            return Ok(refuse(AssertionError::NoSuchKey, &subject));
        };
        let token_endpoint = self.token_endpoint();
        let audiences = [
            token_endpoint.as_str(),
            self.config.jwt_issuer.as_str(),
            endpoint_url,
        ];
        let now = crate::domain::now();
        let checked = match assertion::verify(assertion, id, keys, &audiences, now) {
            Ok(checked) => checked,
            Err(error) => return Ok(refuse(error, &subject)),
        };
        // Remembered well past the last instant any replica accepts it (`exp` plus the
        // leeway, judged in whole seconds on that replica's clock, which may run behind
        // the store's): forgetting it at the edge would let a replay through there.
        let remember_until = checked.expires_at + ASSERTION_MEMORY_MARGIN;
        // Counted for as long as the store keeps it.
        let forgotten_at =
            remember_until + chrono::Duration::seconds(crate::domain::LEEWAY_SECS as i64);
        if let Err(wait) = self.assertion_history.reserve(id, forgotten_at, now) {
            self.audit.record_repeatable(
                "client_assertions_capped",
                &subject,
                &subject,
                ctx,
                json!({ "max_client_assertions": self.config.max_client_assertions }),
            );
            return Ok(ClientVerdict::TooManyAssertions(wait));
        }
        let used = self
            .store
            .use_assertion(id, &checked.jti, remember_until)
            .await;
        if matches!(used, Ok(false)) {
            // A replay: the store remembers only the first use. A failure keeps its count:
            // the use may have been recorded all the same (a PostgreSQL batch that answered
            // after its caller stopped waiting), and counting too much is the safe side.
            self.assertion_history.release(id, forgotten_at);
        }
        if !used? {
            let replayed = AssertionError::Claims(
                "this client assertion (its jti) was used before: sign a new one for each request"
                    .into(),
            );
            return Ok(refuse(replayed, &subject));
        }
        Ok(ClientVerdict::Authenticated(client.clone()))
    }

    /// The token endpoint's URL, as the metadata publishes it and assertions may name it.
    pub fn token_endpoint(&self) -> String {
        format!("{}/api/v1/auth/token", self.public_url)
    }
}
