#!/usr/bin/env bash
# Load benchmark: builds the release binary, starts it on loopback with a temp store, and
# drives it with wrk (installed with apt-get if missing). Prints req/s, p50 and p99 per
# scenario, and the ratios the performance goals are stated in, measured side by side in
# one run (the machines are shared and noisy: compare ratios, not absolute numbers).
# Usage: benches/load.sh [seconds per round, default 5] [rounds, default 3]
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${1:-5}"
rounds="${2:-3}"
tmp="$(mktemp -d)"
trap 'stop_server; rm -rf "$tmp"' EXIT
port="$(free_port)"
base="http://127.0.0.1:$port"
start_server "$tmp" "$port"

curl -sf "$base/api/v1/users" -H 'Content-Type: application/json' \
  -d '{"email": "bench@example.com", "password": "bench-password-1"}' > /dev/null
token="$(token "$base" bench@example.com bench-password-1)"
# Baseline, while the server is idle: one argon2 hash with its settings (best of three).
hash_ms="$("$bin" passwords calibrate --target-ms 1 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["current_ms"], 1))')"

cat > "$tmp/put.lua" <<'LUA'
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"first_name": "n' .. counter .. '"}')
end
LUA
login_lua "$tmp/login.lua"

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
    rps[$name]+="$(wrk_rps "$out") "
    p50[$name]+="$(to_ms "$(wrk_pct "$out" 50%)") "
    p99[$name]+="$(to_ms "$(wrk_pct "$out" 99%)") "
  done
done
printf '\n%-16s %12s %10s %10s   (medians of %s rounds of %ss)\n' scenario req/s p50 p99 "$rounds" "$secs"
for entry in "${scenarios[@]}"; do
  name="${entry%%|*}"
  printf '%-16s %12.0f %8sms %8sms\n' "$name" "$(median ${rps[$name]})" "$(median ${p50[$name]})" "$(median ${p99[$name]})"
done

# /me while a login storm keeps every core hashing.
wrk -t1 -c16 -d"$((secs + 2))s" -s "$tmp/login.lua" "$base/api/v1/auth/token" > /dev/null &
storm=$!
sleep 1
during="$(wrk -t1 -c16 -d"${secs}s" --latency -H "Authorization: Bearer $token" "$base/api/v1/users/me")"
wait $storm

# Baseline: appends with one fdatasync each, on the store's disk.
fsync_rate="$(python3 - "$tmp/data" <<'PY'
import os, sys, time
fd = os.open(os.path.join(sys.argv[1], "fsync-probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
n, began = 0, time.time()
while time.time() - began < 2:
    os.write(fd, b"x" * 300 + b"\n"); os.fdatasync(fd); n += 1
print(f"{n / (time.time() - began):.0f}")
PY
)"

status="$(median ${rps[status]})"; me="$(median ${rps[me (bearer)]})"
many="$(median ${rps[update (fsync)]})"; one="$(median ${rps[update, 1 client]})"
logins="$(median ${rps[login (argon2)]})"
cores="$(nproc)"
ceiling="$(python3 -c "print(f'{$cores * 1000 / $hash_ms:.0f}')")"
echo
echo "me / status: $(ratio "$me" "$status")   (goal >= 0.80)"
echo "update, 64 clients / 1 client (each write waits for its own fsync): $(ratio "$many" "$one")   (goal >= 10)"
echo "  (this disk: $fsync_rate appends+fdatasync/s from one thread; 64 clients acknowledged $(printf '%.0f' "$many") writes/s)"
echo "logins / ($cores cores x 1000 / $hash_ms ms per hash = $ceiling/s): $(ratio "$logins" "$ceiling")   (goal >= 0.85)"
echo "me during a login storm: p99 $(to_ms "$(wrk_pct "$during" 99%)")ms at $(wrk_rps "$during") req/s   (goal p99 <= 10 ms)"
echo "machine: $cores cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
