#!/usr/bin/env bash
# A throwaway MariaDB server for tests: mariadb-install-db into a temporary
# directory, mariadbd listening on a free loopback port with a private socket,
# `root@127.0.0.1` without a password, a `servicegroup` database. Installed with
# apt-get (mariadb-server) when missing.
#
# Sourced by scripts/test: defines start_mariadb / stop_mariadb; start_mariadb
# exports SERVICEGROUP_TEST_MARIADB_URL=mysql://root@127.0.0.1:PORT/servicegroup.
# With SG_TLS_DIR set (scripts/lib/tls.sh's start_tls) the shared server also has TLS
# on (its certificate is valid for `localhost` only) and a user `sg_tls` with a
# password that must use TLS (`REQUIRE SSL`); then
# SERVICEGROUP_TEST_MARIADB_TLS_URL=mysql://sg_tls:PASSWORD@localhost:PORT/servicegroup
# is exported too. root keeps plain TCP.
#
# Run standalone, so a test can own a server it may stop and start (the outage test):
#   scripts/lib/mariadb.sh start DIR   # install into DIR (if empty) and start; prints the URL
#   scripts/lib/mariadb.sh stop DIR    # stop (data kept: `start DIR` again restarts it, same port)
#   scripts/lib/mariadb.sh destroy DIR # stop and delete DIR
# SG_MARIADB_BUFFER_POOL sets innodb_buffer_pool_size (default 128M; scripts/bench: 2G).
# The server runs as root (`--user=root`) when started by root, as the caller otherwise.

if [ -z "${BASH_VERSION:-}" ]; then
  echo "mariadb.sh needs bash" >&2
  exit 1
fi

_mdb_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$_mdb_here/common.sh"

# Finds a server program on PATH or in the usual sbin directories.
_mdb_find() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    local d
    for d in /usr/sbin /usr/local/sbin /usr/libexec /sbin; do
      if [ -x "$d/$name" ]; then echo "$d/$name"; return 0; fi
    done
  done
  return 1
}

_mdb_ensure_installed() {
  _mdb_find mariadbd mysqld >/dev/null && _mdb_find mariadb-install-db mysql_install_db >/dev/null \
    && _mdb_find mariadb-admin mysqladmin >/dev/null && return 0
  echo "== MariaDB server not found; installing mariadb-server with apt-get" >&2
  PATH="$PATH:/usr/sbin" ensure_command mariadbd mariadb-server mariadb-client || return 1
  _mdb_find mariadbd mysqld >/dev/null
}

# The client as root over the server's private socket.
_mdb_admin() {
  local dir=$1; shift
  "$(_mdb_find mariadb-admin mysqladmin)" --no-defaults --socket="$dir/mysqld.sock" -uroot "$@"
}
_mdb_sql() {
  local dir=$1; shift
  "$(_mdb_find mariadb mysql)" --no-defaults --socket="$dir/mysqld.sock" -uroot -e "$*"
}

_mdb_running() {
  local dir=$1
  [ -f "$dir/mysqld.pid" ] && kill -0 "$(cat "$dir/mysqld.pid")" 2>/dev/null
}

# _mdb_start DIR [TLS_DIR]: install into DIR/data on first use, start the server,
# print its URL. With TLS_DIR (scripts/lib/tls.sh's files): TLS on, the `sg_tls`
# user, and DIR/tls-url holding its URL.
_mdb_start() {
  local dir=$1 tls=${2:-}
  _mdb_ensure_installed || return 1
  mkdir -p "$dir" || return 1
  dir=$(cd "$dir" && pwd)
  local user_opt=()
  if [ "$(id -u)" = 0 ]; then user_opt=(--user=root); fi
  # A private tmpdir: servers bootstrapping at once in a shared /tmp remove each
  # other's temporary tables (mariadb-install-db then fails with "Unknown table
  # 'mysql.tmp_proxies_priv'"; seen in CI when two tests started servers together).
  mkdir -p "$dir/tmp" || return 1
  local tmpdir_opt=(--tmpdir="$dir/tmp")
  if [ ! -d "$dir/data/mysql" ]; then
    "$(_mdb_find mariadb-install-db mysql_install_db)" --no-defaults --datadir="$dir/data" \
      "${tmpdir_opt[@]}" "${user_opt[@]}" --auth-root-authentication-method=normal --skip-test-db \
      --skip-name-resolve --innodb-log-file-size=16M >"$dir/install.log" 2>&1 \
      || { echo "error: mariadb-install-db failed:" >&2; cat "$dir/install.log" >&2; return 1; }
  fi
  local port
  port=$(sticky_port "$dir") || return 1
  local ssl_opts=()
  if [ -n "$tls" ]; then
    ssl_opts=(--ssl-ca="$tls/ca.crt" --ssl-cert="$tls/server.crt" --ssl-key="$tls/server.key")
  fi
  if ! _mdb_running "$dir"; then
    # Durability is not wanted here (like fsync=off for PostgreSQL): a throwaway server.
    setsid "$(_mdb_find mariadbd mysqld)" --no-defaults --datadir="$dir/data" \
      "${tmpdir_opt[@]}" "${user_opt[@]}" \
      --bind-address=127.0.0.1 --port="$port" --socket="$dir/mysqld.sock" \
      --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" --skip-name-resolve \
      --skip-log-bin --innodb-buffer-pool-size="${SG_MARIADB_BUFFER_POOL:-128M}" --innodb-log-file-size=16M \
      --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --sync-binlog=0 \
      --max-connections=500 --character-set-server=utf8mb4 --collation-server=utf8mb4_bin \
      "${ssl_opts[@]}" </dev/null >"$dir/mariadbd.out" 2>&1 &
    if ! SG_WAIT=60 wait_until _mdb_admin "$dir" --connect-timeout=2 ping; then
      echo "error: MariaDB in $dir did not come up:" >&2
      cat "$dir/error.log" "$dir/mariadbd.out" >&2 2>/dev/null
      return 1
    fi
  fi
  # TCP access for the tests: root@127.0.0.1 without a password, and a database.
  _mdb_sql "$dir" "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
    CREATE DATABASE IF NOT EXISTS servicegroup;" \
    || { echo "error: cannot set up access to MariaDB in $dir" >&2; return 1; }
  if [ -n "$tls" ]; then
    local password host sql=""
    password=$(cat "$tls/password") || return 1
    # TCP clients are matched by address (--skip-name-resolve); `localhost` resolves
    # to 127.0.0.1 (or ::1).
    for host in 127.0.0.1 ::1 localhost; do
      sql+="CREATE USER IF NOT EXISTS 'sg_tls'@'$host' IDENTIFIED BY '$password' REQUIRE SSL;
        ALTER USER 'sg_tls'@'$host' IDENTIFIED BY '$password' REQUIRE SSL;
        GRANT ALL PRIVILEGES ON *.* TO 'sg_tls'@'$host';"
    done
    _mdb_sql "$dir" "$sql" \
      || { echo "error: cannot create the TLS user in MariaDB in $dir" >&2; return 1; }
    echo "mysql://sg_tls:$password@localhost:$port/servicegroup" >"$dir/tls-url"
  fi
  echo "mysql://root@127.0.0.1:$port/servicegroup"
}

# The shared server: with TLS when scripts/lib/tls.sh made its files.
_mdb_start_shared() {
  _mdb_start "$1" "${SG_TLS_DIR:-}"
}

# _mdb_stop DIR: clean shutdown (clients are disconnected), data kept.
_mdb_stop() {
  local dir=$1
  _mdb_running "$dir" || return 0
  local pid
  pid=$(cat "$dir/mysqld.pid")
  _mdb_admin "$dir" --connect-timeout=5 shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  # Wait for the process to exit (the port and socket are free afterwards).
  local deadline=$(( $(date +%s) + 60 ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then kill -9 "$pid" 2>/dev/null; break; fi
    sleep 0.1
  done
}

start_mariadb() {
  start_shared_server MariaDB SG_SKIP_MARIADB SG_MDB_DIR mariadb SERVICEGROUP_TEST_MARIADB_URL _mdb_start_shared \
    || return 1
  if [ -n "${SG_MDB_DIR:-}" ] && [ -n "${SG_TLS_DIR:-}" ]; then
    SERVICEGROUP_TEST_MARIADB_TLS_URL=$(cat "$SG_MDB_DIR/tls-url") || return 1
    export SERVICEGROUP_TEST_MARIADB_TLS_URL
    echo "== MariaDB TLS-only user sg_tls on localhost (certificate for localhost only)" >&2
  fi
}

stop_mariadb() {
  stop_shared_server SG_MDB_DIR _mdb_stop
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  server_main _mdb_start _mdb_stop "$@"
fi
