#!/usr/bin/env bash
# Benchmarks `macpool sim --scenario large` (64 hosts, 10,000 pooled desktops, 30 simulated days,
# every strategy), the run BENCHMARKS.md records. Builds release first; reports wall time and
# peak RSS (GNU time's %e and %M) of each run and keeps the best.
#
# Usage: scripts/bench-sim.sh [SCENARIO]   (default: large)
#   env: RUNS (3), CARGO_TARGET_DIR as usual, SIM_ARGS="…" extra arguments for `macpool sim`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
scenario=${1:-large}
runs=${RUNS:-3}
read -r -a extra <<<"${SIM_ARGS:-}"

cd "$root"
cargo build --release --quiet -p macpool
bin=$target/release/macpool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "command: macpool sim --scenario $scenario ${extra[*]:-}"
best_wall="" best_rss=""
for i in $(seq "$runs"); do
  /usr/bin/time -f '%e %M' -o "$work/time.txt" \
    "$bin" sim --scenario "$scenario" "${extra[@]}" >"$work/out.txt" 2>"$work/err.txt" || {
    cat "$work/err.txt" >&2
    exit 1
  }
  read -r wall rss < <(tail -n1 "$work/time.txt")
  echo "run $i: wall ${wall} s, peak RSS $((rss / 1024)) MiB"
  if [ -z "$best_wall" ] || awk -v a="$wall" -v b="$best_wall" 'BEGIN{exit !(a<b)}'; then
    best_wall=$wall best_rss=$rss
  fi
done
echo
cat "$work/out.txt"
echo
echo "best of $runs: wall ${best_wall} s, peak RSS $((best_rss / 1024)) MiB (target: <= 60 s)"
