#!/usr/bin/env bash
# Swagger UI and the hosted sign-in pages end to end in a real browser: starts simple-api on
# a free port with temp dirs and JWT_ISSUER = PUBLIC_URL = its URL (as OpenID Connect
# needs), signs a user up, and drives
#   swagger.mjs       /docs: Authorize with the password flow, Try it out
#   swagger_code.mjs  /docs: Authorize with the authorizationCode flow (PKCE) in a popup
#                     on the hosted /signin page, Try it out
#   pages.mjs         screenshots and checks of each hosted page (desktop and phone), for a
#                     third-party client registered here with the CLI
#   passkeys.mjs      second factors with Chromium's virtual WebAuthn authenticator, on a
#                     server at http://localhost:PORT (WebAuthn needs a host name), once on
#                     the file store and once on PostgreSQL (a throwaway cluster)
#   mail.mjs          password reset, hosted sign-up and address verification by mail,
#                     each message (from the outbox) rendered and followed
# Needs /usr/bin/chromium, node and PostgreSQL. Screenshots go to target/.
# Usage: tests/browser/run.sh [path/to/simple-api]   (default target/debug/simple-api)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(realpath "${1:-$root/target/debug/simple-api}")"
(cd "$here" && npm ci --no-audit --no-fund --silent)
source "$root/tests/postgres.sh"  # free_port, start_postgres, stop_postgres
tmp="$(mktemp -d)"
port="$(free_port)"
base="http://127.0.0.1:$port"
DATA_DIR="$tmp/data" KEYS_DIR="$tmp/keys" API_PORT="$port" ARGON2_M_KIB=1024 ARGON2_T=1 \
  JWT_ISSUER="$base" PUBLIC_URL="$base" \
  AUDIT_LOG="$tmp/audit.log" "$bin" serve > "$tmp/server.log" 2>&1 &
pid=$!
pids=()
cleanup() {
  local rc=$?
  kill "$pid" "${pids[@]}" 2>/dev/null || true
  stop_postgres
  if [ "$rc" -ne 0 ]; then
    echo "--- last lines of the server log" >&2; tail -n 20 "$tmp/server.log" >&2
    echo "FAILED: browser tests (exit $rc)" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "$base/api/v1/status" > /dev/null && break; sleep 0.1; done
curl -sSf "$base/api/v1/status" > /dev/null || { echo "simple-api did not start" >&2; exit 1; }
email="swagger-$RANDOM@example.com"; password="browser-password-1"
curl -sf "$base/api/v1/users" -H 'Content-Type: application/json' \
  -d "{\"email\": \"$email\", \"password\": \"$password\"}" > /dev/null
mkdir -p "$root/target"

echo "-- Swagger UI: password flow"
SIMPLE_API_URL="$base" TEST_EMAIL="$email" TEST_PASSWORD="$password" \
  SCREENSHOT="$root/target/swagger-ui.png" node "$here/swagger.mjs"

echo "-- Swagger UI: authorizationCode flow (PKCE) through the hosted sign-in page"
SIMPLE_API_URL="$base" TEST_EMAIL="$email" TEST_PASSWORD="$password" \
  SCREENSHOT="$root/target/swagger-ui-code.png" node "$here/swagger_code.mjs"

echo "-- hosted pages: sign-in, wrong password, consent, logout, signed out, error"
# A third-party relying party (consent screen), registered through the server's DATA_DIR.
cb_port="$(free_port)"
redirect_uri="http://127.0.0.1:$cb_port/callback"
client_name="Acme Notes"
registered="$(DATA_DIR="$tmp/data" KEYS_DIR="$tmp/keys" SIMPLE_API_URL="$base" "$bin" clients create \
  --name "$client_name" --scope "openid profile email offline_access" --redirect-uri "$redirect_uri")"
client_id="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["client_id"])' <<< "$registered")"
rm -rf "$root/target/screenshots"
SIMPLE_API_URL="$base" CLIENT_ID="$client_id" CLIENT_NAME="$client_name" REDIRECT_URI="$redirect_uri" \
  SCREENSHOTS="$root/target/screenshots" node "$here/pages.mjs"

# passkeys STORE [VAR=value...]: a server of its own at http://localhost:PORT on STORE's
# storage, a first-party public client, and passkeys.mjs against it.
passkeys() {
  local store="$1"; shift
  local dir="$tmp/$store" pk_port; pk_port="$(free_port)"
  local url="http://localhost:$pk_port"
  mkdir -p "$dir"
  env DATA_DIR="$dir/data" KEYS_DIR="$dir/keys" API_PORT="$pk_port" ARGON2_M_KIB=1024 ARGON2_T=1 \
    JWT_ISSUER="$url" PUBLIC_URL="$url" AUDIT_LOG="$dir/audit.log" "$@" \
    "$bin" serve > "$tmp/server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$pk_port/api/v1/status" > /dev/null && break; sleep 0.1; done
  local cb; cb="http://127.0.0.1:$(free_port)/callback"
  local made; made="$(env DATA_DIR="$dir/data" KEYS_DIR="$dir/keys" SIMPLE_API_URL="$url" "$@" "$bin" clients create \
    --name "Passkey Notes" --scope openid --first-party --public --redirect-uri "$cb")"
  local id; id="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["client_id"])' <<< "$made")"
  SIMPLE_API_URL="$url" CLIENT_ID="$id" REDIRECT_URI="$cb" STORE="$store" \
    SCREENSHOTS="$root/target/screenshots" node "$here/passkeys.mjs"
  last_url="$url"; last_dir="$dir"
}
echo "-- second factors (authenticator app, passkeys) on the file store"
# mail.mjs follows on this server within the minute: room for its messages beside the
# sign-ups' (every message from one address counts against MAIL_LIMIT_MINUTE x 10).
passkeys file MAIL_LIMIT_MINUTE=10
echo "-- accounts by mail (no SMTP_URL: the outbox): reset, sign-up, verification"
SIMPLE_API_URL="$last_url" OUTBOX="$last_dir/data/outbox" SCREENSHOTS="$root/target/screenshots" \
  node "$here/mail.mjs"
echo "-- second factors (authenticator app, passkeys) on PostgreSQL"
start_postgres "$tmp"
passkeys postgres DATABASE_URL="$pg_url"
echo "-- browser tests passed"
