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
chmod 755 "$tmp"
pg_bin=""
cleanup() {
  stop_server
  [[ -n "${pg_pid:-}" ]] && kill "$pg_pid" 2> /dev/null || true
  [[ -n "${file_pid:-}" ]] && kill "$file_pid" 2> /dev/null || true
  if [[ -n "$pg_bin" ]]; then as_postgres "$pg_bin/pg_ctl" stop -m immediate -D "$tmp/pg/data" > /dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
as_postgres() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The file-store server must not see DATABASE_URL: keep it for the replica only.
pg_url="${DATABASE_URL:-}"
unset DATABASE_URL
if [[ -z "$pg_url" ]]; then
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1)"
  [[ -x "$pg_bin/initdb" ]] || { echo "no PostgreSQL: apt-get install postgresql, or set DATABASE_URL" >&2; exit 1; }
  mkdir -p "$tmp/pg"
  [[ "$(id -u)" == 0 ]] && chown postgres "$tmp/pg"
  pg_port="$(free_port)"
  as_postgres "$pg_bin/initdb" -A trust -U simple -E UTF8 -D "$tmp/pg/data" > /dev/null
  as_postgres "$pg_bin/pg_ctl" start -w -D "$tmp/pg/data" -l "$tmp/pg/log" \
    -o "-p $pg_port -k $tmp/pg -c listen_addresses=127.0.0.1" > /dev/null
  pg_url="postgres://simple@127.0.0.1:$pg_port/postgres"
fi

file_port="$(free_port)"; pg_port_api="$(free_port)"
mkdir -p "$tmp/file" "$tmp/replica"
start_server "$tmp/file" "$file_port"; file_pid="$server_pid"; server_pid=""
start_server "$tmp/replica" "$pg_port_api" DATABASE_URL="$pg_url"; pg_pid="$server_pid"; server_pid=""

declare -A base tok
base[file]="http://127.0.0.1:$file_port"; base[postgres]="http://127.0.0.1:$pg_port_api"
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
