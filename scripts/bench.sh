#!/usr/bin/env bash
# The benchmark suite: mftd beside Prosody's mod_http_file_share, OpenSSH
# sftp, the raw disk and PostgreSQL, on this machine, in one run, with curl
# as the one HTTP client. Writes a Markdown report (default
# target/bench-report.md; docs/performance.md holds the latest reading).
#   scripts/bench.sh            full run (100 MiB and 1 GiB files, 3 runs each)
#   scripts/bench.sh --smoke    small sizes, one run: checks the suite still works
#   scripts/bench.sh --runs 5 --out report.md
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --bench --with-garage
cargo build --release --bins
out_args=()
if [[ " $* " == *" --smoke "* && " $* " != *" --out "* ]]; then
  out_args=(--out target/bench-smoke.md)
fi
./target/release/mft-bench "$@" "${out_args[@]}"
