#!/usr/bin/env bash
# Load benchmark: builds the release binary, starts it on loopback with a temp store, and
# drives it with wrk (installed with apt-get if missing). Prints req/s, p50 and p99 per
# scenario, and the ratios the performance goals are stated in, measured side by side in
# one run (the machines are shared and noisy: compare ratios, not absolute numbers).
# Usage: benches/load.sh [seconds per round, default 5] [rounds, default 3]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
rounds="${2:-3}"
command -v wrk > /dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
(cd "$root" && cargo build --release --quiet)
bin="$root/target/release/simple-api"
tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
DATA_DIR="$tmp/data" KEYS_DIR="$tmp/keys" AUDIT_LOG="$tmp/audit.log" API_PORT="$port" \
  LOGIN_MAX_FAILURES=1000000 "$bin" serve > "$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do curl -sf "$base/api/v1/status" > /dev/null && break; sleep 0.1; done

curl -sf "$base/api/v1/users" -H 'Content-Type: application/json' \
  -d '{"email": "bench@example.com", "password": "bench-password-1"}' > /dev/null
token="$(curl -sf "$base/api/v1/auth/token" -d grant_type=password -d username=bench@example.com \
  -d password=bench-password-1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

cat > "$tmp/put.lua" <<'LUA'
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"first_name": "n' .. counter .. '"}')
end
LUA
cat > "$tmp/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=password&username=bench%40example.com&password=bench-password-1"
LUA

# "name|wrk arguments"; every round runs every scenario, so noise hits them alike.
scenarios=(
  "status|-c64 $base/api/v1/status"
  "me (bearer)|-c64 -H 'Authorization: Bearer $token' $base/api/v1/users/me"
  "update (fsync)|-c64 -s $tmp/put.lua -H 'Authorization: Bearer $token' $base/api/v1/users/me"
  "update, 1 client|-c1 -t1 -s $tmp/put.lua -H 'Authorization: Bearer $token' $base/api/v1/users/me"
  "login (argon2)|-c8 -s $tmp/login.lua $base/api/v1/auth/token"
)
declare -A rps p50 p99
for round in $(seq "$rounds"); do
  for entry in "${scenarios[@]}"; do
    name="${entry%%|*}"; args="${entry#*|}"
    threads="-t2"; [[ "$args" == *"-t1"* ]] && threads=""
    out="$(eval wrk $threads -d"${secs}s" --latency $args)"
    rps[$name]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    p50[$name]+="$(echo "$out" | awk '$1=="50%" {print $2}') "
    p99[$name]+="$(echo "$out" | awk '$1=="99%" {print $2}') "
  done
done
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.0f}")' $1; }
# wrk prints latencies as 752.00us / 2.76ms / 1.02s: the median, in milliseconds.
median_ms() {
  python3 -c '
import re, statistics, sys
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
values = [float(m.group(1)) * scale[m.group(2)] for m in (re.fullmatch(r"([\d.]+)(us|ms|s)", x) for x in sys.argv[1:]) if m]
print(f"{statistics.median(values):.2f}ms")' $1
}
printf '\n%-16s %12s %10s %10s   (medians of %s rounds of %ss)\n' scenario req/s p50 p99 "$rounds" "$secs"
for entry in "${scenarios[@]}"; do
  name="${entry%%|*}"
  printf '%-16s %12s %10s %10s\n' "$name" "$(median "${rps[$name]}")" "$(median_ms "${p50[$name]}")" "$(median_ms "${p99[$name]}")"
done
# /me while a login storm keeps every core hashing.
wrk -t1 -c16 -d"$((secs + 2))s" -s "$tmp/login.lua" "$base/api/v1/auth/token" > /dev/null &
storm=$!
sleep 1
during="$(wrk -t1 -c16 -d"${secs}s" --latency -H "Authorization: Bearer $token" "$base/api/v1/users/me")"
wait $storm
storm_p99="$(echo "$during" | awk '$1=="99%" {print $2}')"
storm_rps="$(echo "$during" | awk '/Requests\/sec/ {print $2}')"

status="$(median "${rps[status]}")"; me="$(median "${rps[me (bearer)]}")"
many="$(median "${rps[update (fsync)]}")"; one="$(median "${rps[update, 1 client]}")"
echo
echo "me / status: $(python3 -c "print(f'{$me/$status:.2f}')")   (goal >= 0.80)"
echo "update, 64 clients / 1 client (one fsync per write): $(python3 -c "print(f'{$many/$one:.1f}')")   (goal >= 10)"
echo "me during a login storm: p99 $storm_p99 at $storm_rps req/s   (goal p99 <= 10 ms)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
