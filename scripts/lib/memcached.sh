#!/usr/bin/env bash
# memcached for tests and benchmarks: throwaway servers on free loopback ports.
#
# Sourced by scripts/test: defines start_memcached / stop_memcached.
#   start_memcached   starts THREE servers under $SG_RUN_DIR/memcached-N and exports
#                     SERVICEGROUP_TEST_MEMCACHED_SERVERS=127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#                     (the first one alone serves the single-server tests).
#   stop_memcached    stops them.
#
# Run directly, for tests that need a server of their own (restart / outage tests
# must never stop the shared ones other tests use at the same time):
#   scripts/lib/memcached.sh start DIR PORT   start one server on 127.0.0.1:PORT, pid in DIR
#   scripts/lib/memcached.sh stop DIR         stop the server started in DIR
#
# memcached is installed with apt-get when missing (as root). Under CI=true a server
# that cannot start fails the run.

_sg_mc_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$_sg_mc_lib_dir/common.sh"

# Memory per server (MiB); small, these are test servers.
SG_MEMCACHED_MEMORY=${SG_MEMCACHED_MEMORY:-256}

# memcached_start_one DIR PORT: one daemonized server on 127.0.0.1:PORT; pid file in DIR.
memcached_start_one() {
  local dir=$1 port=$2
  ensure_command memcached memcached || return 1
  mkdir -p "$dir" || return 1
  # memcached writes its pid file after dropping to `nobody` when run as root,
  # so the directory must be writable by that user.
  chmod 777 "$dir"
  rm -f "$dir/memcached.pid"
  local user_args=()
  [ "$(id -u)" = 0 ] && user_args=(-u nobody)
  memcached "${user_args[@]}" -l 127.0.0.1 -p "$port" -U 0 -m "$SG_MEMCACHED_MEMORY" \
    -d -P "$dir/memcached.pid" 2>"$dir/memcached.log" || {
      echo "error: memcached on port $port did not start: $(cat "$dir/memcached.log" 2>/dev/null)" >&2
      return 1
    }
  echo "$port" > "$dir/port"
  if ! wait_until memcached_answers "$port"; then
    echo "error: memcached on 127.0.0.1:$port does not answer" >&2
    return 1
  fi
  # The pid file appears shortly after the daemon answers.
  wait_until test -s "$dir/memcached.pid" || {
    echo "error: memcached on port $port wrote no pid file in $dir" >&2
    return 1
  }
}

# memcached_answers PORT: true when `version` gets an answer.
memcached_answers() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"version\r\n")
sys.exit(0 if s.recv(64).startswith(b"VERSION") else 1)
PY
}

# memcached_stop_one DIR: stops the server whose pid file is in DIR (waits until gone).
memcached_stop_one() {
  local dir=$1 pid
  [ -f "$dir/memcached.pid" ] || return 0
  pid=$(cat "$dir/memcached.pid")
  rm -f "$dir/memcached.pid"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

start_memcached() {
  local base=${SG_RUN_DIR:?SG_RUN_DIR is not set (scripts/test sets it)} servers=() i port
  for i in 1 2 3; do
    port=$(free_port) || return 1
    memcached_start_one "$base/memcached-$i" "$port" || return 1
    servers+=("127.0.0.1:$port")
  done
  SERVICEGROUP_TEST_MEMCACHED_SERVERS=$(IFS=,; echo "${servers[*]}")
  export SERVICEGROUP_TEST_MEMCACHED_SERVERS
  echo "== memcached: $SERVICEGROUP_TEST_MEMCACHED_SERVERS" >&2
}

stop_memcached() {
  local base=${SG_RUN_DIR:-} i
  [ -n "$base" ] || return 0
  for i in 1 2 3; do memcached_stop_one "$base/memcached-$i"; done
}

# Standalone use.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start)
      [ $# -eq 3 ] || { echo "usage: $0 start DIR PORT" >&2; exit 2; }
      memcached_start_one "$2" "$3"
      ;;
    stop)
      [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
      memcached_stop_one "$2"
      ;;
    *)
      echo "usage: $0 start DIR PORT | stop DIR" >&2
      exit 2
      ;;
  esac
fi
