//! The shared back end: PostgreSQL, for several `macpool serve` replicas on one database.
//!
//! Every replica keeps the whole authority in memory, as the embedded store does, and one worker
//! task per replica applies requests in batches. What makes replicas agree is the database:
//!
//! - **A sequenced change log.** Each batch that writes runs in one transaction that first locks
//!   the log's head row (`macpool_head`, `SELECT … FOR UPDATE`). Holding it, the replica reads
//!   the log entries other replicas committed since its own position and replays them
//!   (`Authority::apply_persisted`), so it decides on exactly the state the database holds; then
//!   it runs the batch's requests, writes their rows and one log entry, moves the head and
//!   commits. Because the lock is held until commit, log sequence numbers are gap-free in commit
//!   order, and two replicas can never both hand out the same free address.
//! - **Constraints as a second line.** `leases` refuses two unflagged leases of one MAC at commit
//!   (a deferred exclusion constraint), whatever the in-memory state believed.
//! - **Group commit.** The lock is taken once per batch, not per request: under load a batch
//!   carries every request queued while the previous one committed (and while the lock was
//!   awaited), so the serialization point costs three round trips per batch: lock and log read
//!   together, all writes in one statement, commit. (BENCHMARKS.md measures this against per-request
//!   designs: row locks with `SKIP LOCKED`, per-replica chunks, NetBox's advisory lock and
//!   Neutron's retry loop.)
//! - **Reads** first replay whatever the log gained (no lock), so a reply never reflects less
//!   than what any replica acknowledged before the read started.
//!
//! Durability, pipelined as in the embedded store: a batch commits with `synchronous_commit =
//! off`, which releases the head lock without waiting for the disk, and hands its replies to the
//! *syncer*. The syncer runs one synchronous commit, which makes PostgreSQL flush its log up to
//! that commit's record (and wait for synchronous standbys, where configured), so it covers every
//! batch committed before it, this replica's and the others'; only then are those replies sent.
//! Reads that saw positions not yet flushed wait for the same flush, so no reply ever shows a
//! state the database could still lose. While one batch waits for the disk, the next one runs.
//!
//! If the database is unreachable or a commit or flush fails, every request of the batch fails
//! with `Unavailable` (HTTP 503), the in-memory state is marked stale and is rebuilt from the
//! tables before the next batch; the replica recovers on its own when the database returns.

mod nodelay;
mod rows;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use macpool_core::Timestamp;
use macpool_core::authority::{Actor, Authority, AuthorityError, Change, Context};
use macpool_core::history::HistoryAction;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Counts, HistoryFilter, HistoryRecord, Snapshot, Store, StoreError, StoreResult, StoreStats,
    TokenRecord, now, token_history,
};
use rows::RowWrites;

/// Most requests one transaction carries.
const MAX_BATCH: usize = 1024;
/// How often a replica catches up and records its log position in `replicas`, idle or not;
/// the change log is then trimmed to the oldest position a present replica recorded.
const POSITION_EVERY: Duration = Duration::from_secs(5);
/// A replica that recorded no position for this long no longer holds the log back: it stopped
/// or lost the database, and reloads from the tables when it returns.
const ABSENT_AFTER: Duration = Duration::from_secs(600);
/// Pooled connections a replica opens at start and keeps open, for token and history reads (the
/// worker and the syncer have connections of their own), and the most the pool opens.
const KEPT_OPEN: u32 = 2;
const POOLED_MAX: u32 = 8;
/// How long opening a database connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first connection at start-up may take before the error says so.
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("database: {e}"))
}

/// Whether a URL names this back end.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions, String> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| format!("invalid database URL {}: {e}", redact(url)))?;
    Ok(options.application_name("macpool"))
}

/// Opens one connection (with `TCP_NODELAY`), giving up after `within`.
async fn connect(
    options: &PgConnectOptions,
    within: Duration,
) -> Result<PgConnection, sqlx::Error> {
    let conn = tokio::time::timeout(within, PgConnection::connect_with(options))
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", within.as_secs()),
            ))
        })??;
    nodelay::set_on_connections_to(options.get_port());
    Ok(conn)
}

/// The first connection a command opens, directly rather than through a pool: its error says
/// why (refused, authentication, no such database), where a pool would only say that it timed
/// out. `url` only names the database in the message.
async fn connect_first(url: &str, options: &PgConnectOptions) -> Result<PgConnection, String> {
    connect(options, START_TIMEOUT)
        .await
        .map_err(|e| format!("cannot connect to database {}: {e}", redact(url)))
}

/// The pool for reads beside the worker (tokens, history, export); connections open as needed.
fn read_pool(options: &PgConnectOptions) -> PgPool {
    let port = options.get_port();
    PgPoolOptions::new()
        .max_connections(POOLED_MAX)
        .min_connections(KEPT_OPEN)
        .acquire_timeout(CONNECT_TIMEOUT)
        .after_connect(move |_, _| {
            Box::pin(async move {
                nodelay::set_on_connections_to(port);
                Ok(())
            })
        })
        .connect_lazy_with(options.clone())
}

/// The connection of a task on the hot path (the worker, the syncer), opened when first needed
/// and again after a failure. A pooled one would cost two more round trips per use: sqlx pings a
/// connection when it is acquired and again when it is released (`scripts/bench-ab.sh 3ba933f
/// 4283333` measures what that cost). Only a connection that sat idle is pinged
/// ([`IDLE_CHECK_AFTER`]).
struct OwnConnection {
    options: PgConnectOptions,
    /// The open connection and when it was last put back.
    conn: Option<(PgConnection, Instant)>,
}

/// A connection idle for this long is pinged before its next use: the database may have closed
/// it meanwhile (a restart, an idle timeout, `pg_terminate_backend`), and the request that
/// finds out should not be the one to fail. Under load connections are never this idle, so
/// the hot path pays nothing.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

impl OwnConnection {
    /// Keeps `conn`, opened now rather than inside the first request that needs it; later
    /// connections open with `options`.
    fn new(options: PgConnectOptions, conn: PgConnection) -> OwnConnection {
        OwnConnection {
            options,
            conn: Some((conn, Instant::now())),
        }
    }

    /// The connection, taken out for one use: [`OwnConnection::put_back`] it after success;
    /// after a failure drop it (it may be broken, or inside a transaction), and the next use
    /// opens a new one.
    async fn take(&mut self) -> Result<PgConnection, sqlx::Error> {
        if let Some((mut conn, idle_since)) = self.conn.take() {
            if idle_since.elapsed() < IDLE_CHECK_AFTER
                || matches!(
                    tokio::time::timeout(CONNECT_TIMEOUT, conn.ping()).await,
                    Ok(Ok(()))
                )
            {
                return Ok(conn);
            }
            tracing::info!("a database connection closed while idle; opening a new one");
        }
        connect(&self.options, CONNECT_TIMEOUT).await
    }

    fn put_back(&mut self, conn: PgConnection) {
        self.conn = Some((conn, Instant::now()));
    }
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// One request for the worker.
trait Job: Send {
    /// Whether it may write: a batch of reads only catches up and never takes the head lock.
    fn writes(&self) -> bool;
    /// Runs on the caught-up authority at `now`, adds its rows and log entries, and returns
    /// how to answer once the batch's fate is known.
    fn run(
        self: Box<Self>,
        authority: &mut Authority,
        now: Timestamp,
        rows: &mut RowWrites,
        log: &mut Vec<Change>,
    ) -> Reply;
    /// Answers without running: the batch could not run at all.
    fn refuse(self: Box<Self>, error: StoreError);
}

/// A [`Job`] from a closure, answered through a channel.
struct Call<F, T> {
    writes: bool,
    work: F,
    answer: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for Call<F, T>
where
    F: FnOnce(&mut Authority, Timestamp, &mut RowWrites, &mut Vec<Change>) -> StoreResult<T>
        + Send
        + 'static,
    T: Send + 'static,
{
    fn writes(&self) -> bool {
        self.writes
    }

    fn run(
        self: Box<Self>,
        authority: &mut Authority,
        now: Timestamp,
        rows: &mut RowWrites,
        log: &mut Vec<Change>,
    ) -> Reply {
        let result = (self.work)(authority, now, rows, log);
        let answer = self.answer;
        Box::new(move |batch: Result<(), StoreError>| {
            let _ = answer.send(batch.and(result));
        })
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.answer.send(Err(error));
    }
}

type Batch = Vec<Box<dyn Job>>;
type Queue = mpsc::UnboundedReceiver<Box<dyn Job>>;

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    mutations: AtomicU64,
}

struct Worker {
    conn: OwnConnection,
    authority: Authority,
    /// The log position the in-memory state reflects.
    seq: i64,
    /// The in-memory state may be ahead of the database: a commit failed, or a flush failed
    /// and the commits it should have covered may be lost. Set by the worker and the syncer;
    /// the worker reloads before its next batch.
    stale: Arc<AtomicBool>,
    replica: String,
}

impl Worker {
    /// Rebuilds the state from the tables, in one snapshot with the head it belongs to.
    async fn reload(&mut self) -> Result<(), String> {
        let mut conn = self.conn.take().await.map_err(|e| e.to_string())?;
        let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        self.reload_in(&mut tx).await?;
        tx.commit().await.map_err(|e| e.to_string())?;
        self.conn.put_back(conn);
        Ok(())
    }

    /// Replays the log entries after `self.seq`, up to the head (read in the same statement, so
    /// both come from one snapshot). Reloads from the tables when the entries needed were
    /// trimmed. Without the head lock: for reads.
    async fn catch_up(&mut self, conn: &mut PgConnection) -> Result<(), String> {
        let rows: Vec<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
            // Bounded on both sides, so that even a generic plan (whose estimate for an open
            // range is a third of the table) walks the index.
            "SELECT h.seq, l.seq, l.changes FROM macpool_head h
             LEFT JOIN change_log l ON l.seq > $1 AND l.seq <= h.seq WHERE h.id = 1 ORDER BY l.seq",
        )
        .bind(self.seq)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
        let head = rows.first().map_or(self.seq, |r| r.0);
        let entries = rows
            .into_iter()
            .filter_map(|(_, seq, changes)| Some((seq?, changes?)))
            .collect();
        if !self.replay(head, entries)? {
            self.reload().await?;
        }
        Ok(())
    }

    /// Applies log entries read up to `head`; false when some are missing (trimmed from the
    /// log) or do not fit this state: then only a reload from the tables brings it up to date.
    fn replay(&mut self, head: i64, entries: Vec<(i64, String)>) -> Result<bool, String> {
        let complete = entries.len() as i64 == head - self.seq
            && entries.first().is_none_or(|(s, _)| *s == self.seq + 1);
        if !complete {
            tracing::info!(
                "replica {} fell behind the trimmed change log; reloading from the tables",
                self.replica
            );
            return Ok(false);
        }
        for (seq, changes) in entries {
            let changes: Vec<Change> = serde_json::from_str(&changes)
                .map_err(|e| format!("change log entry {seq} cannot be read: {e}"))?;
            if let Err(e) = self.authority.apply_persisted(&changes) {
                tracing::warn!(
                    "replica {} cannot follow change log entry {seq} ({e}); reloading from the tables",
                    self.replica
                );
                return Ok(false);
            }
            self.seq = seq;
        }
        Ok(true)
    }

    /// Opens the batch's transaction, takes the head lock and reads the log entries other
    /// replicas committed since `self.seq`, in one round trip: the statements of one simple
    /// query run in order, each with a fresh snapshot, so the last one, running once the lock
    /// is held, sees every entry up to the head. The commit need not wait for its fsync: the
    /// syncer makes it durable before anyone is answered, and meanwhile the lock is free for
    /// the next batch. The caller commits, or closes the connection on failure.
    async fn begin_locked(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(i64, Vec<(i64, String)>), sqlx::Error> {
        // `self.seq` is the only value in the text, an integer of our own.
        let sql = format!(
            "BEGIN; SET LOCAL synchronous_commit = off;
             SELECT seq FROM macpool_head WHERE id = 1 FOR UPDATE;
             SELECT seq, changes FROM change_log WHERE seq > {} ORDER BY seq",
            self.seq
        );
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await?;
        let mut head = None;
        let mut entries = Vec::new();
        for row in rows {
            match row.len() {
                1 => head = Some(row.try_get::<i64, _>(0)?),
                _ => entries.push((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?)),
            }
        }
        let head = head.ok_or_else(|| sqlx::Error::RowNotFound)?;
        Ok((head, entries))
    }

    /// A reload on the caller's connection, where nothing moves meanwhile: it holds the head
    /// lock, or reads one `REPEATABLE READ` snapshot ([`Worker::reload`]).
    async fn reload_in(&mut self, conn: &mut PgConnection) -> Result<(), String> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM macpool_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        let state = rows::load(conn).await.map_err(|e| e.to_string())?;
        self.authority = state.into_authority(now())?;
        self.seq = seq;
        Ok(())
    }

    /// Runs one batch: under the head lock when any job may write, else after a catch-up.
    /// The replies wait for the syncer: nothing is answered before it is durable.
    /// Catches up, records this replica's position, and trims the change log to what every
    /// present replica still needs: the entries after the oldest position recorded within
    /// [`ABSENT_AFTER`]. Positions only grow, so an entry a replica needs is never trimmed on
    /// a stale reading; one that was (the replica was absent) makes it reload. Returns the
    /// position recorded.
    async fn keep_position(&mut self) -> Result<i64, String> {
        if self.stale.swap(false, Ordering::SeqCst)
            && let Err(e) = self.reload().await
        {
            self.stale.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let mut conn = self.conn.take().await.map_err(|e| e.to_string())?;
        self.catch_up(&mut conn).await?;
        let now_ms = now().0 as i64;
        let absent_before = now_ms - ABSENT_AFTER.as_millis() as i64;
        // The main statement sees the table as it was before the CTEs: this replica's new
        // position enters through LEAST, and its own old row is left out.
        sqlx::query(
            "WITH me AS (
                INSERT INTO replicas (replica, seq, seen_ms) VALUES ($1, $2, $3)
                ON CONFLICT (replica) DO UPDATE SET seq = EXCLUDED.seq, seen_ms = EXCLUDED.seen_ms
             ), gone AS (
                DELETE FROM replicas WHERE seen_ms < $4 AND replica <> $1
             )
             DELETE FROM change_log WHERE seq <= LEAST($2, (
                SELECT min(seq) FROM replicas WHERE seen_ms >= $4 AND replica <> $1))",
        )
        .bind(&self.replica)
        .bind(self.seq)
        .bind(now_ms)
        .bind(absent_before)
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        self.conn.put_back(conn);
        Ok(self.seq)
    }

    async fn run_batch(&mut self, batch: Batch, queue: &mut Queue) -> Done {
        let writes = batch.iter().any(|j| j.writes());
        let (replies, result, mutations) = if writes {
            self.run_locked(batch, queue).await
        } else {
            let (replies, result) = self.run_reads(batch).await;
            (replies, result, 0)
        };
        Done {
            replies,
            result,
            seq: self.seq,
            mutations,
        }
    }

    async fn run_reads(&mut self, batch: Batch) -> (Vec<Reply>, Result<(), String>) {
        let caught_up = async {
            let mut conn = self.conn.take().await.map_err(|e| e.to_string())?;
            self.catch_up(&mut conn).await?;
            self.conn.put_back(conn);
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = caught_up {
            return (refuse(batch, &e), Err(e));
        }
        let now = now();
        self.authority.expire(now);
        let mut ignored = RowWrites::default();
        let mut changes = Vec::new();
        let replies = batch
            .into_iter()
            .map(|j| j.run(&mut self.authority, now, &mut ignored, &mut changes))
            .collect();
        (replies, Ok(()))
    }

    /// Runs a batch under the head lock, together with every request that arrived while the
    /// lock was awaited: when replicas contend, each lock hand-over then carries more requests.
    async fn run_locked(
        &mut self,
        mut batch: Batch,
        queue: &mut Queue,
    ) -> (Vec<Reply>, Result<(), String>, u64) {
        let mut conn = match self.conn.take().await {
            Ok(c) => c,
            Err(e) => return (refuse(batch, &e), Err(e.to_string()), 0),
        };
        let (head, entries) = match self.begin_locked(&mut conn).await {
            Ok(read) => read,
            Err(e) => return (refuse(batch, &e), Err(e.to_string()), 0),
        };
        let replayed = match self.replay(head, entries) {
            Ok(true) => Ok(()),
            Ok(false) => self.reload_in(&mut conn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = replayed {
            self.stale.store(true, Ordering::SeqCst);
            return (refuse(batch, &e), Err(e), 0);
        }
        fill_batch(&mut batch, queue);
        let now = now();
        self.authority.expire(now);
        let pool_ranges: HashMap<String, Vec<_>> = self
            .authority
            .pools()
            .into_iter()
            .map(|p| (p.spec.name.to_string(), p.spec.ranges))
            .collect();
        let mut writes = RowWrites::new(pool_ranges);
        let mut changes = Vec::new();
        let mut mutations = 0u64;
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            let before = (changes.len(), writes.is_empty());
            replies.push(job.run(&mut self.authority, now, &mut writes, &mut changes));
            if changes.len() != before.0 || (before.1 && !writes.is_empty()) {
                mutations += 1;
            }
        }
        if writes.is_empty() {
            // Nothing to write after all (refusals, idempotent repeats): release the lock.
            let done = commit(&mut conn).await.map_err(|e| e.to_string());
            if done.is_ok() {
                self.conn.put_back(conn);
            }
            return (replies, done, 0);
        }
        let committed = async {
            let logged: Vec<&Change> = changes
                .iter()
                .filter(|c| !matches!(c, Change::History(_)))
                .collect();
            let seq = head + 1;
            let entry = (!logged.is_empty()).then(|| rows::LogEntry {
                seq,
                at_ms: now.0 as i64,
                replica: self.replica.clone(),
                changes: serde_json::to_string(&logged).expect("changes serialize"),
            });
            writes.execute(&mut conn, entry).await?;
            commit(&mut conn).await?;
            Ok::<bool, sqlx::Error>(!logged.is_empty())
        }
        .await;
        match committed {
            Ok(logged) => {
                self.conn.put_back(conn);
                if logged {
                    self.seq = head + 1;
                }
                (replies, Ok(()), mutations)
            }
            Err(e) => {
                tracing::error!("commit failed, the state will be rebuilt from the database: {e}");
                // Its transaction may still be open: the connection goes (dropped, not put
                // back), and with it the lock.
                self.stale.store(true, Ordering::SeqCst);
                (replies, Err(format!("commit failed: {e}")), 0)
            }
        }
    }
}

/// Ends the transaction [`Worker::begin_locked`] opened (and with it the head lock).
async fn commit(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("COMMIT").execute(conn).await.map(|_| ())
}

/// Answers every request of a batch that could not run with `Unavailable`; returns no
/// replies (nothing is left to answer after the batch).
fn refuse(batch: Batch, error: &dyn std::fmt::Display) -> Vec<Reply> {
    for job in batch {
        job.refuse(unavailable(error));
    }
    Vec::new()
}

/// A batch that ran, on its way to the syncer.
struct Done {
    replies: Vec<Reply>,
    result: Result<(), String>,
    /// The log position the batch's answers reflect: durable once a flush covers it.
    seq: i64,
    mutations: u64,
}

/// Adds the requests already queued, up to [`MAX_BATCH`].
fn fill_batch(batch: &mut Batch, queue: &mut Queue) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// A request to record the replica's position now ([`PostgresStore::keep_position`]).
type PositionRequest = oneshot::Sender<Result<i64, String>>;

async fn run_worker(
    mut worker: Worker,
    mut rx: Queue,
    mut positions: mpsc::UnboundedReceiver<PositionRequest>,
    position_every: Duration,
    syncer: mpsc::UnboundedSender<Done>,
) {
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + position_every, position_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
            asked = positions.recv() => {
                // None: the store was dropped.
                let Some(answer) = asked else { return };
                let _ = answer.send(worker.keep_position().await);
                continue;
            }
            _ = every.tick() => {
                if let Err(e) = worker.keep_position().await {
                    tracing::warn!("cannot record this replica's change log position: {e}");
                }
                continue;
            }
        };
        let mut batch: Batch = vec![first];
        fill_batch(&mut batch, &mut rx);
        if worker.stale.swap(false, Ordering::SeqCst)
            && let Err(e) = worker.reload().await
        {
            worker.stale.store(true, Ordering::SeqCst);
            tracing::warn!("database unavailable, refusing requests: {e}");
            refuse(batch, &e);
            continue;
        }
        let done = worker.run_batch(batch, &mut rx).await;
        if syncer.send(done).is_err() {
            return;
        }
    }
}

/// Makes what the worker committed durable, then answers: one synchronous commit flushes the
/// write-ahead log up to its own record, so it covers every commit before it (this replica's
/// and the others'). Batches whose answers reflect only flushed positions are answered at once.
/// If a flush fails, the commits it should have covered may be lost with the server: those
/// requests fail, and `stale` makes the worker reload before it decides anything else.
async fn run_syncer(
    mut conn: OwnConnection,
    mut rx: mpsc::UnboundedReceiver<Done>,
    counters: Arc<Counters>,
    stale: Arc<AtomicBool>,
) {
    let mut flushed = i64::MIN;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while let Ok(d) = rx.try_recv() {
            group.push(d);
        }
        let needed = group
            .iter()
            .filter(|d| d.result.is_ok())
            .map(|d| d.seq)
            .max();
        let flush = match needed {
            Some(seq) if seq > flushed => match flush_wal(&mut conn).await {
                Ok(()) => {
                    flushed = seq;
                    let mutations: u64 = group.iter().map(|d| d.mutations).sum();
                    if mutations > 0 {
                        counters.commits.fetch_add(1, Ordering::Relaxed);
                        counters.mutations.fetch_add(mutations, Ordering::Relaxed);
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::error!("flushing the database's log failed: {e}");
                    stale.store(true, Ordering::SeqCst);
                    flushed = i64::MIN;
                    Err(format!("cannot make the commit durable: {e}"))
                }
            },
            _ => Ok(()),
        };
        for done in group {
            let result = done.result.and(flush.clone());
            for reply in done.replies {
                reply(result.clone().map_err(unavailable));
            }
        }
    }
}

/// A synchronous commit of a transaction with an id: PostgreSQL flushes (and, with synchronous
/// standbys, replicates) the log up to its commit record before it returns.
async fn flush_wal(own: &mut OwnConnection) -> Result<(), sqlx::Error> {
    let mut conn = own.take().await?;
    sqlx::raw_sql("BEGIN; SELECT txid_current(); COMMIT;")
        .execute(&mut conn)
        .await?;
    own.put_back(conn);
    Ok(())
}

/// The PostgreSQL store. Several processes may open the same database.
pub struct PostgresStore {
    jobs: mpsc::UnboundedSender<Box<dyn Job>>,
    positions: mpsc::UnboundedSender<PositionRequest>,
    pool: PgPool,
    counters: Arc<Counters>,
}

impl PostgresStore {
    /// Connects, migrates the schema (refusing a newer one) and loads the authority.
    pub async fn open(url: &str) -> Result<PostgresStore, String> {
        PostgresStore::open_with(url, POSITION_EVERY).await
    }

    /// [`PostgresStore::open`], recording the replica's log position every `position_every`
    /// instead of every [`POSITION_EVERY`]: tests that count the log's entries record positions
    /// themselves ([`PostgresStore::keep_position`]).
    pub async fn open_with(url: &str, position_every: Duration) -> Result<PostgresStore, String> {
        let options = connect_options(url)?;
        let mut first = connect_first(url, &options).await?;
        schema::migrate(&mut first).await?;
        // Unique per store, not only per process: tests open several replicas in one.
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let replica = format!(
            "{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "macpool".into()),
            std::process::id(),
            OPENED.fetch_add(1, Ordering::Relaxed)
        );
        // The connections a replica uses at once (the worker's, the syncer's, and the pool's for
        // token and history reads) open now and stay open, rather than inside requests: a new
        // TLS connection took ~90 ms here (its handshake runs before `nodelay` can set
        // TCP_NODELAY), a stall in the p99 of every benchmark run.
        let mut worker = Worker {
            conn: OwnConnection::new(options.clone(), first),
            authority: Authority::new(),
            seq: 0,
            stale: Arc::new(AtomicBool::new(false)),
            replica,
        };
        worker
            .reload()
            .await
            .map_err(|e| format!("cannot load the store from {}: {e}", redact(url)))?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let (to_syncer, done) = mpsc::unbounded_channel();
        let syncer_conn = OwnConnection::new(options.clone(), connect_first(url, &options).await?);
        let pool = read_pool(&options);
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..KEPT_OPEN {
            let pool = pool.clone();
            opening.spawn(async move { pool.acquire().await });
        }
        drop(opening.join_all().await);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run_syncer(
            syncer_conn,
            done,
            counters.clone(),
            worker.stale.clone(),
        ));
        let (position_requests, positions) = mpsc::unbounded_channel();
        tokio::spawn(run_worker(worker, rx, positions, position_every, to_syncer));
        Ok(PostgresStore {
            jobs,
            positions: position_requests,
            pool,
            counters,
        })
    }

    /// Runs `f` on the worker in the next batch; answers once the batch committed.
    async fn call<T: Send + 'static>(
        &self,
        writes: bool,
        f: impl FnOnce(&mut Authority, Timestamp, &mut RowWrites, &mut Vec<Change>) -> StoreResult<T>
        + Send
        + 'static,
    ) -> StoreResult<T> {
        let (answer, rx) = oneshot::channel();
        let job = Call {
            writes,
            work: f,
            answer,
        };
        self.jobs
            .send(Box::new(job))
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store worker stopped".into()))?
    }

    async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.pool.acquire().await.map_err(unavailable)
    }

    /// Everything in the database, for `store migrate` (one snapshot).
    pub async fn export(&self) -> StoreResult<Snapshot> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let state = rows::load(&mut tx).await.map_err(unavailable)?;
        let history = rows::all_history(&mut tx).await.map_err(unavailable)?;
        let tokens = rows::tokens(&mut tx).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Snapshot {
            state,
            history,
            tokens,
        })
    }

    /// Catches up, records this replica's change log position and trims the log to what the
    /// present replicas need, now rather than at the next [`POSITION_EVERY`] tick; returns the
    /// position recorded. For tests and tools.
    pub async fn keep_position(&self) -> StoreResult<i64> {
        let (answer, rx) = oneshot::channel();
        self.positions
            .send(answer)
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store worker stopped".into()))?
            .map_err(unavailable)
    }

    /// Row counts of every table.
    pub async fn counts(&self) -> StoreResult<Counts> {
        rows::counts(&mut *self.conn().await?)
            .await
            .map_err(unavailable)
    }
}

/// Copies a whole store into the database at `url`, which must hold no macpool data yet
/// (the schema is created if missing). Returns the counts read back from the target.
pub async fn import(url: &str, snapshot: &Snapshot) -> Result<Counts, String> {
    let mut conn = connect_first(url, &connect_options(url)?).await?;
    schema::migrate(&mut conn).await?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    // Lock the head: no replica may write while the copy runs.
    let head: i64 = sqlx::query_scalar("SELECT seq FROM macpool_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    let before = rows::counts(&mut tx).await.map_err(|e| e.to_string())?;
    if head != 0 || before != Counts::default() {
        let held: Vec<String> = before
            .rows()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        return Err(format!(
            "the target database {} already holds macpool data ({}); migrate into an empty database",
            redact(url),
            if held.is_empty() {
                format!("change log at {head}")
            } else {
                held.join(", ")
            }
        ));
    }
    rows::import(&mut tx, snapshot)
        .await
        .map_err(|e| format!("copy failed, nothing was written: {e}"))?;
    let after = rows::counts(&mut tx).await.map_err(|e| e.to_string())?;
    let expected = Counts::of(snapshot);
    if after != expected {
        return Err(format!(
            "copy verification failed, nothing was written: expected {expected:?}, the target would hold {after:?}"
        ));
    }
    tx.commit()
        .await
        .map_err(|e| format!("copy failed at commit, nothing was written: {e}"))?;
    Ok(after)
}

/// For tests: a fresh, empty database next to the one `base_url` names (dropped first if it
/// exists), and its URL. `name` is made safe for an identifier.
pub async fn scratch_database(base_url: &str, name: &str) -> Result<String, String> {
    let db: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let mut conn = PgConnection::connect(base_url)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", redact(base_url)))?;
    let drop = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let create = format!("CREATE DATABASE \"{db}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(replace_database(base_url, &db))
}

/// `base_url` with its database path replaced by `db`.
fn replace_database(base_url: &str, db: &str) -> String {
    let (head, query) = match base_url.find('?') {
        Some(q) => (&base_url[..q], &base_url[q..]),
        None => (base_url, ""),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let path_at = head[after_scheme..]
        .find('/')
        .map_or(head.len(), |i| after_scheme + i);
    format!("{}/{db}{query}", &head[..path_at])
}

impl crate::sealed::Run for PostgresStore {
    async fn mutate<T: Send + 'static>(
        &self,
        actor: Actor,
        f: impl FnOnce(&mut Authority, &Context) -> Result<(T, Vec<Change>), AuthorityError>
        + Send
        + 'static,
    ) -> StoreResult<T> {
        self.call(true, move |a, now, writes, log| {
            let ctx = Context { now, actor };
            let (value, changes) = f(a, &ctx)?;
            for c in &changes {
                writes.add(c);
            }
            log.extend(changes);
            Ok(value)
        })
        .await
    }

    /// Caught up with the log (without the head lock) and expired by the worker's read batch.
    async fn snapshot(&self) -> StoreResult<Authority> {
        self.call(false, |a, _, _, _| Ok(a.snapshot())).await
    }
}

impl Store for PostgresStore {
    async fn history(&self, filter: HistoryFilter) -> StoreResult<Vec<HistoryRecord>> {
        rows::history(&mut *self.conn().await?, &filter)
            .await
            .map_err(unavailable)
    }

    async fn vm_histories(
        &self,
        vm_ids: Vec<String>,
        limit: u32,
    ) -> StoreResult<HashMap<String, Vec<HistoryRecord>>> {
        rows::vm_histories(&mut *self.conn().await?, vm_ids, limit)
            .await
            .map_err(unavailable)
    }

    async fn save_token(&self, actor: Actor, token: TokenRecord) -> StoreResult<()> {
        token.check_new()?;
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let entry = token_history(&actor, HistoryAction::TokenCreated, &token, now());
        rows::save_token(&mut tx, &token)
            .await
            .map_err(unavailable)?;
        rows::insert_history(&mut tx, &[entry])
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn revoke_token(&self, actor: Actor, id: String) -> StoreResult<TokenRecord> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let at = now();
        // The active admin tokens stay locked until this commits: a replica revoking another
        // one at the same time waits, then sees this revocation when it checks the rule.
        sqlx::query("SELECT id FROM tokens WHERE role = 'admin' AND revoked_ms IS NULL FOR UPDATE")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let all = rows::tokens(&mut tx).await.map_err(unavailable)?;
        crate::revocable(&all, &id)?;
        // Only the first revocation sets revoked_ms (and is recorded); a repeat changes nothing.
        let first = sqlx::query(
            "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL RETURNING id",
        )
        .bind(&id)
        .bind(at.0 as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .is_some();
        let token = rows::tokens(&mut tx)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("no token with id '{id}'")))?;
        if first {
            let entry = token_history(&actor, HistoryAction::TokenRevoked, &token, at);
            rows::insert_history(&mut tx, &[entry])
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(token)
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        rows::tokens(&mut *self.conn().await?)
            .await
            .map_err(unavailable)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            mutations: self.counters.mutations.load(Ordering::Relaxed),
            // a failed commit here is the database's to report; the next request retries it
            poisoned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://macpool:s3cret@db.example/macpool"),
            "postgres://macpool:***@db.example/macpool"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
    }

    #[test]
    fn scratch_urls_keep_host_and_options() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            replace_database("postgres://u@h/db?sslmode=disable", "t2"),
            "postgres://u@h/t2?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://u@h", "t3"),
            "postgres://u@h/t3"
        );
    }
}
