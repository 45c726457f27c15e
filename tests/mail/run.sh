#!/usr/bin/env bash
# Accounts by mail against a real SMTP server (aiosmtpd from PyPI, in a venv under
# target/), on the file store and on PostgreSQL (a throwaway cluster): smtp_flows.py.
# Usage: tests/mail/run.sh [path/to/simple-api]   (default target/debug/simple-api)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(realpath "${1:-$root/target/debug/simple-api}")"
venv="$root/target/mail-venv"
if ! "$venv/bin/python" -c 'import aiosmtpd, requests' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==1.4.6" "requests>=2.31"
fi
source "$root/tests/postgres.sh"  # start_postgres, stop_postgres
tmp="$(mktemp -d)"
trap 'stop_postgres; rm -rf "$tmp"' EXIT
echo "-- file store"
"$venv/bin/python" "$here/smtp_flows.py" "$bin"
echo "-- PostgreSQL"
start_postgres "$tmp"
"$venv/bin/python" "$here/smtp_flows.py" "$bin" "$pg_url"
echo "-- mail tests passed"
