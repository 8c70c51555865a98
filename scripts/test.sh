#!/usr/bin/env bash
# Runs every test of mftd on a fresh machine: installs the Debian packages the
# tests need (Prosody, OpenSSH, PostgreSQL, slixmpp, curl), builds the mftd
# binary the integration tests start, then runs unit, HTTP and end-to-end
# tests. The tests start and stop their own servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --bins
cargo test --workspace "$@"
