# Shared helpers for the backend scripts. Sourced, not run.
# Every backend script defines start_<name> and stop_<name>; scripts/test calls them.

# A free TCP port on 127.0.0.1 (asks the kernel for one).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Installs Debian packages when a command is missing (needs root, as in CI).
ensure_command() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  echo "== $cmd not found; installing: $*" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "error: $cmd is missing and this is not root: install $* yourself" >&2
    return 1
  fi
  if [ -z "${SG_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
    export SG_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || return 1
  command -v "$cmd" >/dev/null 2>&1
}

# Waits until `$@` succeeds, at most $SG_WAIT seconds (default 30).
wait_until() {
  local deadline=$(( $(date +%s) + ${SG_WAIT:-30} ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
    sleep 0.2
  done
}

# A backend that cannot start: fatal under CI=true, and (honestly) fatal locally too,
# because the tests that need it would fail anyway. SG_SKIP_<NAME>=1 lets a developer
# skip a backend on purpose; its tests then fail loudly instead of passing.
backend_failed() {
  echo "error: could not start $1: $2" >&2
  exit 1
}

# The port a server directory keeps across restarts (the outage tests stop and start
# the same server): DIR/port if it exists, else a free port, recorded there.
sticky_port() {
  local dir=$1 port
  if [ -f "$dir/port" ]; then
    cat "$dir/port"
    return 0
  fi
  port=$(free_port) || return 1
  echo "$port" >"$dir/port"
  echo "$port"
}

# The command line of a server script run standalone:
#   SCRIPT start DIR | stop DIR | destroy DIR
# server_main START_FN STOP_FN "$@" calls START_FN DIR (which prints the URL) or
# STOP_FN DIR; destroy stops the server and deletes DIR.
server_main() {
  local start_fn=$1 stop_fn=$2 action=${3:-} dir=${4:-}
  case "$action" in
    start|stop|destroy) ;;
    *) echo "usage: $0 start|stop|destroy DIR" >&2; return 2 ;;
  esac
  [ -n "$dir" ] || { echo "usage: $0 $action DIR" >&2; return 2; }
  case "$action" in
    start) "$start_fn" "$dir" ;;
    stop) "$stop_fn" "$dir" ;;
    destroy) "$stop_fn" "$dir"; rm -rf "$dir" ;;
  esac
}

# The server a whole test run shares (scripts/test):
#   start_shared_server LABEL SKIP_VAR DIR_VAR SUBDIR URL_VAR START_FN
# starts it with START_FN in $SG_RUN_DIR/SUBDIR (DIR_VAR exported) and exports its URL
# as URL_VAR. With SKIP_VAR set nothing starts, and the tests needing it fail.
start_shared_server() {
  local label=$1 skip=$2 dir_var=$3 subdir=$4 url_var=$5 start_fn=$6
  if [ -n "${!skip:-}" ]; then
    echo "== $skip set: not starting $label (its tests will fail)" >&2
    return 0
  fi
  local dir url
  dir="${SG_RUN_DIR:-$(mktemp -d "/tmp/servicegroup-$subdir.XXXXXX")}/$subdir"
  export "$dir_var=$dir"
  url=$("$start_fn" "$dir") || return 1
  export "$url_var=$url"
  echo "== $label at $url (data in $dir)" >&2
}

# stop_shared_server DIR_VAR STOP_FN: stops what start_shared_server started, if any.
stop_shared_server() {
  local dir_var=$1 stop_fn=$2
  [ -n "${!dir_var:-}" ] || return 0
  "$stop_fn" "${!dir_var}"
}
