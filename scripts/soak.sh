#!/usr/bin/env bash
# The soak: the chat workload at a steady rate for an hour against mftd on
# the SFTP store with the transfer log and retention on, while sshd,
# PostgreSQL and the router are restarted and the file server link stalls at
# random. Samples RSS, descriptors, SSH and database connections, the log's
# queue and the transfers in flight; afterwards checks every 201 against the
# log and the file server and runs `mftd verify --all`. Not part of CI.
#   scripts/soak.sh                      one hour
#   scripts/soak.sh --minutes 10         shorter
#   scripts/soak.sh --rate 8 --users 40  more load (users: at most 50)
# Writes target/soak-report.md, .svg (the curves) and .csv (the samples).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
profile=(--release)
bin=target/release
if [ "${MFTD_SOAK_DEBUG:-}" = 1 ]; then profile=(); bin=target/debug; fi
cargo build "${profile[@]}" --bins
MFTD_BIN="$PWD/$bin/mftd" "./$bin/mft-bench" --only soak --out target/soak-report.md "$@"
