//! The long-lived child process: spawned once, fed one request per line, restarted when it dies.
//!
//! - Requests are serialised (PowerShell runs one pipeline at a time); each waits at most
//!   `request_timeout`. A timed-out child is killed and replaced; the request fails as
//!   [`HvError::Unavailable`] (it may or may not have run, so it is never repeated here).
//! - Events are read by a task of their own, so they flow while a request runs. Each channel's
//!   last delivered record id is remembered; a restarted child re-subscribes after it, and an
//!   event at or below it is dropped, so none is lost or delivered twice.
//! - Restarts back off exponentially (`min_restart_interval` doubling up to
//!   `max_restart_interval`): a child that dies at once does not become a process storm.
//! - Malformed lines are logged with their raw text, kept in [`PsChild::diagnostics`], skipped.
//! - A watcher that fails (`watch_failed`) is resubscribed from the last delivered record ids,
//!   backing off like restarts.
//! - On every (re)subscribe the child reports each channel's newest record id; a bookmark ahead
//!   of it means the log was cleared (record ids restart): it is re-anchored at the newest id,
//!   reported in [`PsChild::take_reanchored`], so the agent saves it and pushes an inventory.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command as Proc};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::bootstrap::loader_line;
use super::protocol::{EventLine, Incoming, Request, Response, as_list, classify, request_line};
use super::script::{Command, Subscription};
use crate::hypervisor::{Bookmarks, HvError, HvResult};

/// How to start the child.
#[derive(Clone, Debug)]
pub struct ChildConfig {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Send the bootstrap loader as the first stdin line (the real `powershell.exe -Command -`);
    /// the stand-in accepts it too.
    pub send_loader: bool,
    /// `-File` mode: the bootstrap file the child runs, checked before every spawn to be this
    /// version's bootstrap (`macpool hyperv bootstrap-script` writes it).
    pub bootstrap_file: Option<PathBuf>,
    pub request_timeout: Duration,
    pub ready_timeout: Duration,
    pub min_restart_interval: Duration,
    pub max_restart_interval: Duration,
}

impl ChildConfig {
    /// `powershell.exe -NoLogo -NoProfile -NonInteractive -Command -` (Windows PowerShell 5.1).
    pub fn powershell() -> ChildConfig {
        ChildConfig::program(
            "powershell.exe",
            ["-NoLogo", "-NoProfile", "-NonInteractive", "-Command", "-"],
        )
    }

    /// `powershell.exe -NoLogo -NoProfile -NonInteractive -ExecutionPolicy RemoteSigned -File
    /// FILE`: the bootstrap from a file (no `Invoke-Expression`; signable). An AllSigned policy
    /// set by Group Policy takes precedence over `-ExecutionPolicy`.
    pub fn powershell_file(file: impl Into<PathBuf>) -> ChildConfig {
        let file = file.into();
        let mut c = ChildConfig::program(
            "powershell.exe",
            [
                "-NoLogo",
                "-NoProfile",
                "-NonInteractive",
                "-ExecutionPolicy",
                "RemoteSigned",
                "-File",
            ],
        );
        c.args.push(file.display().to_string());
        c.with_bootstrap_file(file)
    }

    /// This config, loading the bootstrap from `file` (already among `args`) instead of stdin.
    pub fn with_bootstrap_file(mut self, file: impl Into<PathBuf>) -> ChildConfig {
        self.send_loader = false;
        self.bootstrap_file = Some(file.into());
        self
    }

    /// Any program speaking the protocol (the stand-in, `pwsh`).
    pub fn program<S: Into<String>>(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = S>,
    ) -> ChildConfig {
        ChildConfig {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            send_loader: true,
            bootstrap_file: None,
            request_timeout: Duration::from_secs(120),
            ready_timeout: Duration::from_secs(60),
            min_restart_interval: Duration::from_millis(500),
            max_restart_interval: Duration::from_secs(60),
        }
    }
}

const MAX_DIAGNOSTICS: usize = 256;

struct Shared {
    pending: StdMutex<HashMap<u64, oneshot::Sender<Response>>>,
    events_tx: mpsc::UnboundedSender<EventLine>,
    delivered: StdMutex<Bookmarks>,
    diagnostics: StdMutex<VecDeque<String>>,
    /// The generation of the live child, 0 when none runs.
    current: AtomicU64,
    stderr_tail: StdMutex<VecDeque<String>>,
    /// A watcher reported `watch_failed`: resubscribe.
    watch_failed: std::sync::atomic::AtomicBool,
    /// Channels re-anchored after a cleared log, not yet taken by the agent.
    reanchored: StdMutex<Bookmarks>,
}

impl Shared {
    fn alive(&self) -> bool {
        self.current.load(Ordering::SeqCst) != 0
    }

    fn diagnose(&self, msg: String) {
        tracing::warn!("{msg}");
        let mut d = self.diagnostics.lock().unwrap();
        if d.len() == MAX_DIAGNOSTICS {
            d.pop_front();
        }
        d.push_back(msg);
    }
}

struct Running {
    child: Child,
    stdin: ChildStdin,
}

struct State {
    running: Option<Running>,
    spawns: u64,
    last_spawn: Option<Instant>,
    backoff: Duration,
    subscriptions: Vec<Subscription>,
    /// When a failed watcher may be resubscribed next, and the pause after that.
    resubscribe_at: Option<Instant>,
    resubscribe_backoff: Duration,
}

/// The child manager. Share it behind an `Arc`.
pub struct PsChild {
    cfg: ChildConfig,
    state: Mutex<State>,
    shared: Arc<Shared>,
    events_rx: Mutex<mpsc::UnboundedReceiver<EventLine>>,
    next_id: AtomicU64,
}

impl PsChild {
    /// Nothing is spawned until the first request (or [`PsChild::start`]).
    pub fn new(cfg: ChildConfig) -> PsChild {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        PsChild {
            state: Mutex::new(State {
                running: None,
                spawns: 0,
                last_spawn: None,
                backoff: cfg.min_restart_interval,
                subscriptions: Vec::new(),
                resubscribe_at: None,
                resubscribe_backoff: cfg.min_restart_interval,
            }),
            cfg,
            shared: Arc::new(Shared {
                pending: StdMutex::new(HashMap::new()),
                events_tx,
                delivered: StdMutex::new(Bookmarks::new()),
                diagnostics: StdMutex::new(VecDeque::new()),
                current: AtomicU64::new(0),
                stderr_tail: StdMutex::new(VecDeque::new()),
                watch_failed: std::sync::atomic::AtomicBool::new(false),
                reanchored: StdMutex::new(Bookmarks::new()),
            }),
            events_rx: Mutex::new(events_rx),
            next_id: AtomicU64::new(1),
        }
    }

    /// Spawns the child now (and waits for its ready line).
    pub async fn start(&self) -> HvResult<()> {
        let mut st = self.state.lock().await;
        self.ensure(&mut st).await
    }

    /// How many times a child process was spawned (1 = never restarted).
    pub async fn spawn_count(&self) -> u64 {
        self.state.lock().await.spawns
    }

    /// The process id of the current child, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        let st = self.state.lock().await;
        st.running.as_ref().and_then(|r| r.child.id())
    }

    /// Malformed lines and other problems seen so far (newest last, at most 256).
    pub fn diagnostics(&self) -> Vec<String> {
        self.shared
            .diagnostics
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// Per channel, the last record id handed out by [`PsChild::next_event`]'s queue.
    pub fn delivered(&self) -> Bookmarks {
        self.shared.delivered.lock().unwrap().clone()
    }

    /// Channels whose bookmark was ahead of the log's newest record (a cleared log) and were
    /// re-anchored there since the last call: channel → the record id resumed after.
    pub fn take_reanchored(&self) -> Bookmarks {
        std::mem::take(&mut *self.shared.reanchored.lock().unwrap())
    }

    /// Runs one command; the value is the script's output as JSON.
    pub async fn call(&self, cmd: &Command) -> HvResult<Value> {
        let mut st = self.state.lock().await;
        self.ensure(&mut st).await?;
        self.request(&mut st, cmd.op(), cmd.script(), None).await
    }

    /// A test-only request for the stand-in (the real bootstrap refuses it).
    pub async fn control(&self, control: Value) -> HvResult<Value> {
        let mut st = self.state.lock().await;
        self.ensure(&mut st).await?;
        self.request(&mut st, "control", String::new(), Some(control))
            .await
    }

    /// (Re)subscribes; kept and re-sent after every restart, resuming after the last delivered
    /// record id of each channel.
    pub async fn watch(&self, subscriptions: Vec<Subscription>) -> HvResult<()> {
        {
            let mut delivered = self.shared.delivered.lock().unwrap();
            for s in &subscriptions {
                if let Some(after) = s.after {
                    let e = delivered.entry(s.channel.clone()).or_insert(after);
                    *e = after;
                }
            }
        }
        let mut st = self.state.lock().await;
        st.subscriptions = subscriptions;
        let had = st.running.is_some() && self.shared.alive();
        self.ensure(&mut st).await?;
        if had {
            // ensure() re-subscribes only on a fresh spawn
            self.resubscribe(&mut st).await?;
        }
        Ok(())
    }

    /// The next pushed event, restarting a dead child (with backoff) while waiting.
    pub async fn next_event(&self, wait: Duration) -> HvResult<Option<EventLine>> {
        let deadline = Instant::now() + wait;
        loop {
            if self.shared.alive() && self.shared.watch_failed.load(Ordering::SeqCst) {
                let mut st = self.state.lock().await;
                if st.resubscribe_at.is_none_or(|t| Instant::now() >= t) {
                    self.shared.watch_failed.store(false, Ordering::SeqCst);
                    let pause = st.resubscribe_backoff;
                    st.resubscribe_backoff = (pause * 2).min(self.cfg.max_restart_interval);
                    st.resubscribe_at = Some(Instant::now() + pause);
                    if let Err(e) = self.resubscribe(&mut st).await {
                        self.shared.watch_failed.store(true, Ordering::SeqCst);
                        self.shared
                            .diagnose(format!("resubscribing after a failed watcher: {e}"));
                    }
                }
            }
            if !self.shared.alive() {
                let mut st = self.state.lock().await;
                if !st.subscriptions.is_empty()
                    && let Err(e) = self.ensure(&mut st).await
                {
                    self.shared
                        .diagnose(format!("restarting the event source failed: {e}"));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let mut rx = self.events_rx.lock().await;
                return Ok(rx.try_recv().ok());
            }
            let slice = (deadline - now).min(Duration::from_millis(200));
            let mut rx = self.events_rx.lock().await;
            if let Ok(Some(ev)) = tokio::time::timeout(slice, rx.recv()).await {
                return Ok(Some(ev));
            }
        }
    }

    /// Kills the child (it is restarted on the next use).
    pub async fn kill(&self) {
        let mut st = self.state.lock().await;
        if let Some(mut r) = st.running.take() {
            let _ = r.child.kill().await;
        }
        self.shared.current.store(0, Ordering::SeqCst);
    }

    async fn ensure(&self, st: &mut State) -> HvResult<()> {
        if st.running.is_some() && self.shared.alive() {
            return Ok(());
        }
        if let Some(mut old) = st.running.take() {
            let _ = old.child.start_kill();
        }
        if let Some(last) = st.last_spawn {
            let since = last.elapsed();
            if since < Duration::from_secs(60) {
                if since < st.backoff {
                    tokio::time::sleep(st.backoff - since).await;
                }
                st.backoff = (st.backoff * 2).min(self.cfg.max_restart_interval);
            } else {
                st.backoff = self.cfg.min_restart_interval;
            }
            tracing::warn!(
                "restarting the PowerShell child ({} spawns so far)",
                st.spawns
            );
        }
        st.last_spawn = Some(Instant::now());
        st.spawns += 1;
        let running = self.spawn().await?;
        st.running = Some(running);
        if !st.subscriptions.is_empty() {
            self.resubscribe(st).await?;
        }
        Ok(())
    }

    async fn resubscribe(&self, st: &mut State) -> HvResult<()> {
        let delivered = self.shared.delivered.lock().unwrap().clone();
        let subs: Vec<Subscription> = st
            .subscriptions
            .iter()
            .map(|s| Subscription {
                after: delivered.get(&s.channel).copied().or(s.after),
                ..s.clone()
            })
            .collect();
        let cmd = Command::Watch {
            subscriptions: subs.clone(),
        };
        let answer = self.request(st, cmd.op(), cmd.script(), None).await?;
        // the newest record id per channel: a bookmark ahead of it means a cleared log
        let newest = |channel: &str| {
            as_list(&answer).into_iter().find_map(|v| {
                let c = v.get("Channel").and_then(|c| c.as_str())?;
                c.eq_ignore_ascii_case(channel)
                    .then(|| v.get("Newest").and_then(|n| n.as_u64()).unwrap_or(0))
            })
        };
        let mut again = false;
        let subs: Vec<Subscription> = subs
            .into_iter()
            .map(|s| match (s.after, newest(&s.channel)) {
                (Some(after), Some(n)) if after > n => {
                    self.shared.diagnose(format!(
                        "bookmark {after} of {} is ahead of its newest record {n}: the log was \
                         cleared (record ids restart); re-anchored at {n}, an inventory push \
                         covers the gap",
                        s.channel
                    ));
                    self.shared
                        .delivered
                        .lock()
                        .unwrap()
                        .insert(s.channel.clone(), n);
                    self.shared
                        .reanchored
                        .lock()
                        .unwrap()
                        .insert(s.channel.clone(), n);
                    again = true;
                    Subscription {
                        after: Some(n),
                        ..s
                    }
                }
                (None, Some(n)) => {
                    // "from now on" becomes a record id, so a resubscribe after a failed
                    // watcher or a restart replays what happened in between
                    self.shared
                        .delivered
                        .lock()
                        .unwrap()
                        .entry(s.channel.clone())
                        .or_insert(n);
                    s
                }
                _ => s,
            })
            .collect();
        if again {
            let cmd = Command::Watch {
                subscriptions: subs,
            };
            self.request(st, cmd.op(), cmd.script(), None).await?;
        }
        Ok(())
    }

    async fn spawn(&self) -> HvResult<Running> {
        if let Some(file) = &self.cfg.bootstrap_file {
            let ok = std::fs::read(file).is_ok_and(|b| super::bootstrap::file_matches(&b));
            if !ok {
                return Err(HvError::Unavailable(format!(
                    "{} is missing or not this macpool's bootstrap: write it with `macpool hyperv bootstrap-script --output {}` (and sign it again where AllSigned applies)",
                    file.display(),
                    file.display()
                )));
            }
        }
        let mut child = Proc::new(&self.cfg.program)
            .args(&self.cfg.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                HvError::Unavailable(format!("cannot start {}: {e}", self.cfg.program.display()))
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (ready_tx, ready_rx) = oneshot::channel();
        let generation = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.shared.current.store(generation, Ordering::SeqCst);
        tokio::spawn(read_stdout(
            self.shared.clone(),
            stdout,
            ready_tx,
            generation,
        ));
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::warn!("PowerShell stderr: {l}");
                let mut t = shared.stderr_tail.lock().unwrap();
                if t.len() == 20 {
                    t.pop_front();
                }
                t.push_back(l);
            }
        });
        if self.cfg.send_loader {
            let line = loader_line() + "\n";
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| HvError::Unavailable(format!("cannot write to the child: {e}")))?;
            stdin.flush().await.ok();
        }
        match tokio::time::timeout(self.cfg.ready_timeout, ready_rx).await {
            Ok(Ok(version)) => {
                tracing::info!("PowerShell child ready (version {version})");
                Ok(Running { child, stdin })
            }
            _ => {
                let _ = child.start_kill();
                self.shared.current.store(0, Ordering::SeqCst);
                let tail: Vec<String> = self
                    .shared
                    .stderr_tail
                    .lock()
                    .unwrap()
                    .iter()
                    .cloned()
                    .collect();
                Err(HvError::Unavailable(format!(
                    "the child did not say ready within {:?}{}",
                    self.cfg.ready_timeout,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", tail.join(" | "))
                    }
                )))
            }
        }
    }

    async fn request(
        &self,
        st: &mut State,
        op: &str,
        script: String,
        control: Option<Value>,
    ) -> HvResult<Value> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let req = Request {
            id,
            op: op.to_string(),
            script,
            control,
        };
        let line = request_line(&req) + "\n";
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().unwrap().insert(id, tx);
        let running = st.running.as_mut().expect("ensured");
        let written = async {
            running.stdin.write_all(line.as_bytes()).await?;
            running.stdin.flush().await
        }
        .await;
        if let Err(e) = written {
            self.shared.pending.lock().unwrap().remove(&id);
            self.shared.current.store(0, Ordering::SeqCst);
            return Err(HvError::Unavailable(format!(
                "{op}: the child is gone ({e})"
            )));
        }
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(resp)) if resp.ok => Ok(resp.result),
            Ok(Ok(resp)) => Err(HvError::Failed {
                command: op.to_string(),
                message: resp.error.unwrap_or_else(|| "no message".into()),
            }),
            Ok(Err(_)) => Err(HvError::Unavailable(format!(
                "{op}: the child exited before answering"
            ))),
            Err(_) => {
                self.shared.pending.lock().unwrap().remove(&id);
                if let Some(mut r) = st.running.take() {
                    let _ = r.child.start_kill();
                }
                self.shared.current.store(0, Ordering::SeqCst);
                Err(HvError::Unavailable(format!(
                    "{op}: no answer within {:?}; the child was stopped and will be restarted",
                    self.cfg.request_timeout
                )))
            }
        }
    }
}

async fn read_stdout(
    shared: Arc<Shared>,
    stdout: tokio::process::ChildStdout,
    ready: oneshot::Sender<String>,
    generation: u64,
) {
    let mut ready = Some(ready);
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        match classify(line) {
            Incoming::Ready { version } => {
                if let Some(r) = ready.take() {
                    let _ = r.send(version);
                }
            }
            Incoming::Response(resp) => {
                for w in &resp.warnings {
                    tracing::warn!("PowerShell child, request {}: {w}", resp.id);
                }
                let tx = shared.pending.lock().unwrap().remove(&resp.id);
                match tx {
                    Some(tx) => {
                        let _ = tx.send(resp);
                    }
                    None => shared.diagnose(format!(
                        "response to unknown request {} skipped: {line}",
                        resp.id
                    )),
                }
            }
            Incoming::Event(ev) => {
                let fresh = {
                    let mut d = shared.delivered.lock().unwrap();
                    let last = d.entry(ev.channel.clone()).or_insert(0);
                    if ev.record_id > *last {
                        *last = ev.record_id;
                        true
                    } else {
                        false
                    }
                };
                if fresh {
                    let _ = shared.events_tx.send(ev);
                } else {
                    tracing::debug!(
                        "event {} of {} already delivered; skipped",
                        ev.record_id,
                        ev.channel
                    );
                }
            }
            Incoming::WatchFailed { channel, error } => {
                shared.diagnose(format!(
                    "the watcher of {channel} failed ({error}): resubscribing"
                ));
                shared.watch_failed.store(true, Ordering::SeqCst);
            }
            Incoming::Log(l) => tracing::info!("PowerShell child: {l}"),
            Incoming::Malformed { raw, reason } => {
                shared.diagnose(format!("malformed line from the child ({reason}): {raw}"))
            }
        }
    }
    // Only if this reader's child is still the current one (a replacement may already run):
    // mark it dead and fail every request still waiting (its sender is dropped).
    if shared
        .current
        .compare_exchange(generation, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        shared.pending.lock().unwrap().clear();
    }
}
