#!/usr/bin/env bash
# private_key_jwt client authentication (RFC 7523 §2.2) with real third-party client
# libraries against the live server: Authlib (Python, its requests OAuth2Session) and
# openid-client v6 (Node), plus the README's curl client_credentials call with a secret.
# Then browser sign-in (authorization code + PKCE, OpenID Connect) with the same two
# libraries as relying parties: openid_client_code_flow.mjs and authlib_code_flow.py.
# Installs the pinned libraries itself (requirements.txt into target/clients-venv, npm ci).
# Two servers: one with the default JWT_ISSUER ("simple-api"), one whose JWT_ISSUER is its
# PUBLIC_URL (what OpenID discovery requires). Exits non-zero on the first failed check.
# Usage: tests/clients/run.sh [path/to/simple-api]   (default target/debug/simple-api)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(realpath "${1:-$root/target/debug/simple-api}")"
venv="$root/target/clients-venv"
started=$SECONDS

if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi
(cd "$here" && npm ci --no-audit --no-fund --silent)
echo "-- libraries: $("$venv/bin/python" -c 'import authlib, joserfc, requests, cryptography as c; print(f"Authlib {authlib.__version__}, joserfc {joserfc.__version__}, requests {requests.__version__}, cryptography {c.__version__}")'), $(cd "$here" && node -p '["openid-client", "oauth4webapi", "jose"].map(n => `${n} ${require(`./node_modules/${n}/package.json`).version}`).join(", ")'), Node $(node --version)"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    for log in "$tmp"/*/server.log; do
      [ -f "$log" ] && { echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; }
    done
    echo "FAILED: real client libraries (exit $rc)" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME [url-issuer]: a server with its own DATA_DIR/KEYS_DIR on a free port; its base
# URL goes to $tmp/NAME/base. With url-issuer, JWT_ISSUER = PUBLIC_URL = that base URL.
start() {
  local name=$1 port base
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  base="http://127.0.0.1:$port"
  mkdir -p "$tmp/$name"
  local -a extra=()
  if [ "${2:-}" = url-issuer ]; then extra=(JWT_ISSUER="$base" PUBLIC_URL="$base"); fi
  env DATA_DIR="$tmp/$name/data" KEYS_DIR="$tmp/$name/keys" API_PORT="$port" ARGON2_M_KIB=1024 ARGON2_T=1 \
    AUDIT_LOG="$tmp/$name/audit.log" "${extra[@]}" "$bin" serve > "$tmp/$name/server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "$base/api/v1/status" > /dev/null && break; sleep 0.1; done
  curl -sSf "$base/api/v1/status" > /dev/null || { echo "simple-api ($name) did not start" >&2; exit 1; }
  echo "$base" > "$tmp/$name/base"
}
# on NAME CMD...: CMD with the env of server NAME (its CLI talks to it through DATA_DIR).
on() {
  local name=$1; shift
  env DATA_DIR="$tmp/$name/data" KEYS_DIR="$tmp/$name/keys" SIMPLE_API_URL="$(cat "$tmp/$name/base")" \
    SIMPLE_API_BIN="$bin" "$@"
}
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

echo "-- starting simple-api twice: JWT_ISSUER default (simple-api), and JWT_ISSUER = PUBLIC_URL"
start plain
start oidc url-issuer
base="$(cat "$tmp/plain/base")"

echo "-- curl: client_credentials with a secret (client_secret_basic), as the README shows it"
secret_client="$(on plain "$bin" clients create --name curl-basic --scope "users:read" 2> "$tmp/cli.err")" \
  || { cat "$tmp/cli.err" >&2; exit 1; }
CLIENT_ID="$(json client_id <<< "$secret_client")"
CLIENT_SECRET="$(json client_secret <<< "$secret_client")"
TOKEN=$(curl -sS --fail-with-body -u "$CLIENT_ID:$CLIENT_SECRET" "$base/api/v1/auth/token" \
        -d grant_type=client_credentials -d scope=users:read \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -sS --fail-with-body -o /dev/null "$base/api/v1/users" -H "Authorization: Bearer $TOKEN"
echo "  ok  HTTP Basic client_credentials token, and GET /api/v1/users with it: 200"

echo "-- client keys made with openssl (Ed25519, EC P-256, RSA 2048) and their public halves"
keys="$tmp/client-keys"
mkdir -p "$keys"
openssl genpkey -quiet -algorithm ed25519 -out "$keys/ed25519.pem"
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$keys/p256.pem"
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/rsa2048.pem"
for k in ed25519 p256 rsa2048; do openssl pkey -in "$keys/$k.pem" -pubout -out "$keys/$k.pub.pem"; done

echo "-- Authlib (requests OAuth2Session + PrivateKeyJWT), issuer simple-api"
# Authlib's deprecation warnings are errors: the scenario must use its current API (joserfc keys).
on plain CLIENT_KEYS="$keys" "$venv/bin/python" -W error::DeprecationWarning "$here/authlib_private_key_jwt.py"

echo "-- openid-client: new Configuration(metadata) + PrivateKeyJwt, issuer simple-api"
(cd "$here" && on plain CLIENT_KEYS="$keys" node openid_client.mjs)

echo "-- openid-client: discovery() + PrivateKeyJwt, JWT_ISSUER = PUBLIC_URL"
(cd "$here" && on oidc CLIENT_KEYS="$keys" DISCOVERY=1 node openid_client.mjs)

echo "-- openid-client: authorization code + PKCE, OpenID Connect relying party, JWT_ISSUER = PUBLIC_URL"
(cd "$here" && on oidc node openid_client_code_flow.mjs)

echo "-- Authlib: authorization code + PKCE (OAuth2Session), ID token with CodeIDToken, JWT_ISSUER = PUBLIC_URL"
on oidc "$venv/bin/python" -W error::DeprecationWarning "$here/authlib_code_flow.py"

echo "-- private_key_jwt and browser sign-in with Authlib and openid-client: all checks passed in $((SECONDS - started)) s"
