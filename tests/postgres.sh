# A throwaway PostgreSQL cluster for the scripts that need one (benchmarks, browser tests).
# Sourced, not run.
#
# start_postgres DIR: sets $pg_url to a database the caller may fill: DATABASE_URL if set,
# else a throwaway cluster from /usr/lib/postgresql/*/bin in DIR (apt-get install
# postgresql), run as the `postgres` user when this runs as root, with its default
# (durable) settings; `stop_postgres` ends it. DATABASE_URL is unset afterwards, so that a
# file-store server started next does not see it.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
as_postgres() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_postgres() {
  local dir="$1"
  pg_url="${DATABASE_URL:-}"
  pg_bin=""
  pg_dir="$dir/pg"
  unset DATABASE_URL
  [[ -n "$pg_url" ]] && return 0
  chmod 755 "$dir"
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1)"
  [[ -x "$pg_bin/initdb" ]] || { echo "no PostgreSQL: apt-get install postgresql, or set DATABASE_URL" >&2; exit 1; }
  mkdir -p "$pg_dir"
  [[ "$(id -u)" == 0 ]] && chown postgres "$pg_dir"
  local port; port="$(free_port)"
  as_postgres "$pg_bin/initdb" -A trust -U simple -E UTF8 -D "$pg_dir/data" > /dev/null
  as_postgres "$pg_bin/pg_ctl" start -w -D "$pg_dir/data" -l "$pg_dir/log" \
    -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1" > /dev/null
  pg_url="postgres://simple@127.0.0.1:$port/postgres"
}
stop_postgres() {
  if [[ -n "${pg_bin:-}" ]]; then as_postgres "$pg_bin/pg_ctl" stop -m immediate -D "$pg_dir/data" > /dev/null 2>&1 || true; fi
}
