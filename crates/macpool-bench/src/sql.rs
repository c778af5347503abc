//! `macpool-bench sql`: reference allocators driven directly in SQL on PostgreSQL, by the same
//! kind of harness as `macpool-bench allocate`, so that macpool's replicas can be put side by side
//! with the patterns other systems use:
//!
//! - **netbox** — NetBox's `get_first_available_ip` under a lock: in a transaction,
//!   `pg_advisory_xact_lock`, find the lowest free address (a gap query over the allocated
//!   table's primary-key index), insert it, commit. Every allocation waits for the one before.
//! - **neutron** — Neutron's MAC generation: a random address in the range, `INSERT` into a table
//!   with a unique constraint; on a unique violation roll back and retry with another random
//!   address until one sticks (the retries are counted).
//! - **skip-locked** — a table of free addresses; `DELETE … WHERE mac = (SELECT … ORDER BY mac
//!   LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING mac` and an insert into the allocated table, in one
//!   transaction.
//! - **chunks** — Calico-IPAM-like blocks: each client claims a 64-address chunk (a row with a
//!   primary key, claimed in a transaction that also reads which of its addresses are taken),
//!   then allocates from its own chunk with plain inserts, and claims another when it is full.
//!
//! MACs are stored as `bigint`. Every allocation is its own committed transaction with the
//! server's `synchronous_commit` (durable by default). Each pattern gets fresh tables
//! (`macpool_bench_*`, dropped and created), pre-filled with `--fill` percent of the range at
//! random addresses before the clock starts. Each client holds its own connection.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres};

use crate::cli::BenchSqlArgs;
use crate::exit::{CmdResult, Failure, OK, UNREACHABLE};
use crate::measure::{Measured, Stopwatch};
use crate::output::{Output, fields};

/// The first address of the range (a locally administered prefix).
const FIRST: i64 = 0x0200_5E00_0000;
/// Addresses per chunk in the chunks pattern.
const CHUNK: i64 = 64;
/// The NetBox pattern's advisory lock key.
const NETBOX_LOCK: i64 = 0x6d61_6370;
/// A client gives up on one allocation after this many retries (the range is then as good as
/// full).
const MAX_RETRIES: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    Netbox,
    Neutron,
    SkipLocked,
    Chunks,
}

impl Pattern {
    fn parse(s: &str) -> Result<Pattern, Failure> {
        Ok(match s {
            "netbox" => Pattern::Netbox,
            "neutron" => Pattern::Neutron,
            "skip-locked" => Pattern::SkipLocked,
            "chunks" => Pattern::Chunks,
            _ => {
                return Err(Failure::usage(format!(
                    "unknown --pattern {s:?}: netbox, neutron, skip-locked or chunks"
                )));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Pattern::Netbox => "netbox",
            Pattern::Neutron => "neutron",
            Pattern::SkipLocked => "skip-locked",
            Pattern::Chunks => "chunks",
        }
    }

    /// Counts every allocated address (pre-filled ones included).
    fn count_allocated(self) -> &'static str {
        match self {
            Pattern::Netbox => "SELECT count(*) FROM macpool_bench_netbox",
            Pattern::Neutron => "SELECT count(*) FROM macpool_bench_neutron",
            Pattern::SkipLocked => "SELECT count(*) FROM macpool_bench_sl_allocated",
            Pattern::Chunks => "SELECT count(*) FROM macpool_bench_chunk_allocated",
        }
    }

    /// Drops and creates this pattern's tables.
    fn schema(self) -> &'static [&'static str] {
        match self {
            Pattern::Netbox => &[
                "DROP TABLE IF EXISTS macpool_bench_netbox",
                "CREATE TABLE macpool_bench_netbox (mac bigint PRIMARY KEY, client int NOT NULL, \
                 created timestamptz NOT NULL DEFAULT now())",
            ],
            Pattern::Neutron => &[
                "DROP TABLE IF EXISTS macpool_bench_neutron",
                "CREATE TABLE macpool_bench_neutron (mac bigint NOT NULL, client int NOT NULL, \
                 created timestamptz NOT NULL DEFAULT now(), \
                 CONSTRAINT macpool_bench_neutron_mac UNIQUE (mac))",
            ],
            Pattern::SkipLocked => &[
                "DROP TABLE IF EXISTS macpool_bench_sl_free",
                "DROP TABLE IF EXISTS macpool_bench_sl_allocated",
                "CREATE TABLE macpool_bench_sl_free (mac bigint PRIMARY KEY)",
                "CREATE TABLE macpool_bench_sl_allocated (mac bigint PRIMARY KEY, \
                 client int NOT NULL, created timestamptz NOT NULL DEFAULT now())",
            ],
            Pattern::Chunks => &[
                "DROP TABLE IF EXISTS macpool_bench_chunks",
                "DROP TABLE IF EXISTS macpool_bench_chunk_allocated",
                "CREATE TABLE macpool_bench_chunks (chunk int PRIMARY KEY, client int NOT NULL, \
                 claimed timestamptz NOT NULL DEFAULT now())",
                "CREATE TABLE macpool_bench_chunk_allocated (mac bigint PRIMARY KEY, \
                 client int NOT NULL, created timestamptz NOT NULL DEFAULT now())",
            ],
        }
    }
}

pub async fn run(out: Output, args: BenchSqlArgs) -> CmdResult {
    let pattern = Pattern::parse(&args.pattern)?;
    if args.clients == 0 || args.allocations == 0 {
        return Err(Failure::usage(
            "--clients and --allocations must be at least 1",
        ));
    }
    if !(0.0..100.0).contains(&args.fill) {
        return Err(Failure::usage("--fill must be a percent in 0..100"));
    }
    if args.range_size < CHUNK as u64
        || args.range_size > 1 << 24
        || !args.range_size.is_multiple_of(CHUNK as u64)
    {
        return Err(Failure::usage(
            "--range-size must be a multiple of 64 between 64 and 16777216",
        ));
    }
    let report = drive(pattern, args.clone()).await?;
    if out.json {
        let mut json = serde_json::json!({
            "pattern": pattern.name(),
            "clients": args.clients,
            "fill_percent": args.fill,
            "range_size": args.range_size,
            "prefilled": report.prefilled,
            "allocations": report.ok,
            "errors": report.errors,
            "first_error": report.first_error,
            "retries": report.retries,
            "chunk_claims": report.claims,
            "rows_after": report.rows_after,
            "server_version": report.server_version,
        });
        report
            .timed
            .add_json(&mut json, report.ok, &report.latencies_us);
        out.print_json(&json);
    } else {
        let mut lines = vec![
            ("pattern", pattern.name().to_string()),
            ("server", report.server_version.clone()),
            ("clients", format!("{} (one connection each)", args.clients)),
            (
                "pre-filled",
                format!(
                    "{} of {} addresses ({}%, untimed)",
                    report.prefilled, args.range_size, args.fill
                ),
            ),
            (
                "allocations",
                format!(
                    "{} ok, {} errors (of {})",
                    report.ok, report.errors, args.allocations
                ),
            ),
        ];
        if let Some(e) = &report.first_error {
            lines.push(("first error", e.clone()));
        }
        match pattern {
            Pattern::Neutron => {
                lines.push(("retries", format!("{} unique violations", report.retries)))
            }
            Pattern::SkipLocked => lines.push((
                "retries",
                format!("{} picks that found no unlocked row", report.retries),
            )),
            Pattern::Chunks => lines.push((
                "chunks",
                format!(
                    "{} claimed, {} claim conflicts",
                    report.claims, report.retries
                ),
            )),
            Pattern::Netbox => {}
        }
        lines.extend(report.timed.lines(report.ok, &report.latencies_us));
        lines.push((
            "rows after",
            format!(
                "{} allocated (pre-filled + ok: {})",
                report.rows_after,
                report.prefilled + report.ok
            ),
        ));
        print!("{}", fields(&lines));
    }
    if report.errors > 0 || report.rows_after != report.prefilled + report.ok {
        return Err(Failure::no(
            "the benchmark saw errors or a row count that does not add up",
        ));
    }
    Ok(OK)
}

struct Report {
    server_version: String,
    prefilled: u64,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    retries: u64,
    claims: u64,
    timed: Measured,
    latencies_us: Vec<u64>,
    rows_after: u64,
}

/// Runs setup and clients on their own single-threaded runtime and OS thread (the database
/// shares this machine; the pool's connections belong to that runtime).
async fn drive(pattern: Pattern, args: BenchSqlArgs) -> Result<Report, Failure> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::usage(format!("cannot start the load generator: {e}")))
            .and_then(|rt| rt.block_on(bench(pattern, &args)));
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| Failure::usage("the load generator thread died"))?
}

fn db_err(what: &str) -> impl Fn(sqlx::Error) -> Failure + '_ {
    move |e| Failure {
        code: UNREACHABLE,
        message: format!("{what}: {e}"),
    }
}

async fn bench(pattern: Pattern, args: &BenchSqlArgs) -> Result<Report, Failure> {
    let options = PgConnectOptions::from_str(&args.database)
        .map_err(|e| Failure::usage(format!("--database: {e}")))?
        // Waiting for the NetBox lock is the point, not a slow statement to log.
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(args.clients as u32)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .map_err(db_err("cannot connect to the database"))?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .map_err(db_err("SHOW server_version"))?;
    let size = args.range_size as i64;
    let prefilled = setup(&pool, pattern, size, args.fill, args.seed).await?;

    // Every connection opened before the clock starts.
    let mut conns = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        conns.push(pool.acquire().await.map_err(db_err("cannot connect"))?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let total = args.allocations;
    // Each client's generator seeded from a master one: SplitMix64 states that differ by a
    // multiple of its increment would replay each other's sequences.
    let mut seeds = Rng::new(args.seed ^ 0x5EED);
    let stopwatch = Stopwatch::start();
    let mut tasks = Vec::with_capacity(args.clients);
    for (c, conn) in conns.into_iter().enumerate() {
        let next = next.clone();
        let rng = Rng::new(seeds.next());
        let work = Work {
            pattern,
            next,
            total,
            size,
            explicit: args.explicit_transactions,
        };
        tasks.push(tokio::spawn(client(work, c as i32, conn, rng)));
    }
    let mut r = Report {
        server_version,
        prefilled,
        ok: 0,
        errors: 0,
        first_error: None,
        retries: 0,
        claims: 0,
        timed: Measured::default(),
        latencies_us: Vec::with_capacity(total),
        rows_after: 0,
    };
    for t in tasks {
        match t.await {
            Ok(c) => {
                r.ok += c.latencies_us.len() as u64;
                r.latencies_us.extend(c.latencies_us);
                r.errors += c.errors;
                r.retries += c.retries;
                r.claims += c.claims;
                if r.first_error.is_none() {
                    r.first_error = c.first_error;
                }
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    r.timed = stopwatch.stop();
    r.latencies_us.sort_unstable();
    let rows: i64 = sqlx::query_scalar(pattern.count_allocated())
        .fetch_one(&pool)
        .await
        .map_err(db_err("counting the allocated rows"))?;
    r.rows_after = rows as u64;
    pool.close().await;
    Ok(r)
}

/// Fresh tables, `fill` percent of the range allocated at random addresses; returns how many.
async fn setup(
    pool: &PgPool,
    pattern: Pattern,
    size: i64,
    fill: f64,
    seed: u64,
) -> Result<u64, Failure> {
    for stmt in pattern.schema() {
        sqlx::query(*stmt)
            .execute(pool)
            .await
            .map_err(db_err("creating the tables"))?;
    }
    let want = (size as f64 * fill / 100.0).round() as usize;
    let mut offsets: Vec<i64> = (0..size).collect();
    let mut rng = Rng::new(seed);
    for i in 0..want {
        let j = i + rng.below((offsets.len() - i) as u64) as usize;
        offsets.swap(i, j);
    }
    let taken: Vec<i64> = offsets[..want].iter().map(|o| FIRST + o).collect();
    let free: Vec<i64> = offsets[want..].iter().map(|o| FIRST + o).collect();
    let insert = match pattern {
        Pattern::Netbox => {
            "INSERT INTO macpool_bench_netbox (mac, client) SELECT unnest($1::bigint[]), -1"
        }
        Pattern::Neutron => {
            "INSERT INTO macpool_bench_neutron (mac, client) SELECT unnest($1::bigint[]), -1"
        }
        Pattern::SkipLocked => {
            "INSERT INTO macpool_bench_sl_allocated (mac, client) SELECT unnest($1::bigint[]), -1"
        }
        Pattern::Chunks => {
            "INSERT INTO macpool_bench_chunk_allocated (mac, client) \
             SELECT unnest($1::bigint[]), -1"
        }
    };
    sqlx::query(insert)
        .bind(&taken)
        .execute(pool)
        .await
        .map_err(db_err("pre-filling"))?;
    if pattern == Pattern::SkipLocked {
        sqlx::query("INSERT INTO macpool_bench_sl_free (mac) SELECT unnest($1::bigint[])")
            .bind(&free)
            .execute(pool)
            .await
            .map_err(db_err("filling the free table"))?;
    }
    // Visibility map and planner statistics for the fresh tables, as autovacuum would leave a
    // long-running database (index-only scans then skip the heap).
    let vacuum = match pattern {
        Pattern::Netbox => "VACUUM (ANALYZE) macpool_bench_netbox",
        Pattern::Neutron => "VACUUM (ANALYZE) macpool_bench_neutron",
        Pattern::SkipLocked => "VACUUM (ANALYZE) macpool_bench_sl_free, macpool_bench_sl_allocated",
        Pattern::Chunks => "VACUUM (ANALYZE) macpool_bench_chunks, macpool_bench_chunk_allocated",
    };
    sqlx::raw_sql(vacuum)
        .execute(pool)
        .await
        .map_err(db_err("VACUUM"))?;
    Ok(want as u64)
}

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    retries: u64,
    claims: u64,
}

/// The chunk a chunks-pattern client allocates from: its still-free addresses, highest first.
#[derive(Default)]
struct Chunk {
    free: Vec<i64>,
}

/// What every client shares: the pattern, and the allocation numbers still to hand out.
struct Work {
    pattern: Pattern,
    next: Arc<AtomicUsize>,
    total: usize,
    size: i64,
    explicit: bool,
}

/// One client: takes allocation numbers from `next` until `total` are handed out.
async fn client(
    work: Work,
    id: i32,
    mut conn: PoolConnection<Postgres>,
    mut rng: Rng,
) -> ClientResult {
    let Work {
        pattern,
        next,
        total,
        size,
        explicit,
    } = work;
    let mut r = ClientResult::default();
    let mut chunk = Chunk::default();
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let t = Instant::now();
        let result = match pattern {
            Pattern::Netbox => netbox(&mut conn, id, size, explicit).await,
            Pattern::Neutron => neutron(&mut conn, id, size, explicit, &mut rng, &mut r).await,
            Pattern::SkipLocked => skip_locked(&mut conn, id, explicit, &mut r).await,
            Pattern::Chunks => chunks(&mut conn, id, size, explicit, &mut chunk, &mut r).await,
        };
        match result {
            Ok(()) => r.latencies_us.push(t.elapsed().as_micros() as u64),
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert(e);
            }
        }
    }
    r
}

type Alloc = Result<(), String>;

fn e2s(e: sqlx::Error) -> String {
    e.to_string()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// The lowest free address of the NetBox table: the first address if it is free, else the
/// first allocated address whose successor is not (index scans of the primary key).
macro_rules! netbox_first_free {
    () => {
        "SELECT CASE \
           WHEN NOT EXISTS (SELECT 1 FROM macpool_bench_netbox WHERE mac = $1) THEN $1 \
           ELSE (SELECT a.mac + 1 FROM macpool_bench_netbox a \
                 WHERE a.mac >= $1 AND a.mac < $2 \
                   AND NOT EXISTS (SELECT 1 FROM macpool_bench_netbox b WHERE b.mac = a.mac + 1) \
                 ORDER BY a.mac LIMIT 1) END"
    };
}

/// The search and the insert in one statement (the search runs once; when the range is full
/// it yields NULL and the primary key refuses the row).
const NETBOX_INSERT: &str = concat!(
    "INSERT INTO macpool_bench_netbox (mac, client) VALUES ((",
    netbox_first_free!(),
    "), $3)"
);

/// NetBox: one advisory lock for the whole range, then the lowest free address, insert it.
/// The lock comes in a statement of its own so that the search's snapshot sees every
/// allocation committed before it.
async fn netbox(conn: &mut PgConnection, id: i32, size: i64, explicit: bool) -> Alloc {
    let mut tx = conn.begin().await.map_err(e2s)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(NETBOX_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(e2s)?;
    if explicit {
        // As NetBox does it: find the address, then save the row.
        let mac: Option<i64> = sqlx::query_scalar(netbox_first_free!())
            .bind(FIRST)
            .bind(FIRST + size - 1)
            .fetch_one(&mut *tx)
            .await
            .map_err(e2s)?;
        let mac = mac.ok_or("the range is full")?;
        sqlx::query("INSERT INTO macpool_bench_netbox (mac, client) VALUES ($1, $2)")
            .bind(mac)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(e2s)?;
    } else {
        sqlx::query(NETBOX_INSERT)
            .bind(FIRST)
            .bind(FIRST + size - 1)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(e2s)?;
    }
    tx.commit().await.map_err(e2s)
}

/// Inserts one allocated row: autocommit (one statement, one transaction) or in
/// BEGIN … COMMIT; a failed insert leaves nothing behind either way.
async fn insert_one(
    conn: &mut PgConnection,
    sql: &'static str,
    mac: i64,
    id: i32,
    explicit: bool,
) -> Result<(), sqlx::Error> {
    if !explicit {
        return sqlx::query(sql)
            .bind(mac)
            .bind(id)
            .execute(conn)
            .await
            .map(drop);
    }
    let mut tx = conn.begin().await?;
    match sqlx::query(sql).bind(mac).bind(id).execute(&mut *tx).await {
        Ok(_) => tx.commit().await,
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    }
}

/// Neutron: a random address, insert; on a unique violation try another.
async fn neutron(
    conn: &mut PgConnection,
    id: i32,
    size: i64,
    explicit: bool,
    rng: &mut Rng,
    r: &mut ClientResult,
) -> Alloc {
    for _ in 0..MAX_RETRIES {
        let mac = FIRST + rng.below(size as u64) as i64;
        let sql = "INSERT INTO macpool_bench_neutron (mac, client) VALUES ($1, $2)";
        match insert_one(conn, sql, mac, id, explicit).await {
            Ok(()) => return Ok(()),
            Err(e) if is_unique_violation(&e) => r.retries += 1,
            Err(e) => return Err(e2s(e)),
        }
    }
    Err(format!("no free address after {MAX_RETRIES} random tries"))
}

/// SKIP LOCKED: take the lowest free address no other transaction has locked, move it to the
/// allocated table.
async fn skip_locked(
    conn: &mut PgConnection,
    id: i32,
    explicit: bool,
    r: &mut ClientResult,
) -> Alloc {
    const TAKE: &str = "DELETE FROM macpool_bench_sl_free WHERE mac = \
        (SELECT mac FROM macpool_bench_sl_free ORDER BY mac LIMIT 1 FOR UPDATE SKIP LOCKED) \
        RETURNING mac";
    for _ in 0..MAX_RETRIES {
        let got = if explicit {
            let mut tx = conn.begin().await.map_err(e2s)?;
            let mac: Option<i64> = sqlx::query_scalar(TAKE)
                .fetch_optional(&mut *tx)
                .await
                .map_err(e2s)?;
            match mac {
                Some(mac) => {
                    sqlx::query(
                        "INSERT INTO macpool_bench_sl_allocated (mac, client) VALUES ($1, $2)",
                    )
                    .bind(mac)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(e2s)?;
                    tx.commit().await.map_err(e2s)?;
                    true
                }
                None => {
                    tx.rollback().await.map_err(e2s)?;
                    false
                }
            }
        } else {
            let mac: Option<i64> = sqlx::query_scalar(
                "WITH taken AS (DELETE FROM macpool_bench_sl_free WHERE mac = \
                   (SELECT mac FROM macpool_bench_sl_free ORDER BY mac LIMIT 1 \
                    FOR UPDATE SKIP LOCKED) RETURNING mac) \
                 INSERT INTO macpool_bench_sl_allocated (mac, client) \
                 SELECT mac, $1 FROM taken RETURNING mac",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(e2s)?;
            mac.is_some()
        };
        if got {
            return Ok(());
        }
        r.retries += 1;
        tokio::task::yield_now().await;
    }
    Err(format!(
        "no unlocked free address after {MAX_RETRIES} tries"
    ))
}

/// Chunks: allocate the lowest free address of this client's chunk with a plain insert; when
/// the chunk is used up, claim an unclaimed one at random (the primary key decides races) and
/// read which of its addresses are already taken, in one transaction.
async fn chunks(
    conn: &mut PgConnection,
    id: i32,
    size: i64,
    explicit: bool,
    chunk: &mut Chunk,
    r: &mut ClientResult,
) -> Alloc {
    let mut conflicts = 0;
    while chunk.free.is_empty() {
        if conflicts >= MAX_RETRIES {
            return Err(format!("no chunk claimed after {MAX_RETRIES} conflicts"));
        }
        let mut tx = conn.begin().await.map_err(e2s)?;
        let candidate: Option<i32> = sqlx::query_scalar(
            "SELECT s FROM generate_series(0, $1) AS s \
             WHERE NOT EXISTS (SELECT 1 FROM macpool_bench_chunks c WHERE c.chunk = s) \
             ORDER BY random() LIMIT 1",
        )
        .bind((size / CHUNK - 1) as i32)
        .fetch_optional(&mut *tx)
        .await
        .map_err(e2s)?;
        let candidate = candidate.ok_or("every chunk is claimed")?;
        let claimed: Option<i32> = sqlx::query_scalar(
            "INSERT INTO macpool_bench_chunks (chunk, client) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING RETURNING chunk",
        )
        .bind(candidate)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(e2s)?;
        if claimed.is_none() {
            tx.rollback().await.map_err(e2s)?;
            conflicts += 1;
            r.retries += 1;
            continue;
        }
        let lo = FIRST + i64::from(candidate) * CHUNK;
        let taken: Vec<i64> = sqlx::query_scalar(
            "SELECT mac FROM macpool_bench_chunk_allocated WHERE mac BETWEEN $1 AND $2",
        )
        .bind(lo)
        .bind(lo + CHUNK - 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(e2s)?;
        tx.commit().await.map_err(e2s)?;
        r.claims += 1;
        chunk.free = (lo..lo + CHUNK)
            .rev()
            .filter(|m| !taken.contains(m))
            .collect();
    }
    let mac = chunk.free.pop().expect("a chunk with free addresses");
    let sql = "INSERT INTO macpool_bench_chunk_allocated (mac, client) VALUES ($1, $2)";
    insert_one(conn, sql, mac, id, explicit).await.map_err(e2s)
}

/// SplitMix64: seeded, reproducible, good enough to pick addresses.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1), by rejection so that no value is favoured.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next();
            if v < zone {
                return v % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_by_name() {
        for p in [
            Pattern::Netbox,
            Pattern::Neutron,
            Pattern::SkipLocked,
            Pattern::Chunks,
        ] {
            assert_eq!(Pattern::parse(p.name()).unwrap(), p);
        }
        assert!(Pattern::parse("calico").is_err());
    }

    #[test]
    fn rng_stays_below_its_bound() {
        let mut r = Rng::new(7);
        assert!((0..10_000).all(|_| r.below(65_536) < 65_536));
        assert_eq!(Rng::new(1).next(), Rng::new(1).next());
    }
}
