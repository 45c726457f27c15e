#!/usr/bin/env bash
# Swagger UI end to end in a real browser: starts simple-api on a free port with temp dirs,
# signs a user up, and drives /docs with swagger.mjs. Needs /usr/bin/chromium and node.
# Usage: tests/browser/run.sh [path/to/simple-api]   (default target/debug/simple-api)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/simple-api}"
(cd "$here" && npm ci --no-audit --no-fund --silent)
tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DATA_DIR="$tmp/data" KEYS_DIR="$tmp/keys" API_PORT="$port" ARGON2_M_KIB=1024 ARGON2_T=1 \
  AUDIT_LOG="$tmp/audit.log" "$bin" serve > "$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$base/api/v1/status" > /dev/null && break; sleep 0.1; done
email="swagger-$RANDOM@example.com"; password="browser-password-1"
curl -sf "$base/api/v1/users" -H 'Content-Type: application/json' \
  -d "{\"email\": \"$email\", \"password\": \"$password\"}" > /dev/null
mkdir -p "$root/target"
SIMPLE_API_URL="$base" TEST_EMAIL="$email" TEST_PASSWORD="$password" \
  SCREENSHOT="$root/target/swagger-ui.png" node "$here/swagger.mjs"
