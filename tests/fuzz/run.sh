#!/usr/bin/env bash
# API fuzzing: schemathesis against the running server and its own served spec, as the
# admin (every operation) and as a registered client (the OAuth endpoints), aimed by hooks.py
# at what each caller may touch. Fails on any server error, any response that breaks the
# spec, valid data refused with a status schemathesis.toml does not accept, a warning that
# an operation was never served (schemathesis.toml: warnings.fail-on), an operation of the
# spec that never answered 2xx to valid data, a dead server, or an ERROR in its log.
# Usage: tests/fuzz/run.sh [path/to/simple-api]   (default target/debug/simple-api)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/simple-api}"
venv="$root/target/fuzz-venv"
out="$root/target/schemathesis"
st_version="4.32.5"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$st_version" \
  || ! "$venv/bin/python" -c 'import cryptography' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # cryptography: the hooks' software passkey signs with P-256.
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$st_version" "cryptography>=42"
fi
st="$venv/bin/schemathesis"
rm -rf "$out" && mkdir -p "$out"
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
# PUBLIC_URL names the host (WebAuthn allows no IP address as relying-party id): the
# passkey operations are served.
public="http://localhost:$port"
export ST_BASE_URL="$base" ST_PUBLIC_URL="$public" ST_ADMIN_EMAIL=admin@example.com ST_ADMIN_PASSWORD=admin-password-1

# A registered client for the introspection and client_credentials run.
DATA_DIR="$work/data" KEYS_DIR="$work/keys" AUDIT_LOG="$work/audit.log" "$bin" clients create \
  --name fuzz --scope "users:read users:write" > "$work/client.json" 2>/dev/null
client="$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["client_id"]+":"+c["client_secret"])' "$work/client.json")"
export ST_CLIENT="$client"
# A third-party relying party (browser sign-in) the admin gives and withdraws consent to.
DATA_DIR="$work/data" KEYS_DIR="$work/keys" AUDIT_LOG="$work/audit.log" "$bin" clients create \
  --name fuzz-rp --scope "openid profile" --redirect-uri http://127.0.0.1:9/callback > "$work/rp.json" 2>/dev/null
export ST_RP="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_id"])' "$work/rp.json")"

# Cheap argon2 (hundreds of logins per run), no login throttling and no mail limits: the
# fuzzer is not an attacker. No SMTP_URL: messages land in the outbox, where the hooks read
# the reset codes.
export ST_OUTBOX="$work/data/outbox"
ARGON2_M_KIB=1024 ARGON2_T=1 LOGIN_MAX_FAILURES=100000 MAIL_LIMIT_MINUTE=100000 MAIL_LIMIT_DAY=100000 \
  API_PORT="$port" PUBLIC_URL="$public" \
  DATA_DIR="$work/data" KEYS_DIR="$work/keys" AUDIT_LOG="$work/audit.log" \
  ADMIN_EMAIL="$ST_ADMIN_EMAIL" ADMIN_PASSWORD="$ST_ADMIN_PASSWORD" \
  "$bin" serve > "$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "$base/api/v1/status" > /dev/null && break; sleep 0.1; done
if ! kill -0 "$server" 2>/dev/null || ! curl -sf "$base/api/v1/status" > /dev/null; then
  echo "simple-api did not start:" >&2; cat "$out/server.log" >&2; exit 1
fi

status=0
mkdir -p "$out/admin" "$out/client"
curl -sf "$base/openapi.json" > "$out/openapi.json"
# 1. Every operation as the admin (hooks.py: a fresh token after a logout or revocation; the
#    admin is never deleted or demoted; the password change as a throwaway user).
#    --max-time bounds the run (--max-examples does not).
SCHEMATHESIS_HOOKS="$here/hooks.py" ST_STATUSES="$out/admin/statuses.json" \
  "$st" --config-file "$here/schemathesis.toml" run "$base/openapi.json" \
  --checks all --max-time 180 --seed 1 --no-color \
  --report junit --report-dir "$out/admin" || status=1
# 2. The OAuth endpoints with HTTP Basic client authentication (introspection answers and
#    client_credentials grants). Without positive_data_acceptance: Basic plus a generated
#    form client_secret is, rightly, a 400 (RFC 6749 §2.3: one method per request).
SCHEMATHESIS_HOOKS="$here/hooks.py" ST_AS=client ST_STATUSES="$out/client/statuses.json" \
  "$st" --config-file "$here/schemathesis.toml" run "$base/openapi.json" \
  --include-path-regex '^/api/v1/auth/(token|introspect|revoke)$' -a "$client" \
  --checks all --exclude-checks positive_data_acceptance --max-time 30 --seed 1 --no-color \
  --report junit --report-dir "$out/client" || status=1

for run in admin client; do
  echo "== Answers per operation ($run run): generation mode, then status x count"
  python3 "$here/statuses.py" "$out/$run/statuses.json" || status=1
done
# Every operation of the spec served valid data at least once (as the admin).
python3 "$here/statuses.py" --every-operation-served "$out/openapi.json" "$out/admin/statuses.json" || status=1

kill -0 "$server" || { echo "the server died during the run" >&2; status=1; }
if grep -E ' ERROR |panicked' "$out/server.log"; then status=1; fi
exit "$status"
