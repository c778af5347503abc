#!/usr/bin/env bash
# Two builds of macpool against each other on PostgreSQL, in alternating runs, and where each
# one's CPU goes. Throughput scatters by ±20 % between runs on a shared machine and drifts over
# an hour, so a change to the PostgreSQL store is judged by runs of both builds interleaved in
# one window, not by two invocations of scripts/bench-postgres.sh (results go into
# BENCHMARKS.md). Each run: a fresh database, REPLICAS `macpool serve` on it, one
# `macpool-bench allocate` (64 clients, the same client build for both sides, round-robin over the replicas, 0 % fill); then the CPU
# time the replicas, PostgreSQL and everything else (the clients, the kernel) spent over the
# whole run, per allocation, from /proc.
#
# Usage: scripts/bench-ab.sh REV_A REV_B     (git revisions; the same one twice measures one)
# env: DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable: a database to
#      connect to for CREATE/DROP DATABASE), REPLICAS ("1 2"), ROUNDS (4), CLIENTS (64),
#      PER_CLIENT (900), SERVE_THREADS (unset: one async worker thread per core)
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -eq 2 ]] || { echo "usage: $0 REV_A REV_B" >&2; exit 2; }
ADMIN_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
REPLICAS=${REPLICAS:-1 2}
ROUNDS=${ROUNDS:-4}
CLIENTS=${CLIENTS:-64}
PER_CLIENT=${PER_CLIENT:-900}
WORK=$(mktemp -d)
PIDS=()
DB=
source scripts/bench-pg-lib.sh
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    [[ -n $DB ]] && psql_admin "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    for rev in a b; do git worktree remove --force "$WORK/$rev" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Each revision built in a worktree of its own; the target directory is shared, so only the
# workspace's crates build twice.
TARGET="$PWD/target/bench-ab"
# One client for both sides: this checkout's macpool-bench (the revisions' servers differ).
CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet -p macpool-bench
cp "$TARGET/release/macpool-bench" "$WORK/macpool-bench"
for side in a b; do
    rev=$([[ $side == a ]] && echo "$1" || echo "$2")
    git worktree add --quiet --detach "$WORK/$side" "$rev"
    (cd "$WORK/$side" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet -p macpool)
    cp "$TARGET/release/macpool" "$WORK/macpool-$side"
    echo "$side = $rev ($(git rev-parse --short "$rev"))"
done

# CPU ticks (user + system, USER_HZ) of the given processes.
ticks() {
    local sum=0
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$sum"
}
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# side replicas round
run() {
    local bin="$WORK/macpool-$1" targets=()
    DB="macpool_bench_ab_$$"
    psql_admin "CREATE DATABASE $DB" >/dev/null
    for _ in $(seq "$2"); do
        start_serve "$bin" "$(db_url "$DB")"
        targets+=(--target "$SERVER_URL")
    done
    local s0 p0 m0 s1 p1 m1
    s0=$(ticks "${PIDS[@]}") p0=$(ticks $(pgrep -x postgres)) m0=$(machine_ticks)
    "$WORK/macpool-bench" --json allocate "${targets[@]}" --token "$BENCH_TOKEN" --clients "$CLIENTS" \
        --per-client "$PER_CLIENT" --fill 0 --pool-size 65536 --order next-fit --warm-up >"$WORK/out.json"
    s1=$(ticks "${PIDS[@]}") p1=$(ticks $(pgrep -x postgres)) m1=$(machine_ticks)
    kill -TERM "${PIDS[@]}"
    wait "${PIDS[@]}" 2>/dev/null || true
    PIDS=()
    psql_admin "DROP DATABASE $DB WITH (FORCE)" >/dev/null
    DB=
    # One tick is 10 ms: ticks × 10,000 / allocations = µs per allocation.
    jq -r --arg side "$1" --arg r "$2" --arg round "$3" --argjson s $((s1 - s0)) \
        --argjson p $((p1 - p0)) --argjson m $((m1 - m0)) \
        '[$side, $r, $round, (.allocations_per_second | floor), ($m * 10000 / .allocations | floor),
          ($s * 10000 / .allocations | floor), ($p * 10000 / .allocations | floor),
          (($m - $s - $p) * 10000 / .allocations | floor), (.allocations_per_fsync * 10 | floor / 10)] | @tsv' \
        "$WORK/out.json" >>"$WORK/results.tsv"
    tail -1 "$WORK/results.tsv"
}

echo "machine: $(nproc) cores; $CLIENTS clients × $PER_CLIENT allocations per run, 0 % fill"
printf 'side\treplicas\tround\tallocations/s\tCPU us/alloc\treplicas us\tpostgres us\tother us\tallocations/fsync\n'
for round in $(seq "$ROUNDS"); do
    for replicas in $REPLICAS; do
        for side in a b; do run "$side" "$replicas" "$round"; done
    done
done
echo
echo "=== mean of $ROUNDS rounds"
{
    printf 'side\treplicas\tallocations/s\tCPU us/alloc\treplicas us\tpostgres us\tother us\tallocations/fsync\n'
    awk -F'\t' '{ k = $1 "\t" $2; n[k]++; for (i = 4; i <= 9; i++) s[k, i] += $i }
        END { for (k in n) printf "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\n", k, s[k,4]/n[k], s[k,5]/n[k],
                                  s[k,6]/n[k], s[k,7]/n[k], s[k,8]/n[k], s[k,9]/n[k] }' "$WORK/results.tsv" | sort
} | column -t -s$'\t'
