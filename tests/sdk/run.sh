#!/usr/bin/env bash
# Generated SDKs against the live server: openapi-python-client, openapi-generator (-g python)
# and @hey-api/openapi-ts (type-checked with tsc --strict, run with Node) each run the same
# scenario. Installs the generators itself (a venv under target/, npm packages locally).
# Usage: tests/sdk/run.sh [path/to/simple-api]   (default target/debug/simple-api)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/simple-api}"
spec="$root/openapi/openapi.json"
out="$root/target/sdk"
venv="$root/target/sdk-venv"
# ruff (the Python generator formats with it) must be on PATH.
export PATH="$venv/bin:$PATH"

if ! "$venv/bin/python" -c 'import openapi_python_client, openapi_generator_cli, openapi_spec_validator' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    openapi-python-client==0.29.1 openapi-generator-cli==7.26.0 openapi-spec-validator ruff \
    httpx attrs python-dateutil urllib3 pydantic typing-extensions
fi
(cd "$here/ts" && npm ci --no-audit --no-fund --silent)
rm -rf "$out" && mkdir -p "$out"

echo "-- validating the spec"
"$venv/bin/openapi-spec-validator" "$spec"

echo "-- generating: openapi-python-client"
"$venv/bin/openapi-python-client" generate --path "$spec" --output-path "$out/opc/simple_api_client" --meta none \
  --fail-on-warning > "$out/opc.log" 2>&1 || { cat "$out/opc.log"; exit 1; }

echo "-- generating: openapi-generator -g python (its validator on)"
"$venv/bin/openapi-generator-cli" generate -i "$spec" -g python -o "$out/ogen" \
  --package-name simple_api_client > "$out/ogen.log" 2>&1 || { cat "$out/ogen.log"; exit 1; }
# Two warnings are explained in the README and allowed: "Failed to get the schema name:
# null" (this generator prints it for any spec, even a one-schema one) and "Codegen property
# is null" (the contract's `{}` bodies: an object with no properties, whatever its shape).
if grep -E "^\[main\] (WARN|ERROR)" "$out/ogen.log" \
   | grep -vE "Failed to get the schema name: null|Codegen property is null \(e.g. map/dict of undefined type\)"; then
  echo "openapi-generator warned (see above): fix the spec or explain it in the README" >&2
  exit 1
fi

echo "-- generating: @hey-api/openapi-ts, then tsc --strict"
(cd "$here/ts" && rm -rf gen dist && npx openapi-ts -i "$spec" -o gen > "$out/ts.log" 2>&1 \
  && npx tsc -p . && npx esbuild scenario.ts --bundle --platform=node --format=esm \
       --outfile=dist/scenario.mjs --log-level=warning) || { cat "$out/ts.log"; exit 1; }

echo "-- starting simple-api"
tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export DATA_DIR="$tmp/data" KEYS_DIR="$tmp/keys" ARGON2_M_KIB=1024 ARGON2_T=1 AUDIT_LOG="$tmp/audit.log"
API_PORT="$port" "$bin" serve > "$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
export SIMPLE_API_URL="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$SIMPLE_API_URL/api/v1/status" > /dev/null && break; sleep 0.1; done
client="$("$bin" clients create --name sdk-tests --scope "users:read" 2>/dev/null)"
export CLIENT_ID="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")"
export CLIENT_SECRET="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")"

echo "-- scenarios"
PYTHONPATH="$out/opc" "$venv/bin/python" "$here/scenario_openapi_python_client.py"
PYTHONPATH="$out/ogen" "$venv/bin/python" "$here/scenario_openapi_generator.py"
(cd "$here/ts" && node dist/scenario.mjs)
