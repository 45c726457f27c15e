#!/usr/bin/env bash
# PostgreSQL vs file store, side by side in one run (issue #9): one server on the file
# store and one replica on PostgreSQL, both on loopback, driven by wrk in alternating
# rounds. Prints `me` (an authenticated read: no database round trip once the replica's
# cache holds the user) and the password grant (argon2, then a session written to the
# store) on each, and their ratios.
# PostgreSQL: DATABASE_URL if set (a database the script may fill), else a throwaway
# cluster from /usr/lib/postgresql/*/bin (apt-get install postgresql), run as the
# `postgres` user when this runs as root, with its default (durable) settings.
# Usage: benches/postgres.sh [seconds per round, default 5] [rounds, default 3]
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${1:-5}"
rounds="${2:-3}"
tmp="$(mktemp -d)"
cleanup() {
  stop_server
  stop_both
  rm -rf "$tmp"
}
trap cleanup EXIT
start_postgres "$tmp"

start_both "$tmp"
declare -A tok
for store in file postgres; do
  curl -sf "${base[$store]}/api/v1/users" -H 'Content-Type: application/json' \
    -d '{"email": "bench@example.com", "password": "bench-password-1"}' > /dev/null
  tok[$store]="$(token "${base[$store]}" bench@example.com bench-password-1)"
done
login_lua "$tmp/login.lua"

declare -A rps p99
for round in $(seq "$rounds"); do
  for store in file postgres; do
    out="$(wrk -t2 -c64 -d"${secs}s" --latency -H "Authorization: Bearer ${tok[$store]}" "${base[$store]}/api/v1/users/me")"
    rps[me $store]+="$(wrk_rps "$out") "; p99[me $store]+="$(to_ms "$(wrk_pct "$out" 99%)") "
    out="$(wrk -t2 -c8 -d"${secs}s" --latency -s "$tmp/login.lua" "${base[$store]}/api/v1/auth/token")"
    rps[login $store]+="$(wrk_rps "$out") "; p99[login $store]+="$(to_ms "$(wrk_pct "$out" 99%)") "
  done
done

printf '\n%-18s %12s %10s   (medians of %s rounds of %ss)\n' scenario req/s p99 "$rounds" "$secs"
for name in "me file" "me postgres" "login file" "login postgres"; do
  printf '%-18s %12.0f %8sms\n' "$name" "$(median ${rps[$name]})" "$(median ${p99[$name]})"
done
echo
echo "me on PostgreSQL / me on the file store: $(ratio "$(median ${rps[me postgres]})" "$(median ${rps[me file]})")   (goal >= 0.80)"
echo "logins on PostgreSQL / on the file store: $(ratio "$(median ${rps[login postgres]})" "$(median ${rps[login file]})")   (goal 0.90 - 1.10)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
