# Shared by the benchmark scripts: tools, the release build, starting the server, and
# reading wrk's output. Sourced, not run.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release/simple-api"
command -v wrk > /dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
(cd "$root" && cargo build --release --quiet)

source "$root/tests/postgres.sh"  # free_port, start_postgres, stop_postgres

# start_server DIR PORT [VAR=value...]: starts the release binary on DIR's store and keys,
# waits for its first answer, and sets $server_pid and $startup_s (spawn to first 200).
start_server() {
  local dir="$1" port="$2"; shift 2
  local began; began="$(date +%s.%N)"
  env DATA_DIR="$dir/data" KEYS_DIR="$dir/keys" AUDIT_LOG="$dir/audit.log" API_PORT="$port" \
    LOGIN_MAX_FAILURES=1000000 "$@" "$bin" serve >> "$dir/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 3000); do
    curl -sf "http://127.0.0.1:$port/api/v1/status" > /dev/null && break
    kill -0 "$server_pid" 2> /dev/null || { cat "$dir/server.log"; return 1; }
    sleep 0.01
  done
  startup_s="$(python3 -c "import time; print(f'{time.time() - $began:.2f}')")"
}

stop_server() {
  [[ -n "${server_pid:-}" ]] || return 0
  kill "$server_pid" 2> /dev/null && wait "$server_pid" 2> /dev/null || true
  server_pid=""
}

rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# token BASE EMAIL PASSWORD: an access token from the password grant.
token() {
  curl -sf "$1/api/v1/auth/token" -d grant_type=password --data-urlencode "username=$2" \
    --data-urlencode "password=$3" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# From one wrk --latency output: req/s, p50 and p99 (wrk prints 752.00us / 2.76ms / 1.02s).
wrk_rps() { awk '/Requests\/sec/ {print $2}' <<< "$1"; }
wrk_pct() { awk -v p="$2" '$1==p {print $2}' <<< "$1"; }
to_ms() {
  python3 -c '
import re, sys
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
m = re.fullmatch(r"([\d.]+)(us|ms|s)", sys.argv[1])
print(f"{float(m.group(1)) * scale[m.group(2)]:.2f}" if m else "nan")' "$1"
}
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.2f}")' "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

# login_lua FILE: a wrk script posting the password grant for bench@example.com.
login_lua() {
  cat > "$1" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=password&username=bench%40example.com&password=bench-password-1"
LUA
}


# start_both DIR: a server on the file store and a replica on PostgreSQL ($pg_url), side
# by side; sets base[file] and base[postgres]; `stop_both` ends them.
start_both() {
  local dir="$1" file_port pg_port
  file_port="$(free_port)"; pg_port="$(free_port)"
  mkdir -p "$dir/file" "$dir/replica"
  start_server "$dir/file" "$file_port"; file_pid="$server_pid"; server_pid=""
  start_server "$dir/replica" "$pg_port" DATABASE_URL="$pg_url"; pg_pid="$server_pid"; server_pid=""
  declare -gA base
  base[file]="http://127.0.0.1:$file_port"; base[postgres]="http://127.0.0.1:$pg_port"
}
stop_both() {
  [[ -n "${pg_pid:-}" ]] && kill "$pg_pid" 2> /dev/null || true
  [[ -n "${file_pid:-}" ]] && kill "$file_pid" 2> /dev/null || true
}
