//! The embedded back end: one SQLite file in WAL mode, owned by one worker thread that also holds
//! the in-memory [`Authority`].
//!
//! Group commit, pipelined: the worker takes every queued request, applies them to the authority
//! one by one, writes their changes in one transaction and commits it to the WAL (no fsync yet).
//! It hands the batch's replies to the *syncer* thread and goes on with the next batch. The syncer
//! takes every batch committed since its last round, makes the WAL durable with one `fdatasync`,
//! and only then answers those requests. So the fsync of batch N overlaps the work on batch N+1,
//! and one fsync covers as many batches as arrived while the previous one ran.
//!
//! Why this is safe: with `synchronous=NORMAL` SQLite writes each commit to the WAL without
//! syncing it; a commit is durable once the WAL's bytes up to its commit frame are on disk, which
//! is exactly what `fdatasync` on the WAL file gives. Checkpoints (run by a background connection,
//! never by the writer) sync the WAL before copying it into the database file, so nothing reaches
//! the database that is not already durable in the WAL. Nobody is told "yes" before the sync, and
//! reads are answered through the same path, so no reply reflects state that is not yet durable.
//!
//! If a commit fails the in-memory state is rebuilt from the database and every request of the
//! batch gets an error. If an fsync fails, the store stops taking requests (503) until restarted:
//! after a failed fsync the kernel may have dropped the dirty pages, so the only safe state is the
//! one on disk.

mod guard;
mod rows;
pub mod schema;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use macpool_core::Timestamp;
use macpool_core::authority::{Actor, Authority, Change, Context};
use macpool_core::history::HistoryAction;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{
    HistoryFilter, HistoryRecord, Snapshot, Store, StoreError, StoreResult, StoreStats,
    TokenRecord, now, token_history,
};

/// Most requests one commit carries; bounds the latency of the last one in a batch.
const MAX_BATCH: usize = 1024;

/// A durable write a request asks for, beyond the authority's own changes.
enum Write {
    Domain(Change),
    TokenSaved(TokenRecord),
    TokenRevoked { id: String, at: Timestamp },
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut Worker, Timestamp) -> (Vec<Write>, Reply) + Send>;

struct Worker {
    conn: Connection,
    authority: Authority,
    /// Set when a commit failed and the reload failed too: the next batch reloads first.
    stale: bool,
}

impl Worker {
    fn reload(&mut self) -> Result<(), String> {
        let loaded = rows::load(&self.conn).map_err(|e| e.to_string())?;
        self.authority = loaded.into_authority(now())?;
        self.stale = false;
        Ok(())
    }

    fn commit(&mut self, writes: &[&Write]) -> rusqlite::Result<()> {
        // Only the last cursor of each pool in a batch matters.
        let mut last_cursor = std::collections::HashMap::new();
        for (i, w) in writes.iter().enumerate() {
            if let Write::Domain(Change::CursorMoved { pool, .. }) = w {
                last_cursor.insert(pool, i);
            }
        }
        let tx = self.conn.transaction()?;
        for (i, w) in writes.iter().enumerate() {
            match w {
                Write::Domain(c @ Change::CursorMoved { pool, .. }) => {
                    if last_cursor.get(pool) == Some(&i) {
                        rows::apply_change(&tx, c)?;
                    }
                }
                Write::Domain(c) => rows::apply_change(&tx, c)?,
                Write::TokenSaved(t) => rows::save_token(&tx, t)?,
                Write::TokenRevoked { id, at } => {
                    rows::revoke_token(&tx, id, *at)?;
                }
            }
        }
        tx.commit()
    }
}

#[derive(Default)]
struct Counters {
    /// fsyncs of the WAL that made at least one mutation durable.
    commits: AtomicU64,
    mutations: AtomicU64,
    /// Set when an fsync failed: from then on every request is refused.
    poisoned: AtomicBool,
    /// The newest history row that is durable: history reads run on reader connections, which
    /// see commits before their fsync, and stop here.
    durable_history: AtomicU64,
}

/// Connections for history reads, beside the writer's: SQLite's WAL lets them read while it
/// writes. Opened on demand, kept for the next read.
struct Readers {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let unavailable = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match kept {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path).map_err(unavailable)?;
                c.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
                    .map_err(unavailable)?;
                c
            }
        };
        let result = f(&conn).map_err(unavailable);
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        result
    }
}

/// The SQLite store. Cheap to share: clone the `Arc` it lives in.
pub struct SqliteStore {
    jobs: mpsc::UnboundedSender<Job>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
    checkpointer: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
    readers: Arc<Readers>,
    /// `macpool.lock` and `macpool.db`, locked; dropped after the connections are closed (on Unix
    /// closing a descriptor of the database would drop SQLite's own `fcntl` locks on it).
    _locks: (File, File),
    path: PathBuf,
}

impl SqliteStore {
    /// Runs `read` on a reader connection, on a blocking thread: never on the writer.
    async fn read_history<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|e| StoreError::Unavailable(format!("a history read stopped: {e}")))?
    }

    /// Opens (creating if needed) the store in directory `dir`, migrates the schema and loads
    /// the authority. Refuses a directory another running macpool holds, and a store that existed
    /// but whose database is now empty or unreadable ([`guard`]).
    pub fn open(dir: &Path) -> Result<SqliteStore, String> {
        let evidence = guard::Evidence::gather(dir);
        guard::create_private_dir(dir)?;
        let lock = guard::lock_directory(dir)?;
        let path = dir.join(guard::DATABASE);
        let db = match guard::open_private(&path, false) {
            Ok(db) => db,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !evidence.is_empty() => {
                return Err(evidence.refuse(dir, "missing"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => guard::open_private(&path, true)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        guard::lock_database(dir, &db)?;
        let len = db
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        if len == 0 && !evidence.is_empty() {
            return Err(evidence.refuse(dir, "empty (0 bytes)"));
        }
        let mut conn =
            Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // Read before anything writes: a database without macpool's schema where a store existed
        // is a lost store, and a file that is no database at all is never reinitialised.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| {
                format!(
                    "cannot read {}: {e}; it is not a readable macpool store. Restore it from a \
                     backup, or move it away to start a new, empty store on purpose",
                    path.display()
                )
            })?;
        if version == 0 && !evidence.is_empty() {
            return Err(evidence.refuse(dir, "a database without macpool's tables"));
        }
        conn.execute_batch(
            "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
        schema::migrate(&mut conn).map_err(|e| format!("{}: {e}", path.display()))?;
        conn.execute(
            "DELETE FROM cooling WHERE until_ms <= ?1",
            [now().as_millis() as i64],
        )
        .map_err(|e| e.to_string())?;
        let mut worker = Worker {
            conn,
            authority: Authority::new(),
            stale: true,
        };
        worker
            .reload()
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // Everything before this point (migrations, clean-up) is made durable the plain way.
        worker
            .conn
            .execute_batch("PRAGMA wal_checkpoint(FULL);")
            .map_err(|e| format!("cannot checkpoint {}: {e}", path.display()))?;
        let wal = guard::open_private(&dir.join(guard::WAL), true)
            .map_err(|e| format!("cannot open the write-ahead log of {}: {e}", path.display()))?;
        // The WAL may be new (SQLite removes it when the last connection closes): its name must
        // be durable before the first fdatasync of it acknowledges anything.
        guard::sync_dir(dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
        guard::write_marker(dir)?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        // Everything on disk now is durable (the checkpoint above synced it).
        counters.durable_history.store(
            rows::last_history_id(&worker.conn).map_err(|e| e.to_string())?,
            Ordering::SeqCst,
        );
        let (to_syncer, from_worker) = std::sync::mpsc::channel::<Synced>();
        let c = counters.clone();
        let syncer = std::thread::Builder::new()
            .name("macpool-sync".into())
            .spawn(move || run_syncer(wal, from_worker, &c))
            .map_err(|e| e.to_string())?;
        let c = counters.clone();
        let handle = std::thread::Builder::new()
            .name("macpool-store".into())
            .spawn(move || {
                run_worker(worker, rx, to_syncer, &c);
                let _ = syncer.join();
            })
            .map_err(|e| e.to_string())?;
        let checkpointer = start_checkpointer(&path)?;
        Ok(SqliteStore {
            jobs,
            counters,
            worker: Some(handle),
            checkpointer: Some(checkpointer),
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: std::sync::Mutex::new(Vec::new()),
            }),
            _locks: (lock, db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything in the store, for `store migrate` (read between two batches: consistent).
    pub async fn export(&self) -> StoreResult<Snapshot> {
        self.call(|w, _| {
            let read = || -> rusqlite::Result<Snapshot> {
                Ok(Snapshot {
                    state: rows::load(&w.conn)?,
                    history: rows::all_history(&w.conn)?,
                    tokens: rows::tokens(&w.conn)?,
                })
            };
            (
                read().map_err(|e| StoreError::Unavailable(e.to_string())),
                Vec::new(),
            )
        })
        .await
    }

    /// Runs `f` on the worker, in the next batch, and returns its result once the batch is durable.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker, Timestamp) -> (StoreResult<T>, Vec<Write>) + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w, now| {
            let (result, writes) = f(w, now);
            let reply: Reply = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (writes, reply)
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store worker stopped".into()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue lets the worker finish what it has and exit.
        let (dead, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.jobs, dead));
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
        if let Some((stop, h)) = self.checkpointer.take() {
            let _ = stop.send(());
            let _ = h.join();
        }
    }
}

/// A committed (or failed) batch on its way to the syncer: replies wait for the fsync.
struct Synced {
    replies: Vec<Reply>,
    /// The batch's commit outcome; `Ok` still needs the fsync before anyone is told.
    commit: Result<(), String>,
    mutations: u64,
    /// The newest history row the batch wrote: durable with the fsync.
    history_upto: Option<u64>,
}

/// Makes committed batches durable and answers them: one `fdatasync` for everything queued.
fn run_syncer(wal: File, batches: std::sync::mpsc::Receiver<Synced>, counters: &Counters) {
    while let Ok(first) = batches.recv() {
        let mut group = vec![first];
        group.extend(batches.try_iter());
        let mutations: u64 = group
            .iter()
            .filter(|b| b.commit.is_ok())
            .map(|b| b.mutations)
            .sum();
        let synced = if mutations == 0 || counters.poisoned.load(Ordering::SeqCst) {
            Ok(())
        } else {
            wal.sync_data()
        };
        match synced {
            Ok(()) if mutations > 0 => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.mutations.fetch_add(mutations, Ordering::Relaxed);
                if !counters.poisoned.load(Ordering::SeqCst)
                    && let Some(upto) = group
                        .iter()
                        .filter(|b| b.commit.is_ok())
                        .filter_map(|b| b.history_upto)
                        .max()
                {
                    counters.durable_history.fetch_max(upto, Ordering::SeqCst);
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(
                    "fsync of the write-ahead log failed, refusing all requests until restart: {e}"
                );
                counters.poisoned.store(true, Ordering::SeqCst);
            }
        }
        let poisoned = counters.poisoned.load(Ordering::SeqCst);
        for batch in group {
            let outcome: Result<(), String> = match (&batch.commit, poisoned) {
                (Err(e), _) => Err(format!("commit failed: {e}")),
                (Ok(()), true) if batch.mutations > 0 => {
                    Err("the store could not make changes durable; restart macpool".into())
                }
                (Ok(()), _) => Ok(()),
            };
            for reply in batch.replies {
                reply(outcome.clone().map_err(StoreError::Unavailable));
            }
        }
    }
}

/// A second connection that copies the WAL into the database in the background, so the writer
/// never stalls on a checkpoint. PASSIVE: it never blocks the writer.
fn start_checkpointer(
    path: &Path,
) -> Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>), String> {
    let conn =
        Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(|e| e.to_string())?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("macpool-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_millis(500))
            {
                if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::warn!("background checkpoint failed: {e}");
                }
            }
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
        })
        .map_err(|e| e.to_string())?;
    Ok((stop, handle))
}

fn run_worker(
    mut worker: Worker,
    mut rx: mpsc::UnboundedReceiver<Job>,
    syncer: std::sync::mpsc::Sender<Synced>,
    counters: &Counters,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let refuse = |worker: &mut Worker, batch: Vec<Job>, why: String| {
            let now = now();
            for job in batch {
                let (_, reply) = job(worker, now);
                reply(Err(StoreError::Unavailable(why.clone())));
            }
        };
        if counters.poisoned.load(Ordering::SeqCst) {
            refuse(
                &mut worker,
                batch,
                "the store could not make changes durable; restart macpool".into(),
            );
            continue;
        }
        if worker.stale
            && let Err(e) = worker.reload()
        {
            tracing::error!("store reload failed: {e}");
            refuse(&mut worker, batch, format!("store reload failed: {e}"));
            worker.stale = true;
            continue;
        }
        let now = now();
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            outcomes.push(job(&mut worker, now));
        }
        let writes: Vec<&Write> = outcomes.iter().flat_map(|(w, _)| w.iter()).collect();
        let mutations = outcomes.iter().filter(|(w, _)| !w.is_empty()).count() as u64;
        let commit = if writes.is_empty() {
            Ok(())
        } else {
            worker.commit(&writes).map_err(|e| {
                tracing::error!("commit failed, rebuilding state from the database: {e}");
                if let Err(e) = worker.reload() {
                    tracing::error!("reload failed: {e}");
                    worker.stale = true;
                }
                e.to_string()
            })
        };
        let wrote_history = writes
            .iter()
            .any(|w| matches!(w, Write::Domain(Change::History(_))));
        let history_upto = match &commit {
            Ok(()) if wrote_history => match rows::last_history_id(&worker.conn) {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::warn!("cannot read the newest history id: {e}");
                    None
                }
            },
            _ => None,
        };
        let replies = outcomes.into_iter().map(|(_, r)| r).collect();
        if syncer
            .send(Synced {
                replies,
                commit,
                mutations,
                history_upto,
            })
            .is_err()
        {
            tracing::error!("the syncer thread stopped");
            return;
        }
    }
}

impl crate::sealed::Run for SqliteStore {
    async fn mutate<T: Send + 'static>(
        &self,
        actor: Actor,
        f: impl FnOnce(
            &mut Authority,
            &Context,
        ) -> Result<(T, Vec<Change>), macpool_core::authority::AuthorityError>
        + Send
        + 'static,
    ) -> StoreResult<T> {
        self.call(move |w, now| {
            let ctx = Context { now, actor };
            match f(&mut w.authority, &ctx) {
                Ok((value, changes)) => {
                    (Ok(value), changes.into_iter().map(Write::Domain).collect())
                }
                Err(e) => (Err(e.into()), Vec::new()),
            }
        })
        .await
    }

    /// Taken between two requests of a batch, answered once that batch is durable.
    async fn snapshot(&self) -> StoreResult<Authority> {
        self.call(move |w, now| {
            w.authority.expire(now);
            (Ok(w.authority.snapshot()), Vec::new())
        })
        .await
    }
}

impl Store for SqliteStore {
    /// On a reader connection, never on the writer; only rows already durable (the syncer moves
    /// `durable_history` before it answers the request that wrote them).
    async fn history(&self, mut filter: HistoryFilter) -> StoreResult<Vec<HistoryRecord>> {
        let past_durable = self.counters.durable_history.load(Ordering::SeqCst) + 1;
        filter.before = Some(filter.before.map_or(past_durable, |b| b.min(past_durable)));
        self.read_history(move |conn| rows::history(conn, &filter))
            .await
    }

    /// One reader connection for all the VMs, one indexed query each.
    async fn vm_histories(
        &self,
        vm_ids: Vec<String>,
        limit: u32,
    ) -> StoreResult<HashMap<String, Vec<HistoryRecord>>> {
        let past_durable = self.counters.durable_history.load(Ordering::SeqCst) + 1;
        self.read_history(move |conn| {
            let mut all = HashMap::new();
            for vm in vm_ids {
                let filter = HistoryFilter {
                    vm_id: Some(vm.clone()),
                    before: Some(past_durable),
                    limit,
                    ..HistoryFilter::default()
                };
                all.insert(vm, rows::history(conn, &filter)?);
            }
            Ok(all)
        })
        .await
    }

    async fn save_token(&self, actor: Actor, token: TokenRecord) -> StoreResult<()> {
        token.check_new()?;
        self.call(move |_, now| {
            let entry = token_history(&actor, HistoryAction::TokenCreated, &token, now);
            let writes = vec![
                Write::TokenSaved(token),
                Write::Domain(Change::History(entry)),
            ];
            (Ok(()), writes)
        })
        .await
    }

    async fn revoke_token(&self, actor: Actor, id: String) -> StoreResult<TokenRecord> {
        self.call(move |w, now| {
            // On the one writer: nothing else revokes between the check and the write.
            let found = rows::tokens(&w.conn)
                .map_err(|e| StoreError::Unavailable(e.to_string()))
                .and_then(|all| crate::revocable(&all, &id).cloned());
            match found {
                Ok(mut t) => {
                    let writes = if t.revoked.is_none() {
                        t.revoked = Some(now);
                        let entry = token_history(&actor, HistoryAction::TokenRevoked, &t, now);
                        vec![
                            Write::TokenRevoked { id, at: now },
                            Write::Domain(Change::History(entry)),
                        ]
                    } else {
                        Vec::new()
                    };
                    (Ok(t), writes)
                }
                Err(e) => (Err(e), Vec::new()),
            }
        })
        .await
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.call(|w, _| {
            let r = rows::tokens(&w.conn).map_err(|e| StoreError::Unavailable(e.to_string()));
            (r, Vec::new())
        })
        .await
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            mutations: self.counters.mutations.load(Ordering::Relaxed),
            poisoned: self.counters.poisoned.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests;
