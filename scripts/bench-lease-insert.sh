#!/usr/bin/env bash
# What would make the PostgreSQL store's lease insert cheaper? The insert runs inside the serial
# section every replica waits on (docs/postgres.md), so its cost bounds writes. This times one
# transaction inserting 30 leases (a typical batch) with pgbench, on copies of the `leases` table
# that differ in one thing each, in alternating rounds (results go into BENCHMARKS.md):
#   upsert        the store's table (schema 2) and statement: INSERT … ON CONFLICT (owner_key)
#                 DO UPDATE
#   plain         INSERT without ON CONFLICT
#   merge         MERGE … WHEN MATCHED THEN UPDATE WHEN NOT MATCHED THEN INSERT (PostgreSQL 15+)
#   text          the lease document as text instead of jsonb
#   unique        a unique partial index on mac instead of the deferred exclusion constraint
#   db-collation  owner_key in the database's collation (C.UTF-8 here), as schema 1 had it
#   vm-index      with the leases_vm index schema 1 had
# Commits are asynchronous (synchronous_commit=off), so the figures are the insert's own work,
# not the disk's.
#
# Usage: scripts/bench-lease-insert.sh
# env: DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres: a database to connect to for
#      CREATE/DROP DATABASE), ROUNDS (3), SECONDS_EACH (5)
set -euo pipefail
cd "$(dirname "$0")/.."

ADMIN_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-5}
DB="macpool_bench_lease_insert_$$"
VARIANTS=(upsert plain merge text unique db-collation vm-index)

source scripts/bench-pg-lib.sh
URL=$(db_url "$DB")
WORK=$(mktemp -d)
cleanup() {
    psql_admin "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
psql_admin "CREATE DATABASE $DB" >/dev/null
psql "$URL" -v ON_ERROR_STOP=1 -qAtX -c "CREATE SEQUENCE batches"

# The table as schema 2 has it, under the variant's name, with the variant's one difference.
table_sql() {
    local name=${1//-/_} key='TEXT COLLATE "C"' lease=JSONB constraint extra=
    constraint=", CONSTRAINT ${name}_one EXCLUDE USING btree (mac WITH =) WHERE (NOT duplicate) DEFERRABLE INITIALLY DEFERRED"
    case $1 in
        text) lease=TEXT ;;
        db-collation) key=TEXT ;;
        unique)
            constraint=
            extra="CREATE UNIQUE INDEX ${name}_mac ON l_$name (mac) WHERE NOT duplicate;"
            ;;
        vm-index) extra="CREATE INDEX ${name}_vm ON l_$name (vm_id);" ;;
    esac
    echo "CREATE TABLE l_$name (owner_key $key PRIMARY KEY, mac BIGINT NOT NULL, pool TEXT NOT NULL,
          vm_id TEXT NOT NULL, host TEXT, duplicate BOOLEAN NOT NULL, lease $lease NOT NULL
          $constraint); $extra"
}

LEASE='{"mac":"00-15-5D-40-01-02","pool":"bench","owner":{"vm_id":"bench-d544d07a-0-226","adapter_id":"","host":null},"vm_name":null,"allocated_at":1764140000000,"renewed_at":1764140000000,"duplicate":false,"source":"allocate"}'
for v in "${VARIANTS[@]}"; do
    name=${v//-/_}
    psql "$URL" -v ON_ERROR_STOP=1 -qAtX -c "$(table_sql "$v")"
    conflict=
    [[ $v == plain ]] || conflict="ON CONFLICT (owner_key) DO UPDATE SET mac = EXCLUDED.mac,
        pool = EXCLUDED.pool, vm_id = EXCLUDED.vm_id, host = EXCLUDED.host,
        duplicate = EXCLUDED.duplicate, lease = EXCLUDED.lease"
    cast=::jsonb
    [[ $v == text ]] && cast=
    # 30 new leases per transaction: keys and MACs never repeat (a sequence numbers the batches).
    rows=$(cat <<EOF
SELECT '{"vm_id":"bench-' || b || '-' || g || '","adapter_id":""}' AS k, b * 64 + g AS m,
       'bench' AS p, 'bench-' || b || '-' || g AS v, NULL::text AS h, false AS d,
       '$LEASE'$cast AS l
FROM (SELECT nextval('batches') AS b) s, generate_series(1, 30) g
EOF
)
    if [[ $v == merge ]]; then
        cat >"$WORK/$v.sql" <<EOF
MERGE INTO l_$name USING ($rows) u ON owner_key = u.k
WHEN MATCHED THEN UPDATE SET mac = u.m, pool = u.p, vm_id = u.v, host = u.h, duplicate = u.d,
    lease = u.l
WHEN NOT MATCHED THEN INSERT (owner_key, mac, pool, vm_id, host, duplicate, lease)
    VALUES (u.k, u.m, u.p, u.v, u.h, u.d, u.l);
EOF
    else
        cat >"$WORK/$v.sql" <<EOF
INSERT INTO l_$name (owner_key, mac, pool, vm_id, host, duplicate, lease)
SELECT * FROM ($rows) u $conflict;
EOF
    fi
done

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); postgres $(psql_admin 'SHOW server_version')"
echo "one transaction = 30 lease inserts; pgbench -c 1 -T $SECONDS_EACH per variant and round"
RESULTS="$WORK/results.tsv"
for round in $(seq "$ROUNDS"); do
    for v in "${VARIANTS[@]}"; do
        ms=$(PGOPTIONS='-c synchronous_commit=off' pgbench -n -c 1 -T "$SECONDS_EACH" -f "$WORK/$v.sql" "$URL" 2>&1 |
            sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p')
        echo "round $round  $v  $ms ms"
        printf '%s\t%s\n' "$v" "$ms" >>"$RESULTS"
    done
done
echo
echo "=== median of $ROUNDS rounds, ms per 30-lease transaction (and against upsert)"
python3 - "$RESULTS" "${VARIANTS[@]}" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    v, ms = line.split()
    rows.setdefault(v, []).append(float(ms))
base = statistics.median(rows["upsert"])
for v in sys.argv[2:]:
    m = statistics.median(rows[v])
    print(f"{v:12} {m:7.3f} ms  {100 * (m / base - 1):+5.1f} %")
PY
