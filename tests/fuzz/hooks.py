"""Schemathesis hooks for simple-api: keep the fuzzing admin usable for the whole run.

SCHEMATHESIS_HOOKS=path/to/hooks.py, with ST_BASE_URL, ST_ADMIN_EMAIL, ST_ADMIN_PASSWORD and
optionally ST_STATUSES (statuses.py: answers per operation, written there at exit).

- Every request carries a bearer token of the admin, fetched with the password grant and
  fetched again after a 401 (schemathesis re-sends that request once), so a
  DELETE /auth_session/logout or POST /auth/revoke of the current token costs one request.
- DELETE /users/{admin id or me} is sent to a random UUID instead (a 404): deleting the
  admin would turn the rest of the run into 401s.
- PUT /users/{admin id or me} with "role": "user" keeps "admin": demoting the admin would
  turn every admin operation into a 403 for the rest of the run.
"""

import os
import sys
import uuid

import requests
import schemathesis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statuses  # noqa: E402,F401  (counts answers per operation)

BASE = os.environ.get("ST_BASE_URL", "http://127.0.0.1:5099").rstrip("/")
EMAIL = os.environ["ST_ADMIN_EMAIL"]
PASSWORD = os.environ["ST_ADMIN_PASSWORD"]


def admin_token() -> str:
    resp = requests.post(
        f"{BASE}/api/v1/auth/token",
        data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
        timeout=10,
    )
    resp.raise_for_status()
    return resp.json()["access_token"]


ADMIN_ID = requests.get(
    f"{BASE}/api/v1/users/me",
    headers={"Authorization": f"Bearer {admin_token()}"},
    timeout=10,
).json()["id"]


@schemathesis.auth(refresh_interval=300)
class AdminToken:
    def get(self, case, context):
        return admin_token()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/api/v1/users/{id}":
        return
    params = case.path_parameters or {}
    if params.get("id") not in (ADMIN_ID, "me"):
        return
    method = case.method.upper()
    if method == "DELETE":
        params["id"] = str(uuid.uuid4())
    elif method == "PUT" and isinstance(case.body, dict) and case.body.get("role") == "user":
        case.body["role"] = "admin"
