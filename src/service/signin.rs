//! Browser sign-in: the authorization code flow with PKCE (RFC 6749 §4.1, RFC 7636,
//! OAuth 2.1), OpenID Connect on top of it, and the single-sign-on session of the hosted
//! pages. `api::signin` renders the pages and reads the forms; the decisions are here.
//!
//! Nothing about a sign-in in progress is stored: the validated authorization request
//! travels through the pages signed (`REQUEST_TYP`), and the browser's single-sign-on
//! session is a signed cookie (`SSO_TYP`) whose `jti` logout revokes. Only the code,
//! once issued, and the consent, once given, are stored.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{AppState, ServiceError};
use crate::audit;
use crate::auth::clients::{generate_secret, same_bytes};
use crate::auth::refresh::sha256_hex;
use crate::auth::Authentication;
use crate::domain::{
    with_query, AuthCode, Client, ClientId, ClientName, Consent, Credential, RedirectUri, Scope,
    Scopes, SignIn, User, UserId,
};
use crate::store::StoreError;

/// An authorization code lives this long (OAuth 2.1 §4.1.2: at most 10 minutes; a
/// minute is what the contract allows).
pub const CODE_TTL_SECS: i64 = 60;
/// A sign-in page may be filled in for this long before its request has to start over.
pub const REQUEST_TTL_SECS: i64 = 900;
const REQUEST_TYP: &str = "authz-request+jwt";
const SSO_TYP: &str = "sso+jwt";
const LOGOUT_TYP: &str = "logout-request+jwt";
/// A sign-in whose password was right, waiting for its second factor.
const PENDING_TYP: &str = "signin-pending+jwt";
/// How long the second step may take.
const PENDING_TTL_SECS: i64 = 300;
/// Longest `state`, `nonce` and `login_hint` kept: they travel in a signed value and back
/// in a redirect, so they are bounded like any identifier.
const MAX_PARAM: usize = 1024;

/// The authorization request's parameters as sent (query string).
#[derive(Debug, Default, Clone)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub request: Option<String>,
    pub request_uri: Option<String>,
    pub response_mode: Option<String>,
    pub acr_values: Option<String>,
}

/// A checked authorization request: what the signed request carries through the pages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthRequest {
    pub client_id: ClientId,
    /// As presented (it matched a registered one).
    pub redirect_uri: String,
    /// Asked for and allowed to the client.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub code_challenge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// `prompt=none`: never show a page; answer at once.
    #[serde(default)]
    pub prompt_none: bool,
    /// `prompt=login`: a sign-in newer than the request (`requested_at`).
    #[serde(default)]
    pub prompt_login: bool,
    /// `prompt=consent`: ask even if the person allowed it before.
    #[serde(default)]
    pub prompt_consent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    /// When the client sent the request (Unix milliseconds): a sign-in from then on is
    /// one made for this request, which `prompt=login` and `max_age` ask for.
    pub requested_at_ms: i64,
    /// `acr_values=mfa`: only a sign-in with a second factor will do.
    #[serde(default)]
    pub require_mfa: bool,
}

impl AuthRequest {
    pub fn scopes(&self) -> Scopes {
        Scopes::parse(&self.scope).unwrap_or_default()
    }
}

/// Why an authorization request was not carried out.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or its redirect URI cannot be trusted: shown on a page, never
    /// redirected (RFC 6749 §4.1.2.1: no open redirector).
    Page(String),
    /// Sent back to the client (RFC 6749 §4.1.2.1, with `iss` per RFC 9207): the URL.
    Redirect(String),
    /// The store could not be asked: nothing is known about the request yet.
    Unavailable(ServiceError),
}

/// The single-sign-on session of a browser, as its cookie carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SsoClaims {
    pub sub: UserId,
    /// The session's id: the ID tokens' `sid`.
    pub sid: Uuid,
    /// When the person entered their password (Unix seconds).
    pub auth_time: i64,
    pub amr: Vec<String>,
    /// A UUIDv7: logout revokes it; its time is when the session began.
    pub jti: Uuid,
}

/// A sign-in on the hosted page whose password was right, for an account with a second
/// factor: what the second step's form carries (signed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingSignIn {
    pub sub: UserId,
    /// The signed authorization request it belongs to, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    /// When the password was found right (Unix milliseconds): a password change or
    /// "log out everywhere" after it ends the pending sign-in.
    pub password_at_ms: i64,
}

/// A signed-in browser: its session and the person as the store has them now.
#[derive(Debug, Clone)]
pub struct Sso {
    pub claims: SsoClaims,
    pub expires_at: i64,
    pub user: Arc<User>,
}

impl Sso {
    /// When the person entered their password, to the millisecond (the `jti` is a UUIDv7
    /// made then; `auth_time` has whole seconds).
    pub fn began(&self) -> DateTime<Utc> {
        self.claims
            .jti
            .get_timestamp()
            .and_then(|ts| {
                let (secs, nanos) = ts.to_unix();
                DateTime::<Utc>::from_timestamp(secs as i64, nanos)
            })
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }
}

/// What the browser sees next in an authorization.
#[derive(Debug)]
pub enum Next {
    /// The sign-in page, carrying the signed request.
    SignIn { request: String },
    /// The consent page: `client` asks the signed-in person for `scope`.
    Consent {
        request: String,
        client: Box<Client>,
        scope: Scopes,
    },
    /// Back to the client: a code, or an error.
    Redirect(String),
}

/// An RP-initiated logout request, checked (OIDC RP-Initiated Logout 1.0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct LogoutRequest {
    /// Where to go afterwards: a registered post-logout redirect URI, with `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// The client that asked, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
}

/// The logout request's parameters as sent.
#[derive(Debug, Default, Clone)]
pub struct LogoutParams {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

fn bounded(value: Option<String>, name: &str) -> Result<Option<String>, String> {
    match value {
        Some(v) if v.len() > MAX_PARAM || v.chars().any(char::is_control) => Err(format!(
            "{name} must be at most {MAX_PARAM} bytes without control characters"
        )),
        Some(v) if v.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// PKCE: a code verifier is 43 to 128 unreserved characters (RFC 7636 §4.1), and so is
/// an S256 challenge (exactly 43).
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// S256 (RFC 7636 §4.2): base64url(SHA-256(verifier)).
pub fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The service's own client: Swagger UI at `/docs`, which signs people in with the
/// authorization code flow and PKCE. Built in, not stored: it exists on every replica and
/// always redirects to this deployment's PUBLIC_URL.
pub const DOCS_CLIENT_ID: ClientId = Uuid::from_u128(0x5177_d0c5_0000_4000_8000_0000_0000_0001);

impl AppState {
    /// The built-in client of `/docs` (see `DOCS_CLIENT_ID`).
    pub fn docs_client(&self) -> Client {
        // Only where a redirect may go: PUBLIC_URL on https or on a loopback address.
        // (Served over plain http elsewhere, /docs keeps the password flow only.)
        let redirect =
            RedirectUri::parse(&format!("{}/docs/oauth2-redirect.html", self.public_url)).ok();
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        Client {
            id: DOCS_CLIENT_ID,
            name: ClientName::parse("API documentation (Swagger UI)").expect("a valid name"),
            scope: Scopes::of(Scope::ALL),
            credential: Credential::Public,
            created_at: epoch,
            secret_rotated_at: epoch,
            sign_in: SignIn {
                redirect_uris: redirect.into_iter().collect(),
                post_logout_redirect_uris: Vec::new(),
                first_party: true,
            },
        }
    }

    /// A client that may sign people in: a stored one, or the built-in `/docs` client.
    pub async fn sign_in_client(&self, id: ClientId) -> Result<Option<Client>, StoreError> {
        if id == DOCS_CLIENT_ID {
            return Ok(Some(self.docs_client()));
        }
        self.store.client(id).await
    }

    /// The issuer, as the `iss` of authorization responses (RFC 9207).
    fn issuer(&self) -> &str {
        &self.config.jwt_issuer
    }

    /// Back to `redirect_uri` with an error (RFC 6749 §4.1.2.1), `state` and `iss`.
    pub fn error_redirect(
        &self,
        redirect_uri: &str,
        error: &str,
        description: &str,
        state: Option<&str>,
    ) -> String {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(state) = state {
            params.push(("state", state));
        }
        params.push(("iss", self.issuer()));
        with_query(redirect_uri, &params)
    }

    /// Checks an authorization request in RFC 6749 §4.1.2.1's order: the client and its
    /// redirect URI first (failures shown, never redirected), then everything else
    /// (failures redirected).
    pub async fn check_authorization(
        &self,
        params: AuthorizeParams,
    ) -> Result<(AuthRequest, Client), AuthorizeError> {
        let page = |msg: &str| AuthorizeError::Page(msg.to_owned());
        let client_id = params
            .client_id
            .as_deref()
            .ok_or_else(|| page("The request names no client (client_id is missing)."))?;
        let client = match Uuid::parse_str(client_id) {
            Ok(id) => self
                .sign_in_client(id)
                .await
                .map_err(|e| AuthorizeError::Unavailable(e.into()))?,
            Err(_) => None,
        }
        .ok_or_else(|| page("This application is not registered here (unknown client_id)."))?;
        if client.sign_in.redirect_uris.is_empty() {
            return Err(page(
                "This application is not registered for browser sign-in (it has no redirect URI).",
            ));
        }
        let redirect_uri = params
            .redirect_uri
            .clone()
            .ok_or_else(|| page("The request has no redirect_uri."))?;
        if client.redirect_uri(&redirect_uri).is_none() {
            return Err(page(
                "The redirect_uri is not one this application registered: the sign-in stops here.",
            ));
        }
        let state = bounded(params.state.clone(), "state").unwrap_or(None);
        let fail = |error: &str, description: &str| {
            AuthorizeError::Redirect(self.error_redirect(
                &redirect_uri,
                error,
                description,
                state.as_deref(),
            ))
        };
        if params.state.is_some() && state.is_none() && params.state.as_deref() != Some("") {
            return Err(fail("invalid_request", "state is too long"));
        }
        if params.request.is_some() {
            return Err(fail(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if params.request_uri.is_some() {
            return Err(fail(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        if params
            .response_mode
            .as_deref()
            .is_some_and(|m| m != "query")
        {
            return Err(fail("invalid_request", "response_mode must be query"));
        }
        match params.response_type.as_deref() {
            Some("code") => {}
            None => return Err(fail("invalid_request", "response_type missing")),
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ))
            }
        }
        // An S256 challenge is base64url of 32 bytes: 43 characters, exactly.
        let code_challenge = match params.code_challenge.as_deref() {
            Some(c) if pkce_shaped(c) && c.len() == 43 => c.to_owned(),
            Some(_) => return Err(fail("invalid_request", "code_challenge is malformed")),
            None => {
                return Err(fail(
                    "invalid_request",
                    "code_challenge required: PKCE with S256 (RFC 7636)",
                ))
            }
        };
        if params.code_challenge_method.as_deref() != Some("S256") {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not accepted)",
            ));
        }
        // Scopes this service does not know (`phone`, `address`…) are left out rather than
        // refused (RFC 6749 §3.3: the server may grant less), as relying parties often
        // ask for the standard set.
        let asked = match params.scope.as_deref() {
            None | Some("") => client.scope,
            Some(raw) => Scopes::of(raw.split(' ').filter_map(Scope::parse)),
        };
        let scope = asked.intersect(&client.scope);
        if scope.is_empty() {
            return Err(fail(
                "invalid_scope",
                &format!("this application may ask for: {}", client.scope),
            ));
        }
        let prompts: Vec<&str> = params
            .prompt
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(unknown) = prompts
            .iter()
            .find(|p| !["none", "login", "consent", "select_account"].contains(p))
        {
            return Err(fail(
                "invalid_request",
                &format!("unknown prompt {unknown}"),
            ));
        }
        let prompt_none = prompts.contains(&"none");
        if prompt_none && prompts.len() > 1 {
            return Err(fail(
                "invalid_request",
                "prompt=none cannot be combined with other values",
            ));
        }
        let max_age = match params.max_age.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(
                raw.parse::<u32>()
                    .map_err(|_| fail("invalid_request", "max_age must be a number of seconds"))?
                    as i64,
            ),
        };
        let nonce = bounded(params.nonce, "nonce").map_err(|e| fail("invalid_request", &e))?;
        // `acr_values` is a preference list (OIDC Core §3.1.2.1): `mfa` asks for a second
        // factor; values this service does not know are ignored.
        let require_mfa = params
            .acr_values
            .as_deref()
            .is_some_and(|v| v.split(' ').any(|a| a == "mfa"));
        let login_hint =
            bounded(params.login_hint, "login_hint").map_err(|e| fail("invalid_request", &e))?;
        let request = AuthRequest {
            client_id: client.id,
            redirect_uri,
            scope: scope.to_string(),
            state,
            code_challenge,
            nonce,
            prompt_none,
            // select_account: there is one account per browser; signing in again is how
            // to choose another.
            prompt_login: prompts.contains(&"login") || prompts.contains(&"select_account"),
            prompt_consent: prompts.contains(&"consent"),
            max_age,
            login_hint,
            requested_at_ms: crate::domain::now().timestamp_millis(),
            require_mfa,
        };
        Ok((request, client))
    }

    /// The request, signed to travel through the pages.
    pub fn sign_request(&self, request: &AuthRequest) -> Result<String, ServiceError> {
        Ok(self
            .tokens
            .sign_value(REQUEST_TYP, request, REQUEST_TTL_SECS)?)
    }

    /// A request signed by `sign_request`, and its client as it is now; `None` when the
    /// request is not ours, has expired, or its client or redirect URI is gone.
    pub async fn read_request(
        &self,
        signed: &str,
    ) -> Result<Option<(AuthRequest, Client)>, ServiceError> {
        let Ok(envelope) = self.tokens.verify_value::<AuthRequest>(REQUEST_TYP, signed) else {
            return Ok(None);
        };
        let request = envelope.value;
        let client = self.sign_in_client(request.client_id).await?;
        Ok(client
            .filter(|c| c.redirect_uri(&request.redirect_uri).is_some())
            .map(|c| (request, c)))
    }

    /// The browser's single-sign-on session, if its cookie is ours, unexpired, not logged
    /// out, and the person still exists and has not ended their sessions since.
    pub async fn sso(&self, cookie: Option<&str>) -> Result<Option<Sso>, ServiceError> {
        let Some(cookie) = cookie else {
            return Ok(None);
        };
        let Ok(envelope) = self.tokens.verify_value::<SsoClaims>(SSO_TYP, cookie) else {
            return Ok(None);
        };
        let claims = envelope.value;
        if self.store.is_jti_revoked(&claims.jti.to_string()).await? {
            return Ok(None);
        }
        let Some(user) = self.store.user(claims.sub).await? else {
            return Ok(None);
        };
        let sso = Sso {
            claims,
            expires_at: envelope.exp,
            user,
        };
        // The browser session that enrolled a first second factor on the account page is
        // the one kept alive, by its `sid`.
        if !sso
            .user
            .session_alive(Some(sso.claims.sid), sso.began(), &sso.claims.amr)
        {
            return Ok(None);
        }
        Ok(Some(sso))
    }

    /// The second step of a sign-in whose password was right, signed for its form.
    pub fn sign_pending(&self, pending: &PendingSignIn) -> Result<String, ServiceError> {
        Ok(self
            .tokens
            .sign_value(PENDING_TYP, pending, PENDING_TTL_SECS)?)
    }

    /// A pending sign-in signed by `sign_pending`, unexpired, and its person as they are
    /// now (`None`: expired, not ours, or the account is gone).
    pub async fn read_pending(
        &self,
        signed: &str,
    ) -> Result<Option<(PendingSignIn, Arc<User>)>, ServiceError> {
        let Ok(envelope) = self
            .tokens
            .verify_value::<PendingSignIn>(PENDING_TYP, signed)
        else {
            return Ok(None);
        };
        let pending = envelope.value;
        let signed_at =
            DateTime::<Utc>::from_timestamp_millis(pending.password_at_ms).unwrap_or_default();
        // A password change or "log out everywhere" since ends it too.
        Ok(self
            .store
            .user(pending.sub)
            .await?
            .filter(|u| signed_at >= u.tokens_valid_after)
            .map(|u| (pending, u)))
    }

    /// Starts a single-sign-on session for `user`, who has just signed in as `authn`
    /// says: the cookie's value and its lifetime in seconds.
    pub fn start_sso(
        &self,
        user: &User,
        authn: &Authentication,
        ctx: &audit::Context,
    ) -> Result<(String, i64), ServiceError> {
        let ttl = self.config.sso_session_duration as i64;
        let claims = SsoClaims {
            sub: user.id,
            sid: Uuid::new_v4(),
            auth_time: authn.auth_time.timestamp(),
            amr: authn.amr.clone(),
            jti: Uuid::now_v7(),
        };
        let fields = json!({ "sid": claims.sid });
        let cookie = self.tokens.sign_value(SSO_TYP, &claims, ttl)?;
        self.audit.record(
            "sso_session_started",
            Some(&user.id.to_string()),
            ctx,
            fields,
        );
        Ok((cookie, ttl))
    }

    /// Ends a single-sign-on session (its cookie is refused from now on); `everywhere`
    /// also ends every other session of the person (all tokens issued before now).
    pub async fn end_sso(
        &self,
        sso: &Sso,
        everywhere: bool,
        ctx: &audit::Context,
    ) -> Result<(), ServiceError> {
        let expires =
            DateTime::<Utc>::from_timestamp(sso.expires_at, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.store
            .revoke_jti(sso.claims.jti.to_string(), expires)
            .await?;
        if everywhere {
            self.store
                .update_user(
                    sso.user.id,
                    Box::new(|u| {
                        u.tokens_valid_after = crate::domain::now();
                        u.kept_session = None;
                    }),
                )
                .await?;
        }
        let fields = json!({ "sid": sso.claims.sid, "global": everywhere, "via": "signin" });
        self.audit
            .record("logout", Some(&sso.user.id.to_string()), ctx, fields);
        Ok(())
    }

    /// What comes next for `request` in a browser signed in as `sso` (if at all): the
    /// sign-in page, the consent page, or back to the client with a code or an error.
    pub async fn next_step(
        &self,
        request: AuthRequest,
        client: &Client,
        sso: Option<&Sso>,
        ctx: &audit::Context,
    ) -> Result<Next, ServiceError> {
        let now_ms = crate::domain::now().timestamp_millis();
        // To the millisecond (the session's UUIDv7): a sign-in made for this request
        // satisfies `prompt=login` and `max_age` (even 0), an earlier one does not, even
        // within the same second.
        let fresh = sso.filter(|s| {
            let began_ms = s.began().timestamp_millis();
            // Strictly later: one in the same millisecond as the request cannot be its own.
            let for_this_request = began_ms > request.requested_at_ms;
            let too_old = request
                .max_age
                .is_some_and(|max| now_ms - began_ms > max * 1000);
            // A second factor is needed when the client asks for one, and always once the
            // account has one: a session begun with the password alone (before the person
            // enrolled) signs in again, second factor included.
            let needs_mfa = request.require_mfa || s.user.mfa.enrolled();
            let lacks_mfa = needs_mfa && !s.claims.amr.iter().any(|m| m == "mfa");
            // max_age=0 is prompt=login (OIDC Core §3.1.2.1): to the millisecond, a sign-in
            // a moment ago is not "older than 0".
            let must_be_new = request.prompt_login || request.max_age == Some(0);
            // A session from before REQUIRE_VERIFIED_EMAIL was turned on signs in again
            // (and meets the confirmation page) rather than get a code no token follows.
            let unverified = self.config.require_verified_email && !s.user.email_verified;
            !lacks_mfa && !unverified && (for_this_request || (!must_be_new && !too_old))
        });
        let redirect_error = |error: &str, description: &str| {
            Next::Redirect(self.error_redirect(
                &request.redirect_uri,
                error,
                description,
                request.state.as_deref(),
            ))
        };
        // A second factor asked for, from an account that has none: nobody can sign in.
        if sso.is_some_and(|s| request.require_mfa && !s.user.mfa.enrolled()) {
            return Ok(redirect_error(
                "unmet_authentication_requirements",
                "a second factor is required (acr_values=mfa) and this account has none",
            ));
        }
        let Some(sso) = fresh else {
            if request.prompt_none {
                return Ok(redirect_error(
                    "login_required",
                    "the person is not signed in (prompt=none)",
                ));
            }
            return Ok(Next::SignIn {
                request: self.sign_request(&request)?,
            });
        };
        // What the person may grant: their role's scopes and who they are.
        let scope = request.scopes().intersect(&sso.user.role.grantable());
        if scope.is_empty() {
            return Ok(redirect_error(
                "access_denied",
                "this account may not be granted any of the scopes asked for",
            ));
        }
        if !client.sign_in.first_party {
            let allowed = self.store.consent(sso.user.id, client.id).await?;
            let covered = allowed.is_some_and(|c| scope.is_subset(&c.scope));
            if request.prompt_consent || !covered {
                if request.prompt_none {
                    return Ok(redirect_error(
                        "consent_required",
                        "the person has not allowed this application (prompt=none)",
                    ));
                }
                return Ok(Next::Consent {
                    request: self.sign_request(&request)?,
                    client: Box::new(client.clone()),
                    scope,
                });
            }
        }
        Ok(Next::Redirect(
            self.issue_code(&request, client, sso, scope, ctx).await?,
        ))
    }

    /// The person's answer on the consent page. Denied: back to the client with
    /// `access_denied`. Allowed: the question is judged again first, as for any step
    /// (`next_step`), so a form posted for a request that now needs a fresh sign-in
    /// (`prompt=login`, `max_age`), that no longer needs consent, or that has no scope
    /// left goes where that step leads instead; then remembered, and back with a code.
    pub async fn decide_consent(
        &self,
        request: AuthRequest,
        client: &Client,
        sso: Option<&Sso>,
        allow: bool,
        ctx: &audit::Context,
    ) -> Result<Next, ServiceError> {
        if !allow {
            let subject = sso.map(|s| s.user.id.to_string());
            let fields = json!({ "client_id": client.id });
            self.audit
                .record("consent_denied", subject.as_deref(), ctx, fields);
            return Ok(Next::Redirect(self.error_redirect(
                &request.redirect_uri,
                "access_denied",
                "the person did not allow this application",
                request.state.as_deref(),
            )));
        }
        let next = self.next_step(request.clone(), client, sso, ctx).await?;
        let (Next::Consent { scope, .. }, Some(sso)) = (&next, sso) else {
            return Ok(next);
        };
        let scope = *scope;
        // What was allowed before stays allowed: a consent only widens.
        let before = self.store.consent(sso.user.id, client.id).await?;
        let remembered = before.map_or(scope, |c| c.scope.union(&scope));
        let consent = Consent {
            client_id: client.id,
            scope: remembered,
            granted_at: crate::domain::now(),
        };
        self.store.put_consent(sso.user.id, consent).await?;
        self.audit.record(
            "consent_granted",
            Some(&sso.user.id.to_string()),
            ctx,
            json!({ "client_id": client.id, "scope": scope.to_string() }),
        );
        let url = self.issue_code(&request, client, sso, scope, ctx).await?;
        Ok(Next::Redirect(url))
    }

    /// A new code for `request`, stored, and the redirect that hands it to the client.
    async fn issue_code(
        &self,
        request: &AuthRequest,
        client: &Client,
        sso: &Sso,
        scope: Scopes,
        ctx: &audit::Context,
    ) -> Result<String, ServiceError> {
        let code = generate_secret();
        let now = crate::domain::now();
        let stored = AuthCode {
            hash: sha256_hex(code.as_bytes()),
            client_id: client.id,
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            scope,
            user_id: sso.user.id,
            nonce: request.nonce.clone(),
            // To the millisecond (the session's UUIDv7), as "log out everywhere" is judged.
            auth_time: sso.began(),
            sso_session: sso.claims.sid,
            amr: sso.claims.amr.clone(),
            expires_at: now + chrono::Duration::seconds(CODE_TTL_SECS),
        };
        self.store.put_code(stored).await?;
        self.audit.record(
            "authorization_code_issued",
            Some(&sso.user.id.to_string()),
            ctx,
            json!({ "client_id": client.id, "scope": scope.to_string() }),
        );
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = request.state.as_deref() {
            params.push(("state", state));
        }
        params.push(("iss", self.issuer()));
        Ok(with_query(&request.redirect_uri, &params))
    }

    /// The code grant's checks (RFC 6749 §4.1.3, RFC 7636 §4.6) for `client` (already
    /// authenticated, or public): the code is known, unexpired and unused, was issued to
    /// this client for this redirect URI, and `verifier` hashes to its challenge. A code
    /// presented again revokes the session its first exchange created. `Err(reason)`:
    /// `invalid_grant`.
    pub async fn redeem_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        ctx: &audit::Context,
    ) -> Result<Result<(AuthCode, Arc<User>), &'static str>, ServiceError> {
        let hash = sha256_hex(code.as_bytes());
        let Some((stored, used_by)) = self.store.code(&hash).await? else {
            return Ok(Err("invalid or expired authorization code"));
        };
        if let Some(first) = used_by {
            self.code_replayed(&stored, first, ctx).await?;
            return Ok(Err(
                "authorization code already used: the tokens issued with it are revoked",
            ));
        }
        if stored.expires_at <= crate::domain::now() {
            return Ok(Err("invalid or expired authorization code"));
        }
        if stored.client_id != client.id {
            return Ok(Err("the authorization code was issued to another client"));
        }
        if redirect_uri != Some(stored.redirect_uri.as_str()) {
            return Ok(Err(
                "redirect_uri must be the one the authorization request sent",
            ));
        }
        let Some(verifier) = verifier.filter(|v| pkce_shaped(v)) else {
            return Ok(Err("code_verifier missing or malformed (PKCE)"));
        };
        let challenge = s256(verifier);
        if !same_bytes(challenge.as_bytes(), stored.code_challenge.as_bytes()) {
            return Ok(Err("code_verifier does not match the code_challenge"));
        }
        let Some(user) = self.store.user(stored.user_id).await? else {
            return Ok(Err("the account no longer exists"));
        };
        if !user.session_alive(None, stored.auth_time, &stored.amr) {
            return Ok(Err("the person has signed out everywhere since"));
        }
        Ok(Ok((stored, user)))
    }

    /// Marks `code` used by `session` (created just before); `false` if another exchange
    /// used it first: that one's session and ours are revoked.
    pub async fn mark_code_used(
        &self,
        code: &AuthCode,
        session: Uuid,
        ctx: &audit::Context,
    ) -> Result<bool, ServiceError> {
        match self.store.redeem_code(&code.hash, session).await {
            Ok(None) => Ok(true),
            Ok(Some(first)) => {
                self.store.revoke_session(session).await?;
                self.code_replayed(code, first, ctx).await?;
                Ok(false)
            }
            Err(StoreError::NotFound) => {
                self.store.revoke_session(session).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn code_replayed(
        &self,
        code: &AuthCode,
        first: Uuid,
        ctx: &audit::Context,
    ) -> Result<(), ServiceError> {
        self.store.revoke_session(first).await?;
        tracing::warn!(user_id = %code.user_id, client_id = %code.client_id, session_id = %first, "authorization code replayed: its tokens revoked");
        self.audit.record(
            "authorization_code_reuse",
            Some(&code.user_id.to_string()),
            ctx,
            json!({ "client_id": code.client_id, "session_id": first }),
        );
        Ok(())
    }

    /// Checks an RP-initiated logout request: the client (named or the `id_token_hint`'s
    /// audience) and its registered post-logout redirect URI. `Ok(Err)`: shown on a page.
    pub async fn check_logout(
        &self,
        params: LogoutParams,
    ) -> Result<Result<LogoutRequest, String>, ServiceError> {
        let client = match self.logout_client(&params).await? {
            Ok(client) => client,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(logout_redirect(client, params))
    }

    /// The client a logout request names (`client_id`) or its `id_token_hint` is for.
    async fn logout_client(
        &self,
        params: &LogoutParams,
    ) -> Result<Result<Option<Client>, String>, ServiceError> {
        let hinted = match params.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
            Some(hint) => match self.tokens.read_id_token_hint(hint) {
                Ok(claims) => Some(claims),
                Err(_) => {
                    return Ok(Err(
                        "The id_token_hint is not an ID token of this service.".into()
                    ))
                }
            },
            None => None,
        };
        let named = match params.client_id.as_deref().filter(|c| !c.is_empty()) {
            Some(id) => match Uuid::parse_str(id) {
                Ok(id) => Some(id),
                Err(_) => return Ok(Err("Unknown client_id.".into())),
            },
            None => None,
        };
        let hinted_client = hinted.as_ref().and_then(|h| Uuid::parse_str(&h.aud).ok());
        if let (Some(named), Some(hinted)) = (named, hinted_client) {
            if named != hinted {
                return Ok(Err(
                    "client_id and the id_token_hint name different clients.".into(),
                ));
            }
        }
        match named.or(hinted_client) {
            Some(id) => match self.sign_in_client(id).await? {
                Some(client) => Ok(Ok(Some(client))),
                None => Ok(Err("Unknown client_id.".into())),
            },
            None => Ok(Ok(None)),
        }
    }

    pub fn sign_logout(&self, request: &LogoutRequest) -> Result<String, ServiceError> {
        Ok(self
            .tokens
            .sign_value(LOGOUT_TYP, request, REQUEST_TTL_SECS)?)
    }

    pub fn read_logout(&self, signed: &str) -> Option<LogoutRequest> {
        self.tokens
            .verify_value::<LogoutRequest>(LOGOUT_TYP, signed)
            .ok()
            .map(|e| e.value)
    }
}

/// Where a checked logout request for `client` goes afterwards: its registered
/// post-logout redirect URI, with `state`. `Err`: shown on a page.
fn logout_redirect(client: Option<Client>, params: LogoutParams) -> Result<LogoutRequest, String> {
    let redirect = match params
        .post_logout_redirect_uri
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        None => None,
        Some(uri) => {
            let client = client.as_ref().ok_or_else(|| {
                "post_logout_redirect_uri needs client_id or id_token_hint to say whose it is."
                    .to_owned()
            })?;
            let registered = client
                .sign_in
                .post_logout_redirect_uris
                .iter()
                .any(|r| r.matches(uri));
            if !registered {
                return Err(
                    "The post_logout_redirect_uri is not registered for this application.".into(),
                );
            }
            let state = bounded(params.state, "state")?;
            Some(match state.as_deref() {
                Some(state) => with_query(uri, &[("state", state)]),
                None => uri.to_owned(),
            })
        }
    };
    Ok(LogoutRequest {
        redirect,
        client_name: client.map(|c| c.name.as_str().to_owned()),
    })
}

/// The OpenID Connect claims about `user` that `scope` releases (OIDC Core §5.4).
pub fn released_claims(user: &User, scope: Scopes) -> serde_json::Map<String, serde_json::Value> {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), json!(user.id));
    if scope.contains(Scope::Email) {
        claims.insert("email".into(), json!(user.email.as_str()));
        claims.insert("email_verified".into(), json!(user.email_verified));
    }
    if scope.contains(Scope::Profile) {
        let given = user.first_name.as_ref().map(|n| n.as_str());
        let family = user.last_name.as_ref().map(|n| n.as_str());
        let name: Vec<&str> = given.into_iter().chain(family).collect();
        if !name.is_empty() {
            claims.insert("name".into(), json!(name.join(" ")));
        }
        if let Some(given) = given {
            claims.insert("given_name".into(), json!(given));
        }
        if let Some(family) = family {
            claims.insert("family_name".into(), json!(family));
        }
        claims.insert("updated_at".into(), json!(user.updated_at.timestamp()));
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_scope_releases_whether_the_address_is_verified() {
        let email = crate::domain::Email::parse("a@example.com").unwrap();
        let mut user = User::new(email, "h".into(), crate::domain::Role::User, None, None);
        let claims = released_claims(&user, Scopes::parse("openid email").unwrap());
        assert_eq!(claims["email_verified"], json!(false));
        user.email_verified = true;
        let claims = released_claims(&user, Scopes::parse("openid email").unwrap());
        assert_eq!(claims["email_verified"], json!(true));
        let claims = released_claims(&user, Scopes::parse("openid").unwrap());
        assert!(!claims.contains_key("email_verified"));
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(pkce_shaped("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!pkce_shaped("short"));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }
}
