# Helpers of the PostgreSQL benchmark scripts (bench-postgres.sh, bench-ab.sh,
# bench-lease-insert.sh); sourced, not run. The caller sets ADMIN_URL, a database to connect to
# for CREATE/DROP DATABASE, and for start_serve WORK (a scratch directory) and PIDS (an array).

# One statement on the admin database, quietly.
psql_admin() { PGOPTIONS='-c client_min_messages=warning' psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qAtX -c "$1"; }

# The URL of database $1 on the same server as ADMIN_URL (its last path segment replaced).
db_url() {
    local base=${ADMIN_URL%%\?*} query=
    [[ $ADMIN_URL == *\?* ]] && query="?${ADMIN_URL#*\?}"
    echo "${base%/*}/$1$query"
}

# A bootstrap token for the servers a script starts, new for every invocation.
BENCH_TOKEN="bench-bootstrap-$(od -An -tx8 -N16 /dev/urandom | tr -d ' \n')"

# Starts binary $1 as `macpool serve` on database URL $2 (TOKIO_WORKER_THREADS=$SERVE_THREADS
# when set) and sets SERVER_URL once it listens. Not for $(…): the pid must reach PIDS in the
# calling shell.
start_serve() {
    local log="$WORK/serve-${#PIDS[@]}-$RANDOM"
    env ${SERVE_THREADS:+TOKIO_WORKER_THREADS=$SERVE_THREADS} MACPOOL_BOOTSTRAP_TOKEN=$BENCH_TOKEN \
        "$1" serve --database "$2" --listen 127.0.0.1:0 >"$log.out" 2>"$log.err" &
    local pid=$!
    PIDS+=("$pid")
    SERVER_URL=
    for _ in $(seq 300); do
        SERVER_URL=$(sed -n 's/^macpool listening on \([^ ]*\).*/\1/p' "$log.out" 2>/dev/null || true)
        [[ -n $SERVER_URL ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "macpool serve exited before listening:" >&2
            cat "$log.err" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "macpool serve did not listen within 30 s" >&2
    return 1
}
