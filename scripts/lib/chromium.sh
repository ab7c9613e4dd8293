#!/usr/bin/env bash
# Headless Chromium and chromedriver for the status page's browser test
# (cli/tests/status_page.rs). Nothing runs in the background: the test starts
# chromedriver itself on a free loopback port and stops it.
#
# Sourced by scripts/test: defines start_chromium / stop_chromium.
#   start_chromium   installs Debian's chromium and chromium-driver when missing (as
#                    root) and exports SERVICEGROUP_TEST_CHROMIUM and
#                    SERVICEGROUP_TEST_CHROMEDRIVER (the two binaries).
#   stop_chromium    nothing to stop.
# Under CI=true a browser that cannot be installed fails the run.

_sg_chromium_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$_sg_chromium_lib_dir/common.sh"

start_chromium() {
  ensure_command chromium chromium chromium-driver || return 1
  ensure_command chromedriver chromium-driver || return 1
  SERVICEGROUP_TEST_CHROMIUM=$(command -v chromium)
  SERVICEGROUP_TEST_CHROMEDRIVER=$(command -v chromedriver)
  export SERVICEGROUP_TEST_CHROMIUM SERVICEGROUP_TEST_CHROMEDRIVER
  "$SERVICEGROUP_TEST_CHROMEDRIVER" --version >&2 || return 1
}

stop_chromium() {
  :
}
