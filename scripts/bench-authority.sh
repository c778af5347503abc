#!/usr/bin/env bash
# Benchmarks the authority through its HTTP API (results go into BENCHMARKS.md): starts a fresh
# `macpool serve` (the release binary) on a temporary store for each run, drives it with 64 concurrent clients of 1,000
# durable allocations each, and reports allocations/s, latency percentiles and allocations per
# fsync (from the server's own commit counter).
#
# Usage: scripts/bench-authority.sh   env: RUNS (3), CLIENTS (64), PER_CLIENT (1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p macpool -p macpool-bench
bin=${CARGO_TARGET_DIR:-target}/release
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
for i in $(seq "${RUNS:-3}"); do
    echo "--- run $i"
    "$bin/macpool-bench" allocate --binary "$bin/macpool" --clients "${CLIENTS:-64}" --per-client "${PER_CLIENT:-1000}"
done
