#!/usr/bin/env bash
# etcd for tests and benchmarks: a throwaway 3-member cluster on free loopback ports.
#
# Sourced by scripts/test: defines start_etcd / stop_etcd.
#   start_etcd   starts a 3-member cluster (members a, b, c) under $SG_RUN_DIR/etcd and
#                exports SERVICEGROUP_TEST_ETCD_ENDPOINTS=http://127.0.0.1:P1,...,P3
#   stop_etcd    stops it.
#
# Run directly, for tests that need a cluster of their own (fault tests stop members,
# which must never happen to the cluster other tests share):
#   scripts/lib/etcd.sh start DIR            start a 3-member cluster in DIR, print the endpoints
#   scripts/lib/etcd.sh stop DIR             stop every member of the cluster in DIR
#   scripts/lib/etcd.sh destroy DIR          stop it and delete DIR
#   scripts/lib/etcd.sh stop-member DIR N    stop member N (a, b or c), keeping its data
#   scripts/lib/etcd.sh start-member DIR N   start member N again (same ports, same data)
#   scripts/lib/etcd.sh leader DIR           print the name of the current leader
#   scripts/lib/etcd.sh wipe DIR             stop all members, delete their data, start a
#                                            new, empty cluster on the same ports
#
# etcd-server (etcd) and etcd-client (etcdctl) are installed with apt-get when missing
# (as root). Under CI=true a cluster that cannot start fails the run.
# SG_ETCD_EXTRA_ARGS: more etcd flags for every member (scripts/bench: a larger backend
# quota and periodic compaction for million-member fleets).

_sg_etcd_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$_sg_etcd_lib_dir/common.sh"

SG_ETCD_MEMBERS=(a b c)

# etcd_ports DIR: allocates (once) and records client and peer ports of every member
# in DIR/ports ("name client peer" lines), so restarts reuse them.
etcd_ports() {
  local dir=$1 name
  [ -f "$dir/ports" ] && return 0
  mkdir -p "$dir" || return 1
  : >"$dir/ports.tmp"
  for name in "${SG_ETCD_MEMBERS[@]}"; do
    echo "$name $(free_port) $(free_port)" >>"$dir/ports.tmp" || return 1
  done
  mv "$dir/ports.tmp" "$dir/ports"
  echo "sg-test-$$-$RANDOM" >"$dir/token"
}

# etcd_port DIR NAME client|peer
etcd_port() {
  local field=2
  [ "$3" = peer ] && field=3
  awk -v n="$2" -v f="$field" '$1 == n { print $f }' "$1/ports"
}

etcd_endpoints() {
  local dir=$1 name out=()
  for name in "${SG_ETCD_MEMBERS[@]}"; do
    out+=("http://127.0.0.1:$(etcd_port "$dir" "$name" client)")
  done
  (IFS=,; echo "${out[*]}")
}

etcd_initial_cluster() {
  local dir=$1 name out=()
  for name in "${SG_ETCD_MEMBERS[@]}"; do
    out+=("$name=http://127.0.0.1:$(etcd_port "$dir" "$name" peer)")
  done
  (IFS=,; echo "${out[*]}")
}

# etcd_start_member DIR NAME: starts one member in the background (pid in DIR/NAME.pid).
# A member with data joins the existing cluster; one without forms a new one with the
# others (all three must be started the same way).
etcd_start_member() {
  local dir=$1 name=$2 client peer state=new
  ensure_command etcd etcd-server || return 1
  etcd_ports "$dir" || return 1
  client=$(etcd_port "$dir" "$name" client)
  peer=$(etcd_port "$dir" "$name" peer)
  [ -n "$client" ] || { echo "error: no etcd member $name in $dir" >&2; return 1; }
  if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    return 0
  fi
  [ -d "$dir/$name.data/member" ] && state=existing
  # setsid: the member must not get the terminal's signals (Ctrl-C of a test run).
  setsid etcd --name "$name" --data-dir "$dir/$name.data" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$(etcd_initial_cluster "$dir")" --initial-cluster-token "$(cat "$dir/token")" \
    --initial-cluster-state "$state" --logger zap --log-outputs stderr ${SG_ETCD_EXTRA_ARGS:-} \
    </dev/null >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# etcd_member_healthy DIR NAME: the member answers /health with health true.
etcd_member_healthy() {
  python3 - "http://127.0.0.1:$(etcd_port "$1" "$2" client)/health" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
    sys.exit(0 if json.load(r).get("health") == "true" else 1)
PY
}

etcd_wait_member() {
  if ! wait_until etcd_member_healthy "$1" "$2"; then
    echo "error: etcd member $2 (client port $(etcd_port "$1" "$2" client)) is not healthy; log: $1/$2.log" >&2
    tail -n 20 "$1/$2.log" >&2 || true
    return 1
  fi
}

# etcd_stop_member DIR NAME: SIGTERM, then SIGKILL after 5 s (a member that lost its
# quorum takes long to exit on SIGTERM). Waits until the process is gone.
etcd_stop_member() {
  local dir=$1 name=$2 pid
  [ -f "$dir/$name.pid" ] || return 0
  pid=$(cat "$dir/$name.pid")
  rm -f "$dir/$name.pid"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
}

# etcd_start_cluster DIR: all members, waits until each is healthy, prints the endpoints.
etcd_start_cluster() {
  local dir=$1 name
  # etcdctl too: the tests enable authentication and compact with it; openssl makes
  # the TLS test's certificates.
  ensure_command etcd etcd-server || return 1
  ensure_command etcdctl etcd-client || return 1
  ensure_command openssl openssl || return 1
  etcd_ports "$dir" || return 1
  for name in "${SG_ETCD_MEMBERS[@]}"; do etcd_start_member "$dir" "$name" || return 1; done
  for name in "${SG_ETCD_MEMBERS[@]}"; do etcd_wait_member "$dir" "$name" || return 1; done
  etcd_endpoints "$dir"
}

etcd_stop_cluster() {
  local dir=$1 name
  [ -d "$dir" ] || return 0
  # Stop in parallel: a member that lost its quorum waits a long time on SIGTERM.
  for name in "${SG_ETCD_MEMBERS[@]}"; do etcd_stop_member "$dir" "$name" & done
  wait
}

# etcd_leader DIR: the name of the member that is leader now (fails when there is none).
etcd_leader() {
  local dir=$1 name
  ensure_command etcdctl etcd-client || return 1
  for name in "${SG_ETCD_MEMBERS[@]}"; do
    [ -f "$dir/$name.pid" ] || continue
    if ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$(etcd_port "$dir" "$name" client)" \
      --command-timeout=2s endpoint status -w json 2>/dev/null |
      python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"] == s["header"]["member_id"] else 1)'; then
      echo "$name"
      return 0
    fi
  done
  echo "error: no etcd member in $dir is leader" >&2
  return 1
}

# etcd_wipe DIR: every member stopped, its data deleted, a new empty cluster started on
# the same ports (a new cluster token): what a store that lost everything looks like.
etcd_wipe() {
  local dir=$1 name
  etcd_stop_cluster "$dir"
  for name in "${SG_ETCD_MEMBERS[@]}"; do rm -rf "${dir:?}/$name.data"; done
  echo "sg-test-$$-$RANDOM-wiped" >"$dir/token"
  etcd_start_cluster "$dir" >/dev/null
}

start_etcd() {
  local base=${SG_RUN_DIR:?SG_RUN_DIR is not set (scripts/test sets it)}
  SERVICEGROUP_TEST_ETCD_ENDPOINTS=$(etcd_start_cluster "$base/etcd") || return 1
  export SERVICEGROUP_TEST_ETCD_ENDPOINTS
  echo "== etcd: $SERVICEGROUP_TEST_ETCD_ENDPOINTS" >&2
}

stop_etcd() {
  local base=${SG_RUN_DIR:-}
  [ -n "$base" ] || return 0
  etcd_stop_cluster "$base/etcd"
}

# Standalone use.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  usage="usage: $0 start|stop|destroy|leader|wipe DIR | start-member|stop-member DIR NAME"
  case "${1:-}" in
    start|stop|destroy|leader|wipe)
      [ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
      case "$1" in
        start) etcd_start_cluster "$2" ;;
        stop) etcd_stop_cluster "$2" ;;
        destroy) etcd_stop_cluster "$2"; rm -rf "$2" ;;
        leader) etcd_leader "$2" ;;
        wipe) etcd_wipe "$2" ;;
      esac
      ;;
    start-member)
      [ $# -eq 3 ] || { echo "$usage" >&2; exit 2; }
      etcd_start_member "$2" "$3"
      etcd_wait_member "$2" "$3"
      ;;
    stop-member)
      [ $# -eq 3 ] || { echo "$usage" >&2; exit 2; }
      etcd_stop_member "$2" "$3"
      ;;
    *)
      echo "$usage" >&2
      exit 2
      ;;
  esac
fi
