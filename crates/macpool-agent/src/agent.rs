//! The long-running agent (`macpool agent`): subscribe from the saved bookmark, decide every
//! event, persist the bookmark after each decision, keep undecidable events (authority or
//! hypervisor unavailable) in the bookmark and retry them with exponential backoff. Never changes
//! a VM without the authority's answer (that rule lives in [`crate::decide`]).
//!
//! Besides events, the loop keeps two things in line with the authority:
//! - **Inventory**: pushed at start, shortly after every VM event (debounced: one push covers a
//!   burst of logoffs) and every `inventory_every`. The report queue holds one entry, the latest
//!   inventory: it is the whole truth about the host, so an older unsent one is worthless. While
//!   the authority is unreachable the push is retried with exponential backoff.
//! - **Delegate** (when configured): [`crate::delegate::tick`] at start, after VM created and
//!   started events (each may have taken an address from the host's range) and on the timer.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use macpool_api::convert;

use crate::bookmark::BookmarkStore;
use crate::decide::{Authority, AuthorityError, DecideConfig, Decision, Outcome, handle_event};
use crate::delegate::{DelegateConfig, DelegateOutcome, tick};
use crate::hypervisor::{EventKind, HvEvent, Hypervisor};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// How events are decided; `None` for delegate alone (events then only trigger inventory
    /// pushes and delegate ticks).
    pub decide: Option<DecideConfig>,
    pub delegate: Option<DelegateConfig>,
    /// The host's name as the authority knows it (inventories are sent under it).
    pub host: String,
    pub bookmark: PathBuf,
    /// Where remediations are appended as JSON lines (old → new, event record id).
    pub history: Option<PathBuf>,
    /// How long one wait for an event lasts before timers are looked at again.
    pub poll: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Full inventory (and delegate tick) at least this often.
    pub inventory_every: Duration,
    /// After an event, wait this long for more before pushing the inventory.
    pub inventory_debounce: Duration,
    /// Whether inventories are pushed at all (off for `--dry-run`, which changes nothing).
    pub push_inventory: bool,
}

impl AgentConfig {
    /// The strategy as `--strategy` spells it (`delegate+guard`, `observe`, …), reported with
    /// every inventory.
    pub fn strategy_name(&self) -> String {
        match (&self.delegate, &self.decide) {
            (Some(_), Some(d)) => format!("delegate+{}", d.strategy.name()),
            (Some(_), None) => "delegate".into(),
            (None, Some(d)) => d.strategy.name().into(),
            (None, None) => "inventory".into(),
        }
    }

    pub fn new(
        decide: Option<DecideConfig>,
        host: impl Into<String>,
        bookmark: impl Into<PathBuf>,
    ) -> AgentConfig {
        AgentConfig {
            decide,
            delegate: None,
            host: host.into(),
            bookmark: bookmark.into(),
            history: None,
            poll: Duration::from_secs(1),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            inventory_every: Duration::from_secs(60),
            inventory_debounce: Duration::from_millis(500),
            push_inventory: true,
        }
    }
}

/// Something the loop did, for logs and the CLI.
#[derive(Clone, Debug)]
pub enum Report {
    Decision(Decision),
    Delegate(DelegateOutcome),
    /// An inventory was accepted at this generation, or could not be sent (and why).
    Inventory(Result<u64, String>),
}

/// The inventory report queue: at most one (the latest) inventory waiting to be sent.
struct InventoryQueue {
    due: Option<Instant>,
    last_generation: u64,
    failures: u32,
}

impl InventoryQueue {
    /// Wants a push at `at` unless one is due earlier already.
    fn want(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// A generation above every one sent: wall-clock milliseconds, or one more than the last.
    fn next_generation(&self) -> u64 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ms.max(self.last_generation + 1)
    }
}

fn backoff(cfg: &AgentConfig, attempts: u32) -> Duration {
    cfg.retry_min
        .saturating_mul(2u32.saturating_pow(attempts.min(16)))
        .min(cfg.retry_max)
}

/// Reads the host and sends its inventory; `Err` keeps it queued (unreachable) or drops it
/// until the next timer (refused: retrying the same document would be refused again).
async fn push_inventory<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &AgentConfig,
    queue: &mut InventoryQueue,
) -> Report {
    let mut inv = match hv.inventory().await {
        Ok(i) => i,
        Err(e) => {
            queue.failures += 1;
            queue.due = Some(Instant::now() + backoff(cfg, queue.failures));
            return Report::Inventory(Err(format!("cannot read the host's inventory: {e}")));
        }
    };
    inv.strategy = Some(cfg.strategy_name());
    inv.cursor_source = crate::delegate::cursor_source(&inv, cfg.delegate.is_some());
    // sent under cfg.host (the path names the host), whatever the hypervisor calls itself
    let body = convert::inventory_body(&inv, queue.next_generation());
    match auth.put_inventory(&cfg.host, body).await {
        Ok(generation) => {
            queue.last_generation = generation;
            queue.failures = 0;
            queue.due = None;
            Report::Inventory(Ok(generation))
        }
        Err(AuthorityError::Unreachable(m)) => {
            queue.failures += 1;
            queue.due = Some(Instant::now() + backoff(cfg, queue.failures));
            Report::Inventory(Err(format!("authority unreachable, kept for later: {m}")))
        }
        Err(AuthorityError::Refused(m)) => {
            queue.failures = 0;
            queue.due = None;
            Report::Inventory(Err(format!("refused: {m}")))
        }
    }
}

/// The history line for a decision that changed something (JSON), `None` otherwise.
pub fn history_line(d: &Decision) -> Option<String> {
    let (changes, result) = match &d.outcome {
        Outcome::Done { changes, .. } => (changes, "remediated".to_string()),
        Outcome::Failed {
            changes,
            error,
            left,
            ..
        } => (changes, format!("failed: {error}; VM left {left}")),
        _ => return None,
    };
    let c: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            serde_json::json!({
                "adapter": c.adapter.adapter,
                "checkpoint_id": c.adapter.checkpoint_id,
                "old": c.old.map(|m| m.to_string()),
                "new": c.new.to_string(),
            })
        })
        .collect();
    Some(
        serde_json::json!({
            "channel": d.channel, "record_id": d.record_id, "event": d.kind.name(),
            "vm_id": d.vm_id, "vm_name": d.vm_name, "result": result, "changes": c,
        })
        .to_string(),
    )
}

fn append_history(path: &PathBuf, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_data()
}

fn deferred(o: &Outcome) -> bool {
    matches!(o, Outcome::Deferred { .. })
}

/// Runs until `stop` completes. `report` sees everything the loop did (for logs / the CLI).
pub async fn run<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &AgentConfig,
    mut report: impl FnMut(&Report),
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let store = BookmarkStore::new(&cfg.bookmark);
    let mut bm = store.load()?;
    let mut stop = std::pin::pin!(stop);
    let mut queue = InventoryQueue {
        due: cfg.push_inventory.then(Instant::now),
        last_generation: 0,
        failures: 0,
    };
    let mut next_timer = Instant::now() + cfg.inventory_every;
    if let Some(d) = &cfg.delegate {
        report(&Report::Delegate(tick(hv, auth, d).await));
    }
    let mut subscribed = false;
    let mut next_retry = Instant::now() + cfg.retry_min;
    loop {
        if !subscribed {
            match hv.watch(&bm.channels).await {
                Ok(()) => subscribed = true,
                Err(e) => tracing::warn!("cannot subscribe to events yet: {e}"),
            }
        }
        let ev = if subscribed {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                ev = hv.next_event(cfg.poll) => ev,
            }
        } else {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(cfg.retry_min) => Ok(None),
            }
        };
        let mut events: Vec<HvEvent> = Vec::new();
        match ev {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => {}
            Err(e) => tracing::warn!("events: {e}"),
        }
        let reanchored = hv.take_reanchored();
        for (channel, record_id) in &reanchored {
            tracing::warn!(
                "{channel} was cleared: bookmark re-anchored at record {record_id}; pushing an inventory"
            );
            bm.reanchor(channel, *record_id);
            if cfg.push_inventory {
                queue.want(Instant::now());
            }
        }
        let mut decisions = Vec::new();
        for ev in &events {
            if cfg.push_inventory {
                queue.want(Instant::now() + cfg.inventory_debounce);
            }
            match &cfg.decide {
                Some(dc) => decisions.push(handle_event(hv, auth, dc, ev).await),
                None => bm.handled(&ev.channel, ev.record_id),
            }
            if let Some(d) = &cfg.delegate
                && matches!(ev.kind, EventKind::Created | EventKind::Started)
            {
                report(&Report::Delegate(tick(hv, auth, d).await));
            }
        }
        if let Some(dc) = &cfg.decide
            && !bm.deferred.is_empty()
            && Instant::now() >= next_retry
        {
            let attempts = bm.deferred.iter().map(|d| d.attempts).max().unwrap_or(1);
            for d in bm.deferred.clone() {
                match hv.event(&d.channel, d.record_id).await {
                    Ok(Some(ev)) => decisions.push(handle_event(hv, auth, dc, &ev).await),
                    Ok(None) => {
                        tracing::error!(
                            "deferred event {} of {} is gone from the log; dropped",
                            d.record_id,
                            d.channel
                        );
                        bm.handled(&d.channel, d.record_id);
                    }
                    Err(e) => tracing::warn!("deferred event {}: {e}", d.record_id),
                }
            }
            next_retry = Instant::now() + backoff(cfg, attempts);
        }
        if Instant::now() >= next_timer {
            next_timer = Instant::now() + cfg.inventory_every;
            if cfg.push_inventory {
                queue.want(Instant::now());
            }
            if let Some(d) = &cfg.delegate {
                report(&Report::Delegate(tick(hv, auth, d).await));
            }
        }
        if queue.due.is_some_and(|t| Instant::now() >= t) {
            let r = push_inventory(hv, auth, cfg, &mut queue).await;
            match &r {
                Report::Inventory(Ok(g)) => tracing::debug!("inventory generation {g} accepted"),
                Report::Inventory(Err(e)) => tracing::warn!("inventory: {e}"),
                _ => {}
            }
            report(&r);
        }
        for d in &decisions {
            if deferred(&d.outcome) {
                bm.defer(&d.channel, d.record_id);
                let e = bm.channels.entry(d.channel.clone()).or_insert(0);
                *e = (*e).max(d.record_id);
            } else {
                bm.handled(&d.channel, d.record_id);
            }
            if let (Some(path), Some(line)) = (&cfg.history, history_line(d))
                && let Err(e) = append_history(path, &line)
            {
                tracing::error!(
                    "cannot append to {}: {e}; the change was: {line}",
                    path.display()
                );
            }
            tracing::info!(
                "event {} ({}): {}",
                d.record_id,
                d.kind.name(),
                d.outcome.summary()
            );
            report(&Report::Decision(d.clone()));
        }
        if (!events.is_empty() || !decisions.is_empty() || !reanchored.is_empty())
            && let Err(e) = store.save(&bm)
        {
            tracing::error!("cannot save the bookmark {}: {e}", cfg.bookmark.display());
        }
    }
}
