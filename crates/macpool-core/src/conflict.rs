//! The conflict engine: from sightings of MACs (live adapters, checkpoint adapters, listed entries,
//! DHCP leases), host dynamic ranges and pools, derive every conflict with an explanation and a fix.
//!
//! Conflicts are derived, never stored as truth. The engine sorts and groups (O(n log n)) so it
//! runs on a million sightings; `tests::reference` is the O(n²) pairwise definition it is
//! property-tested against.
//!
//! Rules (the vocabulary of DESIGN.md):
//! - Identity: a VM is its id (case-insensitive), else its name; one VM on two hosts (a live
//!   migration in flight) and a VM with its own checkpoints are one identity, never a conflict.
//!   A listed entry (plain MAC list line) is an identity of its own.
//! - `live-duplicate`: two identities use the MAC live (listed entries count as live); or DHCP
//!   leased it to two different clients. DHCP leases are the network's view of the same NICs, so
//!   they are compared only with each other.
//! - `latent`: not live twice, but a checkpoint of one identity holds the MAC while another
//!   identity uses it live or in its own checkpoint: a restore puts it on the wire twice.
//! - `invalid`: multicast, zero or broadcast. Reported once per MAC, never also as a duplicate.
//!   A zero MAC on a *dynamic* adapter is not a sighting: Hyper-V shows `000000000000` for a dynamic
//!   adapter that has not been given a MAC yet (and for blanked checkpoint adapters).
//! - `range-overlap`: two hosts' dynamic ranges overlap, or a host's range overlaps a pool and is
//!   not inside a block delegated to that host.
//! - `unmanaged`: a MAC inside a pool range, outside every delegated block, that no lease or hold
//!   explains. Only checked when the caller knows the leases and holds.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use crate::hyperv::default_range_for_ip;
use crate::mac::Mac;
use crate::range::MacRange;

/// The kind of a conflict. The slug is stable: it appears in the API, in `--json` and in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConflictClass {
    LiveDuplicate,
    Latent,
    Invalid,
    RangeOverlap,
    Unmanaged,
}

impl ConflictClass {
    pub const ALL: [ConflictClass; 5] = [
        ConflictClass::LiveDuplicate,
        ConflictClass::Latent,
        ConflictClass::Invalid,
        ConflictClass::RangeOverlap,
        ConflictClass::Unmanaged,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            ConflictClass::LiveDuplicate => "live-duplicate",
            ConflictClass::Latent => "latent",
            ConflictClass::Invalid => "invalid",
            ConflictClass::RangeOverlap => "range-overlap",
            ConflictClass::Unmanaged => "unmanaged",
        }
    }

    pub fn from_slug(s: &str) -> Option<ConflictClass> {
        ConflictClass::ALL.into_iter().find(|c| c.slug() == s)
    }
}

impl fmt::Display for ConflictClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// Where and as what a MAC was seen.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seen {
    /// The current adapter of a VM (running or not): it is on the wire whenever the VM runs.
    Live,
    /// Frozen in a checkpoint/snapshot of the owner VM: it returns on restore.
    Checkpoint { id: String, name: String },
    /// A line of a plain MAC list: something uses it, identity unknown.
    Listed { label: Option<String> },
    /// A DHCP lease: the network's view of some NIC.
    DhcpLease {
        ip: Option<String>,
        client_id: Option<String>,
        hostname: Option<String>,
    },
    /// A vNIC of the host's management OS (`Get-VMNetworkAdapter -ManagementOS`): live, and no
    /// VM's; the owner's `host` is whose management OS, `adapter` the vNIC's name.
    ManagementOs,
}

/// Who a sighting belongs to and where it was read. Every field but `source` is optional because
/// each input format knows different things.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// The file it was read from, or the inventory it came in (e.g. `inventory HV1 gen 7`).
    pub source: String,
    /// Position inside the source: `line 12`, `[3].Adapters[5]`.
    pub location: Option<String>,
    pub host: Option<String>,
    pub vm_id: Option<String>,
    pub vm_name: Option<String>,
    pub adapter: Option<String>,
}

/// One observation of a MAC.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sighting {
    pub mac: Mac,
    /// `Some(true)` for a dynamic adapter, `Some(false)` static, `None` unknown.
    pub dynamic: Option<bool>,
    pub seen: Seen,
    pub owner: Owner,
}

impl Sighting {
    /// A dynamic adapter showing the zero MAC has not been assigned one: nothing to compare.
    pub(crate) fn is_unassigned(&self) -> bool {
        self.mac.is_zero() && self.dynamic == Some(true)
    }

    /// A short human name for the owner, used in explanations.
    pub fn describe(&self) -> String {
        let o = &self.owner;
        let at = |s: String| match &o.host {
            Some(h) => format!("{s} on {h}"),
            None => s,
        };
        match &self.seen {
            Seen::Live => at(vm_label(o)),
            Seen::ManagementOs => management_os(o),
            Seen::Checkpoint { name, .. } => at(format!("checkpoint '{name}' of {}", vm_label(o))),
            Seen::Listed { label } => {
                let pos = o.location.as_deref().unwrap_or("an entry");
                match label {
                    Some(l) => format!("{pos} of {} ({l})", o.source),
                    None => format!("{pos} of {}", o.source),
                }
            }
            Seen::DhcpLease {
                ip,
                client_id,
                hostname,
            } => {
                let who = hostname
                    .as_deref()
                    .or(client_id.as_deref())
                    .unwrap_or("an unnamed client");
                match ip {
                    Some(ip) => format!("lease {ip} to {who}"),
                    None => format!("lease to {who}"),
                }
            }
        }
    }
}

/// "vNIC 'vEthernet (External)' of the management OS of HV1".
fn management_os(o: &Owner) -> String {
    let host = o.host.as_deref().unwrap_or("an unnamed host");
    match o.adapter.as_deref() {
        Some(a) if !a.is_empty() => format!("vNIC '{a}' of the management OS of {host}"),
        _ => format!("a vNIC of the management OS of {host}"),
    }
}

fn vm_label(o: &Owner) -> String {
    match (&o.vm_name, &o.vm_id) {
        (Some(n), _) if !n.is_empty() => format!("VM '{n}'"),
        (_, Some(id)) => format!("VM {id}"),
        _ => match &o.location {
            Some(l) => format!("the adapter at {l} of {}", o.source),
            None => format!("an adapter in {}", o.source),
        },
    }
}

/// How a host's dynamic range is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RangeOrigin {
    /// Read from the host (`Get-VMHost` MacAddressMinimum/Maximum, or the agent).
    Configured,
    /// Not known; this is the default Hyper-V derives from the IP.
    DerivedFromIp(Ipv4Addr),
}

/// A host's dynamic MAC range, configured or derived.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRange {
    pub host: String,
    pub cluster: Option<String>,
    pub range: MacRange,
    pub origin: RangeOrigin,
    /// Where the range was read (file or inventory), for the report.
    pub source: String,
}

impl HostRange {
    /// The configured range when known; else one default range per IP, since which of its IPs
    /// the host had when the Hyper-V role was installed is not known.
    pub fn for_host(
        host: &str,
        cluster: Option<&str>,
        configured: Option<MacRange>,
        ipv4: &[Ipv4Addr],
    ) -> Vec<HostRange> {
        let make = |range, origin| HostRange {
            host: host.to_string(),
            cluster: cluster.map(str::to_string),
            range,
            origin,
            source: String::new(),
        };
        match configured {
            Some(r) => vec![make(r, RangeOrigin::Configured)],
            None => {
                let mut out: Vec<HostRange> = Vec::new();
                for ip in ipv4 {
                    let r = default_range_for_ip(*ip);
                    if !out.iter().any(|h| h.range == r) {
                        out.push(make(r, RangeOrigin::DerivedFromIp(*ip)));
                    }
                }
                out
            }
        }
    }

    fn describe(&self) -> String {
        match self.origin {
            RangeOrigin::Configured => format!("host {} ({}, configured)", self.host, self.range),
            RangeOrigin::DerivedFromIp(ip) => {
                format!(
                    "host {} ({}, Hyper-V's default for {ip})",
                    self.host, self.range
                )
            }
        }
    }
}

/// One range of a pool.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolRange {
    pub pool: String,
    pub range: MacRange,
}

/// A block of a pool delegated to a host's native allocator: that host's range may lie in it, and
/// MACs in it are explained by the delegation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelegatedBlock {
    pub host: String,
    pub range: MacRange,
}

/// One side of a range overlap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RangeClaim {
    Host(HostRange),
    Pool(PoolRange),
}

impl RangeClaim {
    pub fn range(&self) -> MacRange {
        match self {
            RangeClaim::Host(h) => h.range,
            RangeClaim::Pool(p) => p.range,
        }
    }
}

/// What a conflict is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// One MAC and every sighting of it, sorted.
    Mac { mac: Mac, sightings: Vec<Sighting> },
    /// Two overlapping ranges and their intersection.
    Ranges {
        a: RangeClaim,
        b: RangeClaim,
        overlap: MacRange,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub class: ConflictClass,
    pub subject: Subject,
    /// One line: what is wrong and why it matters.
    pub explanation: String,
    /// One line: what to do about it.
    pub fix: String,
}

impl Conflict {
    pub fn mac(&self) -> Option<Mac> {
        match &self.subject {
            Subject::Mac { mac, .. } => Some(*mac),
            Subject::Ranges { .. } => None,
        }
    }

    pub fn sightings(&self) -> &[Sighting] {
        match &self.subject {
            Subject::Mac { sightings, .. } => sightings,
            Subject::Ranges { .. } => &[],
        }
    }

    fn sort_key(&self) -> (ConflictClass, u64, u64, String) {
        match &self.subject {
            Subject::Mac { mac, .. } => (self.class, mac.to_u64(), mac.to_u64(), String::new()),
            Subject::Ranges { a, b, overlap } => (
                self.class,
                overlap.first().to_u64(),
                overlap.last().to_u64(),
                format!("{a:?}{b:?}"),
            ),
        }
    }
}

/// Everything the engine looks at. `explained` is the set of MACs that a lease or hold accounts
/// for; `None` means it is unknown (an offline audit) and `unmanaged` is not checked.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConflictInput<'a> {
    pub sightings: &'a [Sighting],
    pub host_ranges: &'a [HostRange],
    pub pools: &'a [PoolRange],
    pub blocks: &'a [DelegatedBlock],
    pub explained: Option<&'a HashSet<Mac>>,
}

/// Who a VM-side sighting belongs to. Borrowed so grouping allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Identity<'a> {
    VmId(&'a str),
    VmName(&'a str),
    /// The management OS of this host: all its vNICs are one owner.
    ManagementOs(Option<&'a str>),
    Unique(usize),
}

fn identity(s: &Sighting, index: usize) -> Identity<'_> {
    match s.seen {
        Seen::Listed { .. } | Seen::DhcpLease { .. } => Identity::Unique(index),
        Seen::ManagementOs => match s.owner.host.as_deref() {
            Some(h) => Identity::ManagementOs(Some(h)),
            None => Identity::Unique(index),
        },
        Seen::Live | Seen::Checkpoint { .. } => match (&s.owner.vm_id, &s.owner.vm_name) {
            (Some(id), _) if !id.is_empty() => Identity::VmId(id),
            (_, Some(name)) if !name.is_empty() => Identity::VmName(name),
            _ => Identity::Unique(index),
        },
    }
}

/// VM ids are GUIDs that PowerShell and libvirt spell in different cases.
fn same_identity(a: Identity, b: Identity) -> bool {
    match (a, b) {
        (Identity::VmId(x), Identity::VmId(y)) => x.eq_ignore_ascii_case(y),
        (Identity::ManagementOs(Some(x)), Identity::ManagementOs(Some(y))) => {
            x.eq_ignore_ascii_case(y)
        }
        _ => a == b,
    }
}

/// Counts distinct identities, stopping at `limit` (the callers only ask "at least two?").
fn distinct_at_least(ids: &[Identity], limit: usize) -> usize {
    let mut seen: Vec<Identity> = Vec::new();
    for id in ids {
        if !seen.iter().any(|s| same_identity(*s, *id)) {
            seen.push(*id);
            if seen.len() >= limit {
                break;
            }
        }
    }
    seen.len()
}

/// DHCP clients differ when both have client ids and those differ; else when both have host names
/// and those differ (case-insensitively). A lease without either cannot be told apart.
fn dhcp_clients_differ(leases: &[&Sighting]) -> bool {
    let mut uids: Vec<&str> = Vec::new();
    let mut names_all: Vec<String> = Vec::new();
    let mut names_without_uid: Vec<String> = Vec::new();
    for s in leases {
        let Seen::DhcpLease {
            client_id,
            hostname,
            ..
        } = &s.seen
        else {
            continue;
        };
        if let Some(u) = client_id.as_deref()
            && !uids.contains(&u)
        {
            uids.push(u);
        }
        if let Some(h) = hostname.as_deref() {
            let h = h.to_ascii_lowercase();
            if client_id.is_none() && !names_without_uid.contains(&h) {
                names_without_uid.push(h.clone());
            }
            if !names_all.contains(&h) {
                names_all.push(h);
            }
        }
        if uids.len() >= 2 {
            return true;
        }
    }
    !names_without_uid.is_empty() && names_all.len() >= 2
}

/// Finds every conflict in `input`, in a deterministic order (by class, then MAC or range).
pub fn find_conflicts(input: &ConflictInput) -> Vec<Conflict> {
    let mut out = mac_conflicts(input);
    out.extend(range_conflicts(
        input.host_ranges,
        input.pools,
        input.blocks,
    ));
    sort_conflicts(&mut out);
    out
}

/// The order [`find_conflicts`] returns: by class, then MAC or range.
pub(crate) fn sort_conflicts(out: &mut [Conflict]) {
    out.sort_by_cached_key(Conflict::sort_key);
}

/// What the engine needs to know of one MAC besides its sightings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MacFacts<'a> {
    /// A lease or hold accounts for it; `None`: unknown (an offline audit).
    pub explained: Option<bool>,
    /// It lies in a block delegated to a host (the host's allocator owns it).
    pub in_block: bool,
    /// The pool whose ranges hold it.
    pub pool: Option<&'a str>,
}

fn mac_conflicts(input: &ConflictInput) -> Vec<Conflict> {
    let sightings = input.sightings;
    let mut order: Vec<u32> = (0..sightings.len() as u32)
        .filter(|&i| !sightings[i as usize].is_unassigned())
        .collect();
    order.sort_unstable_by_key(|&i| sightings[i as usize].mac);

    let mut pools: Vec<&PoolRange> = input.pools.iter().collect();
    pools.sort_by_key(|p| p.range);
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mac = sightings[order[start] as usize].mac;
        let mut end = start + 1;
        while end < order.len() && sightings[order[end] as usize].mac == mac {
            end += 1;
        }
        let group: Vec<(usize, &Sighting)> = order[start..end]
            .iter()
            .map(|&i| (i as usize, &sightings[i as usize]))
            .collect();
        let candidates = pools.partition_point(|p| p.range.first() <= mac);
        let facts = MacFacts {
            explained: input.explained.map(|e| e.contains(&mac)),
            in_block: input.blocks.iter().any(|b| b.range.contains(mac)),
            pool: pools[..candidates]
                .iter()
                .rev()
                .find(|p| p.range.contains(mac))
                .map(|p| p.pool.as_str()),
        };
        classify_group(mac, &group, facts, &mut out);
        start = end;
    }
    out
}

fn sorted_sightings(group: &[(usize, &Sighting)]) -> Vec<Sighting> {
    let mut v: Vec<Sighting> = group.iter().map(|(_, s)| (*s).clone()).collect();
    v.sort();
    v.dedup();
    v
}

fn list_owners(names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// The conflicts about one MAC, from every sighting of it (each with an index unique in the
/// group; unassigned ones already left out).
pub(crate) fn classify_group(
    mac: Mac,
    group: &[(usize, &Sighting)],
    facts: MacFacts,
    out: &mut Vec<Conflict>,
) {
    if let Some(reason) = mac.invalid_reason() {
        let sightings = sorted_sightings(group);
        let who: Vec<String> = sightings.iter().map(Sighting::describe).collect();
        out.push(Conflict {
            class: ConflictClass::Invalid,
            explanation: format!("{mac} on {}: {reason}", list_owners(&who)),
            fix: "give the adapter a unicast MAC from the pool (Set-VMNetworkAdapter -StaticMacAddress \
                  <free MAC>, or -DynamicMacAddress) while the VM is off"
                .to_string(),
            subject: Subject::Mac { mac, sightings },
        });
        return;
    }

    if let Some(c) = duplicate_conflict(mac, group) {
        out.push(c);
    }

    if facts.explained == Some(false)
        && group
            .iter()
            .any(|(_, s)| !matches!(s.seen, Seen::DhcpLease { .. }))
        && !facts.in_block
        && let Some(pool) = facts.pool
    {
        let sightings = sorted_sightings(group);
        let who: Vec<String> = sightings.iter().map(Sighting::describe).collect();
        out.push(Conflict {
            class: ConflictClass::Unmanaged,
            explanation: format!(
                "{mac} lies in pool '{}' but no lease or hold explains it (used by {})",
                pool,
                list_owners(&who)
            ),
            fix: format!(
                "lease or hold it for its owner so the pool never hands it out again, or give the adapter \
                 a MAC leased from pool '{}'",
                pool
            ),
            subject: Subject::Mac { mac, sightings },
        });
    }
}

/// `live-duplicate` or `latent` for one MAC's group, if any.
fn duplicate_conflict(mac: Mac, group: &[(usize, &Sighting)]) -> Option<Conflict> {
    if group.len() < 2 {
        return None;
    }
    let mut live = Vec::new();
    let mut checkpoints = Vec::new();
    let mut leases = Vec::new();
    for (i, s) in group {
        match s.seen {
            Seen::Live | Seen::Listed { .. } | Seen::ManagementOs => live.push(identity(s, *i)),
            Seen::Checkpoint { .. } => checkpoints.push(identity(s, *i)),
            Seen::DhcpLease { .. } => leases.push(*s),
        }
    }
    let live_dup = distinct_at_least(&live, 2) >= 2;
    let latent = !live_dup && !checkpoints.is_empty() && {
        let mut all = live.clone();
        all.extend(checkpoints.iter().copied());
        distinct_at_least(&all, 2) >= 2
    };
    let dhcp_dup = leases.len() >= 2 && dhcp_clients_differ(&leases);
    if !live_dup && !latent && !dhcp_dup {
        return None;
    }

    let sightings = sorted_sightings(group);
    let describe_where = |pred: &dyn Fn(&Seen) -> bool| -> Vec<String> {
        let mut v: Vec<String> = sightings
            .iter()
            .filter(|s| pred(&s.seen))
            .map(Sighting::describe)
            .collect();
        v.dedup();
        v
    };
    let (class, explanation, fix) = if live_dup {
        let who =
            describe_where(&|s| matches!(s, Seen::Live | Seen::Listed { .. } | Seen::ManagementOs));
        (
            ConflictClass::LiveDuplicate,
            format!(
                "{mac} is in use by {} different owners: {}",
                distinct_at_least(&live, usize::MAX),
                list_owners(&who)
            ),
            live_duplicate_fix(&sightings),
        )
    } else if dhcp_dup {
        // DHCP sees it on the wire twice already: that outranks a checkpoint that could do it.
        let who = describe_where(&|s| matches!(s, Seen::DhcpLease { .. }));
        let frozen = describe_where(&|s| matches!(s, Seen::Checkpoint { .. }));
        let also = if latent {
            format!(" (it is also frozen in {})", list_owners(&frozen))
        } else {
            String::new()
        };
        (
            ConflictClass::LiveDuplicate,
            format!("{mac} is leased by DHCP to different clients: {}{also}", list_owners(&who)),
            "two machines use this MAC: find them by the leased IPs and give one of them a fresh MAC".to_string(),
        )
    } else {
        // The checkpoint to fix is one that does not belong to the VM using the MAC live.
        let (cp, vm_name) = group
            .iter()
            .filter(|(i, s)| {
                matches!(s.seen, Seen::Checkpoint { .. })
                    && live
                        .first()
                        .is_none_or(|l| !same_identity(*l, identity(s, *i)))
            })
            .min_by_key(|(_, s)| *s)
            .map(|(_, s)| match &s.seen {
                Seen::Checkpoint { name, .. } => {
                    (name.clone(), s.owner.vm_name.clone().unwrap_or_default())
                }
                _ => Default::default(),
            })
            .unwrap_or_default();
        let live_who =
            describe_where(&|s| matches!(s, Seen::Live | Seen::Listed { .. } | Seen::ManagementOs));
        let cp_who = describe_where(&|s| matches!(s, Seen::Checkpoint { .. }));
        let explanation = if live_who.is_empty() {
            format!(
                "{mac} is frozen in checkpoints of different VMs ({}): restoring them puts it on the network twice",
                list_owners(&cp_who)
            )
        } else {
            format!(
                "{mac} is in use by {} and frozen in {}: restoring the checkpoint puts it on the network twice",
                list_owners(&live_who),
                list_owners(&cp_who)
            )
        };
        (
            ConflictClass::Latent,
            explanation,
            format!(
                "give the checkpoint's adapter a fresh MAC (Get-VM '{vm_name}' | Get-VMSnapshot -Name '{cp}' | \
                 Get-VMNetworkAdapter | Set-VMNetworkAdapter -StaticMacAddress <free MAC>), or hold the MAC so \
                 no host hands it out again"
            ),
        )
    };
    Some(Conflict {
        class,
        explanation,
        fix,
        subject: Subject::Mac { mac, sightings },
    })
}

/// What to do about a MAC live on several owners. A management OS's vNIC carries the host's own
/// traffic (changing it drops the host's connection), so it keeps the MAC and the VMs move off;
/// between management OSes only, the second one (in sort order) gets a fresh MAC.
fn live_duplicate_fix(sightings: &[Sighting]) -> String {
    let mut hosts: Vec<&Sighting> = sightings
        .iter()
        .filter(|s| s.seen == Seen::ManagementOs)
        .collect();
    hosts.dedup_by(|a, b| {
        a.owner.host.as_deref().map(str::to_ascii_lowercase)
            == b.owner.host.as_deref().map(str::to_ascii_lowercase)
    });
    let vm_fix = "turn each other VM off, give its adapter a fresh MAC from the pool \
                  (Set-VMNetworkAdapter -StaticMacAddress <free MAC>) and start it again";
    let host = |s: &Sighting| {
        s.owner
            .host
            .clone()
            .unwrap_or_else(|| "an unnamed host".into())
    };
    match hosts.as_slice() {
        [] => format!("keep it on one owner; {vm_fix}"),
        [keep] if sightings.iter().any(|s| s.seen != Seen::ManagementOs) => format!(
            "keep it on the management OS of {} (its vNIC carries the host's own traffic); {vm_fix}",
            host(keep)
        ),
        [keep, other, ..] => format!(
            "keep it on the management OS of {}; give the vNIC of the management OS of {} a fresh MAC \
             (on {}: Set-VMNetworkAdapter -ManagementOS -Name '{}' -StaticMacAddress <free MAC>), \
             and turn any VM using it off and give it a fresh MAC too",
            host(keep),
            host(other),
            host(other),
            other.owner.adapter.as_deref().unwrap_or("<vNIC>")
        ),
        [only] => format!("keep it on the management OS of {}; {vm_fix}", host(only)),
    }
}

fn overlap_of(a: MacRange, b: MacRange) -> MacRange {
    MacRange::new(a.first().max(b.first()), a.last().min(b.last()))
        .expect("the intersection of two overlapping unicast ranges is a unicast range")
}

/// `range-overlap` conflicts by a sweep over ranges sorted by their first address.
pub(crate) fn range_conflicts(
    hosts: &[HostRange],
    pools: &[PoolRange],
    blocks: &[DelegatedBlock],
) -> Vec<Conflict> {
    let mut claims: Vec<RangeClaim> = hosts.iter().cloned().map(RangeClaim::Host).collect();
    claims.extend(pools.iter().cloned().map(RangeClaim::Pool));
    // The same host range read twice (two exports of one host) is one claim; a configured origin
    // sorts before a derived one and is the one kept.
    let dedup_key = |c: &RangeClaim| match c {
        RangeClaim::Host(h) => (h.range, 0, h.host.to_ascii_lowercase()),
        RangeClaim::Pool(p) => (p.range, 1, p.pool.clone()),
    };
    claims.sort_by_cached_key(|c| (dedup_key(c), c.clone()));
    claims.dedup_by_key(|c| dedup_key(c));
    claims.sort_by_key(|c| c.range().first());

    let mut out = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        let r = claim.range();
        active.retain(|&j| claims[j].range().last() >= r.first());
        for &j in &active {
            if let Some(c) = overlap_conflict(&claims[j], claim, blocks) {
                out.push(c);
            }
        }
        active.push(i);
    }
    out
}

fn overlap_conflict(a: &RangeClaim, b: &RangeClaim, blocks: &[DelegatedBlock]) -> Option<Conflict> {
    let overlap = overlap_of(a.range(), b.range());
    let n = overlap.len();
    let (a, b, explanation, fix) = match (a, b) {
        (RangeClaim::Pool(_), RangeClaim::Pool(_)) => return None,
        (RangeClaim::Host(x), RangeClaim::Host(y)) => {
            if x.host.eq_ignore_ascii_case(&y.host) {
                return None;
            }
            let (x, y) = if (&x.host, x.range) <= (&y.host, y.range) {
                (x, y)
            } else {
                (y, x)
            };
            (
                RangeClaim::Host(x.clone()),
                RangeClaim::Host(y.clone()),
                format!(
                    "dynamic ranges of {} and {} share {n} addresses: each host can hand out a MAC the other \
                     already gave a VM",
                    x.describe(),
                    y.describe()
                ),
                format!(
                    "give {} its own block: `macpool hyperv ranges` prints the Set-VMHost -ComputerName {} \
                     -MacAddressMinimum … -MacAddressMaximum … line",
                    y.host, y.host
                ),
            )
        }
        (RangeClaim::Host(h), RangeClaim::Pool(p)) | (RangeClaim::Pool(p), RangeClaim::Host(h)) => {
            let delegated = blocks.iter().any(|bl| {
                bl.host.eq_ignore_ascii_case(&h.host)
                    && bl.range.contains(h.range.first())
                    && bl.range.contains(h.range.last())
            });
            if delegated {
                return None;
            }
            (
                RangeClaim::Host(h.clone()),
                RangeClaim::Pool(p.clone()),
                format!(
                    "dynamic range of {} shares {n} addresses with pool '{}' ({}): the host can hand out a MAC \
                     the pool leases to someone else",
                    h.describe(),
                    p.pool,
                    p.range
                ),
                format!(
                    "move {} onto a block delegated from pool '{}' (or outside the pool) with Set-VMHost \
                     -MacAddressMinimum/-MacAddressMaximum",
                    h.host, p.pool
                ),
            )
        }
    };
    Some(Conflict {
        class: ConflictClass::RangeOverlap,
        subject: Subject::Ranges { a, b, overlap },
        explanation,
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn live(m: &str, host: &str, vm_id: &str, vm_name: &str) -> Sighting {
        Sighting {
            mac: mac(m),
            dynamic: Some(true),
            seen: Seen::Live,
            owner: Owner {
                source: "test".into(),
                host: Some(host.into()),
                vm_id: Some(vm_id.into()),
                vm_name: Some(vm_name.into()),
                adapter: Some("Network Adapter".into()),
                location: None,
            },
        }
    }

    fn checkpoint(m: &str, host: &str, vm_id: &str, vm_name: &str, cp: &str) -> Sighting {
        Sighting {
            seen: Seen::Checkpoint {
                id: format!("{cp}-id"),
                name: cp.into(),
            },
            ..live(m, host, vm_id, vm_name)
        }
    }

    fn listed(m: &str, line: usize) -> Sighting {
        Sighting {
            mac: mac(m),
            dynamic: None,
            seen: Seen::Listed { label: None },
            owner: Owner {
                source: "list.txt".into(),
                location: Some(format!("line {line}")),
                ..Owner::default()
            },
        }
    }

    fn lease(m: &str, ip: &str, uid: Option<&str>, host: Option<&str>) -> Sighting {
        Sighting {
            mac: mac(m),
            dynamic: None,
            seen: Seen::DhcpLease {
                ip: Some(ip.into()),
                client_id: uid.map(Into::into),
                hostname: host.map(Into::into),
            },
            owner: Owner {
                source: "dhcpd.leases".into(),
                ..Owner::default()
            },
        }
    }

    fn run(sightings: &[Sighting]) -> Vec<Conflict> {
        find_conflicts(&ConflictInput {
            sightings,
            ..ConflictInput::default()
        })
    }

    fn classes(c: &[Conflict]) -> Vec<&'static str> {
        c.iter().map(|c| c.class.slug()).collect()
    }

    fn management(m: &str, host: &str, vnic: &str) -> Sighting {
        Sighting {
            mac: mac(m),
            dynamic: Some(true),
            seen: Seen::ManagementOs,
            owner: Owner {
                source: "test".into(),
                host: Some(host.into()),
                adapter: Some(vnic.into()),
                ..Owner::default()
            },
        }
    }

    #[test]
    fn a_vm_sharing_a_mac_with_a_management_os_vnic_is_a_live_duplicate() {
        for vm_host in ["HV1", "HV2"] {
            let c = run(&[
                management("00155D018511", "HV1", "vEthernet (External)"),
                live("00155D018511", vm_host, "vm-1", "desk-01"),
            ]);
            assert_eq!(classes(&c), ["live-duplicate"], "VM on {vm_host}");
            assert!(
                c[0].explanation
                    .contains("vNIC 'vEthernet (External)' of the management OS of HV1"),
                "{}",
                c[0].explanation
            );
            assert!(
                c[0].fix.contains("keep it on the management OS of HV1"),
                "{}",
                c[0].fix
            );
        }
        // two vNICs of one management OS are one owner; a checkpoint of a VM makes it latent
        assert!(
            run(&[
                management("00155D018511", "HV1", "a"),
                management("00155D018511", "hv1", "b"),
            ])
            .is_empty()
        );
        let c = run(&[
            management("00155D018511", "HV1", "vEthernet (External)"),
            checkpoint("00155D018511", "HV2", "vm-1", "desk-01", "RDV_ROLLBACK"),
        ]);
        assert_eq!(classes(&c), ["latent"]);
        assert!(c[0].explanation.contains("management OS of HV1"));
    }

    #[test]
    fn two_management_oses_sharing_a_mac_name_the_one_to_change() {
        let c = run(&[
            management("00155D018511", "HV2", "vEthernet (Mgmt)"),
            management("00155D018511", "HV1", "vEthernet (External)"),
        ]);
        assert_eq!(classes(&c), ["live-duplicate"]);
        assert!(
            c[0].fix.contains("keep it on the management OS of HV1"),
            "{}",
            c[0].fix
        );
        assert!(
            c[0].fix
                .contains("-ManagementOS -Name 'vEthernet (Mgmt)' -StaticMacAddress"),
            "{}",
            c[0].fix
        );
    }

    #[test]
    fn slugs_are_stable_and_round_trip() {
        let slugs: Vec<_> = ConflictClass::ALL.iter().map(|c| c.slug()).collect();
        assert_eq!(
            slugs,
            [
                "live-duplicate",
                "latent",
                "invalid",
                "range-overlap",
                "unmanaged"
            ]
        );
        for c in ConflictClass::ALL {
            assert_eq!(ConflictClass::from_slug(c.slug()), Some(c));
        }
        assert_eq!(ConflictClass::from_slug("duplicate"), None);
    }

    #[test]
    fn live_migration_in_flight_is_not_a_conflict() {
        let c = run(&[
            live("00155D018511", "HV1", "5F0E-1", "desk-01"),
            live("00155D018511", "HV2", "5f0e-1", "desk-01"),
        ]);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn a_vm_and_its_own_checkpoint_is_not_a_conflict() {
        let c = run(&[
            live("00155D018511", "HV2", "vm-1", "desk-01"),
            checkpoint("00155D018511", "HV2", "vm-1", "desk-01", "RDV_ROLLBACK - 1"),
        ]);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn the_seeds_exact_scenario_is_latent() {
        // desk-01 was created on HV1 and got HV1:17; it migrated to HV2 and was given a new MAC there
        // at its next start, but its RDV_ROLLBACK checkpoint still holds HV1:17, which HV1 has since
        // handed to a new VM.
        let c = run(&[
            live("00155D018522", "HV2", "vm-desk01", "desk-01"),
            checkpoint(
                "00155D018517",
                "HV2",
                "vm-desk01",
                "desk-01",
                "RDV_ROLLBACK - 10/14/2015",
            ),
            live("00155D018517", "HV1", "vm-new", "new-vm"),
        ]);
        assert_eq!(classes(&c), ["latent"]);
        assert_eq!(c[0].mac(), Some(mac("00155D018517")));
        assert_eq!(c[0].sightings().len(), 2);
        assert!(
            c[0].explanation.contains("VM 'new-vm' on HV1"),
            "{}",
            c[0].explanation
        );
        assert!(
            c[0].explanation
                .contains("checkpoint 'RDV_ROLLBACK - 10/14/2015' of VM 'desk-01'")
        );
        assert!(
            c[0].fix
                .contains("Get-VM 'desk-01' | Get-VMSnapshot -Name 'RDV_ROLLBACK - 10/14/2015'")
        );
    }

    #[test]
    fn latent_fix_names_the_other_vms_checkpoint_not_the_live_vms_own() {
        let c = run(&[
            live("00155D018517", "HV1", "vm-a", "desk-a"),
            checkpoint("00155D018517", "HV1", "vm-a", "desk-a", "A-own"),
            checkpoint("00155D018517", "HV2", "vm-b", "desk-b", "B-old"),
        ]);
        assert_eq!(classes(&c), ["latent"]);
        assert!(
            c[0].fix
                .contains("Get-VM 'desk-b' | Get-VMSnapshot -Name 'B-old'"),
            "{}",
            c[0].fix
        );
    }

    #[test]
    fn checkpoints_of_two_different_vms_are_latent() {
        let c = run(&[
            checkpoint("00155D018517", "HV1", "vm-a", "desk-a", "RDV_ROLLBACK - a"),
            checkpoint("00155D018517", "HV2", "vm-b", "desk-b", "RDV_ROLLBACK - b"),
        ]);
        assert_eq!(classes(&c), ["latent"]);
        assert!(
            c[0].explanation
                .contains("frozen in checkpoints of different VMs")
        );
    }

    #[test]
    fn two_checkpoints_of_one_vm_are_not_a_conflict() {
        let c = run(&[
            checkpoint("00155D018517", "HV1", "vm-a", "desk-a", "one"),
            checkpoint("00155D018517", "HV1", "vm-a", "desk-a", "two"),
        ]);
        assert!(c.is_empty());
    }

    #[test]
    fn live_on_two_vms_is_a_live_duplicate_even_with_checkpoints() {
        let c = run(&[
            live("00155D018517", "HV1", "vm-a", "desk-a"),
            live("00155D018517", "HV2", "vm-b", "desk-b"),
            checkpoint("00155D018517", "HV2", "vm-c", "desk-c", "cp"),
        ]);
        assert_eq!(classes(&c), ["live-duplicate"]);
        assert_eq!(c[0].sightings().len(), 3, "every owner involved is listed");
        assert!(
            c[0].explanation.contains("2 different owners"),
            "{}",
            c[0].explanation
        );
    }

    #[test]
    fn vm_without_id_is_identified_by_name() {
        let mut a = live("525400000001", "kvm1", "", "web");
        a.owner.vm_id = None;
        let b = a.clone();
        assert!(run(&[a.clone(), b]).is_empty());
        let mut c = a.clone();
        c.owner.vm_name = Some("db".into());
        assert_eq!(classes(&run(&[a, c])), ["live-duplicate"]);
    }

    #[test]
    fn a_mac_listed_twice_is_a_live_duplicate() {
        let c = run(&[
            listed("02:00:00:00:00:01", 1),
            listed("02:00:00:00:00:01", 9),
        ]);
        assert_eq!(classes(&c), ["live-duplicate"]);
        assert!(c[0].explanation.contains("line 1 of list.txt"));
        assert!(c[0].explanation.contains("line 9 of list.txt"));
    }

    #[test]
    fn a_listed_mac_live_on_a_vm_is_a_live_duplicate_and_in_a_checkpoint_is_latent() {
        let c = run(&[
            listed("00155D018517", 3),
            live("00155D018517", "HV1", "vm-a", "desk-a"),
        ]);
        assert_eq!(classes(&c), ["live-duplicate"]);
        let c = run(&[
            listed("00155D018517", 3),
            checkpoint("00155D018517", "HV1", "vm-a", "desk-a", "cp"),
        ]);
        assert_eq!(classes(&c), ["latent"]);
    }

    #[test]
    fn dhcp_leases_compare_only_with_each_other() {
        // the network's view of desk-a's NIC is not a second owner
        let c = run(&[
            live("00155D018517", "HV1", "vm-a", "desk-a"),
            lease(
                "00155D018517",
                "10.0.0.5",
                Some("01:00:15:5d:01:85:17"),
                Some("desk-a"),
            ),
        ]);
        assert!(c.is_empty());
    }

    #[test]
    fn dhcp_mac_with_two_client_ids_is_a_live_duplicate() {
        let c = run(&[
            lease("00155D018517", "10.0.0.5", Some("uid-a"), Some("desk-a")),
            lease("00155D018517", "10.0.0.9", Some("uid-b"), Some("desk-a")),
        ]);
        assert_eq!(classes(&c), ["live-duplicate"]);
        assert!(
            c[0].explanation
                .contains("leased by DHCP to different clients")
        );
    }

    #[test]
    fn dhcp_duplicate_outranks_latent() {
        let c = run(&[
            live("00155D018517", "HV1", "vm-new", "new-vm"),
            checkpoint(
                "00155D018517",
                "HV2",
                "vm-desk01",
                "desk-01",
                "RDV_ROLLBACK",
            ),
            lease("00155D018517", "10.0.0.5", Some("uid-a"), Some("new-vm")),
            lease("00155D018517", "10.0.0.9", Some("uid-b"), Some("desk-01")),
        ]);
        assert_eq!(classes(&c), ["live-duplicate"]);
        assert!(
            c[0].explanation
                .contains("also frozen in checkpoint 'RDV_ROLLBACK'"),
            "{}",
            c[0].explanation
        );
    }

    #[test]
    fn dhcp_same_client_id_with_a_new_hostname_is_one_client() {
        let c = run(&[
            lease("00155D018517", "10.0.0.5", Some("uid-a"), Some("desk-a")),
            lease("00155D018517", "10.0.0.5", Some("uid-a"), Some("renamed")),
        ]);
        assert!(c.is_empty());
        let c = run(&[
            lease("00155D018517", "10.0.0.5", None, Some("DESK-A")),
            lease("00155D018517", "10.0.0.6", Some("uid-a"), Some("desk-a")),
        ]);
        assert!(c.is_empty(), "host names compare case-insensitively");
        let c = run(&[
            lease("00155D018517", "10.0.0.5", None, Some("desk-a")),
            lease("00155D018517", "10.0.0.6", None, Some("desk-b")),
        ]);
        assert_eq!(classes(&c), ["live-duplicate"]);
    }

    #[test]
    fn invalid_macs_are_reported_once_and_never_as_duplicates() {
        let mut zero_static = live("000000000000", "HV1", "vm-a", "a");
        zero_static.dynamic = Some(false);
        let c = run(&[
            live("01005E000001", "HV1", "vm-a", "a"),
            live("01005E000001", "HV1", "vm-b", "b"),
            zero_static,
            live("FFFFFFFFFFFF", "HV1", "vm-c", "c"),
        ]);
        assert_eq!(classes(&c), ["invalid", "invalid", "invalid"]);
        assert_eq!(c[0].mac(), Some(Mac::ZERO));
        assert!(c[0].explanation.contains("all-zero"));
        assert!(c[1].explanation.contains("multicast"));
        assert_eq!(c[1].sightings().len(), 2);
        assert!(c[2].explanation.contains("broadcast"));
    }

    #[test]
    fn zero_mac_on_a_dynamic_adapter_is_unassigned_not_invalid() {
        let c = run(&[
            live("000000000000", "HV1", "vm-a", "a"),
            checkpoint("000000000000", "HV1", "vm-b", "b", "RDV_ROLLBACK"),
        ]);
        assert!(c.is_empty(), "{c:?}");
    }

    fn hr(host: &str, ip: &str) -> HostRange {
        HostRange::for_host(host, None, None, &[ip.parse().unwrap()]).remove(0)
    }

    #[test]
    fn hosts_whose_ips_share_the_last_two_octets_overlap() {
        let hosts = [
            hr("HV1", "10.0.1.5"),
            hr("HV2", "10.1.1.5"),
            hr("HV3", "10.0.1.6"),
        ];
        let c = find_conflicts(&ConflictInput {
            host_ranges: &hosts,
            ..ConflictInput::default()
        });
        assert_eq!(classes(&c), ["range-overlap"]);
        let Subject::Ranges { a, b, overlap } = &c[0].subject else {
            panic!()
        };
        assert_eq!(overlap.len(), 256);
        assert!(matches!(a, RangeClaim::Host(h) if h.host == "HV1"));
        assert!(matches!(b, RangeClaim::Host(h) if h.host == "HV2"));
        assert!(
            c[0].explanation.contains("Hyper-V's default for 10.1.1.5"),
            "{}",
            c[0].explanation
        );
        assert!(c[0].fix.contains("Set-VMHost -ComputerName HV2"));
    }

    #[test]
    fn one_host_read_twice_does_not_overlap_itself() {
        let hosts = [hr("HV1", "10.0.1.5"), hr("hv1", "10.0.1.5")];
        let c = find_conflicts(&ConflictInput {
            host_ranges: &hosts,
            ..ConflictInput::default()
        });
        assert!(c.is_empty());
    }

    #[test]
    fn host_range_inside_a_pool_conflicts_unless_delegated_to_it() {
        let hosts = [HostRange {
            origin: RangeOrigin::Configured,
            range: "00155DF00000-00155DF000FF".parse().unwrap(),
            ..hr("HV1", "10.0.1.5")
        }];
        let pools = [PoolRange {
            pool: "rds".into(),
            range: "00155DF00000-00155DF0FFFF".parse().unwrap(),
        }];
        let input = ConflictInput {
            host_ranges: &hosts,
            pools: &pools,
            ..ConflictInput::default()
        };
        let c = find_conflicts(&input);
        assert_eq!(classes(&c), ["range-overlap"]);
        assert!(c[0].explanation.contains("pool 'rds'"));
        let blocks = [DelegatedBlock {
            host: "HV1".into(),
            range: "00155DF00000-00155DF003FF".parse().unwrap(),
        }];
        assert!(
            find_conflicts(&ConflictInput {
                blocks: &blocks,
                ..input
            })
            .is_empty()
        );
        let other = [DelegatedBlock {
            host: "HV2".into(),
            ..blocks[0].clone()
        }];
        assert_eq!(
            find_conflicts(&ConflictInput {
                blocks: &other,
                ..input
            })
            .len(),
            1
        );
    }

    #[test]
    fn unmanaged_is_a_pool_mac_no_lease_or_hold_explains() {
        let pools = [PoolRange {
            pool: "rds".into(),
            range: "00155DF00000-00155DF0FFFF".parse().unwrap(),
        }];
        let s = [
            live("00155DF00001", "HV1", "vm-a", "a"),
            live("00155DF00002", "HV1", "vm-b", "b"),
            live("00155D018517", "HV1", "vm-c", "c"),
        ];
        let explained: HashSet<Mac> = [mac("00155DF00001")].into();
        let input = ConflictInput {
            sightings: &s,
            pools: &pools,
            explained: Some(&explained),
            ..ConflictInput::default()
        };
        let c = find_conflicts(&input);
        assert_eq!(classes(&c), ["unmanaged"]);
        assert_eq!(c[0].mac(), Some(mac("00155DF00002")));
        assert!(c[0].explanation.contains("pool 'rds'"));
        // without lease knowledge nothing is called unmanaged
        assert!(
            find_conflicts(&ConflictInput {
                explained: None,
                ..input
            })
            .is_empty()
        );
        // a block delegated to a host explains the MACs its allocator hands out
        let blocks = [DelegatedBlock {
            host: "HV1".into(),
            range: "00155DF00000-00155DF000FF".parse().unwrap(),
        }];
        assert!(
            find_conflicts(&ConflictInput {
                blocks: &blocks,
                ..input
            })
            .is_empty()
        );
    }

    #[test]
    fn order_is_deterministic_whatever_the_input_order() {
        let mut s = vec![
            live("00155D000002", "HV1", "a", "a"),
            live("00155D000002", "HV2", "b", "b"),
            checkpoint("00155D000001", "HV1", "c", "c", "cp"),
            live("00155D000001", "HV1", "d", "d"),
            live("00155D000003", "HV1", "e", "e"),
            live("00155D000003", "HV1", "f", "f"),
        ];
        let first = run(&s);
        assert_eq!(
            classes(&first),
            ["live-duplicate", "live-duplicate", "latent"]
        );
        assert_eq!(first[0].mac(), Some(mac("00155D000002")));
        s.reverse();
        assert_eq!(run(&s), first);
    }

    // ---- property test against the O(n²) pairwise definition ----

    /// The definition, pair by pair: what does this pair of sightings of one MAC amount to?
    mod reference {
        use super::*;

        fn ident(s: &Sighting, i: usize) -> String {
            match (&s.seen, &s.owner.vm_id, &s.owner.vm_name) {
                (Seen::Listed { .. } | Seen::DhcpLease { .. }, _, _) => format!("#{i}"),
                (Seen::ManagementOs, _, _) => match &s.owner.host {
                    Some(h) => format!("mgmt:{}", h.to_lowercase()),
                    None => format!("#{i}"),
                },
                (_, Some(id), _) if !id.is_empty() => format!("id:{}", id.to_lowercase()),
                (_, _, Some(n)) if !n.is_empty() => format!("name:{n}"),
                _ => format!("#{i}"),
            }
        }

        fn dhcp_differ(a: &Seen, b: &Seen) -> bool {
            let (
                Seen::DhcpLease {
                    client_id: ua,
                    hostname: ha,
                    ..
                },
                Seen::DhcpLease {
                    client_id: ub,
                    hostname: hb,
                    ..
                },
            ) = (a, b)
            else {
                return false;
            };
            match (ua, ub, ha, hb) {
                (Some(x), Some(y), _, _) => x != y,
                (_, _, Some(x), Some(y)) => !x.eq_ignore_ascii_case(y),
                _ => false,
            }
        }

        fn pair(si: &Sighting, i: usize, sj: &Sighting, j: usize) -> Option<ConflictClass> {
            use Seen::*;
            let live_like = |s: &Seen| matches!(s, Live | Listed { .. } | ManagementOs);
            let differ = ident(si, i) != ident(sj, j);
            match (&si.seen, &sj.seen) {
                (DhcpLease { .. }, DhcpLease { .. }) => {
                    dhcp_differ(&si.seen, &sj.seen).then_some(ConflictClass::LiveDuplicate)
                }
                (DhcpLease { .. }, _) | (_, DhcpLease { .. }) => None,
                (a, b) if live_like(a) && live_like(b) => {
                    differ.then_some(ConflictClass::LiveDuplicate)
                }
                _ => differ.then_some(ConflictClass::Latent),
            }
        }

        /// (class, mac or range key) for every conflict.
        pub fn conflicts(input: &ConflictInput) -> Vec<(ConflictClass, String)> {
            let s = input.sightings;
            let mut out = Vec::new();
            let mut macs: Vec<Mac> = s
                .iter()
                .filter(|x| !(x.mac.is_zero() && x.dynamic == Some(true)))
                .map(|x| x.mac)
                .collect();
            macs.sort();
            macs.dedup();
            for m in macs {
                let idx: Vec<usize> = (0..s.len())
                    .filter(|&i| s[i].mac == m && !(m.is_zero() && s[i].dynamic == Some(true)))
                    .collect();
                if m.invalid_reason().is_some() {
                    out.push((ConflictClass::Invalid, m.to_string()));
                    continue;
                }
                let mut worst: Option<ConflictClass> = None;
                for (a, &i) in idx.iter().enumerate() {
                    for &j in &idx[a + 1..] {
                        if let Some(c) = pair(&s[i], i, &s[j], j) {
                            worst = Some(worst.map_or(c, |w| w.min(c)));
                        }
                    }
                }
                if let Some(c) = worst {
                    out.push((c, m.to_string()));
                }
                if let Some(explained) = input.explained {
                    let in_pool = input.pools.iter().any(|p| p.range.contains(m));
                    let in_block = input.blocks.iter().any(|b| b.range.contains(m));
                    let vm_side = idx
                        .iter()
                        .any(|&i| !matches!(s[i].seen, Seen::DhcpLease { .. }));
                    if in_pool && !in_block && vm_side && !explained.contains(&m) {
                        out.push((ConflictClass::Unmanaged, m.to_string()));
                    }
                }
            }
            let h = input.host_ranges;
            let mut pairs = Vec::new();
            for i in 0..h.len() {
                for j in i + 1..h.len() {
                    if h[i].range.overlaps(&h[j].range)
                        && !h[i].host.eq_ignore_ascii_case(&h[j].host)
                    {
                        let (x, y) = if (&h[i].host, h[i].range) <= (&h[j].host, h[j].range) {
                            (i, j)
                        } else {
                            (j, i)
                        };
                        pairs.push(format!(
                            "{}={} / {}={}",
                            h[x].host, h[x].range, h[y].host, h[y].range
                        ));
                    }
                }
                for p in input.pools {
                    let delegated = input.blocks.iter().any(|b| {
                        b.host.eq_ignore_ascii_case(&h[i].host)
                            && b.range.contains(h[i].range.first())
                            && b.range.contains(h[i].range.last())
                    });
                    if h[i].range.overlaps(&p.range) && !delegated {
                        pairs.push(format!(
                            "{}={} / pool {}={}",
                            h[i].host, h[i].range, p.pool, p.range
                        ));
                    }
                }
            }
            pairs.sort();
            pairs.dedup();
            out.extend(pairs.into_iter().map(|p| (ConflictClass::RangeOverlap, p)));
            out.sort();
            out
        }
    }

    fn key(c: &Conflict) -> (ConflictClass, String) {
        match &c.subject {
            Subject::Mac { mac, .. } => (c.class, mac.to_string()),
            Subject::Ranges { a, b, .. } => {
                let side = |x: &RangeClaim| match x {
                    RangeClaim::Host(h) => format!("{}={}", h.host, h.range),
                    RangeClaim::Pool(p) => format!("pool {}={}", p.pool, p.range),
                };
                (c.class, format!("{} / {}", side(a), side(b)))
            }
        }
    }

    fn arb_sighting() -> impl Strategy<Value = Sighting> {
        // A tiny MAC space (including zero and a multicast) so that collisions are the norm.
        let macs = prop_oneof![
            (0u64..6).prop_map(|v| 0x0015_5DF0_0000 + v),
            Just(0u64),
            Just(0x0100_5E00_0001u64),
        ];
        let seen = prop_oneof![
            3 => Just(Seen::Live),
            3 => (0u8..2).prop_map(|c| Seen::Checkpoint { id: format!("cp{c}"), name: format!("cp{c}") }),
            1 => Just(Seen::Listed { label: None }),
            1 => Just(Seen::ManagementOs),
            2 => (proptest::option::of(0u8..2), proptest::option::of(0u8..3)).prop_map(|(u, h)| Seen::DhcpLease {
                ip: None,
                client_id: u.map(|u| format!("uid{u}")),
                hostname: h.map(|h| if h == 2 { "HOST0".to_string() } else { format!("host{h}") }),
            }),
        ];
        let vm = prop_oneof![
            (0u8..3).prop_map(|v| (Some(format!("vm-{v}")), None)),
            Just((Some("VM-0".to_string()), None)),
            (0u8..2).prop_map(|v| (None, Some(format!("name{v}")))),
            Just((None, None)),
        ];
        (macs, proptest::option::of(any::<bool>()), seen, vm, 0u8..2).prop_map(
            |(m, dynamic, seen, (vm_id, vm_name), h)| Sighting {
                mac: Mac::from_u64(m).unwrap(),
                dynamic,
                seen,
                owner: Owner {
                    source: "p".into(),
                    host: Some(format!("HV{h}")),
                    vm_id,
                    vm_name,
                    ..Owner::default()
                },
            },
        )
    }

    fn arb_range() -> impl Strategy<Value = MacRange> {
        (0u64..40, 0u64..12).prop_map(|(start, len)| {
            MacRange::new(
                Mac::from_u64(0x0015_5DF0_0000 + start).unwrap(),
                Mac::from_u64(0x0015_5DF0_0000 + start + len).unwrap(),
            )
            .unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn engine_agrees_with_the_pairwise_reference(
            sightings in proptest::collection::vec(arb_sighting(), 0..24),
            hosts in proptest::collection::vec((0u8..4, arb_range()), 0..6),
            pools in proptest::collection::vec(arb_range(), 0..3),
            blocks in proptest::collection::vec((0u8..4, arb_range()), 0..3),
            explained in proptest::collection::vec(0u64..6, 0..4),
            know_leases in any::<bool>(),
        ) {
            let host_ranges: Vec<HostRange> = hosts.into_iter().map(|(h, range)| HostRange {
                host: format!("HV{h}"), cluster: None, range, origin: RangeOrigin::Configured, source: String::new(),
            }).collect();
            let pools: Vec<PoolRange> = pools.into_iter().enumerate().map(|(i, range)| PoolRange { pool: format!("p{i}"), range }).collect();
            let blocks: Vec<DelegatedBlock> = blocks.into_iter().map(|(h, range)| DelegatedBlock { host: format!("hv{h}"), range }).collect();
            let explained: HashSet<Mac> = explained.into_iter().map(|v| Mac::from_u64(0x0015_5DF0_0000 + v).unwrap()).collect();
            let input = ConflictInput {
                sightings: &sightings,
                host_ranges: &host_ranges,
                pools: &pools,
                blocks: &blocks,
                explained: know_leases.then_some(&explained),
            };
            let got = find_conflicts(&input);
            let mut got_keys: Vec<_> = got.iter().map(key).collect();
            got_keys.sort();
            prop_assert_eq!(got_keys, reference::conflicts(&input));
            for c in &got {
                prop_assert!(!c.explanation.is_empty() && !c.fix.is_empty());
                if let Subject::Mac { mac, sightings: owners } = &c.subject {
                    let expected = sightings.iter().filter(|s| s.mac == *mac && !s.is_unassigned()).count();
                    let mut all: Vec<_> = sightings.iter().filter(|s| s.mac == *mac && !s.is_unassigned()).cloned().collect();
                    all.sort();
                    all.dedup();
                    prop_assert_eq!(owners, &all, "every sighting of the MAC is listed (of {})", expected);
                }
            }
            let mut shuffled = sightings.clone();
            shuffled.reverse();
            prop_assert_eq!(find_conflicts(&ConflictInput { sightings: &shuffled, ..input }), got);
        }
    }
}
