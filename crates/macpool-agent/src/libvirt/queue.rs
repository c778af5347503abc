//! libvirt lifecycle events → [`HvEvent`]s, and the queue between libvirt's event-loop thread
//! and [`crate::Hypervisor::next_event`].
//!
//! libvirt events carry no durable id and are not kept anywhere: a client sees only those that
//! happen while it is connected. Record ids are therefore this process's own counter, seeded
//! from the clock (microseconds since the Unix epoch) so that an id of an earlier run is never
//! given to a different event of this one: a bookmark or a deferred event of an earlier run
//! simply finds nothing ([`EventQueue::recent`] answers `None`), it cannot be resumed.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use macpool_core::Mac;
use macpool_core::Timestamp;
use macpool_core::inventory::AdapterLocation;
use virt::sys;

use crate::hypervisor::{EventKind, HvEvent, VmStatus};

/// Events kept for [`crate::Hypervisor::event`] (deferred decisions are retried from here).
pub const RECENT: usize = 4096;
/// Undelivered events kept at most; older ones are dropped with an error in the log.
pub const PENDING: usize = 65_536;

/// What the agent acts on, from libvirt's `(event, detail)` of `VIR_DOMAIN_EVENT_ID_LIFECYCLE`.
///
/// A revert is reported by the libvirt test driver (Debian 9.0, checked by the tests) as
/// `STARTED/FROM_SNAPSHOT` (domain was off), `STOPPED/FROM_SNAPSHOT` then
/// `STARTED/FROM_SNAPSHOT` (running → running snapshot) or `STOPPED/FROM_SNAPSHOT` alone
/// (running → shut-off snapshot); qemu also sends `DEFINED/FROM_SNAPSHOT` when the persistent
/// definition was replaced, and `SUSPENDED`/`RESUMED` `FROM_SNAPSHOT` for paused snapshots. All
/// of them are [`EventKind::Restored`]; `STARTED/RESTORED` (a saved-state file restored) too, as
/// Hyper-V's 18596 covers saved state. A redefinition (`DEFINED/UPDATED`) and renames are not
/// events the agent acts on: `None`.
pub fn event_kind(event: i32, detail: i32) -> Option<EventKind> {
    let (event, detail) = (u32::try_from(event).ok()?, u32::try_from(detail).ok()?);
    match event {
        sys::VIR_DOMAIN_EVENT_DEFINED => match detail {
            sys::VIR_DOMAIN_EVENT_DEFINED_ADDED => Some(EventKind::Created),
            sys::VIR_DOMAIN_EVENT_DEFINED_FROM_SNAPSHOT => Some(EventKind::Restored),
            _ => None,
        },
        sys::VIR_DOMAIN_EVENT_UNDEFINED => match detail {
            sys::VIR_DOMAIN_EVENT_UNDEFINED_REMOVED => Some(EventKind::Deleted),
            _ => None,
        },
        sys::VIR_DOMAIN_EVENT_STARTED => match detail {
            sys::VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT
            | sys::VIR_DOMAIN_EVENT_STARTED_RESTORED => Some(EventKind::Restored),
            _ => Some(EventKind::Started),
        },
        sys::VIR_DOMAIN_EVENT_STOPPED => match detail {
            sys::VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT => Some(EventKind::Restored),
            _ => Some(EventKind::Stopped),
        },
        sys::VIR_DOMAIN_EVENT_SUSPENDED
            if detail == sys::VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT =>
        {
            Some(EventKind::Restored)
        }
        sys::VIR_DOMAIN_EVENT_RESUMED if detail == sys::VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT => {
            Some(EventKind::Restored)
        }
        _ => None,
    }
}

/// libvirt's names for a lifecycle event, for the event's `raw` text and the log.
pub fn event_name(event: i32, detail: i32) -> String {
    let e = match u32::try_from(event).unwrap_or(u32::MAX) {
        sys::VIR_DOMAIN_EVENT_DEFINED => "DEFINED",
        sys::VIR_DOMAIN_EVENT_UNDEFINED => "UNDEFINED",
        sys::VIR_DOMAIN_EVENT_STARTED => "STARTED",
        sys::VIR_DOMAIN_EVENT_SUSPENDED => "SUSPENDED",
        sys::VIR_DOMAIN_EVENT_RESUMED => "RESUMED",
        sys::VIR_DOMAIN_EVENT_STOPPED => "STOPPED",
        sys::VIR_DOMAIN_EVENT_SHUTDOWN => "SHUTDOWN",
        sys::VIR_DOMAIN_EVENT_PMSUSPENDED => "PMSUSPENDED",
        sys::VIR_DOMAIN_EVENT_CRASHED => "CRASHED",
        _ => return format!("event {event} detail {detail}"),
    };
    let from_snapshot = matches!(
        (
            u32::try_from(event).unwrap_or(u32::MAX),
            u32::try_from(detail).unwrap_or(u32::MAX)
        ),
        (
            sys::VIR_DOMAIN_EVENT_DEFINED,
            sys::VIR_DOMAIN_EVENT_DEFINED_FROM_SNAPSHOT
        ) | (
            sys::VIR_DOMAIN_EVENT_STARTED,
            sys::VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT
        ) | (
            sys::VIR_DOMAIN_EVENT_STOPPED,
            sys::VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT
        ) | (
            sys::VIR_DOMAIN_EVENT_SUSPENDED,
            sys::VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT
        ) | (
            sys::VIR_DOMAIN_EVENT_RESUMED,
            sys::VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT
        )
    );
    if from_snapshot {
        format!("{e}/FROM_SNAPSHOT")
    } else {
        format!("{e}/{detail}")
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Events between libvirt's event-loop thread (producer) and `next_event` (consumer).
#[derive(Debug)]
pub struct EventQueue {
    channel: String,
    next_id: u64,
    /// Only after `watch`: before it nobody consumes, and the queue must not grow.
    watching: bool,
    pending: VecDeque<HvEvent>,
    recent: VecDeque<HvEvent>,
}

impl EventQueue {
    pub fn new(channel: String) -> EventQueue {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        EventQueue {
            channel,
            next_id: seed.max(1),
            watching: false,
            pending: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Starts (or restarts) delivery: from now on events are queued.
    pub fn watch(&mut self) {
        self.watching = true;
    }

    /// Queues one event; returns whether it was queued. A [`EventKind::Restored`] of a domain
    /// that already has an undelivered `Restored` is folded into it: one revert is reported by
    /// libvirt as up to three lifecycle events, and the decision reads the domain's state when
    /// it runs anyway, so a second decision could only repeat the first.
    pub fn push(
        &mut self,
        kind: EventKind,
        event_id: u32,
        vm_id: String,
        vm_name: Option<String>,
        raw: String,
    ) -> bool {
        if !self.watching {
            return false;
        }
        if kind == EventKind::Restored
            && self
                .pending
                .iter()
                .any(|e| e.kind == EventKind::Restored && e.vm_id.eq_ignore_ascii_case(&vm_id))
        {
            tracing::debug!("{raw}: folded into the pending restore of {vm_id}");
            return false;
        }
        if self.pending.len() >= PENDING
            && let Some(old) = self.pending.pop_front()
        {
            tracing::error!(
                "libvirt event queue full: dropped event {} ({} of {})",
                old.record_id,
                old.kind.name(),
                old.vm_id
            );
        }
        let record_id = self.next_id;
        self.next_id += 1;
        self.pending.push_back(HvEvent {
            kind,
            channel: self.channel.clone(),
            event_id,
            record_id,
            time: Some(Timestamp::from_millis(now_millis())),
            vm_id,
            vm_name,
            raw,
        });
        true
    }

    /// The oldest undelivered event; it is kept among the recent ones for [`Self::recent`].
    pub fn pop(&mut self) -> Option<HvEvent> {
        let ev = self.pending.pop_front()?;
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(ev.clone());
        Some(ev)
    }

    /// A delivered event of this process by record id (`None`: older, or of an earlier run).
    pub fn recent(&self, channel: &str, record_id: u64) -> Option<HvEvent> {
        if channel != self.channel {
            return None;
        }
        self.recent
            .iter()
            .chain(self.pending.iter())
            .find(|e| e.record_id == record_id)
            .cloned()
    }
}

/// What the agent remembers of a domain to notice, after a lost connection, what changed while
/// no events could arrive: its name, live MACs by adapter and current snapshot. A domain known
/// only from its `Created` event is not `known` yet: only its coming or going can be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub name: String,
    pub known: bool,
    pub live: Vec<(String, Mac)>,
    pub current: Option<String>,
}

impl Fingerprint {
    /// A domain seen only in an event.
    pub fn named(name: String) -> Fingerprint {
        Fingerprint {
            name,
            known: false,
            live: Vec::new(),
            current: None,
        }
    }

    pub fn of(s: &VmStatus) -> Fingerprint {
        let mut live: Vec<(String, Mac)> =
            s.vm.adapters
                .iter()
                .filter(|a| a.location == AdapterLocation::Live)
                .map(|a| (a.name.clone(), a.mac))
                .collect();
        live.sort();
        Fingerprint {
            name: s.vm.name.clone(),
            known: true,
            live,
            current: s.current_checkpoint.as_ref().map(|c| c.name.clone()),
        }
    }
}

/// The events that stand for what changed between two views of the host (before a lost
/// connection, after the reconnect): a domain that appeared is `Created`, one that vanished
/// `Deleted`, one whose live MACs changed or that has a different current snapshot `Restored`
/// (a revert, or a redefinition and restart: either way the guard must look at its MACs).
/// A revert that changed nothing visible is not detected; its MACs are then the ones the
/// authority already knew.
pub fn resync(
    before: &BTreeMap<String, Fingerprint>,
    after: &BTreeMap<String, Fingerprint>,
) -> Vec<(EventKind, String, String, String)> {
    let mut out = Vec::new();
    for (id, now) in after {
        match before.get(id) {
            None => out.push((
                EventKind::Created,
                id.clone(),
                now.name.clone(),
                "appeared while the connection was lost".to_string(),
            )),
            Some(was) if !was.known => {}
            Some(was) if was.live != now.live => out.push((
                EventKind::Restored,
                id.clone(),
                now.name.clone(),
                "its live MACs changed while the connection was lost".to_string(),
            )),
            Some(was) if now.current.is_some() && was.current != now.current => out.push((
                EventKind::Restored,
                id.clone(),
                now.name.clone(),
                format!(
                    "its current snapshot became '{}' while the connection was lost",
                    now.current.as_deref().unwrap_or_default()
                ),
            )),
            Some(_) => {}
        }
    }
    for (id, was) in before {
        if !after.contains_key(id) {
            out.push((
                EventKind::Deleted,
                id.clone(),
                was.name.clone(),
                "vanished while the connection was lost".to_string(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_events_map_to_what_the_agent_acts_on() {
        let k = |e: u32, d: u32| event_kind(e as i32, d as i32);
        use sys::*;
        assert_eq!(
            k(
                VIR_DOMAIN_EVENT_STARTED,
                VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT
            ),
            Some(EventKind::Restored)
        );
        assert_eq!(
            k(
                VIR_DOMAIN_EVENT_STOPPED,
                VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT
            ),
            Some(EventKind::Restored)
        );
        assert_eq!(
            k(
                VIR_DOMAIN_EVENT_DEFINED,
                VIR_DOMAIN_EVENT_DEFINED_FROM_SNAPSHOT
            ),
            Some(EventKind::Restored)
        );
        assert_eq!(
            k(VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_BOOTED),
            Some(EventKind::Started)
        );
        assert_eq!(
            k(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
            Some(EventKind::Stopped)
        );
        assert_eq!(
            k(VIR_DOMAIN_EVENT_DEFINED, VIR_DOMAIN_EVENT_DEFINED_ADDED),
            Some(EventKind::Created)
        );
        assert_eq!(
            k(VIR_DOMAIN_EVENT_DEFINED, VIR_DOMAIN_EVENT_DEFINED_UPDATED),
            None
        );
        assert_eq!(
            k(
                VIR_DOMAIN_EVENT_UNDEFINED,
                VIR_DOMAIN_EVENT_UNDEFINED_REMOVED
            ),
            Some(EventKind::Deleted)
        );
        assert_eq!(
            k(
                VIR_DOMAIN_EVENT_UNDEFINED,
                VIR_DOMAIN_EVENT_UNDEFINED_RENAMED
            ),
            None
        );
        assert_eq!(
            k(
                VIR_DOMAIN_EVENT_SUSPENDED,
                VIR_DOMAIN_EVENT_SUSPENDED_PAUSED
            ),
            None
        );
        assert_eq!(
            k(
                VIR_DOMAIN_EVENT_RESUMED,
                VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT
            ),
            Some(EventKind::Restored)
        );
        assert_eq!(event_kind(-1, 0), None);
        assert_eq!(event_name(2, 3), "STARTED/FROM_SNAPSHOT");
        assert_eq!(event_name(5, 1), "STOPPED/1");
        assert_eq!(event_name(99, 1), "event 99 detail 1");
    }

    fn push(q: &mut EventQueue, kind: EventKind, vm: &str) -> bool {
        q.push(kind, 0, vm.into(), None, String::new())
    }

    #[test]
    fn nothing_is_queued_before_watch_and_restores_fold() {
        let mut q = EventQueue::new("libvirt:test:///default".into());
        assert!(!push(&mut q, EventKind::Started, "a"));
        assert_eq!(q.pop(), None);
        q.watch();
        assert!(push(&mut q, EventKind::Restored, "a"));
        assert!(
            !push(&mut q, EventKind::Restored, "A"),
            "same domain: folded"
        );
        assert!(push(&mut q, EventKind::Restored, "b"));
        let first = q.pop().unwrap();
        assert!(
            push(&mut q, EventKind::Restored, "a"),
            "the first was delivered"
        );
        let ids: Vec<u64> = std::iter::from_fn(|| q.pop())
            .map(|e| e.record_id)
            .collect();
        assert_eq!(ids, [first.record_id + 1, first.record_id + 2]);
        assert_eq!(
            q.recent("libvirt:test:///default", first.record_id),
            Some(first.clone())
        );
        assert_eq!(q.recent("libvirt:other", first.record_id), None);
        assert_eq!(q.recent("libvirt:test:///default", 7), None);
    }

    #[test]
    fn record_ids_of_a_later_run_are_larger() {
        let a = EventQueue::new("c".into()).next_id;
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = EventQueue::new("c".into()).next_id;
        assert!(b > a + 1000, "{a} {b}");
    }

    #[test]
    fn resync_reports_what_changed_while_disconnected() {
        let fp = |name: &str, mac: &str, current: Option<&str>| Fingerprint {
            name: name.into(),
            known: true,
            live: vec![("net0".into(), mac.parse().unwrap())],
            current: current.map(str::to_string),
        };
        let before = BTreeMap::from([
            (
                "a".to_string(),
                fp("desk-a", "52:54:00:00:00:01", Some("RDV_ROLLBACK")),
            ),
            ("b".to_string(), fp("desk-b", "52:54:00:00:00:02", None)),
            (
                "c".to_string(),
                fp("desk-c", "52:54:00:00:00:03", Some("s1")),
            ),
            (
                "d".to_string(),
                fp("desk-d", "52:54:00:00:00:04", Some("s1")),
            ),
            // known only from their Created events
            ("f".to_string(), Fingerprint::named("new-f".into())),
            ("g".to_string(), Fingerprint::named("new-g".into())),
        ]);
        let after = BTreeMap::from([
            (
                "a".to_string(),
                fp("desk-a", "52:54:00:00:00:09", Some("RDV_ROLLBACK")),
            ),
            (
                "c".to_string(),
                fp("desk-c", "52:54:00:00:00:03", Some("s2")),
            ),
            ("d".to_string(), fp("desk-d", "52:54:00:00:00:04", None)),
            ("e".to_string(), fp("desk-e", "52:54:00:00:00:05", None)),
            ("f".to_string(), fp("new-f", "52:54:00:00:00:06", None)),
        ]);
        let events = resync(&before, &after);
        let got: Vec<(EventKind, &str)> = events
            .iter()
            .map(|(k, id, _, _)| (*k, id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (EventKind::Restored, "a"),
                (EventKind::Restored, "c"),
                (EventKind::Created, "e"),
                (EventKind::Deleted, "b"),
                (EventKind::Deleted, "g"),
            ]
        );
        assert!(resync(&before, &before).is_empty());
    }
}
