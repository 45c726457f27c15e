#!/usr/bin/env bash
# Service-to-service paths (issue #16), side by side in one run: a server on the file store
# and a replica on PostgreSQL, each with a registered client; 16 concurrent connections
# (wrk) on GET /api/v1/status, the client_credentials grant (HTTP Basic) and the
# introspection of a client token, in alternating rounds. Prints req/s and p99 per store
# and the ratios the goals are stated in (introspection >= 0.5 x status, client_credentials
# >= 0.25 x status). PostgreSQL as in benches/postgres.sh.
# Usage: benches/service.sh [seconds per round, default 5] [rounds, default 3]
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${1:-5}"
rounds="${2:-3}"
tmp="$(mktemp -d)"
cleanup() {
  stop_both
  stop_postgres
  rm -rf "$tmp"
}
trap cleanup EXIT
start_postgres "$tmp"
start_both "$tmp"

# A client on each store (the CLI, as an operator would), and a wrk script per scenario.
client() {
  local store="$1"
  if [[ "$store" == file ]]; then
    DATA_DIR="$tmp/file/data" KEYS_DIR="$tmp/file/keys" "$bin" clients create --name bench --scope users:read 2> /dev/null
  else
    DATABASE_URL="$pg_url" DATA_DIR="$tmp/replica/data" KEYS_DIR="$tmp/replica/keys" "$bin" clients create --name bench --scope users:read 2> /dev/null
  fi
}
for store in file postgres; do
  read -r id secret < <(client "$store" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["client_id"], c["client_secret"])')
  basic="$(printf '%s:%s' "$id" "$secret" | base64 -w0)"
  token="$(curl -sf "${base[$store]}/api/v1/auth/token" -H "Authorization: Basic $basic" -d grant_type=client_credentials \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  for endpoint in token introspect; do
    body="grant_type=client_credentials"; [[ "$endpoint" == introspect ]] && body="token=$token"
    cat > "$tmp/$endpoint-$store.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
wrk.body = "$body"
LUA
  done
done

declare -A rps p99
run() {
  local name="$1"; shift
  local out; out="$(wrk -t2 -c16 -d"${secs}s" --latency "$@")"
  rps[$name]+="$(wrk_rps "$out") "; p99[$name]+="$(to_ms "$(wrk_pct "$out" 99%)") "
}
for round in $(seq "$rounds"); do
  for store in file postgres; do
    run "status $store" "${base[$store]}/api/v1/status"
    run "client_credentials $store" -s "$tmp/token-$store.lua" "${base[$store]}/api/v1/auth/token"
    run "introspect $store" -s "$tmp/introspect-$store.lua" "${base[$store]}/api/v1/auth/introspect"
  done
done

printf '\n%-28s %12s %10s   (medians of %s rounds of %ss, 16 connections)\n' scenario req/s p99 "$rounds" "$secs"
for store in file postgres; do
  for scenario in status client_credentials introspect; do
    name="$scenario $store"
    printf '%-28s %12.0f %8sms\n' "$name" "$(median ${rps[$name]})" "$(median ${p99[$name]})"
  done
done
echo
for store in file postgres; do
  status="$(median ${rps[status $store]})"
  echo "$store: introspect / status $(ratio "$(median ${rps[introspect $store]})" "$status") (goal >= 0.5),"\
    "client_credentials / status $(ratio "$(median ${rps[client_credentials $store]})" "$status") (goal >= 0.25)"
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
