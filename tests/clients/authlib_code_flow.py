"""Browser sign-in (authorization code + PKCE, OpenID Connect) against the live server with
Authlib's own relying-party side: its requests `OAuth2Session` with
`code_challenge_method="S256"`, the endpoints from OpenID discovery (validated with
`authlib.oidc.discovery.OpenIDProviderMetadata`), and the ID token checked with joserfc
(`jwt.decode` against the JWKS, RS256 only) and Authlib's `CodeIDToken` claims validation
(iss, aud, nonce, at_hash against the access token, auth_time, exp/iat).

The person at the browser is a `requests.Session` (its cookie jar; no automatic redirects)
posting the hosted /signin and /signin/consent forms, parsed with html.parser.

Steps, for a confidential third-party client: authorize -> /signin -> consent (Allow) ->
callback (state and RFC 9207 iss checked); fetch_token(authorization_response=...,
code_verifier=...) with client_secret_basic; the ID token; userinfo (GET and POST) through
the session; refresh_token() (rotation); a second authorization skipping sign-in and
consent, exchanged with client_secret_post; a wrong code_verifier -> invalid_grant;
revoke_token on the refresh token, after which refreshing fails.

Env: SIMPLE_API_URL (= the server's JWT_ISSUER), SIMPLE_API_BIN and the DATA_DIR/KEYS_DIR of
the running server (for its CLI); KEEP_GOING=1 reports every failed check, not the first.
"""

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from authlib.oidc.rpinitiated.discovery import OpenIDProviderMetadata as RPInitiatedMetadata
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet

BASE = os.environ["SIMPLE_API_URL"]
BIN = os.environ["SIMPLE_API_BIN"]
SCOPE = "openid profile email offline_access"
STARTED = int(time.time())
KEEP_GOING = os.environ.get("KEEP_GOING") == "1"
checks = 0
failed = []


def check(ok, what, detail=""):
    """Exits on the first failure; with KEEP_GOING=1 goes on (later checks may then fail too)."""
    global checks
    if not ok:
        print(f"FAIL authlib code flow: {what}\n  {detail}", file=sys.stderr)
        failed.append(what)
        if not KEEP_GOING:
            sys.exit(1)
        return
    checks += 1
    print(f"  ok  {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register(name, *args):
    out = subprocess.run([BIN, "clients", "create", "--name", name, *args], capture_output=True, text=True)
    check(out.returncode == 0, f"clients create --name {name} {' '.join(args)}", out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Forms(HTMLParser):
    """Every <form> of a page: its attributes, inputs and buttons; and the <label for> texts."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.forms, self.labels = [], {}
        self._form = self._button = self._label = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = {**a, "inputs": [], "buttons": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            self._form["inputs"].append(a)
        elif tag == "button" and self._form is not None:
            self._button = {**a, "text": ""}
            self._form["buttons"].append(self._button)
        elif tag == "label":
            self._label = [a.get("for"), ""]

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "button":
            self._button = None
        elif tag == "label" and self._label:
            self.labels[self._label[0]] = self._label[1].strip()
            self._label = None

    def handle_data(self, data):
        if self._button is not None:
            self._button["text"] += data.strip()
        if self._label is not None:
            self._label[1] += data

    def form(self, action):
        for f in self.forms:
            if f.get("action") == action:
                return f
        check(False, f'the page has a <form action="{action}">', self.forms)

    @staticmethod
    def field(form, name):
        return next((i for i in form["inputs"] if i.get("name") == name), None)


def hop(r):
    return f"{r.request.method} {urlsplit(r.url).path} {r.status_code}"


def drive(browser, url, email=None, password=None, decision="allow", inspect=lambda r: None):
    """Follow redirects on this server, sign in, answer consent; stop at the client's callback."""
    hops = []
    r = browser.get(url, allow_redirects=False, timeout=10)
    for _ in range(12):
        hops.append(hop(r))
        inspect(r)
        path = urlsplit(r.url).path
        if 300 <= r.status_code < 400:
            location = urljoin(r.url, r.headers["Location"])
            if not location.startswith(BASE + "/"):
                return location, hops
            r = browser.get(location, allow_redirects=False, timeout=10)
        elif r.status_code == 200 and path == "/signin" and r.request.method == "GET" and email:
            form = Forms(r.text).form("/signin")
            r = browser.post(urljoin(BASE, "/signin"), allow_redirects=False, timeout=10, data={
                "email": email, "password": password,
                "request": Forms.field(form, "request")["value"], "csrf": Forms.field(form, "csrf")["value"],
            })
        elif r.status_code == 200 and path == "/signin/consent" and r.request.method == "GET":
            form = Forms(r.text).form("/signin/consent")
            r = browser.post(urljoin(BASE, "/signin/consent"), allow_redirects=False, timeout=10, data={
                "request": Forms.field(form, "request")["value"], "csrf": Forms.field(form, "csrf")["value"],
                "decision": decision,
            })
        else:
            return None, hops + [r.text[:500]]
    check(False, "the sign-in ends within 12 hops", hops)


def query(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def at_hash(access_token):
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()[:16]).rstrip(b"=").decode()


# ------------------------------------------------------------------ discovery

meta = requests.get(f"{BASE}/.well-known/openid-configuration", timeout=10).json()
metadata = OpenIDProviderMetadata(meta)
metadata.validate(metadata_classes=[RPInitiatedMetadata])
check(meta["issuer"] == BASE, "discovery: OpenIDProviderMetadata(...).validate() (OIDC + RP-Initiated Logout), issuer = base URL", meta)
check(meta["code_challenge_methods_supported"] == ["S256"] and "RS256" in meta["id_token_signing_alg_values_supported"]
      and meta.get("authorization_response_iss_parameter_supported") is True,
      "discovery: S256, RS256 ID tokens, authorization_response_iss_parameter_supported", meta)
issuer = meta["issuer"]
key_set = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
check(any(k.key_type == "RSA" for k in key_set.keys), "jwks_uri: an RSA key (for RS256 ID tokens)", [k.key_type for k in key_set.keys])

# ------------------------------------------------------------------ user, client

email = f"authlib-{time.time_ns()}@example.com"
password = "correct horse battery staple"
r = requests.post(f"{BASE}/api/v1/users", json={"email": email, "password": password}, timeout=10)
check(r.status_code == 201, f"sign up {email}", r.text)
user = r.json()
t = requests.post(f"{BASE}/api/v1/auth/token", data={"grant_type": "password", "username": email, "password": password}, timeout=10).json()
r = requests.put(f"{BASE}/api/v1/users/{user['id']}", json={"first_name": "Grace", "last_name": "Hopper"},
                 headers={"Authorization": f"Bearer {t['access_token']}"}, timeout=10)
check(r.status_code == 200, "first_name Grace, last_name Hopper", r.text)

redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
registered = register("authlib-rp", "--scope", SCOPE, "--redirect-uri", redirect_uri)
client_id, client_secret = registered["client_id"], registered["client_secret"]


def session(method="client_secret_basic", token=None):
    return OAuth2Session(
        client_id, client_secret,
        token_endpoint_auth_method=method,
        scope=SCOPE, redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token=token,
    )


def validate_id_token(id_token, nonce, access_token, what):
    decoded = jwt.decode(id_token, key_set, algorithms=["RS256"])
    claims = CodeIDToken(
        decoded.claims, decoded.header,
        options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True, "value": user["id"]},
            "nonce": {"essential": True, "value": nonce},
            "auth_time": {"essential": True},
            "at_hash": {"essential": True},
            "sid": {"essential": True},
        },
        params={"nonce": nonce, "access_token": access_token, "client_id": client_id},
    )
    claims.validate(leeway=5)
    check(decoded.header["alg"] == "RS256", f"{what}: jwt.decode (RS256, JWKS) + CodeIDToken.validate(): iss, aud, sub, nonce, at_hash, auth_time, sid, exp", dict(claims))
    check(claims["at_hash"] == at_hash(access_token) and STARTED - 5 <= claims["auth_time"] <= time.time() + 5
          and "pwd" in claims.get("amr", []), f"{what}: at_hash = SHA-256 half of the access token, auth_time now, amr pwd", dict(claims))
    for bad, params in (("nonce", {"nonce": "another-nonce", "access_token": access_token, "client_id": client_id}),
                        ("at_hash", {"nonce": nonce, "access_token": access_token + "x", "client_id": client_id})):
        try:
            CodeIDToken(decoded.claims, decoded.header, params=params).validate(leeway=5)
            check(False, f"{what}: CodeIDToken refuses a wrong {bad}", "validated")
        except InvalidClaimError as e:
            check(e.claim == bad, f"{what}: ... and refuses another {bad} (the validation is not vacuous)", e)
    return claims


# ------------------------------------------------------------------ first authorization

print("- first authorization: sign-in page, consent page, code")
browser = requests.Session()
rp = session()
verifier = generate_token(64)
nonce = generate_token(24)
url, state = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce, login_hint=email)
q = query(url)
check(q["code_challenge_method"] == "S256" and q["code_challenge"] and q["client_id"] == client_id and q["nonce"] == nonce,
      "create_authorization_url: S256 code_challenge, nonce, state", url)


def first_inspect(r):
    path = urlsplit(r.url).path
    if path == "/signin" and r.request.method == "GET":
        page = Forms(r.text)
        form = page.form("/signin")
        fields = {n: Forms.field(form, n) for n in ("email", "password", "request", "csrf")}
        check(fields["email"]["type"] == "email" and fields["password"]["type"] == "password"
              and fields["request"]["type"] == fields["csrf"]["type"] == "hidden"
              and page.labels.get("email") == "Email" and page.labels.get("password") == "Password",
              "GET /signin: email/password fields with their labels, hidden request and csrf", (form, page.labels))
        check(browser.cookies.get("simple_api_csrf") == fields["csrf"]["value"], "GET /signin: the simple_api_csrf cookie = the csrf field")
    elif path == "/signin" and r.request.method == "POST":
        check(r.status_code == 303 and "simple_api_sso" in browser.cookies, "POST /signin -> 303, simple_api_sso cookie set", hop(r))
    elif path == "/signin/consent" and r.request.method == "GET":
        check("authlib-rp" in r.text, "consent page names the client (authlib-rp)", r.text[:1000])


callback, hops = drive(browser, url, email, password, inspect=first_inspect)
check(hops == ["GET /api/v1/auth/authorize 303", "GET /signin 200", "POST /signin 303", "GET /signin/consent 200", "POST /signin/consent 303"],
      "hops: authorize, sign-in, consent, back to the client", hops)
cq = query(callback)
check(callback.startswith(redirect_uri + "?") and cq.get("code") and cq.get("state") == state and cq.get("iss") == issuer,
      "callback: redirect_uri?code&state=<ours>&iss=<issuer> (RFC 9207, checked here: Authlib does not)", callback)

sent = []
rp.hooks["response"].append(lambda r, *a, **k: sent.append(r))
token = rp.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier, state=state)
body = parse_qs(sent[-1].request.body)
check(sent[-1].request.headers.get("Authorization", "").startswith("Basic ") and body["code_verifier"] == [verifier]
      and body["redirect_uri"] == [redirect_uri] and body["grant_type"] == ["authorization_code"],
      "fetch_token(authorization_response=..., code_verifier=...): client_secret_basic, code_verifier, redirect_uri", body)
check(token["token_type"].lower() == "bearer" and token.get("refresh_token") and token.get("id_token")
      and sorted(token["scope"].split()) == sorted(SCOPE.split()) and token.get("expires_at"),
      "token: bearer, refresh_token, id_token, scope, expires_in", {k: v for k, v in token.items() if "token" not in k})
claims = validate_id_token(token["id_token"], nonce, token["access_token"], "ID token")
check(claims.get("email") == email and claims.get("name") == "Grace Hopper", "ID token: email and name", dict(claims))

print("- userinfo and the API through the OAuth2Session")
r = rp.get(meta["userinfo_endpoint"], timeout=10)
info = r.json()
check(r.status_code == 200 and info.get("sub") == claims["sub"] and info.get("email") == email
      and isinstance(info.get("email_verified"), bool) and info.get("given_name") == "Grace" and info.get("family_name") == "Hopper"
      and info.get("name") == "Grace Hopper", "GET userinfo: sub, email, email_verified, name, given_name, family_name", r.text)
r = rp.post(meta["userinfo_endpoint"], timeout=10)
check(r.status_code == 200 and r.json() == info, "POST userinfo: the same claims", r.text)
r = rp.get(f"{BASE}/api/v1/users/me", timeout=10)
check(r.status_code == 200 and r.json()["email"] == email, "GET /api/v1/users/me -> 200", r.text)

print("- refresh_token()")
old = dict(token)
new = rp.refresh_token(meta["token_endpoint"])
check(new["access_token"] != old["access_token"] and new.get("refresh_token") and new["refresh_token"] != old["refresh_token"]
      and rp.token["access_token"] == new["access_token"], "refresh_token(): a new access token and a rotated refresh token", new.keys())
r = rp.get(meta["userinfo_endpoint"], timeout=10)
check(r.status_code == 200 and r.json().get("email") == email, "userinfo with the refreshed token", r.text)

print("- second authorization: no sign-in (SSO cookie), no consent (remembered); client_secret_post")
rp2 = session("client_secret_post")
verifier2, nonce2 = generate_token(64), generate_token(24)
url, state2 = rp2.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier2, nonce=nonce2)
callback, hops = drive(browser, url)
check(hops == ["GET /api/v1/auth/authorize 303"] and query(callback).get("state") == state2 and query(callback).get("iss") == issuer,
      "GET authorize -> 303 straight to the callback", (hops, callback))
sent = []
rp2.hooks["response"].append(lambda r, *a, **k: sent.append(r))
token2 = rp2.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier2, state=state2)
body = parse_qs(sent[-1].request.body)
check(body.get("client_secret") == [client_secret] and "Authorization" not in sent[-1].request.headers,
      "fetch_token with client_secret_post", body.keys())
claims2 = validate_id_token(token2["id_token"], nonce2, token2["access_token"], "second ID token")
check(claims2["auth_time"] == claims["auth_time"] and claims2["sid"] == claims["sid"], "second ID token: same auth_time and sid (one session)", dict(claims2))

print("- a wrong code_verifier")
rp3 = session()
verifier3 = generate_token(64)
url, state3 = rp3.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier3, nonce=generate_token(24))
callback, hops = drive(browser, url)
check(callback and query(callback).get("code"), "another authorization (SSO) -> a code", hops)
try:
    rp3.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=generate_token(64), state=state3)
    check(False, "a wrong code_verifier is refused", "a token was issued")
except OAuthError as e:
    check(e.error == "invalid_grant", "fetch_token with another code_verifier -> OAuthError invalid_grant", e)

print("- revoke_token on the refresh token")
r = rp.revoke_token(meta["revocation_endpoint"], token=rp.token["refresh_token"], token_type_hint="refresh_token")
check(r.status_code == 200, "revoke_token(refresh_token) -> 200", r.text)
try:
    rp.refresh_token(meta["token_endpoint"])
    check(False, "the revoked refresh token is refused", "refreshed")
except OAuthError as e:
    check(e.error == "invalid_grant", "refresh_token() with the revoked refresh token -> OAuthError invalid_grant", e)

print(f"authlib code flow: {checks} checks passed" + (f", {len(failed)} FAILED: {failed}" if failed else ""))
sys.exit(1 if failed else 0)
