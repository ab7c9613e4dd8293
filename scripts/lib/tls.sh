#!/usr/bin/env bash
# Throwaway TLS material for the database TLS tests (openssl CLI; installed with
# apt-get when missing): in DIR,
#   ca.crt / ca.key          a test CA ("sg-test-ca")
#   server.crt / server.key  a server certificate it signed, valid for DNS:localhost
#                            only (no IP address: connecting to 127.0.0.1 with host
#                            name verification must fail, with verify-ca it must not)
#   other-ca.crt             an unrelated CA (a wrong CA file must be refused)
#   password                 the password of the TLS-only database users
# ECDSA P-256 keys (cheap handshakes); CA and leaf are separate certificates, as
# rustls refuses a CA certificate used as the server's (stack notes wave 2, §2).
#
# Sourced by scripts/test: defines start_tls / stop_tls; start_tls makes the files in
# $SG_RUN_DIR/tls, sets SG_TLS_DIR (postgres.sh and mariadb.sh then start their
# shared servers with TLS and a TLS-only user) and exports SERVICEGROUP_TEST_TLS_CA
# and SERVICEGROUP_TEST_TLS_OTHER_CA.
#
# Run standalone: scripts/lib/tls.sh make DIR

if [ -z "${BASH_VERSION:-}" ]; then
  echo "tls.sh needs bash" >&2
  exit 1
fi

_tls_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$_tls_here/common.sh"

# _tls_make DIR: the files above (kept when DIR already has them).
_tls_make() {
  local dir=$1
  ensure_command openssl openssl || return 1
  mkdir -p "$dir" || return 1
  [ -f "$dir/server.crt" ] && [ -f "$dir/password" ] && return 0
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  (
    cd "$dir" || exit 1
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 30 -subj /CN=sg-test-ca \
      && openssl req -x509 "${ec[@]}" -keyout other-ca.key -out other-ca.crt -days 30 \
        -subj /CN=sg-test-other-ca \
      && openssl req "${ec[@]}" -keyout server.key -out server.csr -subj /CN=localhost \
      && printf '%s\n' 'subjectAltName=DNS:localhost' 'basicConstraints=CA:FALSE' \
        'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext \
      && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out server.crt -days 30 -extfile server.ext
  ) >"$dir/openssl.log" 2>&1 || { echo "error: openssl failed:" >&2; cat "$dir/openssl.log" >&2; return 1; }
  # URL-safe, random per run: the tests check it never shows.
  printf 'sgTls%s' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" >"$dir/password"
  chmod 644 "$dir"/*.crt "$dir/password"
  chmod 600 "$dir"/*.key
}

start_tls() {
  if [ -n "${SG_SKIP_TLS:-}" ]; then
    echo "== SG_SKIP_TLS set: no TLS material (the TLS tests will fail)" >&2
    return 0
  fi
  local dir="${SG_RUN_DIR:-$(mktemp -d /tmp/servicegroup-tls.XXXXXX)}/tls"
  _tls_make "$dir" || return 1
  SG_TLS_DIR=$dir
  export SERVICEGROUP_TEST_TLS_CA="$dir/ca.crt"
  export SERVICEGROUP_TEST_TLS_OTHER_CA="$dir/other-ca.crt"
  echo "== TLS test CA at $SERVICEGROUP_TEST_TLS_CA" >&2
}

stop_tls() {
  # Files only, in the run directory scripts/test removes.
  return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    make) [ -n "${2:-}" ] || { echo "usage: $0 make DIR" >&2; exit 2; }; _tls_make "$2" ;;
    *) echo "usage: $0 make DIR" >&2; exit 2 ;;
  esac
fi
