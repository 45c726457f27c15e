"""Schemathesis hooks for simple-api: aim every operation at what its caller may touch, and
keep the fuzzing admin usable for the whole run.

SCHEMATHESIS_HOOKS=path/to/hooks.py, with ST_BASE_URL, ST_ADMIN_EMAIL, ST_ADMIN_PASSWORD,
ST_CLIENT (`client_id:client_secret` of a registered client), ST_AS (`admin`, the default, or
`client`: the run that authenticates as the client with `-a id:secret`) and optionally
ST_STATUSES (statuses.py: answers per operation, written there at exit) and ST_TRACE
(operation ids, comma-separated: each of their calls printed to stderr, for debugging).

Who calls (ST_AS=admin):
- Every request carries a bearer token of the admin, fetched with the password grant and
  fetched again after a 401 (schemathesis re-sends that request once), so a
  DELETE /auth_session/logout or POST /auth/revoke of the current token costs one request.
- PUT /users/{id}/password (only for yourself) is sent as a throwaway user whose password
  the hooks track: after a 200 the new password is the one, and it must log in at once (a
  change the service acknowledged has to work; the hook fails the test case otherwise). The
  admin's password never changes, so the admin is never locked out.

What it is aimed at: in the example, coverage and fuzzing phases the calls of an operation
take turns: most carry a target the caller may touch, the others keep what schemathesis
generated (unknown ids, wrong passwords, bogus clients), so refusals stay fuzzed too. The
stateful phase follows the spec's links, to the users it created itself; only the guards
apply there.
- /users/{id}: GET and PUT at the admin, `me`, the throwaway user or a disposable user;
  DELETE at a disposable user (made by the hooks for it). Guards: DELETE never reaches the
  admin, `me` or the throwaway user (a disposable user instead); PUT of the admin or `me`
  with "role": "user" keeps "admin" (a demoted admin would get 403s for the rest of the run).
- GET /users with `after`: a cursor the service wrote (from a `Link` header), without
  `offset`, on the aimed turns; the others keep the generated (mostly invalid) cursor.
- /users/{id}/password: the throwaway user's id or `me`; every other of those with the right
  current_password (a 200), the others with the generated one (a 400: wrong password).
- POST /auth/token: the password grant with the admin's credentials, the refresh grant with
  a live refresh token of the admin (the rotated one is kept), client_credentials with the
  client's form credentials (as the client: its Basic credentials alone).
- POST /auth_session/login with the admin's credentials.
- POST /auth/introspect of the throwaway user's live access token, authenticated with the
  client's form credentials (as the client: its Basic credentials alone).
- POST /auth/revoke of a live token: as the admin, an access or refresh token of a spare
  login; as the client, an access token issued to it.
- GET/POST /auth/userinfo with an admin token carrying `openid`, from the authorization
  code flow (the built-in /docs client, PKCE) driven through the hosted sign-in page.
- GET /users/{id}/consents: `me`.
- /users/me/mfa…: as a throwaway user whose second factors the hooks track (its TOTP
  secret from the enrolment answers, its recovery codes, which its own logins use once it
  is enrolled). Before an aimed call the hooks bring that user to the state the operation
  needs (not enrolled for an enrolment, a pending enrolment and the right code for a
  confirmation, enrolled and the password for a removal or new recovery codes); the others
  keep what schemathesis generated.
- /users/me/mfa/passkeys…: as another throwaway user, whose passkeys a software
  authenticator here makes (P-256, attestation "none", origin ST_PUBLIC_URL): an aimed
  registration answers a ceremony the hooks began; an aimed removal targets one of its
  passkeys with the password or (every other time) a passkey's answer to a challenge; a
  challenge is asked once the account has a passkey. Its logins then take a recovery code.
- POST /auth/password-reset: a throwaway account's address; …/confirm: a code the hooks
  asked for and read from the server's outbox (ST_OUTBOX), with the generated password.
- /users/me/verification and /users/me/email: as another throwaway account, made unverified
  first (by the admin) for a resend; a change of address with its password and a fresh
  address. POST /auth/verify-email: that account's address and a code the hooks asked for
  (a resend, or every other time a change of address, then tracked) and read from the
  outbox.
- Guard: PUT/DELETE /users/{id} and PUT /users/{id}/password never reach the second-factor
  and reset accounts above (the stateful phase finds them through GET /users' links): a disposable
  user instead, so their logins keep working.
- DELETE /users/{id}/consents/{client_id}: `me` and the relying party ST_RP, whose consent
  the hooks give first (on the consent page) so that there is one to withdraw.
"""

import base64
import hashlib
import hmac
import html
import itertools
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections import defaultdict

import json

import requests
import schemathesis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statuses  # noqa: E402  (counts answers per operation)

BASE = os.environ.get("ST_BASE_URL", "http://127.0.0.1:5099").rstrip("/")
EMAIL = os.environ["ST_ADMIN_EMAIL"]
PASSWORD = os.environ["ST_ADMIN_PASSWORD"]
CLIENT_ID, _, CLIENT_SECRET = os.environ["ST_CLIENT"].partition(":")
AS_CLIENT = os.environ.get("ST_AS", "admin") == "client"
RP_ID = os.environ.get("ST_RP", "")
# PUBLIC_URL of the fuzz server: a host name (WebAuthn allows no IP), the passkeys' origin.
ORIGIN = os.environ.get("ST_PUBLIC_URL", BASE).rstrip("/")
DOCS_CLIENT_ID = "5177d0c5-0000-4000-8000-000000000001"
TOKEN_URL = f"{BASE}/api/v1/auth/token"
LOCK = threading.RLock()


def token_request(data: dict, auth=None) -> dict:
    resp = requests.post(TOKEN_URL, data=data, auth=auth, timeout=10)
    if resp.status_code != 200:
        raise AssertionError(f"token request ({data.get('grant_type')}) failed: {resp.status_code} {resp.text}")
    return resp.json()


def login(email: str, password: str) -> dict:
    return token_request({"grant_type": "password", "username": email, "password": password})


def admin_token() -> str:
    return login(EMAIL, PASSWORD)["access_token"]


def client_token() -> str:
    return token_request({"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET))["access_token"]


def browser_authorize(client_id: str, redirect_uri: str, scope: str) -> str | None:
    """The admin signs in on the hosted page for `client_id` (allowing it if asked) and the
    code comes back; returns (code, verifier) joined by a space, or None if no code came."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    browser = requests.Session()
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": scope, "state": "fuzz", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    url = f"{BASE}/api/v1/auth/authorize"
    resp = browser.get(url, params=params, allow_redirects=False, timeout=10)
    for _ in range(4):
        location = resp.headers.get("location", "")
        if location.startswith(redirect_uri):
            query = dict(p.split("=", 1) for p in requests.utils.urlparse(location).query.split("&"))
            return f"{query['code']} {verifier}" if "code" in query else None
        page = browser.get(f"{BASE}{location}", timeout=10)
        fields = {n: html.unescape(v) for n, v in re.findall(r'name="(request|csrf)" value="([^"]*)"', page.text)}
        action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
        if action == "/signin":
            fields.update(email=EMAIL, password=PASSWORD)
        else:
            fields.update(decision="allow")
        resp = browser.post(f"{BASE}{action}", data=fields, allow_redirects=False, timeout=10)
    raise AssertionError(f"the sign-in for {client_id} did not come back: {resp.status_code} {resp.text[:200]}")


def openid_token() -> str:
    """An access token of the admin with `openid`, through the /docs client's code flow."""
    # The /docs client's redirect URI is on PUBLIC_URL.
    redirect_uri = f"{ORIGIN}/docs/oauth2-redirect.html"
    code, verifier = browser_authorize(DOCS_CLIENT_ID, redirect_uri, "openid profile email").split(" ")
    return token_request({
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "code_verifier": verifier, "client_id": DOCS_CLIENT_ID,
    })["access_token"]


_openid: list[str] = []


def cached_openid_token(fresh: bool = False) -> str:
    with LOCK:
        if fresh or not _openid:
            _openid[:] = [openid_token()]
        return _openid[0]


def give_consent() -> None:
    """The admin allows the relying party ST_RP (so there is a consent to withdraw)."""
    browser_authorize(RP_ID, "http://127.0.0.1:9/callback", "openid profile")


class Admin:
    """The hooks' own admin session (a fresh one after a logout or revocation ended it)."""

    def __init__(self) -> None:
        self._token: str | None = None

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        for _ in range(2):
            with LOCK:
                if self._token is None:
                    self._token = admin_token()
                token = self._token
            resp = requests.request(
                method, f"{BASE}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs
            )
            if resp.status_code != 401:
                return resp
            with LOCK:
                self._token = None
        return resp

    def create_user(self, email: str, password: str) -> str:
        resp = self.call("POST", "/api/v1/users", json={"email": email, "password": password})
        if resp.status_code != 201:
            raise AssertionError(f"creating {email!r} failed: {resp.status_code} {resp.text}")
        return resp.json()["id"]


ADMIN = Admin()
ADMIN_ID = ADMIN.call("GET", "/api/v1/users/me").json()["id"]


class ThrowawayUser:
    """The account whose password the fuzzer changes; its credentials are tracked here."""

    def __init__(self) -> None:
        self.email = f"fuzz-password-{uuid.uuid4().hex[:12]}@example.com"
        self.password = "throwaway-password-0"
        self.id = ADMIN.create_user(self.email, self.password)
        self._token: str | None = None

    def token(self) -> str:
        with LOCK:
            if self._token is None:
                self._token = login(self.email, self.password)["access_token"]
            return self._token

    def forget_token(self) -> None:
        with LOCK:
            self._token = None

    def password_changed(self, new_password: str) -> None:
        """The service answered 200: the new password is the one, and must log in now."""
        with LOCK:
            self.password = new_password
            self._token = login(self.email, new_password)["access_token"]


PW = ThrowawayUser()


def totp_code(secret: bytes, step: int) -> str:
    """RFC 6238 (HMAC-SHA1, 6 digits) for time step `step`."""
    mac = hmac.new(secret, step.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = (int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 1_000_000
    return f"{value:06d}"


class TrackedUser:
    """An account of the hooks' own whose credentials they track: `token()` logs it in (as
    its second factors require), `call` sends a request with that token (again once after
    a 401)."""

    _token: str | None = None

    def token(self) -> str:
        raise NotImplementedError

    def forget_token(self) -> None:
        with LOCK:
            self._token = None

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        resp = requests.request(method, f"{BASE}{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=10, **kwargs)
        if resp.status_code == 401:
            self.forget_token()
            resp = requests.request(method, f"{BASE}{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=10, **kwargs)
        return resp


class MfaUser(TrackedUser):
    """The account whose second factors the fuzzer enrols, confirms, renews and removes."""

    def __init__(self) -> None:
        self.email = f"fuzz-mfa-{uuid.uuid4().hex[:12]}@example.com"
        self.password = "mfa-password-0"
        self.id = ADMIN.create_user(self.email, self.password)
        self.secret: bytes | None = None
        self.confirmed = False
        self.recovery: list[str] = []
        self.last_step = 0
        self._token: str | None = None

    def token(self) -> str:
        with LOCK:
            if self._token is None:
                data = {"grant_type": "password", "username": self.email, "password": self.password}
                if self.confirmed:
                    if self.recovery:
                        data["recovery_code"] = self.recovery.pop()
                    else:
                        data["otp"] = self.next_code()
                self._token = token_request(data)["access_token"]
            return self._token

    def next_code(self) -> str:
        """A code for a step later than the last one used (a code counts once)."""
        now = int(time.time()) // 30
        step = max(now, self.last_step + 1)
        if step > now + 1:
            # Both codes of this window are used: the next window's first is the next one.
            time.sleep(30 - time.time() % 30 + 0.1)
            step = max(int(time.time()) // 30, self.last_step + 1)
        self.last_step = step
        return totp_code(self.secret, step)

    # What the service answered, kept (called under LOCK).
    def enrolment_begun(self, body: dict) -> None:
        self.secret = base64.b32decode(body["secret"] + "=" * (-len(body["secret"]) % 8))
        self.confirmed = False
        self.last_step = 0

    def confirmed_with(self, body: dict) -> None:
        self.confirmed = True
        if body.get("recovery_codes"):
            self.recovery = list(body["recovery_codes"])

    def removed(self) -> None:
        self.secret, self.confirmed, self.recovery, self.last_step = None, False, [], 0

    # Bringing the account to the state an aimed call needs.
    def ensure_not_enrolled(self) -> None:
        if self.confirmed:
            resp = self.call("DELETE", "/api/v1/users/me/mfa/totp", json={"current_password": self.password})
            if resp.status_code == 200:
                self.removed()

    def ensure_pending(self) -> None:
        self.ensure_not_enrolled()
        if self.secret is None:
            resp = self.call("POST", "/api/v1/users/me/mfa/totp", json={"current_password": self.password})
            if resp.status_code == 200:
                self.enrolment_begun(resp.json())

    def ensure_enrolled(self) -> None:
        if self.confirmed:
            return
        self.ensure_pending()
        if self.secret is not None:
            resp = self.call("POST", "/api/v1/users/me/mfa/totp/confirm", json={"code": self.next_code()})
            if resp.status_code == 200:
                self.confirmed_with(resp.json())


MFA = MfaUser()
MFA_OPS = ("getMfa", "enrolTotp", "confirmTotp", "removeTotp", "renewRecoveryCodes")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cbor_head(major: int, length: int) -> bytes:
    """An RFC 8949 head (lengths below 65536 are all a ceremony needs)."""
    if length < 24:
        return bytes([major << 5 | length])
    if length < 256:
        return bytes([major << 5 | 24, length])
    return bytes([major << 5 | 25]) + length.to_bytes(2, "big")


def cbor_text(text: str) -> bytes:
    return cbor_head(3, len(text)) + text.encode()


def cbor_bytes(data: bytes) -> bytes:
    return cbor_head(2, len(data)) + data


class SoftPasskey:
    """A software authenticator's passkey (P-256, attestation "none", user verified), built
    from WebAuthn's data formats, for the registration options `options` at ORIGIN."""

    def __init__(self, options: dict) -> None:
        pk = options["publicKey"]
        self.rp_id = pk["rp"]["id"]
        self.user_handle = unb64url(pk["user"]["id"])
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = secrets.token_bytes(32)
        numbers = self.key.public_key().public_numbers()
        cose = (
            b"\xa5\x01\x02\x03\x26\x20\x01\x21"
            + cbor_bytes(numbers.x.to_bytes(32, "big"))
            + b"\x22"
            + cbor_bytes(numbers.y.to_bytes(32, "big"))
        )
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([0x45])  # UP | UV | AT
            + (0).to_bytes(4, "big")
            + bytes(16)
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + cose
        )
        attestation = (
            b"\xa3" + cbor_text("fmt") + cbor_text("none") + cbor_text("attStmt") + b"\xa0"
            + cbor_text("authData") + cbor_bytes(auth_data)
        )
        client_data = self.client_data("webauthn.create", pk["challenge"])
        cid = b64url(self.credential_id)
        self.registration = {
            "id": cid,
            "rawId": cid,
            "type": "public-key",
            "response": {"attestationObject": b64url(attestation), "clientDataJSON": b64url(client_data)},
            "extensions": {},
        }

    def client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": ORIGIN, "crossOrigin": False}).encode()

    def answer(self, options: dict) -> dict:
        """An assertion for authentication options (counter 0, as a synced passkey's)."""
        client_data = self.client_data("webauthn.get", options["publicKey"]["challenge"])
        auth_data = hashlib.sha256(self.rp_id.encode()).digest() + bytes([0x05]) + (0).to_bytes(4, "big")
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        cid = b64url(self.credential_id)
        return {
            "id": cid,
            "rawId": cid,
            "type": "public-key",
            "response": {
                "authenticatorData": b64url(auth_data),
                "clientDataJSON": b64url(client_data),
                "signature": b64url(signature),
                "userHandle": b64url(self.user_handle),
            },
            "extensions": {},
        }


class PasskeyUser(TrackedUser):
    """The account whose passkeys the fuzzer registers, challenges and removes (its own, so
    that the TOTP account's state stays the MfaUser's). Once it has a passkey its logins
    take a recovery code; the hooks renew those before they run out."""

    def __init__(self) -> None:
        self.email = f"fuzz-passkey-{uuid.uuid4().hex[:12]}@example.com"
        self.password = "passkey-password-0"
        self.id = ADMIN.create_user(self.email, self.password)
        self.keys: dict[str, SoftPasskey] = {}
        self.recovery: list[str] = []
        self.pending: dict[str, SoftPasskey] = {}
        self._token: str | None = None

    def token(self) -> str:
        with LOCK:
            if self._token is None:
                data = {"grant_type": "password", "username": self.email, "password": self.password}
                if self.keys:
                    data["recovery_code"] = self.recovery.pop()
                self._token = token_request(data)["access_token"]
                if self.keys and len(self.recovery) < 3:
                    resp = self.call("POST", "/api/v1/users/me/mfa/recovery-codes", json={"current_password": self.password})
                    if resp.status_code == 200:
                        self.recovery = list(resp.json()["recovery_codes"])
            return self._token

    def begin(self) -> dict | None:
        """A registration begun: its ceremony and options, and the key that will answer."""
        resp = self.call("POST", PASSKEYS, json={"current_password": self.password, "name": "fuzz"})
        if resp.status_code != 200:
            return None
        begun = resp.json()
        self.pending[begun["ceremony"]] = SoftPasskey(begun["options"])
        return begun

    def added(self, ceremony: str, payload: dict) -> None:
        key = self.pending.pop(ceremony, None)
        if key is not None:
            self.keys[payload["passkey"]["id"]] = key
        if payload.get("recovery_codes"):
            self.recovery = list(payload["recovery_codes"])

    def removed(self, passkey_id: str) -> None:
        self.keys.pop(passkey_id, None)
        if not self.keys:
            self.recovery = []

    def register(self) -> None:
        begun = self.begin()
        if begun is not None:
            credential = self.pending[begun["ceremony"]].registration
            resp = self.call("POST", f"{PASSKEYS}/confirm", json={"ceremony": begun["ceremony"], "credential": credential})
            if resp.status_code == 201:
                self.added(begun["ceremony"], resp.json())

    def ensure_one(self) -> None:
        if not self.keys:
            self.register()

    def ensure_room(self) -> None:
        """Fewer than 10 passkeys (the most an account may have), so one more can be added."""
        while len(self.keys) >= 9:
            passkey_id = next(iter(self.keys))
            resp = self.call("DELETE", f"{PASSKEYS}/{passkey_id}", json={"current_password": self.password})
            if resp.status_code != 200:
                return
            self.removed(passkey_id)

    def proof(self) -> dict:
        """A passkey's answer to a challenge for the account (ensure_one first)."""
        resp = self.call("POST", f"{PASSKEYS}/challenge")
        challenge = resp.json()
        key = next(iter(self.keys.values()))
        return {"passkey_ceremony": challenge["ceremony"], "passkey_credential": key.answer(challenge["options"])}


class ResetUser:
    """The account whose password the fuzzer resets: the hooks ask for a code, read it
    from the server's outbox (ST_OUTBOX: no SMTP_URL, so each message is a file there) and
    keep the password the reset set."""

    def __init__(self) -> None:
        self.email = f"fuzz-reset-{uuid.uuid4().hex[:12]}@example.com"
        self.password = "reset-password-0"
        self.id = ADMIN.create_user(self.email, self.password)

    def code(self) -> str | None:
        """A fresh code: asks for one and reads the newest message to this account."""
        ask = lambda: requests.post(f"{BASE}/api/v1/auth/password-reset", json={"email": self.email}, timeout=10)  # noqa: E731
        return outbox_code(self.email, "Reset your password", lambda: ask().status_code == 202)


def outbox_code(to: str, subject: str, ask) -> str | None:
    """The code of the message to `to` with `subject` that `ask()` (true once the service
    accepted) caused, read from the server's outbox."""
    outbox = os.environ.get("ST_OUTBOX", "")
    listing = lambda: set(os.listdir(outbox)) if os.path.isdir(outbox) else set()  # noqa: E731
    seen = listing()
    before = time.time()
    if not ask():
        return None
    # Only a message that arrived after this request carries the code that counts (a new
    # one replaces the last).
    while time.time() - before < 10:
        for name in sorted(listing() - seen, reverse=True):
            if not name.endswith(".eml"):
                continue
            text = open(os.path.join(outbox, name), encoding="utf-8", errors="replace").read()
            # (Read as text: the message's CRLFs are newlines here.)
            if f"To: {to}\n" not in text or f"Subject: {subject}\n" not in text:
                continue
            for line in text.splitlines():
                if re.fullmatch(r"[A-Z2-7]{26}", line.strip()):
                    return line.strip()
        time.sleep(0.05)
    return None


class MailUser(TrackedUser):
    """The account whose address the fuzzer verifies and changes: codes are asked for by
    the hooks and read from the outbox; its address is tracked when a change is confirmed."""

    def __init__(self) -> None:
        self.email = f"fuzz-mail-{uuid.uuid4().hex[:12]}@example.com"
        self.password = "mail-password-0"
        self.id = ADMIN.create_user(self.email, self.password)

    def token(self) -> str:
        with LOCK:
            if self._token is None:
                self._token = login(self.email, self.password)["access_token"]
            return self._token

    def ensure_unverified(self) -> None:
        """An admin withdraws the vouching: there is something to verify (or resend) again."""
        ADMIN.call("PUT", f"/api/v1/users/{self.id}", json={"email_verified": False})

    def verification_code(self) -> str | None:
        self.ensure_unverified()
        resend = lambda: self.call("POST", "/api/v1/users/me/verification").status_code == 202  # noqa: E731
        return outbox_code(self.email, "Confirm your email address", resend)

    def change_code(self) -> tuple[str, str | None]:
        new = f"fuzz-moved-{uuid.uuid4().hex[:12]}@example.com"
        body = {"email": new, "current_password": self.password}
        ask = lambda: self.call("POST", "/api/v1/users/me/email", json=body).status_code == 202  # noqa: E731
        return new, outbox_code(new, "Confirm your new email address", ask)


PASSKEYS = "/api/v1/users/me/mfa/passkeys"
PASSKEY = PasskeyUser()
RESET = ResetUser()
PASSKEY_OPS = ("addPasskey", "confirmPasskey", "removePasskey", "passkeyChallenge")
MAILER = MailUser()
MAILER_OPS = ("resendVerification", "changeEmail")


class Disposable:
    """Users the fuzzer may delete, made by the hooks (never one the fuzzer is working with)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def peek(self) -> str:
        with LOCK:
            if not self.ids:
                self.ids.append(ADMIN.create_user(f"fuzz-disposable-{uuid.uuid4().hex[:12]}@example.com", "disposable-1"))
            return self.ids[-1]

    def take(self) -> str:
        with LOCK:
            user_id = self.peek()
            self.ids.remove(user_id)
            return user_id


DISPOSABLE = Disposable()


class RefreshToken:
    """A live refresh token of the admin for the refresh grant (single use: the new one is kept)."""

    def __init__(self) -> None:
        self.current: str | None = None

    def get(self) -> str:
        with LOCK:
            if self.current is None:
                self.current = login(EMAIL, PASSWORD)["refresh_token"]
            return self.current

    def answered(self, sent, status: int, payload) -> None:
        with LOCK:
            if sent != self.current:
                return
            if status == 200 and isinstance(payload, dict) and isinstance(payload.get("refresh_token"), str):
                self.current = payload["refresh_token"]
            else:
                # Refused (a global logout ended its family, say): a new family next time.
                self.current = None


REFRESH = RefreshToken()
_turns: dict[tuple[str, str], itertools.count] = defaultdict(itertools.count)


_cursor: list[str] = []


def real_cursor() -> str:
    """A cursor the service wrote: the `after` of the `Link` of a one-user page."""
    with LOCK:
        if not _cursor:
            resp = requests.get(
                f"{BASE}/api/v1/users",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {admin_token() if not AS_CLIENT else client_token()}"},
                timeout=10,
            )
            link = resp.links.get("next", {}).get("url", "")
            after = requests.utils.urlparse(link).query
            cursor = dict(p.split("=", 1) for p in after.split("&") if "=" in p).get("after")
            if resp.status_code != 200 or not cursor:
                raise AssertionError(f"no cursor from GET /users?limit=1: {resp.status_code} {resp.headers}")
            _cursor.append(cursor)
        return _cursor[0]


def phase(case) -> str:
    return case.meta.phase.name.value if case.meta is not None else "explicit"


def turn(case) -> int | None:
    """The how-manieth call of this operation in this phase aimed at a target, or None when
    this call keeps what schemathesis generated: one call in four, and every stateful call."""
    if phase(case) == "stateful":
        return None
    with LOCK:
        n = next(_turns[(statuses.operation_id(case), phase(case))])
    return None if n % 4 == 3 else n - n // 4


if not AS_CLIENT:

    @schemathesis.auth(refresh_interval=300)
    class Tokens:
        def get(self, case, context):
            return admin_token()

        def set(self, case, data, context):
            case.headers = case.headers or {}
            if statuses.operation_id(case) == "changePassword":
                data = PW.token()
            elif statuses.operation_id(case) in ("getUserInfo", "postUserInfo"):
                data = cached_openid_token()
            elif statuses.operation_id(case) in MFA_OPS:
                data = MFA.token()
            elif statuses.operation_id(case) in PASSKEY_OPS:
                data = PASSKEY.token()
            elif statuses.operation_id(case) in MAILER_OPS:
                data = MAILER.token()
            case.headers["Authorization"] = f"Bearer {data}"


def client_auth(case, body: dict) -> None:
    """Authenticate as the client: its Basic credentials alone, or (as the admin) its form ones.
    A generated client assertion goes (one authentication method at a time)."""
    body.pop("client_assertion", None)
    body.pop("client_assertion_type", None)
    if AS_CLIENT:
        body.pop("client_id", None)
        body.pop("client_secret", None)
    else:
        body["client_id"], body["client_secret"] = CLIENT_ID, CLIENT_SECRET
        if case.headers:
            case.headers.pop("Authorization", None)


@schemathesis.hook
def before_call(context, case, kwargs):
    op = statuses.operation_id(case)
    params = case.path_parameters if case.path_parameters is not None else {}
    body = case.body if isinstance(case.body, dict) else None
    # The accounts whose credentials the hooks track are not the fuzzer's to change (the
    # stateful phase reaches them through GET /users' links): a disposable user instead.
    if op in ("updateUser", "deleteUser", "changePassword") and params.get("id") in (MFA.id, PASSKEY.id, RESET.id, MAILER.id):
        params["id"] = DISPOSABLE.peek()
    if op in ("getUser", "updateUser"):
        k = turn(case)
        if k is not None:
            params["id"] = (ADMIN_ID, "me", PW.id, DISPOSABLE.peek())[k % 4]
        if op == "updateUser" and params.get("id") in (ADMIN_ID, "me") and body and body.get("role") == "user":
            body["role"] = "admin"
    elif op == "deleteUser":
        if turn(case) is not None or params.get("id") in (ADMIN_ID, "me", PW.id):
            params["id"] = DISPOSABLE.take()
    elif op == "changePassword":
        k = turn(case)
        if k is not None:
            params["id"] = PW.id if (k // 2) % 2 == 0 else "me"
            if body is not None and k % 2 == 0:
                body["current_password"] = PW.password
    elif op in MFA_OPS[1:]:
        if turn(case) is not None:
            with LOCK:
                if op == "enrolTotp":
                    MFA.ensure_not_enrolled()
                    if body is not None:
                        body["current_password"] = MFA.password
                elif op == "confirmTotp":
                    MFA.ensure_pending()
                    if body is not None and MFA.secret is not None:
                        body["code"] = MFA.next_code()
                else:
                    MFA.ensure_enrolled()
                    if body is not None:
                        for field in ("otp", "recovery_code", "passkey_ceremony", "passkey_credential"):
                            body.pop(field, None)
                        body["current_password"] = MFA.password
    elif op in PASSKEY_OPS:
        k = turn(case)
        if k is not None:
            with LOCK:
                if op == "addPasskey":
                    PASSKEY.ensure_room()
                    if body is not None:
                        body["current_password"] = PASSKEY.password
                elif op == "confirmPasskey":
                    PASSKEY.ensure_room()
                    begun = PASSKEY.begin()
                    if body is not None and begun is not None:
                        body["ceremony"] = begun["ceremony"]
                        body["credential"] = PASSKEY.pending[begun["ceremony"]].registration
                elif op == "passkeyChallenge":
                    PASSKEY.ensure_one()
                else:
                    PASSKEY.ensure_one()
                    if PASSKEY.keys:
                        params["id"] = next(reversed(list(PASSKEY.keys)))
                    if body is not None:
                        for field in ("current_password", "otp", "recovery_code", "passkey_ceremony", "passkey_credential"):
                            body.pop(field, None)
                        # Every other aimed removal proves it with a passkey, the rest with the password.
                        if k % 2 == 1 and PASSKEY.keys:
                            body.update(PASSKEY.proof())
                        else:
                            body["current_password"] = PASSKEY.password
    elif op == "requestPasswordReset":
        if body is not None and turn(case) is not None:
            body["email"] = RESET.email
    elif op == "confirmPasswordReset":
        if body is not None and turn(case) is not None:
            with LOCK:
                code = RESET.code()
            if code is not None:
                body["email"], body["code"] = RESET.email, code
    elif op == "resendVerification":
        if turn(case) is not None:
            MAILER.ensure_unverified()
    elif op == "changeEmail":
        if body is not None and turn(case) is not None:
            body["email"] = f"fuzz-moved-{uuid.uuid4().hex[:12]}@example.com"
            body["current_password"] = MAILER.password
    elif op == "verifyEmail":
        k = turn(case)
        if body is not None and k is not None:
            with LOCK:
                # Every other aimed confirmation moves the account, the rest verify it.
                if k % 2 == 0:
                    address, code = MAILER.email, MAILER.verification_code()
                else:
                    address, code = MAILER.change_code()
            if code is not None:
                body["email"], body["code"] = address, code
    elif op == "listConsents":
        if turn(case) is not None:
            params["id"] = "me"
    elif op == "deleteConsent":
        if RP_ID and turn(case) is not None:
            give_consent()
            params["id"], params["client_id"] = "me", RP_ID
    elif op == "listUsers":
        query = case.query if case.query is not None else {}
        if "after" in query and turn(case) is not None:
            query["after"] = real_cursor()
            query.pop("offset", None)
    elif body is None or (k := turn(case)) is None:
        return
    elif op == "createToken":
        grant = body.get("grant_type")
        if grant == "password":
            body["username"], body["password"] = EMAIL, PASSWORD
        elif grant == "refresh_token":
            body["refresh_token"] = REFRESH.get()
        elif grant == "client_credentials":
            client_auth(case, body)
    elif op == "createSession":
        body["email"], body["password"] = EMAIL, PASSWORD
    elif op == "introspectToken":
        client_auth(case, body)
        body["token"] = PW.token()
    elif op == "revokeToken":
        if AS_CLIENT:
            client_auth(case, body)
            body["token"] = client_token()
        else:
            body["token"] = login(EMAIL, PASSWORD)["access_token" if k % 2 == 0 else "refresh_token"]


@schemathesis.hook
def after_call(context, case, response):
    op = statuses.operation_id(case)
    body = case.body if isinstance(case.body, dict) else None
    if op == "changePassword":
        if response.status_code == 200 and body is not None and isinstance(body.get("new_password"), str):
            PW.password_changed(body["new_password"])
        elif response.status_code == 401:
            PW.forget_token()
    elif op in MFA_OPS:
        with LOCK:
            if response.status_code == 401:
                MFA.forget_token()
            elif response.status_code == 200:
                payload = response.json()
                if op == "enrolTotp":
                    MFA.enrolment_begun(payload)
                elif op == "confirmTotp":
                    # Confirming ends the account's other sessions; the one confirming (the
                    # hooks' own login) goes on.
                    MFA.confirmed_with(payload)
                elif op == "removeTotp":
                    MFA.removed()
                elif op == "renewRecoveryCodes":
                    MFA.recovery = list(payload["recovery_codes"])
    elif op in PASSKEY_OPS:
        with LOCK:
            if response.status_code == 401:
                PASSKEY.forget_token()
            elif op == "addPasskey" and response.status_code == 200:
                # Begun by the fuzzer itself: never confirmed, nothing to keep.
                pass
            elif op == "confirmPasskey" and response.status_code == 201 and body is not None:
                PASSKEY.added(body.get("ceremony"), response.json())
            elif op == "removePasskey" and response.status_code == 200:
                PASSKEY.removed((case.path_parameters or {}).get("id"))
    elif op in MAILER_OPS and response.status_code == 401:
        MAILER.forget_token()
    elif op == "verifyEmail" and response.status_code == 200 and body is not None:
        if response.json().get("result") == "changed" and isinstance(body.get("email"), str):
            with LOCK:
                MAILER.email = body["email"]
    elif op in ("getUserInfo", "postUserInfo") and response.status_code == 401:
        cached_openid_token(fresh=True)
    elif op == "createToken" and body is not None and body.get("grant_type") == "refresh_token":
        try:
            payload = response.json()
        except Exception:
            payload = None
        REFRESH.answered(body.get("refresh_token"), response.status_code, payload)


if os.environ.get("ST_TRACE"):

    @schemathesis.hook("after_call")
    def trace(context, case, response):
        if statuses.operation_id(case) in os.environ["ST_TRACE"].split(","):
            mode = case.meta.generation.mode.value if case.meta is not None else "explicit"
            print(
                f"TRACE {phase(case)} {mode} {case.path_parameters} {case.body!r:.200} -> {response.status_code} {response.text[:120]}",
                file=sys.stderr,
                flush=True,
            )
