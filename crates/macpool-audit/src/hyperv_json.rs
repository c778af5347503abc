//! Hyper-V PowerShell JSON: `Get-VMNetworkAdapter` objects (for VMs, the management OS and
//! checkpoints) passed through `ConvertTo-Json`, and the per-host documents that
//! [`crate::export_script`] writes.
//!
//! PowerShell's quirks, all accepted: one result is an object and several an array; Windows
//! PowerShell 5.1 sometimes wraps arrays as `{"value": [...], "Count": n}`; enums are integers
//! (or names with `-EnumsAsStrings`); GUIDs are strings (or `{"Guid": …}`); dates are
//! `"/Date(ms)/"` (5.1) or ISO 8601 (7). Several documents appended to one file are read in turn.
//!
//! The reader streams: each object is turned into a compact record as soon as it closes, so a
//! million adapters never exist as a JSON tree, and a truncated file keeps every record before
//! the cut.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use macpool_core::conflict::{HostRange, Owner, Seen, Sighting};
use macpool_core::inventory::{
    Adapter, AdapterLocation, Checkpoint, CheckpointType, HostInventory, MacKind, Vm, VmState,
};
use macpool_core::{Mac, MacRange, Timestamp};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::{Diagnostic, Parsed, decode};

const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// The property names this reader looks at; everything else is skipped unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Key {
    MacAddress,
    Name,
    Id,
    VmId,
    VmName,
    SnapshotId,
    SnapshotName,
    Dynamic,
    ManagementOs,
    Deleted,
    ComputerName,
    SnapshotType,
    CreationTime,
    State,
    HostName,
    Cluster,
    IpAddresses,
    MacMin,
    MacMax,
    Cursor,
    Format,
    // lists
    Adapters,
    Vms,
    Checkpoints,
    Value,
    Other,
}

impl Key {
    fn of(s: &str) -> Key {
        match s {
            "MacAddress" => Key::MacAddress,
            "Name" => Key::Name,
            "Id" => Key::Id,
            "VMId" => Key::VmId,
            "VMName" => Key::VmName,
            "VMSnapshotId" | "VMCheckpointId" => Key::SnapshotId,
            "VMSnapshotName" | "VMCheckpointName" => Key::SnapshotName,
            "DynamicMacAddressEnabled" => Key::Dynamic,
            "IsManagementOs" => Key::ManagementOs,
            "IsDeleted" => Key::Deleted,
            "ComputerName" => Key::ComputerName,
            "SnapshotType" | "CheckpointType" => Key::SnapshotType,
            "CreationTime" => Key::CreationTime,
            "State" => Key::State,
            "HostName" => Key::HostName,
            "Cluster" => Key::Cluster,
            "IPAddresses" => Key::IpAddresses,
            "MacAddressMinimum" => Key::MacMin,
            "MacAddressMaximum" => Key::MacMax,
            "CurrentMacAddress" => Key::Cursor,
            "Format" => Key::Format,
            "Adapters" => Key::Adapters,
            "VMs" => Key::Vms,
            "Checkpoints" => Key::Checkpoints,
            "value" => Key::Value,
            _ => Key::Other,
        }
    }

    fn is_list(self) -> bool {
        matches!(
            self,
            Key::Adapters | Key::Vms | Key::Checkpoints | Key::Value
        )
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a property name")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key::of(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// A property value as PowerShell may write it, borrowed from the input when it can be.
#[derive(Clone, Debug, Default)]
enum Scalar<'a> {
    #[default]
    Null,
    Bool(bool),
    Text(Cow<'a, str>),
    List(Vec<Scalar<'a>>),
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a property value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(s)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(n.to_string())))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(n.to_string())))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(n.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(Scalar::List(v))
            }
            /// `{"Guid": …}` or `{"value": …}`: the inner value; other objects are nothing to us.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                let mut found = Scalar::Null;
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    if matches!(&*k, "Guid" | "value" | "Value") {
                        found = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(found)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'a> Scalar<'a> {
    fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Text(t) => Some(t),
            Scalar::Bool(b) => Some(Cow::Owned(b.to_string())),
            Scalar::Null | Scalar::List(_) => None,
        }
    }

    fn flag(self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(b),
            Scalar::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    fn texts(self) -> Vec<String> {
        match self {
            Scalar::List(l) => l
                .into_iter()
                .filter_map(|x| x.text().map(Cow::into_owned))
                .collect(),
            other => other.text().map(Cow::into_owned).into_iter().collect(),
        }
    }
}

#[derive(Debug, Default)]
struct AdapterRec<'a> {
    name: Option<Cow<'a, str>>,
    mac: Option<Cow<'a, str>>,
    /// `Id` (`Microsoft:<vm>\\<adapter>`): unique, unlike `Name` ("Network Adapter" for all).
    id: Option<Cow<'a, str>>,
    vm_id: Option<Cow<'a, str>>,
    vm_name: Option<Cow<'a, str>>,
    snapshot_id: Option<Cow<'a, str>>,
    snapshot_name: Option<Cow<'a, str>>,
    host: Option<Cow<'a, str>>,
    dynamic: Option<bool>,
    management_os: bool,
    deleted: bool,
}

#[derive(Debug, Default)]
struct SnapRec {
    id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    created: Option<String>,
}

#[derive(Debug, Default)]
struct VmRec {
    id: Option<String>,
    name: Option<String>,
    state: Option<String>,
}

#[derive(Debug, Default)]
struct HostDoc<'a> {
    host: Option<String>,
    cluster: Option<String>,
    ips: Vec<String>,
    min: Option<String>,
    max: Option<String>,
    cursor: Option<String>,
    lists: Vec<(Key, Vec<Elem<'a>>)>,
}

#[derive(Debug)]
enum Elem<'a> {
    /// An object whose closing brace never came: only its complete lists count.
    Partial(Vec<(Key, Vec<Elem<'a>>)>),
    Adapter(AdapterRec<'a>),
    Snapshot(Box<SnapRec>),
    Vm(Box<VmRec>),
    Host(Box<HostDoc<'a>>),
    /// `{"value": [...], "Count": n}` from Windows PowerShell.
    Wrapper(Vec<Elem<'a>>),
    NotObject(&'static str),
    Unrecognized,
}

const FIELDS: usize = Key::Adapters as usize;

fn owned(s: Scalar) -> Option<String> {
    s.text().map(Cow::into_owned)
}

fn classify<'a>(
    mut f: [Scalar<'a>; FIELDS],
    present: u32,
    lists: Vec<(Key, Vec<Elem<'a>>)>,
) -> Elem<'a> {
    let has = |k: Key| present & (1 << k as u32) != 0;
    let mut take = |k: Key| std::mem::take(&mut f[k as usize]);
    if !lists.iter().all(|(k, _)| *k == Key::Value) || has(Key::HostName) || has(Key::Format) {
        let cursor = match take(Key::Cursor) {
            // REG_BINARY read through PowerShell arrives as a byte array
            Scalar::List(bytes) => {
                let b: Vec<u8> = bytes
                    .into_iter()
                    .filter_map(|x| x.text().and_then(|t| t.parse::<u8>().ok()))
                    .collect();
                (b.len() == 6).then(|| b.iter().map(|x| format!("{x:02X}")).collect())
            }
            other => owned(other),
        };
        return Elem::Host(Box::new(HostDoc {
            host: owned(take(Key::HostName)),
            cluster: owned(take(Key::Cluster)),
            ips: take(Key::IpAddresses).texts(),
            min: owned(take(Key::MacMin)),
            max: owned(take(Key::MacMax)),
            cursor,
            lists,
        }));
    }
    if !lists.is_empty() {
        return Elem::Wrapper(lists.into_iter().flat_map(|(_, l)| l).collect());
    }
    if has(Key::MacAddress) {
        return Elem::Adapter(AdapterRec {
            mac: take(Key::MacAddress).text(),
            name: take(Key::Name).text(),
            id: take(Key::Id).text(),
            vm_id: take(Key::VmId).text(),
            vm_name: take(Key::VmName).text(),
            snapshot_id: take(Key::SnapshotId).text(),
            snapshot_name: take(Key::SnapshotName).text(),
            host: take(Key::ComputerName).text(),
            dynamic: take(Key::Dynamic).flag(),
            management_os: take(Key::ManagementOs).flag().unwrap_or(false),
            deleted: take(Key::Deleted).flag().unwrap_or(false),
        });
    }
    if has(Key::SnapshotType) || (has(Key::CreationTime) && has(Key::VmId)) {
        return Elem::Snapshot(Box::new(SnapRec {
            id: owned(take(Key::Id)),
            name: owned(take(Key::Name)),
            kind: owned(take(Key::SnapshotType)),
            created: owned(take(Key::CreationTime)),
        }));
    }
    if has(Key::State) && (has(Key::Id) || has(Key::VmId)) {
        let id = owned(take(Key::Id)).or_else(|| owned(take(Key::VmId)));
        let name = owned(take(Key::Name)).or_else(|| owned(take(Key::VmName)));
        return Elem::Vm(Box::new(VmRec {
            id,
            name,
            state: owned(take(Key::State)),
        }));
    }
    Elem::Unrecognized
}

/// Reads one JSON value into `out`: array elements are appended one by one, an object is
/// appended as a [`Elem::Partial`] and classified when it closes. Whatever was appended stays
/// when the input breaks off. Without `metadata`, the `VMs` and `Checkpoints` lists of a host
/// document are skipped unread (the audit needs only adapters).
struct Sink<'s, 'de> {
    out: &'s mut Vec<Elem<'de>>,
    metadata: bool,
}

impl<'de> DeserializeSeed<'de> for Sink<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Sink<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let metadata = self.metadata;
        while seq
            .next_element_seed(Sink {
                out: &mut *self.out,
                metadata,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.out.len();
        self.out.push(Elem::Partial(Vec::new()));
        let mut fields: [Scalar<'de>; FIELDS] = Default::default();
        let mut present = 0u32;
        while let Some(key) = map.next_key::<Key>()? {
            if key.is_list() {
                if !self.metadata && matches!(key, Key::Vms | Key::Checkpoints) {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                let Elem::Partial(lists) = &mut self.out[at] else {
                    unreachable!("the slot is ours until the object closes")
                };
                lists.push((key, Vec::new()));
                let list = &mut lists.last_mut().expect("just pushed").1;
                map.next_value_seed(Sink {
                    out: list,
                    metadata: self.metadata,
                })?;
            } else if key == Key::Other {
                map.next_value::<IgnoredAny>()?;
            } else {
                fields[key as usize] = map.next_value()?;
                present |= 1 << key as u32;
            }
        }
        let Elem::Partial(lists) = std::mem::replace(&mut self.out[at], Elem::Unrecognized) else {
            unreachable!("the slot is ours until the object closes")
        };
        self.out[at] = classify(fields, present, lists);
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.out.push(Elem::NotObject("a string"));
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.out.push(Elem::NotObject("a boolean"));
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.out.push(Elem::NotObject("a number"));
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.out.push(Elem::NotObject("a number"));
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.out.push(Elem::NotObject("a number"));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push(Elem::NotObject("null"));
        Ok(())
    }
}

/// Parses every JSON document in `text` into top-level elements; a syntax error or the end of a
/// truncated file becomes a diagnostic and ends the reading, keeping what was read.
fn read_elems(text: &str, metadata: bool) -> (Vec<Elem<'_>>, Option<Diagnostic>) {
    let mut elems = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    loop {
        let before = elems.len();
        let sink = Sink {
            out: &mut elems,
            metadata,
        };
        match sink.deserialize(&mut de) {
            Ok(()) => {}
            Err(e) if e.is_eof() && elems.len() == before && before > 0 => return (elems, None),
            Err(e) => {
                let done = count_complete(&elems);
                let what = if e.is_eof() {
                    format!(
                        "the file ends in the middle of a record: truncated? ({done} complete records before it were read)"
                    )
                } else {
                    let msg = e
                        .to_string()
                        .replace(&format!(" at line {} column {}", e.line(), e.column()), "");
                    format!(
                        "{msg}; reading stopped here ({done} complete records before it were read)"
                    )
                };
                return (
                    elems,
                    Some(Diagnostic::at(
                        format!("line {} column {}", e.line(), e.column()),
                        what,
                    )),
                );
            }
        }
    }
}

fn count_complete(elems: &[Elem]) -> usize {
    elems
        .iter()
        .map(|e| match e {
            Elem::Partial(lists) => lists.iter().map(|(_, l)| count_complete(l)).sum(),
            Elem::Host(h) => h.lists.iter().map(|(_, l)| count_complete(l)).sum(),
            Elem::Wrapper(l) => count_complete(l),
            _ => 1,
        })
        .sum()
}

/// An adapter and where it was: `containers[container]` + `[index]`.
struct Placed<'a> {
    container: usize,
    index: usize,
    host: Option<usize>,
    adapter: AdapterRec<'a>,
}

/// Everything read from one file, before it becomes sightings or inventories.
struct Collected<'a> {
    /// JSON paths of the arrays records were found in (`""` is the top level).
    containers: Vec<String>,
    adapters: Vec<Placed<'a>>,
    snapshots: Vec<SnapRec>,
    vms: Vec<(Option<usize>, VmRec)>,
    hosts: Vec<HostDoc<'a>>,
    diagnostics: Vec<Diagnostic>,
    bad: u64,
    found_anything: bool,
    /// Where reading stopped, when the JSON broke off or went wrong.
    syntax_error: Option<Diagnostic>,
}

impl Collected<'_> {
    fn bad(&mut self, max: usize, d: Diagnostic) {
        self.bad += 1;
        if self.diagnostics.len() < max {
            self.diagnostics.push(d);
        }
    }

    fn location(&self, p: &Placed) -> String {
        format!("{}[{}]", self.containers[p.container], p.index)
    }
}

fn list_name(k: Key) -> &'static str {
    match k {
        Key::Adapters => "Adapters",
        Key::Vms => "VMs",
        Key::Checkpoints => "Checkpoints",
        _ => "value",
    }
}

fn flatten<'a>(
    elems: Vec<Elem<'a>>,
    path: String,
    host: Option<usize>,
    max: usize,
    c: &mut Collected<'a>,
) {
    let container = c.containers.len();
    c.containers.push(path);
    for (i, e) in elems.into_iter().enumerate() {
        let here = || format!("{}[{i}]", c.containers[container]);
        match e {
            Elem::Adapter(adapter) => c.adapters.push(Placed {
                container,
                index: i,
                host,
                adapter,
            }),
            Elem::Snapshot(s) => c.snapshots.push(*s),
            Elem::Vm(v) => c.vms.push((host, *v)),
            Elem::Wrapper(list) => {
                let p = format!("{}.value", here());
                flatten(list, p, host, max, c);
            }
            Elem::Host(mut h) => {
                let idx = c.hosts.len();
                let lists = std::mem::take(&mut h.lists);
                c.hosts.push(*h);
                c.found_anything = true;
                let base = here();
                for (k, list) in lists {
                    flatten(list, format!("{base}.{}", list_name(k)), Some(idx), max, c);
                }
            }
            Elem::Partial(lists) => {
                let base = here();
                for (k, list) in lists {
                    flatten(list, format!("{base}.{}", list_name(k)), host, max, c);
                }
            }
            Elem::NotObject(what) => {
                let d = Diagnostic::at(
                    format!("record {}", here()),
                    format!("{what}, not an object"),
                );
                c.bad(max, d);
            }
            Elem::Unrecognized => {
                let d = Diagnostic::at(
                    format!("record {}", here()),
                    "an object without MacAddress: not a network adapter (nor a host document, VM or checkpoint)",
                );
                c.bad(max, d);
            }
        }
    }
}

fn collect<'a>(text: &'a str, max: usize, metadata: bool) -> Collected<'a> {
    let mut c = Collected {
        containers: Vec::new(),
        adapters: Vec::new(),
        snapshots: Vec::new(),
        vms: Vec::new(),
        hosts: Vec::new(),
        diagnostics: Vec::new(),
        bad: 0,
        found_anything: false,
        syntax_error: None,
    };
    let (elems, error) = read_elems(text, metadata);
    flatten(elems, String::new(), None, max, &mut c);
    c.found_anything |= !c.adapters.is_empty() || !c.snapshots.is_empty() || !c.vms.is_empty();
    c.syntax_error = error;
    c
}

/// Orders diagnostics as the records appear: whole-file notes first, then by the numbers in
/// the location (`[2]` before `[10]`, `[0].Adapters[3]` before `[1]`).
fn record_order(d: &Diagnostic) -> (bool, Vec<u64>) {
    let Some(loc) = &d.location else {
        return (false, Vec::new());
    };
    let numbers = loc
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (true, numbers)
}

fn nonempty(s: Option<Cow<str>>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn is_checkpoint_id(id: Option<&str>) -> bool {
    id.is_some_and(|s| !s.trim().is_empty() && !s.trim().eq_ignore_ascii_case(NIL_GUID))
}

/// The host ranges a host document declares: configured when it has both ends, else derived.
fn host_ranges(h: &HostDoc, loc: &str, problems: &mut Vec<Diagnostic>) -> Vec<HostRange> {
    let Some(host) = h.host.as_deref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let configured = match (h.min.as_deref(), h.max.as_deref()) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
            match Mac::parse(a).and_then(|a| Mac::parse(b).map(|b| (a, b))) {
                Ok((a, b)) => match MacRange::new(a, b) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        problems.push(Diagnostic::at(loc.to_string(), format!("host {host}: {e}")));
                        None
                    }
                },
                Err(e) => {
                    problems.push(Diagnostic::at(
                        loc.to_string(),
                        format!("host {host}: MacAddressMinimum/Maximum: {e}"),
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    let ips: Vec<Ipv4Addr> = h.ips.iter().filter_map(|s| s.trim().parse().ok()).collect();
    HostRange::for_host(host, h.cluster.as_deref(), configured, &ips)
}

/// Reads one file's Hyper-V JSON into sightings and host ranges.
pub fn parse(source: &str, bytes: &[u8], max: usize) -> Parsed {
    let mut parsed = Parsed::default();
    let (text, note) = decode::text(bytes);
    let mut c = collect(&text, max, false);
    if let Some(note) = note {
        c.diagnostics.insert(0, Diagnostic::whole_file(note));
    }
    let mut problems = Vec::new();
    for (i, h) in c.hosts.iter().enumerate() {
        parsed
            .host_ranges
            .extend(host_ranges(h, &format!("record [{i}]"), &mut problems));
    }
    for d in problems {
        c.bad(max, d);
    }
    let adapters = std::mem::take(&mut c.adapters);
    parsed.sightings.reserve(adapters.len());
    for placed in adapters {
        let a = &placed.adapter;
        if a.deleted {
            continue;
        }
        let who = || {
            format!(
                "adapter '{}' of {}",
                a.name.as_deref().unwrap_or("?"),
                a.vm_name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .map_or("the management OS".to_string(), |n| format!("VM '{n}'"))
            )
        };
        let mac = match a
            .mac
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(Mac::parse)
        {
            Some(Ok(m)) => m,
            None => {
                let d = Diagnostic::at(
                    format!("record {}", c.location(&placed)),
                    format!("{} has no MacAddress", who()),
                );
                c.bad(max, d);
                continue;
            }
            Some(Err(e)) => {
                let d = Diagnostic::at(
                    format!("record {}", c.location(&placed)),
                    format!("{}: {e}", who()),
                );
                c.bad(max, d);
                continue;
            }
        };
        let location = c.location(&placed);
        let a = placed.adapter;
        let host = nonempty(a.host).or_else(|| placed.host.and_then(|i| c.hosts[i].host.clone()));
        let seen = if is_checkpoint_id(a.snapshot_id.as_deref()) {
            let id = a.snapshot_id.map(Cow::into_owned).unwrap_or_default();
            let name = nonempty(a.snapshot_name).unwrap_or_else(|| id.clone());
            Seen::Checkpoint { id, name }
        } else {
            Seen::Live
        };
        let (vm_id, vm_name) = if a.management_os {
            (
                None,
                Some(format!(
                    "{} (management OS)",
                    host.as_deref().unwrap_or("host")
                )),
            )
        } else {
            (
                nonempty(a.vm_id).filter(|id| !id.eq_ignore_ascii_case(NIL_GUID)),
                nonempty(a.vm_name),
            )
        };
        parsed.records += 1;
        parsed.sightings.push(Sighting {
            mac,
            dynamic: a.dynamic,
            seen,
            owner: Owner {
                source: source.to_string(),
                location: Some(location),
                host,
                vm_id,
                vm_name,
                adapter: a.name.map(Cow::into_owned),
            },
        });
    }
    c.diagnostics.sort_by_key(record_order);
    let nothing = !c.found_anything && parsed.records == 0;
    match c.syntax_error.take() {
        Some(e) if nothing && c.bad == 0 => {
            parsed.unreadable = Some(format!(
                "not valid JSON: {}: {}",
                e.location.unwrap_or_default(),
                e.message
            ));
        }
        Some(e) => c.bad(usize::MAX, e),
        None if nothing && c.bad == 0 => {
            parsed.skipped = Some("JSON without Hyper-V network adapters or host documents".into());
        }
        None if nothing => {
            parsed.unreadable = Some("no Hyper-V network adapter could be read".into())
        }
        None => {}
    }
    parsed.bad_records = c.bad;
    parsed.diagnostics = c.diagnostics;
    parsed
}

/// Milliseconds since the epoch from `/Date(1445000000000)/` (optionally with `+0200`, which
/// does not shift the instant) or ISO 8601 `2015-10-16T12:53:20.123+02:00` / `…Z`.
pub fn parse_date(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        let end = inner[1..].find(['+', '-']).map_or(inner.len(), |i| i + 1);
        let ms: i64 = inner[..end].parse().ok()?;
        return u64::try_from(ms).ok().map(Timestamp::from_millis);
    }
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let ms_digits = &frac[..digits.min(3)];
        millis = ms_digits.parse::<i64>().unwrap_or(0) * 10i64.pow(3 - ms_digits.len() as u32);
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "" | "Z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 60 + tz[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant's algorithm)
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + millis)
        .ok()
        .map(Timestamp::from_millis)
}

fn vm_state(s: &str) -> VmState {
    // Microsoft.HyperV.PowerShell.VMState: 2 Running, 3 Off, 6 Saved, 9 Paused
    match s.trim() {
        "2" | "Running" => VmState::Running,
        "3" | "Off" => VmState::Off,
        "6" | "Saved" => VmState::Saved,
        "9" | "Paused" => VmState::Paused,
        other => VmState::Other(other.to_string()),
    }
}

/// Reads the same JSON into domain inventories, one per host, for the agent and the server.
/// Adapters whose host is unknown are grouped under `unknown-host`; problems come back as
/// diagnostics, exactly as the audit reports them.
pub fn inventories(bytes: &[u8], max: usize) -> (Vec<HostInventory>, Vec<Diagnostic>) {
    // the audit's own decoding: BOMs and UTF-16 (Windows PowerShell 5.1's `>` and `Out-File`)
    let decoded = match decode::decode(bytes) {
        Ok(d) => d,
        Err(why) => return (Vec::new(), vec![Diagnostic::whole_file(why)]),
    };
    let (text, text_note) = decode::text(&decoded.text);
    let note = decoded.note.or(text_note);
    let mut c = collect(&text, max, true);
    let mut hosts: Vec<HostInventory> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut host_of = |name: Option<String>, hosts: &mut Vec<HostInventory>| -> usize {
        let name = name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        *index.entry(name.to_ascii_lowercase()).or_insert_with(|| {
            hosts.push(HostInventory::new(name).expect("host name is not empty"));
            hosts.len() - 1
        })
    };
    let mut problems: Vec<Diagnostic> = note.into_iter().map(Diagnostic::whole_file).collect();
    for (i, h) in c.hosts.iter().enumerate() {
        let at = host_of(h.host.clone(), &mut hosts);
        let ranges = host_ranges(h, &format!("record [{i}]"), &mut problems);
        let inv = &mut hosts[at];
        inv.cluster = h.cluster.clone().filter(|s| !s.trim().is_empty());
        inv.ipv4 = h.ips.iter().filter_map(|s| s.trim().parse().ok()).collect();
        let configured = ranges
            .iter()
            .find(|r| r.origin == macpool_core::conflict::RangeOrigin::Configured)
            .map(|r| r.range);
        let cursor = h.cursor.as_deref().and_then(|s| Mac::parse(s).ok());
        if let Err(e) = inv.set_dynamic_range(configured, cursor) {
            problems.push(Diagnostic::at(format!("record [{i}]"), e.to_string()));
            let _ = inv.set_dynamic_range(configured, None);
        }
    }
    let host_names: Vec<Option<String>> = c.hosts.iter().map(|h| h.host.clone()).collect();
    let snapshots: HashMap<String, &SnapRec> = c
        .snapshots
        .iter()
        .filter_map(|s| Some((s.id.as_deref()?.to_ascii_lowercase(), s)))
        .collect();
    // VM records (with state) first, so adapters attach to them
    let mut vm_at: HashMap<(usize, String), usize> = HashMap::new();
    for (h, v) in &c.vms {
        let at = host_of(h.and_then(|i| host_names[i].clone()), &mut hosts);
        let Some(id) = v.id.clone().filter(|s| !s.trim().is_empty()) else {
            continue;
        };
        let state = vm_state(v.state.as_deref().unwrap_or(""));
        if let Ok(vm) = Vm::new(id.clone(), v.name.clone().unwrap_or_default(), state)
            && hosts[at].add_vm(vm).is_ok()
        {
            vm_at.insert((at, id.to_ascii_lowercase()), hosts[at].vms().len() - 1);
        }
    }
    for placed in std::mem::take(&mut c.adapters) {
        let loc = c.location(&placed);
        let a = placed.adapter;
        if a.deleted {
            continue;
        }
        let Some(mac) = a.mac.as_deref().and_then(|m| Mac::parse(m).ok()) else {
            problems.push(Diagnostic::at(
                format!("record {loc}"),
                "no valid MacAddress",
            ));
            continue;
        };
        if a.management_os {
            let at = host_of(
                nonempty(a.host).or_else(|| placed.host.and_then(|i| host_names[i].clone())),
                &mut hosts,
            );
            hosts[at].management_adapters.push(Adapter {
                name: a.name.map(Cow::into_owned).unwrap_or_default(),
                id: nonempty(a.id),
                mac,
                kind: if a.dynamic == Some(false) {
                    MacKind::Static
                } else {
                    MacKind::Dynamic
                },
                location: AdapterLocation::Live,
            });
            continue;
        }
        let Some(vm_id) = nonempty(a.vm_id).filter(|id| !id.eq_ignore_ascii_case(NIL_GUID)) else {
            problems.push(Diagnostic::at(
                format!("record {loc}"),
                "adapter without VMId",
            ));
            continue;
        };
        let at = host_of(
            nonempty(a.host).or_else(|| placed.host.and_then(|i| host_names[i].clone())),
            &mut hosts,
        );
        let location = if is_checkpoint_id(a.snapshot_id.as_deref()) {
            let id = a.snapshot_id.map(Cow::into_owned).unwrap_or_default();
            let snap = snapshots.get(&id.to_ascii_lowercase());
            AdapterLocation::Checkpoint(Checkpoint {
                name: nonempty(a.snapshot_name)
                    .or_else(|| snap.and_then(|s| s.name.clone()))
                    .unwrap_or_default(),
                kind: snap.and_then(|s| s.kind.as_deref()).map_or(
                    CheckpointType::Other(String::new()),
                    CheckpointType::from_hyperv,
                ),
                created: snap.and_then(|s| s.created.as_deref()).and_then(parse_date),
                id,
            })
        } else {
            AdapterLocation::Live
        };
        let adapter = Adapter {
            name: a.name.map(Cow::into_owned).unwrap_or_default(),
            id: nonempty(a.id),
            mac,
            kind: if a.dynamic == Some(false) {
                MacKind::Static
            } else {
                MacKind::Dynamic
            },
            location,
        };
        let key = (at, vm_id.to_ascii_lowercase());
        let idx = match vm_at.get(&key) {
            Some(i) => *i,
            None => {
                let name = a.vm_name.map(Cow::into_owned).unwrap_or_default();
                let Ok(vm) = Vm::new(vm_id, name, VmState::Other(String::new())) else {
                    continue;
                };
                if hosts[at].add_vm(vm).is_err() {
                    continue;
                }
                let i = hosts[at].vms().len() - 1;
                vm_at.insert(key, i);
                i
            }
        };
        hosts[at].vms_mut()[idx].adapters.push(adapter);
    }
    let mut diagnostics = c.diagnostics;
    diagnostics.extend(problems);
    diagnostics.extend(c.syntax_error);
    (hosts, diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_both_powershell_spellings() {
        assert_eq!(
            parse_date("/Date(1445000000000)/"),
            Some(Timestamp::from_millis(1_445_000_000_000))
        );
        assert_eq!(
            parse_date("/Date(1445000000000+0200)/"),
            Some(Timestamp::from_millis(1_445_000_000_000))
        );
        assert_eq!(
            parse_date("2015-10-16T12:53:20Z"),
            Some(Timestamp::from_millis(1_445_000_000_000))
        );
        assert_eq!(
            parse_date("2015-10-16T14:53:20.5+02:00"),
            Some(Timestamp::from_millis(1_445_000_000_500))
        );
        assert_eq!(
            parse_date("2015-10-16T12:53:20.1234567"),
            Some(Timestamp::from_millis(1_445_000_000_123))
        );
        assert_eq!(
            parse_date("1970-01-01T00:00:00Z"),
            Some(Timestamp::from_millis(0))
        );
        assert_eq!(parse_date("/Date(-5)/"), None);
        assert_eq!(parse_date("16/10/2015"), None);
        assert_eq!(parse_date("2015-13-16T12:53:20Z"), None);
    }

    #[test]
    fn values_of_any_powershell_type_read_as_text() {
        fn v(j: &str) -> Scalar<'_> {
            serde_json::from_str(j).unwrap()
        }
        assert_eq!(
            v(r#"{"Guid": "abc", "x": [1]}"#).text().as_deref(),
            Some("abc")
        );
        assert_eq!(v("3").text().as_deref(), Some("3"));
        assert_eq!(v(r#""True""#).flag(), Some(true));
        assert_eq!(v("0").flag(), Some(false));
        assert_eq!(v(r#""10.0.1.5""#).texts(), vec!["10.0.1.5".to_string()]);
        assert_eq!(v(r#"["10.0.1.5", "10.0.2.5"]"#).texts().len(), 2);
        assert!(
            matches!(v(r#""plain""#), Scalar::Text(Cow::Borrowed("plain"))),
            "unescaped text is borrowed"
        );
    }
}
