#!/usr/bin/env bash
# macpool replicas vs the NetBox and Neutron allocation patterns, side by side on one PostgreSQL
# (results go into BENCHMARKS.md). For each fill level (0% and 90% of a 65,536-address range,
# pre-filled before timing) and each run, on a fresh database each time:
#   - the SQL reference allocators, driven directly by `macpool-bench sql`: netbox (advisory
#     lock, lowest free), neutron (random MAC, unique constraint, retry), skip-locked, chunks;
#   - macpool through its HTTP API (durable, authenticated, with history and cooldown): 1 and 2
#     `macpool serve --database postgres://…` replicas on the same database, driven by
#     `macpool-bench allocate` with the clients spread round-robin over the replicas;
#   - 2 uncoordinated writers ("2s"): 2 separate stores sharing nothing but the PostgreSQL
#     server and the CPUs (each `serve` on its own database, its own 65,536-address range under
#     the same pool name), driven exactly like 2 replicas: two serial sections side by side
#     against the replicas' one shared head lock, i.e. what that lock costs (or, when the cores
#     are short, saves: waiting for the lock enlarges batches).
# Every design does the same number of timed allocations at a given fill, with the same number
# of concurrent clients, whose connections (to PostgreSQL for the SQL patterns, over HTTP to the
# replicas for macpool) are open before the clock starts. One table at the end; its CPU column is
# the whole machine's busy CPU time (every process: clients, servers, PostgreSQL) per allocation,
# which scatters far less from run to run than throughput, and how busy the cores were.
#
# Usage: scripts/bench-postgres.sh
# env: DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable: a database to
#      connect to for CREATE/DROP DATABASE; every design then uses the same URL with the database
#      replaced, so TLS or not is the same for all), RUNS (1), CLIENTS (64), PER_CLIENT (50:
#      timed allocations per client), FILLS ("0 90"), PATTERNS ("netbox neutron skip-locked
#      chunks"), REPLICAS ("1 2 2s"; "" for none), SQL_FLAGS (more flags for `macpool-bench sql`, e.g.
#      --explicit-transactions), SERVE_THREADS (unset: each `macpool serve` runs one async worker
#      thread per core, tokio's default; N: TOKIO_WORKER_THREADS=N for every `serve`),
#      KEEP_DATABASES (unset: drop each fresh database after its run)
set -euo pipefail
cd "$(dirname "$0")/.."

ADMIN_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
RUNS=${RUNS:-1}
CLIENTS=${CLIENTS:-64}
PER_CLIENT=${PER_CLIENT:-50}
FILLS=${FILLS:-0 90}
PATTERNS=${PATTERNS-netbox neutron skip-locked chunks}
REPLICAS=${REPLICAS-1 2 2s}
ALLOCATIONS=$((CLIENTS * PER_CLIENT))
source scripts/bench-pg-lib.sh

cargo build --release --quiet -p macpool -p macpool-bench
BIN=${CARGO_TARGET_DIR:-target}/release/macpool
BENCH=${CARGO_TARGET_DIR:-target}/release/macpool-bench

CURRENT_DBS=()
fresh_db() {
    psql_admin "DROP DATABASE IF EXISTS $1" >/dev/null
    psql_admin "CREATE DATABASE $1" >/dev/null
    CURRENT_DBS+=("$1")
}
# Drops every database fresh_db made since the last call.
drop_dbs() {
    for db in "${CURRENT_DBS[@]}"; do
        [[ -n ${KEEP_DATABASES:-} ]] || psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    done
    CURRENT_DBS=()
}

WORK=$(mktemp -d)
PIDS=()
stop_servers() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    stop_servers
    # A run that stopped half-way leaves no database behind either.
    drop_dbs || true
    rm -rf "$WORK"
}
trap cleanup EXIT

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# design fill replicas json-file (and $run)
record() {
    jq -r --arg d "$1" --arg f "$2" --arg r "$3" --arg run "$run" \
        '[$d, $f, $r, $run, .allocations, .errors, .allocations_per_second, .latency_ms.p50, .latency_ms.p99, (.machine_cpu.us_per_allocation // 0), (.machine_cpu.busy_percent // 0), (.retries // "")] | @tsv' \
        "$4" >>"$RESULTS"
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
echo "postgres: $(psql_admin 'SHOW server_version'), synchronous_commit=$(psql_admin 'SHOW synchronous_commit'), fsync=$(psql_admin 'SHOW fsync')"
echo "each design: $CLIENTS clients, $ALLOCATIONS timed allocations per run, 65,536-address range"
echo "macpool serve: ${SERVE_THREADS:-one per core} async worker thread(s) each"

for run in $(seq "$RUNS"); do
    for fill in $FILLS; do
        db="macpool_bench_sql_${fill}_$$"
        fresh_db "$db"
        for pattern in $PATTERNS; do
            echo "--- run $run, fill $fill%: SQL pattern $pattern at $(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
            out="$WORK/sql-$pattern-$fill-$run.json"
            "$BENCH" --json sql --database "$(db_url "$db")" --pattern "$pattern" \
                --clients "$CLIENTS" --allocations "$ALLOCATIONS" --fill "$fill" ${SQL_FLAGS:-} >"$out" ||
                echo "(macpool-bench sql $pattern reported a failure; see the errors column)"
            jq -c '{allocations_per_second, latency_ms, machine_cpu, retries, chunk_claims, errors, first_error}' "$out"
            record "$pattern" "$fill" "-" "$out"
        done
        drop_dbs

        for replicas in $REPLICAS; do
            targets=()
            if [[ $replicas == *s ]]; then
                echo "--- run $run, fill $fill%: ${replicas%s} separate stores at $(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
                for i in $(seq "${replicas%s}"); do
                    db="macpool_bench_${replicas}${i}_${fill}_$$"
                    fresh_db "$db"
                    start_serve "$BIN" "$(db_url "$db")"
                    first=$((0x00155D000000 + i * 0x100000))
                    "$BIN" pool create bench --server "$SERVER_URL" --token "$BENCH_TOKEN" --order next-fit \
                        --range "$(printf '%012X-%012X' "$first" $((first + 65535)))" >/dev/null
                    targets+=(--target "$SERVER_URL")
                done
                targets+=(--pool bench)
            else
                echo "--- run $run, fill $fill%: macpool, $replicas replica(s) at $(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
                db="macpool_bench_${replicas}r_${fill}_$$"
                fresh_db "$db"
                # One after the other, so that only the first creates the schema.
                for _ in $(seq "$replicas"); do
                    start_serve "$BIN" "$(db_url "$db")"
                    targets+=(--target "$SERVER_URL")
                done
            fi
            out="$WORK/macpool-$replicas-$fill-$run.json"
            "$BENCH" --json allocate "${targets[@]}" --token "$BENCH_TOKEN" \
                --clients "$CLIENTS" --per-client "$PER_CLIENT" --fill "$fill" \
                --pool-size 65536 --order next-fit --warm-up >"$out" ||
                echo "(macpool-bench allocate reported a failure; see the errors column)"
            jq -c '{allocations_per_second, latency_ms, machine_cpu, commits, allocations_per_fsync, errors, first_error, pool_free_after}' "$out"
            record "macpool" "$fill" "$replicas" "$out"
            stop_servers
            drop_dbs
        done
    done
done

echo
echo "=== $CLIENTS clients, $ALLOCATIONS durable allocations per run, 65,536-address range"
{
    printf 'design\tfill\treplicas\trun\tallocations\terrors\tallocations/s\tp50 ms\tp99 ms\tCPU us/alloc\tCPU busy %%\tretries\n'
    sort -t$'\t' -k2,2n -k1,1 -k3,3 -k4,4n "$RESULTS" |
        awk -F'\t' -v OFS='\t' '{ $7 = sprintf("%.0f", $7); $8 = sprintf("%.2f", $8); $9 = sprintf("%.2f", $9); $10 = sprintf("%.0f", $10); $11 = sprintf("%.0f", $11); print }'
} | column -t -s$'\t'

if [[ $RUNS -gt 1 ]]; then
    echo
    echo "=== median of $RUNS runs (each column on its own)"
    python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d, fill, rep, _run, _n, err, rate, p50, p99, cpu, busy, _retries = line.rstrip("\n").split("\t")
    rows.setdefault((int(fill), d, rep), []).append((float(rate), float(p50), float(p99), float(cpu), float(busy), int(err)))
print(f"{'design':12} {'fill':>4} {'replicas':>8} {'allocations/s':>13} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/alloc':>12} {'CPU busy %':>10} {'errors':>6}")
for (fill, d, rep), v in sorted(rows.items()):
    med = [statistics.median(x) for x in zip(*v)]
    print(f"{d:12} {fill:>4} {rep:>8} {med[0]:>13.0f} {med[1]:>8.2f} {med[2]:>8.2f} {med[3]:>12.0f} {med[4]:>10.0f} {sum(x[5] for x in v):>6}")
PY
fi
