#!/usr/bin/env bash
# Runs every test of mftd on a fresh machine: installs the Debian packages the
# tests need (Prosody, OpenSSH, PostgreSQL, slixmpp, curl), builds the mftd
# binary the integration tests start, then runs unit, HTTP and end-to-end
# tests. The tests start and stop their own servers on 127.0.0.1.
# Every process the tests start carries MFTD_RUN_TAG in its environment; when
# the run ends (passed, failed or Ctrl-C) any of them still running after a
# few seconds is named, killed, and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-garage
# The router modules' link recognition, without a router (lua5.4, eunit).
bash scripts/test-router-modules.sh
cargo build --bins
tag="mftd-test-$$-$(date +%s%N)"
reap() {
  local status=$?
  trap - EXIT INT TERM HUP
  if ! bash scripts/check-leftovers.sh kill-tagged "$tag" 5; then
    echo "test.sh: the tests left processes running (above)" >&2
    [ "$status" -ne 0 ] || status=1
  fi
  exit "$status"
}
trap reap EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
MFTD_RUN_TAG="$tag" cargo test --workspace "$@"
