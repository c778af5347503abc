//! The long-running agent: subscribe from the saved bookmark, decide every event, persist the
//! bookmark after each decision, keep undecidable events (authority or hypervisor unavailable)
//! in the bookmark and retry them with exponential backoff. Never changes a VM without the
//! authority's answer (that rule lives in [`crate::decide`]).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bookmark::BookmarkStore;
use crate::decide::{Authority, DecideConfig, Decision, Outcome, handle_event};
use crate::hypervisor::Hypervisor;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub decide: DecideConfig,
    pub bookmark: PathBuf,
    /// Where remediations are appended as JSON lines (old → new, event record id).
    pub history: Option<PathBuf>,
    /// How long one wait for an event lasts before deferred events are looked at again.
    pub poll: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl AgentConfig {
    pub fn new(decide: DecideConfig, bookmark: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            decide,
            bookmark: bookmark.into(),
            history: None,
            poll: Duration::from_secs(1),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
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

/// Runs until `stop` completes. `report` sees every decision (for logs / the CLI).
pub async fn run<H: Hypervisor, A: Authority>(
    hv: &H,
    auth: &A,
    cfg: &AgentConfig,
    mut report: impl FnMut(&Decision),
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let store = BookmarkStore::new(&cfg.bookmark);
    let mut bm = store.load()?;
    let mut stop = std::pin::pin!(stop);
    loop {
        match hv.watch(&bm.channels).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("cannot subscribe to events yet: {e}");
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(cfg.retry_min) => {}
                }
            }
        }
    }
    let mut next_retry = Instant::now() + cfg.retry_min;
    loop {
        let ev = tokio::select! {
            _ = &mut stop => return Ok(()),
            ev = hv.next_event(cfg.poll) => ev,
        };
        let mut decisions = Vec::new();
        match ev {
            Ok(Some(ev)) => decisions.push(handle_event(hv, auth, &cfg.decide, &ev).await),
            Ok(None) => {}
            Err(e) => tracing::warn!("events: {e}"),
        }
        if !bm.deferred.is_empty() && Instant::now() >= next_retry {
            let attempts = bm.deferred.iter().map(|d| d.attempts).max().unwrap_or(1);
            for d in bm.deferred.clone() {
                match hv.event(&d.channel, d.record_id).await {
                    Ok(Some(ev)) => decisions.push(handle_event(hv, auth, &cfg.decide, &ev).await),
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
            let backoff = cfg
                .retry_min
                .saturating_mul(2u32.saturating_pow(attempts.min(16)))
                .min(cfg.retry_max);
            next_retry = Instant::now() + backoff;
        }
        if decisions.is_empty() {
            continue;
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
            report(d);
        }
        if let Err(e) = store.save(&bm) {
            tracing::error!("cannot save the bookmark {}: {e}", cfg.bookmark.display());
        }
    }
}
