#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary
# directory, listening on a free loopback port with a private socket directory,
# trust authentication, pg_stat_statements loaded. Installed with apt-get when the
# server binaries are missing.
#
# Sourced by scripts/test: defines start_postgres / stop_postgres; start_postgres
# exports SERVICEGROUP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres.
#
# Run standalone, so a test can own a server it may stop and start (the outage test):
#   scripts/lib/postgres.sh start DIR   # initdb into DIR (if empty) and start; prints the URL
#   scripts/lib/postgres.sh stop DIR    # stop (data kept: `start DIR` again restarts it)
#   scripts/lib/postgres.sh destroy DIR # stop and delete DIR
# DIR must be writable by the `postgres` user when run as root (it is chowned).
# SG_POSTGRES_SHARED_BUFFERS sets shared_buffers (default 128MB, PostgreSQL's own;
# scripts/bench: 4GB, so a fleet's table stays in the server's buffer cache).

if [ -z "${BASH_VERSION:-}" ]; then
  echo "postgres.sh needs bash" >&2
  exit 1
fi

_pg_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$_pg_here/common.sh"

# The directory holding initdb/pg_ctl/postgres: PATH first, then Debian's layout.
_pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

_pg_ensure_installed() {
  _pg_bindir >/dev/null && return 0
  echo "== PostgreSQL server binaries not found; installing postgresql with apt-get" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "error: PostgreSQL is missing and this is not root: install the postgresql package" >&2
    return 1
  fi
  if [ -z "${SG_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
    export SG_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql postgresql-contrib >&2 || return 1
  _pg_bindir >/dev/null
}

# Runs a command as the server's owner (root cannot run initdb / postgres).
_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    local cmd
    printf -v cmd '%q ' "$@"
    su postgres -s /bin/sh -c "$cmd"
  else
    "$@"
  fi
}

# _pg_start DIR: initdb DIR/data on first use, start the server, print its URL.
_pg_start() {
  local dir=$1
  _pg_ensure_installed || return 1
  local bin
  bin=$(_pg_bindir) || return 1
  mkdir -p "$dir" || return 1
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "error: no postgres user to run the server as" >&2; return 1; }
    chown postgres "$dir" || return 1
    chmod 755 "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    _pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || _pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { echo "error: initdb failed:" >&2; cat "$dir/initdb.log" >&2; return 1; }
    mkdir -p "$dir/socket"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/socket"; fi
  fi
  local port
  port=$(sticky_port "$dir") || return 1
  _pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=${SG_POSTGRES_SHARED_BUFFERS:-128MB} \
        -c shared_preload_libraries=pg_stat_statements" \
    start >"$dir/pg_ctl.log" 2>&1 \
    || { echo "error: pg_ctl start failed:" >&2; cat "$dir/pg_ctl.log" "$dir/data/server.log" >&2 2>/dev/null; return 1; }
  if ! SG_WAIT=30 wait_until _pg_as_owner "$bin/pg_ctl" -D "$dir/data" status; then
    echo "error: PostgreSQL in $dir did not come up" >&2
    return 1
  fi
  echo "postgres://postgres@127.0.0.1:$port/postgres"
}

# _pg_stop DIR: fast shutdown (clients are disconnected), data kept.
_pg_stop() {
  local dir=$1
  [ -f "$dir/data/PG_VERSION" ] || return 0
  local bin
  bin=$(_pg_bindir) || return 1
  _pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

start_postgres() {
  start_shared_server PostgreSQL SG_SKIP_POSTGRES SG_PG_DIR postgres SERVICEGROUP_TEST_POSTGRES_URL _pg_start
}

stop_postgres() {
  stop_shared_server SG_PG_DIR _pg_stop
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  server_main _pg_start _pg_stop "$@"
fi
