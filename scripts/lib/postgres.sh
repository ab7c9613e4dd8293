#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary
# directory, listening on a free loopback port with a private socket directory,
# trust authentication, pg_stat_statements loaded. Installed with apt-get when the
# server binaries are missing.
#
# Sourced by scripts/test: defines start_postgres / stop_postgres; start_postgres
# exports SERVICEGROUP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres.
# With SG_TLS_DIR set (scripts/lib/tls.sh's start_tls) the shared server also has TLS
# on (its certificate is valid for `localhost` only) and a TLS-only superuser `sg_tls`
# (password authentication; `hostnossl … reject`, so plain TCP is refused for it);
# then SERVICEGROUP_TEST_POSTGRES_TLS_URL=postgres://sg_tls:PASSWORD@localhost:PORT/postgres
# is exported too. The other users keep plain TCP (and TLS when a client prefers it).
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

# _pg_start DIR [TLS_DIR]: initdb DIR/data on first use, start the server, print its
# URL. With TLS_DIR (scripts/lib/tls.sh's files): TLS on, the `sg_tls` user, and
# DIR/tls-url holding its URL.
_pg_start() {
  local dir=$1 tls=${2:-}
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
  local ssl_opts=""
  if [ -n "$tls" ]; then
    _pg_tls_setup "$dir" "$tls" || return 1
    ssl_opts="-c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
  fi
  _pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=${SG_POSTGRES_SHARED_BUFFERS:-128MB} \
        -c shared_preload_libraries=pg_stat_statements $ssl_opts" \
    start >"$dir/pg_ctl.log" 2>&1 \
    || { echo "error: pg_ctl start failed:" >&2; cat "$dir/pg_ctl.log" "$dir/data/server.log" >&2 2>/dev/null; return 1; }
  if ! SG_WAIT=30 wait_until _pg_as_owner "$bin/pg_ctl" -D "$dir/data" status; then
    echo "error: PostgreSQL in $dir did not come up" >&2
    return 1
  fi
  if [ -n "$tls" ]; then
    local password psql="$bin/psql"
    [ -x "$psql" ] || psql=$(command -v psql) || { echo "error: no psql" >&2; return 1; }
    password=$(cat "$tls/password") || return 1
    # Idempotent: a restarted server keeps its role; the password is set again.
    _pg_as_owner "$psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/socket" -p "$port" -U postgres \
      -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sg_tls') THEN CREATE ROLE sg_tls LOGIN SUPERUSER; END IF; END \$\$;" \
      -c "ALTER ROLE sg_tls PASSWORD '$password'" >"$dir/tls-role.log" 2>&1 \
      || { echo "error: cannot create the TLS user:" >&2; cat "$dir/tls-role.log" >&2; return 1; }
    echo "postgres://sg_tls:$password@localhost:$port/postgres" >"$dir/tls-url"
  fi
  echo "postgres://postgres@127.0.0.1:$port/postgres"
}

# _pg_tls_setup DIR TLS_DIR: the server's certificate and key in DIR/tls (owned by
# the server's user, key mode 600, as PostgreSQL demands), and pg_hba.conf rules that
# let `sg_tls` in over TLS with its password only (first match wins: prepended).
_pg_tls_setup() {
  local dir=$1 tls=$2
  mkdir -p "$dir/tls" || return 1
  cp "$tls/server.crt" "$tls/server.key" "$dir/tls/" || return 1
  chmod 600 "$dir/tls/server.key"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir/tls" || return 1; fi
  local hba="$dir/data/pg_hba.conf"
  if ! grep -q '^hostssl all sg_tls' "$hba"; then
    { printf '%s\n' 'hostssl all sg_tls 127.0.0.1/32 scram-sha-256' \
        'hostnossl all sg_tls 127.0.0.1/32 reject'; cat "$hba"; } >"$hba.new" \
      && cat "$hba.new" >"$hba" && rm -f "$hba.new" || return 1
  fi
}

# The shared server: with TLS when scripts/lib/tls.sh made its files.
_pg_start_shared() {
  _pg_start "$1" "${SG_TLS_DIR:-}"
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
  start_shared_server PostgreSQL SG_SKIP_POSTGRES SG_PG_DIR postgres SERVICEGROUP_TEST_POSTGRES_URL _pg_start_shared \
    || return 1
  if [ -n "${SG_PG_DIR:-}" ] && [ -n "${SG_TLS_DIR:-}" ]; then
    SERVICEGROUP_TEST_POSTGRES_TLS_URL=$(cat "$SG_PG_DIR/tls-url") || return 1
    export SERVICEGROUP_TEST_POSTGRES_TLS_URL
    echo "== PostgreSQL TLS-only user sg_tls on localhost (certificate for localhost only)" >&2
  fi
}

stop_postgres() {
  stop_shared_server SG_PG_DIR _pg_stop
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  server_main _pg_start _pg_stop "$@"
fi
