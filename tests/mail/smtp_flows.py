"""Accounts by mail against a real SMTP server (aiosmtpd, in this process): simple-api runs
as a process of its own with SMTP_URL pointing here, and each flow is finished from the
messages the server received.

Usage: python smtp_flows.py BINARY [DATABASE_URL]   (no DATABASE_URL: the file store)

Scenarios:
  1. password reset: the code arrives over SMTP (multipart text + HTML, the code alone on a
     line), the reset works, the notice arrives; a sign-up's verification code arrives and
     verifies the address; a change of address sends a code to the new address and a
     notice to the old one, and the code moves the account; with REQUIRE_VERIFIED_EMAIL a
     refused sign-in sends a new code, which opens the way to tokens;
  2. a server that refuses the recipient for good (550): given up at once, audited
     `mail_failed` with `permanent: true`;
  3. a server that defers (451) once: retried after the back-off and delivered;
  4. the server down at send time, and simple-api restarted meanwhile: the message is
     delivered once both are back (nothing lost);
  5. STARTTLS required: a server without STARTTLS and SMTP_URL without tls=none gets
     nothing in clear; the attempt is deferred and audited.
"""

import email
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import requests
from aiosmtpd.controller import Controller

BINARY = sys.argv[1]
DATABASE_URL = sys.argv[2] if len(sys.argv) > 2 else ""
STORE = "postgres" if DATABASE_URL else "file"
PASSWORD = "smtp-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """What the SMTP server received; `refuse` and `defer` answer chosen recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.Message]] = []
        self.refuse: set[str] = set()
        self.defer_once: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        if address in self.defer_once:
            self.defer_once.discard(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def wait_for(self, to: str, subject: str, timeout: float) -> email.message.Message:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for rcpts, msg in self.messages:
                if to in rcpts and msg["Subject"] == subject:
                    return msg
            time.sleep(0.1)
        raise AssertionError(f"no '{subject}' to {to} within {timeout}s; got {[(r, m['Subject']) for r, m in self.messages]}")

    def count(self, to: str) -> int:
        return sum(1 for rcpts, _ in self.messages if to in rcpts)


class Server:
    """simple-api with its own DATA_DIR and KEYS_DIR (kept across restarts)."""

    def __init__(self, smtp_url: str, **settings: str) -> None:
        self.settings = settings
        self.dir = tempfile.mkdtemp()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.smtp_url = smtp_url
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(
            os.environ,
            DATA_DIR=f"{self.dir}/data",
            KEYS_DIR=f"{self.dir}/keys",
            AUDIT_LOG=f"{self.dir}/audit.log",
            API_PORT=str(self.port),
            ARGON2_M_KIB="1024",
            ARGON2_T="1",
            SMTP_URL=self.smtp_url,
            MAIL_LIMIT_MINUTE="100",
            **self.settings,
        )
        if DATABASE_URL:
            env["DATABASE_URL"] = DATABASE_URL
        self.log = open(f"{self.dir}/server.log", "a")
        self.proc = subprocess.Popen([BINARY, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                if requests.get(f"{self.base}/api/v1/status", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"simple-api did not start: {open(f'{self.dir}/server.log').read()}")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def audit(self) -> list[dict]:
        try:
            return [json.loads(line) for line in open(f"{self.dir}/audit.log")]
        except FileNotFoundError:
            return []

    def wait_audit(self, event: str, timeout: float, after: int = 0, **fields) -> dict:
        """The first `event` with `fields` among the audit lines from line `after` on."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for e in self.audit()[after:]:
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    return e
            time.sleep(0.1)
        raise AssertionError(f"no audit event {event} {fields}: {self.audit()[-5:]}")

    def signup(self, who: str, delivered: Inbox | None = None) -> str:
        """A new account; with `delivered`, once its verification message has arrived (so
        that what a scenario asks of the SMTP server next meets only its own message)."""
        address = f"{who}-{STORE}-{int(time.time() * 1000)}@example.com"
        resp = requests.post(f"{self.base}/api/v1/users", json={"email": address, "password": PASSWORD}, timeout=10)
        assert resp.status_code == 201, resp.text
        assert resp.json()["email_verified"] is False
        if delivered:
            delivered.wait_for(address, "Confirm your email address", 15)
        return address

    def token(self, address: str, password: str = PASSWORD) -> requests.Response:
        return requests.post(
            f"{self.base}/api/v1/auth/token",
            data={"grant_type": "password", "username": address, "password": password},
            timeout=10,
        )

    def verify(self, address: str, code: str) -> requests.Response:
        return requests.post(f"{self.base}/api/v1/auth/verify-email", json={"email": address, "code": code}, timeout=10)

    def reset(self, address: str) -> None:
        resp = requests.post(f"{self.base}/api/v1/auth/password-reset", json={"email": address}, timeout=10)
        assert resp.status_code == 202, resp.text


def parts(msg: email.message.Message) -> dict[str, str]:
    return {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart()}


def code_of(msg: email.message.Message) -> str:
    for line in parts(msg)["text/plain"].splitlines():
        if re.fullmatch(r"[A-Z2-7]{26}", line.strip()):
            return line.strip()
    raise AssertionError(f"no code line in {parts(msg)['text/plain']}")


checks = 0


def ok(what: str) -> None:
    global checks
    checks += 1
    print(f"  ok  {what}", flush=True)


inbox = Inbox()
smtp_port = free_port()
controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
controller.start()
server = Server(f"smtp://127.0.0.1:{smtp_port}?tls=none")
server.start()
try:
    # 1. Password reset over SMTP.
    ann = server.signup("ann")
    server.reset(ann)
    msg = inbox.wait_for(ann, "Reset your password", 15)
    kinds = parts(msg)
    assert set(kinds) == {"text/plain", "text/html"}, kinds
    assert msg["From"].endswith("<no-reply@localhost>"), msg["From"]
    code = code_of(msg)
    assert code in kinds["text/html"]
    resp = requests.post(
        f"{server.base}/api/v1/auth/password-reset/confirm",
        json={"email": ann, "code": code, "new_password": "smtp-password-2"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    inbox.wait_for(ann, "Your password was changed", 15)
    ok(f"{STORE}: reset code over SMTP (text + HTML), password changed, notice delivered")

    # 1b. The sign-up's verification code, over SMTP.
    fay = server.signup("fay")
    msg = inbox.wait_for(fay, "Confirm your email address", 15)
    code = code_of(msg)
    assert f"code={code}" in parts(msg)["text/html"], "the button's link carries the code"
    resp = server.verify(fay, code)
    assert resp.status_code == 200 and resp.json() == {"result": "verified"}, resp.text
    access = server.token(fay).json()["access_token"]
    me = requests.get(f"{server.base}/api/v1/users/me", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert me.json()["email_verified"] is True, me.text
    assert server.verify(fay, code).status_code == 400, "used once"
    ok(f"{STORE}: a sign-up's verification code arrives over SMTP and verifies the address once")

    # 1c. A change of address: the code to the new address, a notice to the old one.
    new = f"fay-moved-{STORE}-{int(time.time() * 1000)}@example.com"
    resp = requests.post(
        f"{server.base}/api/v1/users/me/email",
        headers={"Authorization": f"Bearer {access}"},
        json={"email": new, "current_password": PASSWORD},
        timeout=10,
    )
    assert resp.status_code == 202, resp.text
    confirm = inbox.wait_for(new, "Confirm your new email address", 15)
    notice = inbox.wait_for(fay, "A change of your email address was asked for", 15)
    code = code_of(confirm)
    assert code not in parts(notice)["text/plain"] and new in parts(notice)["text/plain"]
    resp = server.verify(new, code)
    assert resp.status_code == 200 and resp.json() == {"result": "changed"}, resp.text
    assert server.token(new).status_code == 200 and server.token(fay).status_code == 400
    ok(f"{STORE}: a change of address: code to the new address, notice to the old, moved on confirmation")

    # 2. Refused for good: given up at once, audited.
    bob = server.signup("bob", delivered=inbox)
    inbox.refuse.add(bob)
    mark = len(server.audit())
    server.reset(bob)
    failed = server.wait_audit("mail_failed", 15, after=mark, permanent=True)
    assert "550" in failed["reason"], failed
    assert inbox.count(bob) == 1, "only the sign-up's message, before the refusals"
    ok(f"{STORE}: a 550 is given up at once and audited mail_failed (permanent)")

    # 3. Deferred once: retried after the back-off (30 s) and delivered.
    cat = server.signup("cat", delivered=inbox)
    inbox.defer_once.add(cat)
    mark = len(server.audit())
    server.reset(cat)
    server.wait_audit("mail_deferred", 15, after=mark, purpose="password_reset")
    started = time.time()
    inbox.wait_for(cat, "Reset your password", 60)
    ok(f"{STORE}: a 451 is retried after {time.time() - started:.0f} s and delivered")

    # 4. The mail server down at send time, simple-api restarted meanwhile.
    controller.stop()
    dan = server.signup("dan")
    mark = len(server.audit())
    server.reset(dan)
    # The reset's own deferral (not the sign-up message's): recorded, so it is due again
    # after the back-off rather than held by a delivery the restart cut short.
    server.wait_audit("mail_deferred", 15, after=mark, purpose="password_reset")
    server.stop()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    server.start()
    inbox.wait_for(dan, "Reset your password", 60)
    ok(f"{STORE}: a message queued while the mail server was down arrives after both restart")
finally:
    server.stop()
    controller.stop()

# 1d. REQUIRE_VERIFIED_EMAIL: no token before the code comes back; a refused sign-in sends
# a new one.
inbox = Inbox()
gate_port = free_port()
controller = Controller(inbox, hostname="127.0.0.1", port=gate_port)
controller.start()
gated = Server(f"smtp://127.0.0.1:{gate_port}?tls=none", REQUIRE_VERIFIED_EMAIL="true")
gated.start()
try:
    gil = gated.signup("gil", delivered=inbox)
    refused = gated.token(gil)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    assert "not verified" in refused.json()["error_description"], refused.text
    deadline = time.time() + 15
    while sum(1 for r, m in inbox.messages if gil in r and m["Subject"] == "Confirm your email address") < 2:
        assert time.time() < deadline, "a refused sign-in sends a new code"
        time.sleep(0.1)
    latest = [m for r, m in inbox.messages if gil in r][-1]
    assert gated.verify(gil, code_of(latest)).status_code == 200
    assert gated.token(gil).status_code == 200
    ok(f"{STORE}: REQUIRE_VERIFIED_EMAIL: refused until the code (resent on the refused sign-in) comes back")
finally:
    gated.stop()
    controller.stop()

# 5. STARTTLS required: a plain server gets nothing.
inbox = Inbox()
plain_port = free_port()
controller = Controller(inbox, hostname="127.0.0.1", port=plain_port)
controller.start()
strict = Server(f"smtp://127.0.0.1:{plain_port}")
strict.start()
try:
    eve = strict.signup("eve")
    deferred = strict.wait_audit("mail_deferred", 15)
    time.sleep(1)
    assert inbox.count(eve) == 0 and not inbox.messages, "nothing in clear"
    ok(f"{STORE}: STARTTLS required: a server without it gets nothing ({deferred['reason'][:60]}…)")
finally:
    strict.stop()
    controller.stop()
print(f"mail over SMTP ({STORE} store): {checks} checks passed")
