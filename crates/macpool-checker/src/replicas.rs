//! The `macpool serve` replicas under test: started on a free port each, killed with SIGKILL and
//! restarted on a new port, and the list of live endpoints the clients pick from.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use macpool_client::Client;
use rand::Rng;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::CheckerError;

/// How long a replica may take to print its `listening` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a replica's stderr kept to explain a failed start.
const STDERR_TAIL: usize = 40;

/// One running replica as the clients see it.
#[derive(Debug)]
pub struct Endpoint {
    pub slot: usize,
    pub incarnation: u32,
    pub url: String,
    pub client: Client,
}

impl Endpoint {
    /// `r1#2`: replica slot 1, second process.
    pub fn name(&self) -> String {
        format!("r{}#{}", self.slot, self.incarnation)
    }
}

/// The endpoints that are up right now. Clients pick one at random per request.
#[derive(Debug, Default)]
pub struct Cluster {
    live: RwLock<Vec<Arc<Endpoint>>>,
}

impl Cluster {
    /// A random live endpoint, preferring one other than `avoid` (slot, incarnation) when there
    /// is a choice; `None` while no replica is up.
    pub fn pick(&self, rng: &mut impl Rng, avoid: Option<(usize, u32)>) -> Option<Arc<Endpoint>> {
        let live = self.live.read().unwrap();
        let candidates: Vec<&Arc<Endpoint>> = live
            .iter()
            .filter(|e| Some((e.slot, e.incarnation)) != avoid)
            .collect();
        if candidates.is_empty() {
            return live.first().cloned();
        }
        Some(candidates[rng.random_range(0..candidates.len())].clone())
    }

    pub fn all(&self) -> Vec<Arc<Endpoint>> {
        self.live.read().unwrap().clone()
    }

    fn add(&self, e: Arc<Endpoint>) {
        self.live.write().unwrap().push(e);
    }

    fn remove(&self, slot: usize) {
        self.live.write().unwrap().retain(|e| e.slot != slot);
    }
}

/// Something that happened to a replica, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaEvent {
    /// Milliseconds since the workload started (negative: before it).
    pub at_ms: i64,
    pub replica: String,
    /// `start`, `kill` or `restart`.
    pub event: &'static str,
    pub pid: u32,
    pub url: String,
    /// For starts and restarts: how long until the replica printed its address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<u64>,
}

struct Running {
    child: Child,
    endpoint: Arc<Endpoint>,
    pid: u32,
}

/// How `macpool serve` is told where its store is.
#[derive(Clone, Debug)]
pub struct StoreArgs(Vec<String>);

impl StoreArgs {
    /// `--database URL` when the binary has that flag; a binary from before it only takes
    /// `--data DIR`, which is what `sqlite:DIR` means.
    pub async fn detect(macpool: &Path, database: &str) -> Result<StoreArgs, CheckerError> {
        let out = Command::new(macpool)
            .args(["serve", "--help"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| CheckerError::Usage(format!("cannot run {}: {e}", macpool.display())))?;
        if !out.status.success() {
            return Err(CheckerError::Usage(format!(
                "{} serve --help failed ({}): is it the macpool binary?",
                macpool.display(),
                out.status
            )));
        }
        let help = String::from_utf8_lossy(&out.stdout);
        if help.contains("--database") {
            return Ok(StoreArgs(vec!["--database".into(), database.into()]));
        }
        match database.strip_prefix("sqlite:") {
            Some(dir) => Ok(StoreArgs(vec!["--data".into(), dir.into()])),
            None => Err(CheckerError::Usage(format!(
                "{} has no --database flag, so it can only serve sqlite:DIR",
                macpool.display()
            ))),
        }
    }
}

/// Starts, kills and restarts the replicas; owns their processes.
pub struct Replicas {
    macpool: PathBuf,
    store: StoreArgs,
    token: String,
    log_dir: Option<PathBuf>,
    t0: Instant,
    slots: Vec<Option<Running>>,
    incarnations: Vec<u32>,
    pub cluster: Arc<Cluster>,
    pub events: Vec<ReplicaEvent>,
}

impl Replicas {
    pub fn new(
        macpool: PathBuf,
        store: StoreArgs,
        token: String,
        log_dir: Option<PathBuf>,
        count: usize,
        t0: Instant,
    ) -> Replicas {
        Replicas {
            macpool,
            store,
            token,
            log_dir,
            t0,
            slots: (0..count).map(|_| None).collect(),
            incarnations: vec![0; count],
            cluster: Arc::new(Cluster::default()),
            events: Vec::new(),
        }
    }

    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// Moves the report's time origin (the workload's start).
    pub fn set_origin(&mut self, t0: Instant) {
        let shift = t0.saturating_duration_since(self.t0).as_millis() as i64;
        for e in &mut self.events {
            e.at_ms -= shift;
        }
        self.t0 = t0;
    }

    fn at_ms(&self) -> i64 {
        let now = Instant::now();
        if now >= self.t0 {
            now.duration_since(self.t0).as_millis() as i64
        } else {
            -(self.t0.duration_since(now).as_millis() as i64)
        }
    }

    /// Starts the replica in `slot` (first start or restart) and adds it to the cluster once it
    /// prints its address.
    pub async fn start(&mut self, slot: usize) -> anyhow::Result<()> {
        assert!(self.slots[slot].is_none(), "replica {slot} is running");
        self.incarnations[slot] += 1;
        let incarnation = self.incarnations[slot];
        let name = format!("r{slot}#{incarnation}");
        let began = Instant::now();
        let mut child = Command::new(&self.macpool)
            .arg("serve")
            .args(&self.store.0)
            .args(["--listen", "127.0.0.1:0"])
            .env("MACPOOL_BOOTSTRAP_TOKEN", &self.token)
            .env_remove("MACPOOL_LISTEN")
            .env_remove("MACPOOL_DATA")
            .env_remove("MACPOOL_DATABASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", self.macpool.display()))?;
        let pid = child.id().unwrap_or(0);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let log_file = match &self.log_dir {
            Some(d) => Some(
                tokio::fs::File::create(d.join(format!("replica-{slot}-{incarnation}.log")))
                    .await
                    .context("cannot create a replica log")?,
            ),
            None => None,
        };
        let stderr_done = tokio::spawn(keep_tail(
            child.stderr.take().unwrap(),
            tail.clone(),
            log_file,
        ));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = macpool_spawn::listening_url(&line) {
                    return Some(url.to_string());
                }
            }
            None
        })
        .await;
        let url = match listening {
            Ok(Some(url)) => url,
            failed => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
                let why = if failed.is_err() {
                    format!("did not print its address within {STARTUP_TIMEOUT:?}")
                } else {
                    match status {
                        Some(s) => format!("exited ({s}) before listening"),
                        None => "exited before listening".to_string(),
                    }
                };
                let tail: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
                let args: Vec<String> = self.store.0.iter().map(|a| crate::redact(a)).collect();
                bail!(
                    "replica {name} ({} serve {}) {why}; its stderr ends with:\n  {}",
                    self.macpool.display(),
                    args.join(" "),
                    tail.join("\n  ")
                );
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let client = Client::new(&url, Some(self.token.clone()))
            .map_err(|e| anyhow::anyhow!("client for {url}: {e}"))?;
        let endpoint = Arc::new(Endpoint {
            slot,
            incarnation,
            url: url.clone(),
            client,
        });
        self.cluster.add(endpoint.clone());
        self.events.push(ReplicaEvent {
            at_ms: self.at_ms(),
            replica: name,
            event: if incarnation == 1 { "start" } else { "restart" },
            pid,
            url,
            startup_ms: Some(began.elapsed().as_millis() as u64),
        });
        self.slots[slot] = Some(Running {
            child,
            endpoint,
            pid,
        });
        Ok(())
    }

    /// SIGKILLs the replica in `slot` and waits for it to be gone. Requests in flight to it fail;
    /// the clients move on to another replica.
    pub async fn kill(&mut self, slot: usize) -> anyhow::Result<()> {
        let Some(mut r) = self.slots[slot].take() else {
            bail!("replica {slot} is not running");
        };
        // `start_kill` is SIGKILL on Unix: no graceful shutdown, no last batch.
        r.child.start_kill().context("kill -9")?;
        r.child
            .wait()
            .await
            .context("wait for the killed replica")?;
        self.cluster.remove(slot);
        self.events.push(ReplicaEvent {
            at_ms: self.at_ms(),
            replica: r.endpoint.name(),
            event: "kill",
            pid: r.pid,
            url: r.endpoint.url.clone(),
            startup_ms: None,
        });
        Ok(())
    }

    /// Replicas that exited on their own (a crash the checker did not cause): taken out of the
    /// cluster, with what happened.
    pub fn reap_exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for slot in 0..self.slots.len() {
            let exited = match &mut self.slots[slot] {
                Some(r) => r.child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                let r = self.slots[slot].take().unwrap();
                self.cluster.remove(slot);
                out.push((
                    slot,
                    format!("replica {} exited on its own: {status}", r.endpoint.name()),
                ));
            }
        }
        out
    }

    /// Kills every replica (the run is over).
    pub async fn stop_all(&mut self) {
        for slot in 0..self.slots.len() {
            if let Some(mut r) = self.slots[slot].take() {
                let _ = r.child.start_kill();
                let _ = r.child.wait().await;
                self.cluster.remove(slot);
            }
        }
    }
}

async fn keep_tail(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    mut file: Option<tokio::fs::File>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(f) = &mut file {
            let _ = f.write_all(line.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
        }
        let mut t = tail.lock().unwrap();
        if t.len() == STDERR_TAIL {
            t.pop_front();
        }
        t.push_back(line);
    }
    if let Some(f) = &mut file {
        let _ = f.flush().await;
    }
}
