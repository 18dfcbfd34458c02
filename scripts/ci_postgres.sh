#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the sweep's concurrency test and print its URL (last line
# of stdout), e.g.  postgresql://tunewise@127.0.0.1:54329/tunewise
#
#   url=$(scripts/ci_postgres.sh | tail -1)
#   TUNEWISE_TEST_PG_URL=$url .venv/bin/pytest tests/sweep -m postgres
#   scripts/ci_postgres.sh stop        # stop the server started from the same PGDATA
#
# Installs the Debian package `postgresql` (apt-get install -y, also where it is present, so CI always
# has the distribution's current server), then runs initdb/pg_ctl as an unprivileged user — initdb
# refuses to run as root — with its data folder, socket and log under $TUNEWISE_PG_DIR (default
# /tmp/tunewise-pg), listening on 127.0.0.1:$TUNEWISE_PG_PORT (default 54329) with trust
# authentication for local connections only. Logs go to stderr; stdout carries only the URL.
set -euo pipefail
dir="${TUNEWISE_PG_DIR:-/tmp/tunewise-pg}"
port="${TUNEWISE_PG_PORT:-54329}"
pg_user="${TUNEWISE_PG_OS_USER:-postgres}"  # the unprivileged OS user that owns the server when run as root
db=tunewise

say() { echo "[ci_postgres] $*" >&2; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$pg_user" -- "$@"
  else
    "$@"
  fi
}

find_bin() {
  local name=$1 found
  found=$(ls -1 /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$found" ] || found=$(command -v "$name" || true)
  [ -n "$found" ] || { say "no $name found after installing postgresql"; exit 1; }
  echo "$found"
}

if [ "${1:-}" = stop ]; then
  as_owner "$(find_bin pg_ctl)" -D "$dir/data" -m fast stop >&2 || true
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  say "apt-get install -y postgresql"
  if ! apt-get install -y -q postgresql >&2; then
    apt-get update -q >&2 && apt-get install -y -q postgresql >&2
  fi
  id "$pg_user" >/dev/null 2>&1 || useradd --system --create-home "$pg_user"
elif ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "postgresql is not installed and this user cannot apt-get install it (run as root, or install it)"
  exit 1
fi

initdb=$(find_bin initdb)
pg_ctl=$(find_bin pg_ctl)
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown "$pg_user" "$dir"

if as_owner "$pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  say "already running in $dir/data"
else
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    say "initdb $dir/data"
    as_owner "$initdb" -D "$dir/data" -U "$db" --auth=trust -E UTF8 >&2
  fi
  say "starting on 127.0.0.1:$port (log: $dir/server.log)"
  as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >&2
fi

psql=$(find_bin psql)
if ! as_owner "$psql" -h 127.0.0.1 -p "$port" -U "$db" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
  as_owner "$psql" -h 127.0.0.1 -p "$port" -U "$db" -d postgres -c "CREATE DATABASE $db" >&2
fi
echo "postgresql://$db@127.0.0.1:$port/$db"
