#!/usr/bin/env bash
# Service-to-service paths (issue #16), side by side in one run: a server on the file store
# and a replica on PostgreSQL, each with two registered clients, one with a secret (HTTP
# Basic) and one per key algorithm (private_key_jwt: EdDSA, ES256, RS256); 16 concurrent connections
# (wrk) on GET /api/v1/status, the client_credentials grant and the introspection of a
# client token by each client, in alternating rounds. Each private_key_jwt request carries
# an assertion never used before (pre-signed by benches/assertions.py: wrk cannot sign), so
# the service verifies its signature and stores its jti, as it would in production. Prints
# req/s and p99 per store and the ratios the goals are stated in (introspection >= 0.5 x
# status, client_credentials >= 0.25 x status, private_key_jwt within 2x of the secret),
# and beside the last the floor one signature verification puts under it on this machine.
# Any answer but 200 fails the run. PostgreSQL as in benches/postgres.sh.
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
# One assertion's verification per algorithm (benches/verify.rs, one core, no HTTP), first,
# on a machine nothing else runs on yet.
declare -A verify_us
verify_out="$(cd "$root" && cargo bench --quiet --bench verify)"
while read -r alg us; do verify_us[$alg]="$us"; done <<< "$verify_out"
start_postgres "$tmp"
# Each client here sends millions of hour-long assertions, more than a real one should hold
# unexpired (MAX_CLIENT_ASSERTIONS, default four million): the limit is lifted.
export MAX_CLIENT_ASSERTIONS=1000000000
start_both "$tmp"

# The assertions' signer needs `cryptography` (a venv under target/ if the system lacks it).
python=python3
if ! python3 -c 'import cryptography' 2> /dev/null; then
  python="$root/target/bench-venv/bin/python"
  [[ -x "$python" ]] || { python3 -m venv "$root/target/bench-venv" && "$python" -m pip install -q cryptography; }
fi
assertion_type="urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
# Assertions one wrk run may use: more than the fastest run could send.
per_run=$((secs * 45000))

# Clients on each store (the CLI, as an operator would), and a wrk script per scenario.
cli() {
  local store="$1"; shift
  if [[ "$store" == file ]]; then
    DATA_DIR="$tmp/file/data" KEYS_DIR="$tmp/file/keys" "$bin" "$@" 2> /dev/null
  else
    DATABASE_URL="$pg_url" DATA_DIR="$tmp/replica/data" KEYS_DIR="$tmp/replica/keys" "$bin" "$@" 2> /dev/null
  fi
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
algs=(EdDSA ES256 RS256)
for alg in "${algs[@]}"; do
  [[ -n "${verify_us[$alg]:-}" ]] || { echo "benches/verify.rs printed no time for $alg:" >&2; echo "$verify_out" >&2; exit 1; }
done
openssl genpkey -algorithm ed25519 -out "$tmp/EdDSA.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ES256.pem"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/RS256.pem" 2> /dev/null
for alg in "${algs[@]}"; do openssl pkey -in "$tmp/$alg.pem" -pubout -out "$tmp/$alg.pub.pem"; done
declare -A key_client
for store in file postgres; do
  read -r id secret < <(cli "$store" clients create --name bench --scope users:read \
    | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["client_id"], c["client_secret"])')
  for alg in "${algs[@]}"; do
    key_client[$alg $store]="$(cli "$store" clients create --name "bench-$alg" --scope users:read --public-key "$tmp/$alg.pub.pem" | field client_id)"
  done
  basic="$(printf '%s:%s' "$id" "$secret" | base64 -w0)"
  token="$(curl -sf "${base[$store]}/api/v1/auth/token" -H "Authorization: Basic $basic" -d grant_type=client_credentials | field access_token)"
  for endpoint in token introspect; do
    body="grant_type=client_credentials"; [[ "$endpoint" == introspect ]] && body="token=$token"
    cat > "$tmp/$endpoint-secret-$store.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
wrk.body = "$body"
LUA
    # Each thread takes every other line of the run's file (no assertion is sent twice)
    # and builds its requests before the run, so that wrk, on the same cores, spends no
    # more per request than with a fixed one.
    cat > "$tmp/$endpoint-key-$store.lua" <<LUA
local threads = 0
function setup(thread) thread:set("part", threads); threads = threads + 1 end
function init(args)
  requests = {}
  local n = 0
  for line in io.lines("$tmp/assertions") do
    if n % 2 == part then
      requests[#requests + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"},
        "$body&client_assertion_type=$assertion_type&client_assertion=" .. line)
    end
    n = n + 1
  end
  i = 0
end
function request()
  i = i % #requests + 1
  return requests[i]
end
LUA
  done
done

declare -A rps p99
run() {
  local name="$1"; shift
  local out; out="$(wrk -t2 -c16 -d"${secs}s" --latency "$@")"
  if grep -q "Non-2xx" <<< "$out"; then echo "$name: answers other than 200:" >&2; echo "$out" >&2; exit 1; fi
  rps[$name]+="$(wrk_rps "$out") "; p99[$name]+="$(to_ms "$(wrk_pct "$out" 99%)") "
}
run_key() {
  local name="$1" store="$2" alg="$3"; shift 3
  "$python" "$root/benches/assertions.py" "$tmp/$alg.pem" "$alg" "${key_client[$alg $store]}" simple-api "$per_run" "$tmp/assertions"
  run "$name" "$@"
}
scenarios=(status client_credentials introspect)
for alg in "${algs[@]}"; do scenarios+=("client_credentials_$alg" "introspect_$alg"); done
for round in $(seq "$rounds"); do
  for store in file postgres; do
    url="${base[$store]}"
    run "status $store" "$url/api/v1/status"
    run "client_credentials $store" -s "$tmp/token-secret-$store.lua" "$url/api/v1/auth/token"
    run "introspect $store" -s "$tmp/introspect-secret-$store.lua" "$url/api/v1/auth/introspect"
    for alg in "${algs[@]}"; do
      run_key "client_credentials_$alg $store" "$store" "$alg" -s "$tmp/token-key-$store.lua" "$url/api/v1/auth/token"
      run_key "introspect_$alg $store" "$store" "$alg" -s "$tmp/introspect-key-$store.lua" "$url/api/v1/auth/introspect"
    done
  done
done

printf '\n%-36s %12s %10s   (medians of %s rounds of %ss, 16 connections)\n' scenario req/s p99 "$rounds" "$secs"
for store in file postgres; do
  for scenario in "${scenarios[@]}"; do
    name="$scenario $store"
    printf '%-36s %12.0f %8sms\n' "$name" "$(median ${rps[$name]})" "$(median ${p99[$name]})"
  done
done
echo
# The floor under "secret / private_key_jwt": a request with an assertion costs about what
# one with the secret costs (the same parsing, token and store work) plus one verification;
# with every core busy, as in these runs, the ratio then cannot go below
# 1 + verify_seconds x secret_req/s / cores.
cores="$(nproc)"
floor() { python3 -c "print(f'{1 + $1 * 1e-6 * $2 / $3:.2f}')"; }
echo "one assertion's verification on one core (benches/verify.rs): $(for alg in "${algs[@]}"; do printf '%s %s us  ' "$alg" "${verify_us[$alg]}"; done)"
m() { median ${rps[$1 $2]}; }
for store in file postgres; do
  status="$(m status $store)"
  echo "$store, secret: introspect / status $(ratio "$(m introspect $store)" "$status") (goal >= 0.5),"\
    "client_credentials / status $(ratio "$(m client_credentials $store)" "$status") (goal >= 0.25)"
  for alg in "${algs[@]}"; do
    echo "$store, private_key_jwt $alg: secret / private_key_jwt: client_credentials"\
      "$(ratio "$(m client_credentials $store)" "$(m client_credentials_$alg $store)")"\
      "(floor $(floor "${verify_us[$alg]}" "$(m client_credentials $store)" "$cores")),"\
      "introspect $(ratio "$(m introspect $store)" "$(m introspect_$alg $store)")"\
      "(floor $(floor "${verify_us[$alg]}" "$(m introspect $store)" "$cores")) (goal <= 2)"
  done
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
