//! The Hyper-V stand-in: one host modelled after `shared/reference/hyperv.md` (see the crate
//! docs for what is modelled from which line), speaking exactly the child's line protocol. It
//! takes the agent's requests by `op` and reads their arguments from the script's single-quoted
//! literals with [`crate::powershell::quote::literals`], so a quoting bug breaks the tests.
//! Test-only `control` requests script the scenario (create, checkpoint, restore, migrate, die).

use std::path::PathBuf;

use macpool_core::{Mac, MacFormat, MacRange, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::events::{
    EV_CREATED_13002, EV_DELETED, EV_RESTORED, EV_STARTED, VMMS_ADMIN, WORKER_ADMIN,
    render_event_xml,
};
use crate::powershell::protocol::{Request, Response};
use crate::powershell::quote::literals;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SAdapter {
    /// Not unique: Hyper-V names every new adapter "Network Adapter".
    pub name: String,
    /// `Microsoft:<VM or checkpoint id>\\<adapter guid>`, unique; "" in old state files.
    #[serde(default)]
    pub id: String,
    /// 12 hex digits, `000000000000` until a dynamic adapter gets one.
    pub mac: String,
    pub dynamic: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SCheckpoint {
    pub id: String,
    pub name: String,
    pub adapters: Vec<SAdapter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SVm {
    pub id: String,
    pub name: String,
    /// `Running` or `Off`.
    pub state: String,
    pub adapters: Vec<SAdapter>,
    #[serde(default)]
    pub checkpoints: Vec<SCheckpoint>,
    #[serde(default)]
    pub parent_checkpoint: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SEvent {
    pub channel: String,
    pub event_id: u32,
    pub record_id: u64,
    pub xml: String,
}

/// The stand-in's whole state (its `--state` file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandinState {
    pub host: String,
    pub range_min: String,
    pub range_max: String,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub vms: Vec<SVm>,
    #[serde(default)]
    pub events: Vec<SEvent>,
    #[serde(default = "first_record")]
    pub next_record: u64,
    #[serde(default)]
    pub clock_ms: u64,
    #[serde(default)]
    pub next_guid: u64,
    /// The registry value `CurrentMacAddress` is absent (its name is unverified): the host still
    /// allocates round-robin, but `host-range` reports no cursor.
    #[serde(default)]
    pub cursor_hidden: bool,
    /// The management OS's vNICs: dynamic MACs from the same range as the VMs'.
    #[serde(default)]
    pub management_adapters: Vec<SAdapter>,
    /// Per channel, subtracted from the record counter: `wevtutil cl` restarts a channel's ids.
    #[serde(default)]
    pub record_offset: std::collections::BTreeMap<String, u64>,
}

fn first_record() -> u64 {
    1000
}

impl StandinState {
    pub fn new(host: &str, range: MacRange) -> StandinState {
        StandinState {
            host: host.into(),
            range_min: hex(range.first()),
            range_max: hex(range.last()),
            cursor: None,
            vms: Vec::new(),
            events: Vec::new(),
            next_record: first_record(),
            clock_ms: 1_445_000_000_000,
            next_guid: 1,
            cursor_hidden: false,
            record_offset: Default::default(),
            management_adapters: Vec::new(),
        }
    }
}

/// The adapters as seen from `owner` (a VM or a checkpoint): same adapter guid, owner's prefix.
fn owned_by(adapters: &[SAdapter], owner: &str) -> Vec<SAdapter> {
    adapters
        .iter()
        .map(|a| SAdapter {
            id: match a.id.rsplit_once('\\') {
                Some((_, guid)) => format!("Microsoft:{}\\{guid}", owner.to_uppercase()),
                None => a.id.clone(),
            },
            ..a.clone()
        })
        .collect()
}

fn hex(m: Mac) -> String {
    m.display(MacFormat::Hyperv).to_string()
}

const ZERO: &str = "000000000000";

#[derive(Clone, Debug, PartialEq, Eq)]
struct Watch {
    channel: String,
    ids: Vec<u32>,
}

/// A running stand-in: state, subscriptions, and where to persist.
pub struct Standin {
    pub state: StandinState,
    path: Option<PathBuf>,
    watches: Vec<Watch>,
    /// Set by the `exit` control request.
    pub exit: Option<i32>,
    /// The bootstrap was loaded (loader line or `-File`) and compiled.
    pub loaded: bool,
    /// Whether the loaded bootstrap captures the Warning/Verbose/Debug/Information streams.
    captures_streams: bool,
    /// A warning every request writes (control `warn`), as Hyper-V cmdlets do.
    warning: Option<String>,
}

/// What Windows PowerShell 5.1 (Desktop edition, no console) does with a bootstrap text, as far
/// as the stand-in can tell from the text: `Err` is the error that kills the child before it
/// says ready. `Ok(true)` when the request loop captures the streams that would reach stdout.
pub fn check_bootstrap(text: &str) -> Result<bool, String> {
    // Add-Type references only System.dll and System.Management.Automation.dll by default;
    // EventLogWatcher is in System.Core.dll. On PowerShell 7 -ReferencedAssemblies replaces
    // the defaults, so it must depend on the edition.
    if text.contains("System.Diagnostics.Eventing.Reader")
        && !(text.contains("ReferencedAssemblies")
            && text.contains("'System.Core'")
            && text.contains("PSEdition"))
    {
        return Err("Add-Type : (0) : The type or namespace name 'Eventing' does not exist in the namespace 'System.Diagnostics' (are you missing an assembly reference?)".into());
    }
    // SetConsoleOutputCP with no console attached
    if text.contains("[Console]::OutputEncoding =") || text.contains("[Console]::InputEncoding =") {
        return Err("Exception setting \"OutputEncoding\": \"The handle is invalid.\"".into());
    }
    if text.contains("Console.Out.Write") || !text.contains("Console.OpenStandardOutput()") {
        return Err("protocol lines must go through a private UTF-8 stream on standard output, not the console's OEM-encoded writer".into());
    }
    Ok(["3>&1", "4>&1", "5>&1", "6>&1"]
        .iter()
        .all(|r| text.contains(r)))
}

/// Decodes one stdin line as Windows PowerShell does (the console's single-byte OEM code page)
/// and refuses what would arrive garbled: any byte above 0x7E.
pub fn decode_stdin_line(bytes: &[u8]) -> Result<String, String> {
    match bytes.iter().position(|b| *b > 0x7e) {
        None => Ok(bytes.iter().map(|b| *b as char).collect()),
        Some(i) => Err(format!(
            "stdin byte 0x{:02X} at column {i} is not ASCII: powershell.exe decodes a redirected stdin with the OEM code page (437, 850, ...), so it would arrive as '{}'",
            bytes[i], bytes[i] as char
        )),
    }
}

/// Lines to write for one request: the response and any pushed lines after it.
pub struct Output {
    pub lines: Vec<String>,
}

type R<T> = Result<T, String>;

impl Standin {
    pub fn new(state: StandinState, path: Option<PathBuf>) -> Standin {
        Standin {
            state,
            path,
            watches: Vec::new(),
            exit: None,
            loaded: false,
            captures_streams: false,
            warning: None,
        }
    }

    /// Loads a bootstrap text (the loader's or the `-File` file's): only the project's own.
    pub fn load(&mut self, text: &str) -> Result<(), String> {
        if !text.starts_with(crate::powershell::bootstrap::bootstrap()) {
            return Err("the loaded script is not this macpool's bootstrap".into());
        }
        self.captures_streams = check_bootstrap(text)?;
        self.loaded = true;
        Ok(())
    }

    /// The newest record id of a channel (`None`: empty log).
    fn newest(&self, channel: &str) -> Option<u64> {
        self.state
            .events
            .iter()
            .filter(|e| e.channel.eq_ignore_ascii_case(channel))
            .map(|e| e.record_id)
            .max()
    }

    fn range(&self) -> R<MacRange> {
        let a = Mac::parse(&self.state.range_min).map_err(|e| e.to_string())?;
        let b = Mac::parse(&self.state.range_max).map_err(|e| e.to_string())?;
        MacRange::new(a, b).map_err(|e| e.to_string())
    }

    fn guid(&mut self) -> String {
        self.state.next_guid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.state.next_guid)
    }

    fn vm_mut(&mut self, id: &str) -> R<&mut SVm> {
        self.state
            .vms
            .iter_mut()
            .find(|v| v.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| format!("Hyper-V was unable to find a virtual machine with id '{id}'."))
    }

    /// Round-robin from the cursor, wrapping, skipping MACs live on *this* host only.
    fn allocate(&mut self) -> R<String> {
        let range = self.range()?;
        let in_use: Vec<String> = self
            .state
            .vms
            .iter()
            .flat_map(|v| v.adapters.iter().map(|a| a.mac.clone()))
            .chain(self.state.management_adapters.iter().map(|a| a.mac.clone()))
            .collect();
        let size = range.last().to_u64() - range.first().to_u64() + 1;
        let start = match self
            .state
            .cursor
            .as_deref()
            .and_then(|c| Mac::parse(c).ok())
        {
            Some(c) if range.contains(c) => c.to_u64() - range.first().to_u64() + 1,
            _ => 0,
        };
        for i in 0..size {
            let off = (start + i) % size;
            let m = hex(Mac::from_u64(range.first().to_u64() + off).expect("in range"));
            if !in_use.contains(&m) {
                self.state.cursor = Some(m.clone());
                return Ok(m);
            }
        }
        Err("Attempt to access invalid address.".into())
    }

    fn emit(
        &mut self,
        channel: &str,
        event_id: u32,
        vm_id: &str,
        vm_name: &str,
        out: &mut Vec<String>,
    ) {
        let record_id =
            self.state.next_record - self.state.record_offset.get(channel).copied().unwrap_or(0);
        self.state.next_record += 1;
        self.state.clock_ms += 1000;
        let xml = render_event_xml(
            channel,
            event_id,
            record_id,
            Timestamp::from_millis(self.state.clock_ms),
            vm_name,
            vm_id,
        );
        let ev = SEvent {
            channel: channel.into(),
            event_id,
            record_id,
            xml,
        };
        if self.wants(&ev) {
            out.push(event_line(&ev));
        }
        self.state.events.push(ev);
    }

    fn wants(&self, ev: &SEvent) -> bool {
        self.watches
            .iter()
            .any(|w| w.channel == ev.channel && (w.ids.is_empty() || w.ids.contains(&ev.event_id)))
    }

    /// Handles one input line.
    pub fn line(&mut self, line: &str) -> Output {
        let mut lines = Vec::new();
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Output { lines };
        }
        if line.starts_with(crate::powershell::bootstrap::LOADER_PREFIX) {
            let text = literals(line)
                .ok()
                .and_then(|l| l.into_iter().next())
                .and_then(|b| crate::powershell::bootstrap::unbase64(&b))
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            match self.load(&text) {
                Ok(()) => lines.push(READY.into()),
                Err(e) => lines.push(json!({"log": format!("bootstrap: {e}")}).to_string()),
            }
            return Output { lines };
        }
        let req: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                lines.push(
                    json!({"id": 0, "ok": false, "error": format!("not a request: {e}")})
                        .to_string(),
                );
                return Output { lines };
            }
        };
        let before = self.state.clone();
        let mut pushed = Vec::new();
        let mut warnings = Vec::new();
        if let (Some(w), false) = (&self.warning, req.op == "control") {
            if self.captures_streams {
                warnings.push(w.clone());
            } else {
                // what Windows PowerShell's console host does: the warning on stdout
                lines.push(format!("WARNING: {w}"));
            }
        }
        let result = self.dispatch(&req, &mut pushed);
        let resp = match result {
            Ok(v) => Response {
                id: req.id,
                ok: true,
                result: v,
                error: None,
                warnings,
            },
            Err(e) => {
                // a failed command leaves the host as it was (no partial changes)
                self.state = before;
                pushed.clear();
                Response {
                    id: req.id,
                    ok: false,
                    result: Value::Null,
                    error: Some(e),
                    warnings,
                }
            }
        };
        if let Some(p) = &self.path {
            let tmp = p.with_extension("tmp");
            if std::fs::write(
                &tmp,
                serde_json::to_vec_pretty(&self.state).expect("state serialises"),
            )
            .is_ok()
            {
                let _ = std::fs::rename(&tmp, p);
            }
        }
        lines.push(serde_json::to_string(&resp).expect("response serialises"));
        lines.extend(pushed);
        Output { lines }
    }

    fn dispatch(&mut self, req: &Request, out: &mut Vec<String>) -> R<Value> {
        let lit = literals(&req.script).map_err(|e| format!("ParserError: {e}"))?;
        let arg = |i: usize| {
            lit.get(i)
                .cloned()
                .ok_or_else(|| format!("{}: missing argument {i} in: {}", req.op, req.script))
        };
        match req.op.as_str() {
            "inventory" => self.inventory(
                lit.first().map(String::as_str),
                req.script.contains("-ManagementOS"),
            ),
            "host-range" => Ok(json!({
                "MacAddressMinimum": self.state.range_min,
                "MacAddressMaximum": self.state.range_max,
                "CurrentMacAddress": self.visible_cursor(),
            })),
            "set-host-range" => {
                let a = Mac::parse(&arg(0)?).map_err(|e| e.to_string())?;
                let b = Mac::parse(&arg(1)?).map_err(|e| e.to_string())?;
                MacRange::new(a, b).map_err(|e| e.to_string())?;
                self.state.range_min = hex(a);
                self.state.range_max = hex(b);
                Ok(Value::Null)
            }
            "set-adapter-mac" => {
                let cp = req.script.contains("Get-VMSnapshot");
                let stat = req.script.contains("-StaticMacAddress");
                let by_id = req
                    .script
                    .contains("Get-VMNetworkAdapter | Where-Object { \"$($_.Id)\" -eq");
                let vm_id = arg(0)?;
                let (cp_id, name, mac) = match (cp, stat) {
                    (false, false) => (None, arg(1)?, None),
                    (false, true) => (None, arg(1)?, Some(arg(2)?)),
                    (true, false) => (Some(arg(1)?), arg(2)?, None),
                    (true, true) => (Some(arg(1)?), arg(2)?, Some(arg(3)?)),
                };
                let mac = mac
                    .map(|m| {
                        Mac::parse(&m).map(hex).map_err(|e| {
                            format!("Cannot validate argument on parameter 'StaticMacAddress': {e}")
                        })
                    })
                    .transpose()?;
                let vm = self.vm_mut(&vm_id)?;
                let adapters = match &cp_id {
                    None => {
                        if vm.state != "Off" {
                            return Err("The operation cannot be performed while the virtual machine is in its current state.".into());
                        }
                        &mut vm.adapters
                    }
                    Some(c) => {
                        &mut vm
                            .checkpoints
                            .iter_mut()
                            .find(|x| x.id.eq_ignore_ascii_case(c))
                            .ok_or("Unable to find a snapshot matching the given criteria.")?
                            .adapters
                    }
                };
                let matching: Vec<&mut SAdapter> = adapters
                    .iter_mut()
                    .filter(|a| {
                        if by_id {
                            a.id.eq_ignore_ascii_case(&name)
                        } else {
                            a.name.eq_ignore_ascii_case(&name)
                        }
                    })
                    .collect();
                if matching.len() != 1 {
                    return Err(format!(
                        "expected one adapter with that {}, found {}",
                        if by_id { "Id" } else { "Name" },
                        matching.len()
                    ));
                }
                let a = matching.into_iter().next().expect("one");
                match mac {
                    Some(m) => {
                        a.mac = m;
                        a.dynamic = false;
                    }
                    None => a.dynamic = true,
                }
                Ok(Value::Null)
            }
            "turn-off" => {
                let vm = self.vm_mut(&arg(0)?)?;
                vm.state = "Off".into();
                Ok(Value::Null)
            }
            "start" => {
                let id = arg(0)?;
                let range = self.range()?;
                let vm = self.vm_mut(&id)?.clone();
                if vm.state == "Running" {
                    return Err(format!(
                        "'{}' failed to change state: the VM is already running.",
                        vm.name
                    ));
                }
                // the only moment a dynamic MAC is re-checked: outside this host's range → new
                let mut adapters = vm.adapters.clone();
                for a in adapters.iter_mut() {
                    let outside = Mac::parse(&a.mac)
                        .map(|m| !range.contains(m))
                        .unwrap_or(true);
                    if a.dynamic && (a.mac == ZERO || outside) {
                        a.mac = self.allocate()?;
                    }
                }
                let vm = self.vm_mut(&id)?;
                vm.adapters = adapters;
                vm.state = "Running".into();
                let (vid, name) = (vm.id.clone(), vm.name.clone());
                self.emit(WORKER_ADMIN, EV_STARTED, &vid, &name, out);
                Ok(Value::Null)
            }
            "watch" => {
                self.watches.clear();
                let mut replay = Vec::new();
                let mut newest = Vec::new();
                for part in req.script.split("; Start-MacpoolWatch ").skip(1) {
                    let channel = literals(part)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .next()
                        .ok_or("watch: no channel")?;
                    let ids_text = part
                        .split(" -EventId ")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .ok_or("watch: no -EventId")?;
                    let ids: Vec<u32> = if ids_text == "@()" {
                        Vec::new()
                    } else {
                        ids_text
                            .split(',')
                            .map(|s| s.parse().map_err(|e| format!("EventId: {e}")))
                            .collect::<R<_>>()?
                    };
                    let after: i64 = part
                        .split(" -After ")
                        .nth(1)
                        .map(str::trim)
                        .ok_or("watch: no -After")?
                        .parse()
                        .map_err(|e| format!("After: {e}"))?;
                    let w = Watch { channel, ids };
                    newest.push(json!({"Channel": w.channel, "Newest": self.newest(&w.channel)}));
                    if after >= 0 {
                        replay.extend(
                            self.state
                                .events
                                .iter()
                                .filter(|e| {
                                    e.channel == w.channel
                                        && e.record_id > after as u64
                                        && (w.ids.is_empty() || w.ids.contains(&e.event_id))
                                })
                                .cloned(),
                        );
                    }
                    self.watches.push(w);
                }
                replay.sort_by_key(|e| e.record_id);
                out.extend(replay.iter().map(event_line));
                Ok(Value::Array(newest))
            }
            "get-event" => {
                let channel = arg(0)?;
                let rid: u64 = req
                    .script
                    .split("EventRecordID=")
                    .nth(1)
                    .and_then(|r| r.split(']').next())
                    .and_then(|n| n.parse().ok())
                    .ok_or("get-event: no record id")?;
                Ok(self
                    .state
                    .events
                    .iter()
                    .find(|e| e.channel.eq_ignore_ascii_case(&channel) && e.record_id == rid)
                    .map_or(json!([]), |e| json!([e.xml])))
            }
            "check" => Ok(if req.script.contains("PSTypeName") {
                json!({"Compiled": self.loaded, "Edition": "Desktop", "Version": "5.1.17763.1", "Clr": "4.0.30319.42000"})
            } else if req.script.contains("LanguageMode") {
                json!({"LanguageMode": "FullLanguage"})
            } else if req.script.contains("CodePoint") {
                let t = arg(0)?;
                json!({"Text": t, "Length": t.encode_utf16().count(), "CodePoint": t.chars().next().map(|c| c as u32), "InputEncoding": "ibm850"})
            } else if req.script.contains("GetValueNames") {
                let values: Vec<Value> = self
                    .visible_cursor()
                    .map(|c| json!({"Name": "CurrentMacAddress", "Kind": "Binary", "Value": c}))
                    .into_iter()
                    .collect();
                json!({"KeyExists": true, "Values": values})
            } else if req.script.contains("E13002") {
                let newest = |id: u32| -> Vec<String> {
                    self.state
                        .events
                        .iter()
                        .rev()
                        .find(|e| e.channel == VMMS_ADMIN && e.event_id == id)
                        .map(|e| format!("record {}", e.record_id))
                        .into_iter()
                        .collect()
                };
                json!({"E13002": newest(EV_CREATED_13002), "E18304": newest(crate::events::EV_CREATED)})
            } else if req.script.contains("Newest =") {
                json!({"Newest": self.newest(&arg(0)?).map_or(json!([]), |n| json!([n]))})
            } else if req.script.contains("Get-Module") {
                json!(true)
            } else if req.script.contains("WindowsPrincipal") {
                json!({"Administrator": true, "HyperVAdministrators": false})
            } else if req.script.contains("-ListLog") {
                json!({"LogName": arg(0)?, "IsEnabled": true, "RecordCount": self.state.events.len(), "Readable": true})
            } else if req.script.contains("CurrentMacAddress") {
                json!({"CurrentMacAddress": self.visible_cursor()})
            } else {
                json!({"MacAddressMinimum": self.state.range_min, "MacAddressMaximum": self.state.range_max})
            }),
            "control" => self.control(req.control.clone().unwrap_or(Value::Null), out),
            other => Err(format!("The term '{other}' is not recognized")),
        }
    }

    fn visible_cursor(&self) -> Option<String> {
        self.state
            .cursor
            .clone()
            .filter(|_| !self.state.cursor_hidden)
    }

    fn inventory(&self, vm_id: Option<&str>, management_os: bool) -> R<Value> {
        let vms: Vec<&SVm> = self
            .state
            .vms
            .iter()
            .filter(|v| vm_id.is_none_or(|id| v.id.eq_ignore_ascii_case(id)))
            .collect();
        let nil = "00000000-0000-0000-0000-000000000000";
        let mut adapters = Vec::new();
        let mut checkpoints = Vec::new();
        for v in &vms {
            for a in &v.adapters {
                adapters.push(json!({"Name": a.name, "Id": a.id, "VMId": v.id, "VMName": v.name, "VMSnapshotId": nil, "VMSnapshotName": "", "MacAddress": a.mac, "DynamicMacAddressEnabled": a.dynamic, "IsManagementOs": false, "ComputerName": self.state.host, "IsDeleted": false}));
            }
            for c in &v.checkpoints {
                checkpoints.push(json!({"Id": c.id, "Name": c.name, "VMId": v.id, "VMName": v.name, "SnapshotType": 0, "CreationTime": "/Date(1445000000000)/"}));
                for a in &c.adapters {
                    adapters.push(json!({"Name": a.name, "Id": a.id, "VMId": v.id, "VMName": v.name, "VMSnapshotId": c.id, "VMSnapshotName": c.name, "MacAddress": a.mac, "DynamicMacAddressEnabled": a.dynamic, "IsManagementOs": false, "ComputerName": self.state.host, "IsDeleted": false}));
                }
            }
        }
        if management_os && vm_id.is_none() {
            for a in &self.state.management_adapters {
                adapters.push(json!({"Name": a.name, "Id": a.id, "VMId": null, "VMName": null, "VMSnapshotId": null, "VMSnapshotName": null, "MacAddress": a.mac, "DynamicMacAddressEnabled": a.dynamic, "IsManagementOs": true, "ComputerName": self.state.host, "IsDeleted": false}));
            }
        }
        let vms_json: Vec<Value> = vms
            .iter()
            .map(|v| {
                let cp = v.parent_checkpoint.as_ref().and_then(|id| v.checkpoints.iter().find(|c| &c.id == id));
                // enums as ints, as PowerShell 7's ConvertTo-Json writes them: 2 Running, 3 Off
                json!({"Id": v.id, "Name": v.name, "State": if v.state == "Running" { 2 } else { 3 }, "ParentCheckpointId": cp.map(|c| c.id.clone()), "ParentCheckpointName": cp.map(|c| c.name.clone())})
            })
            .collect();
        // one VM comes back as an object, several as an array (PowerShell's quirk)
        let one_or_many = |mut v: Vec<Value>| {
            if v.len() == 1 {
                v.remove(0)
            } else {
                Value::Array(v)
            }
        };
        Ok(json!({
            "Format": "macpool-hyperv-inventory", "Version": 1, "HostName": self.state.host, "Cluster": null,
            "IPAddresses": [], "MacAddressMinimum": self.state.range_min, "MacAddressMaximum": self.state.range_max,
            "CurrentMacAddress": self.visible_cursor(),
            "VMs": one_or_many(vms_json), "Checkpoints": checkpoints, "Adapters": adapters,
        }))
    }

    fn control(&mut self, c: Value, out: &mut Vec<String>) -> R<Value> {
        let s = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("control: missing '{k}'"))
        };
        match s("cmd")?.as_str() {
            "create-vm" => {
                let id = s("id").unwrap_or_else(|_| self.guid());
                let name = s("name")?;
                let mut adapters = Vec::new();
                let names: Vec<String> = c
                    .get("adapters")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    // `nics`: that many adapters, all "Network Adapter" as Add-VMNetworkAdapter
                    // names them
                    .unwrap_or_else(|| {
                        let n = c.get("nics").and_then(Value::as_u64).unwrap_or(1);
                        vec!["Network Adapter".into(); n as usize]
                    });
                for n in names {
                    let guid = self.guid();
                    adapters.push(SAdapter {
                        name: n,
                        id: format!("Microsoft:{}\\{}", id.to_uppercase(), guid.to_uppercase()),
                        mac: self.allocate()?,
                        dynamic: true,
                    });
                }
                self.state.vms.push(SVm {
                    id: id.clone(),
                    name: name.clone(),
                    state: "Off".into(),
                    adapters,
                    checkpoints: Vec::new(),
                    parent_checkpoint: None,
                });
                let created = c
                    .get("event_id")
                    .and_then(Value::as_u64)
                    .map_or(EV_CREATED_13002, |n| n as u32);
                self.emit(VMMS_ADMIN, created, &id, &name, out);
                Ok(json!({"id": id}))
            }
            "delete-vm" => {
                let id = s("vm_id")?;
                let vm = self.vm_mut(&id)?.clone();
                self.state.vms.retain(|v| v.id != vm.id);
                self.emit(VMMS_ADMIN, EV_DELETED, &vm.id, &vm.name, out);
                Ok(Value::Null)
            }
            "checkpoint" => {
                let name = s("name")?;
                let cid = s("checkpoint_id").unwrap_or_else(|_| self.guid());
                let vm = self.vm_mut(&s("vm_id")?)?;
                let adapters = owned_by(&vm.adapters, &cid);
                vm.checkpoints.push(SCheckpoint {
                    id: cid.clone(),
                    name,
                    adapters,
                });
                vm.parent_checkpoint = Some(cid.clone());
                Ok(json!({"id": cid}))
            }
            "restore" => {
                let vm = self.vm_mut(&s("vm_id")?)?;
                let cp = match (
                    c.get("checkpoint_id").and_then(Value::as_str),
                    c.get("name").and_then(Value::as_str),
                ) {
                    (Some(id), _) => vm.checkpoints.iter().find(|x| x.id == id),
                    (None, Some(n)) => vm.checkpoints.iter().find(|x| x.name == n),
                    _ => vm.checkpoints.last(),
                }
                .cloned()
                .ok_or("no such checkpoint")?;
                // the checkpoint's MACs come back as they were frozen; restored with memory → running
                vm.adapters = owned_by(&cp.adapters, &vm.id.clone());
                vm.parent_checkpoint = Some(cp.id.clone());
                vm.state = "Running".into();
                let (id, name) = (vm.id.clone(), vm.name.clone());
                self.emit(WORKER_ADMIN, EV_RESTORED, &id, &name, out);
                Ok(Value::Null)
            }
            "migrate-out" => {
                let vm = self.vm_mut(&s("vm_id")?)?.clone();
                self.state.vms.retain(|v| v.id != vm.id);
                Ok(serde_json::to_value(vm).expect("vm serialises"))
            }
            "migrate-in" => {
                let vm: SVm = serde_json::from_value(c.get("vm").cloned().unwrap_or(Value::Null))
                    .map_err(|e| e.to_string())?;
                self.state.vms.push(vm);
                Ok(Value::Null)
            }
            "add-management-adapter" => {
                let name = s("name")?;
                let guid = self.guid();
                let mac = self.allocate()?;
                self.state.management_adapters.push(SAdapter {
                    name,
                    id: format!("Microsoft:{}", guid.to_uppercase()),
                    mac: mac.clone(),
                    dynamic: true,
                });
                Ok(json!({"mac": mac}))
            }
            "hide-cursor" => {
                self.state.cursor_hidden = true;
                Ok(Value::Null)
            }
            "warn" => {
                self.warning = Some(s("text")?);
                Ok(Value::Null)
            }
            // `wevtutil cl`: the channel's records are gone and its ids restart at 1
            "clear-log" => {
                let channel = s("channel")?;
                self.state.events.retain(|e| e.channel != channel);
                self.state
                    .record_offset
                    .insert(channel, self.state.next_record - 1);
                Ok(Value::Null)
            }
            // an EventException in the watcher: reported, and the watch delivers nothing more
            "fail-watch" => {
                let channel = s("channel")?;
                self.watches.retain(|w| w.channel != channel);
                out.push(json!({"watch_failed": {"channel": channel, "error": "The handle is invalid."}}).to_string());
                Ok(Value::Null)
            }
            "emit-raw" => {
                out.push(s("line")?);
                Ok(Value::Null)
            }
            "state" => Ok(serde_json::to_value(&self.state).expect("state serialises")),
            "exit" => {
                self.exit = Some(c.get("code").and_then(Value::as_i64).unwrap_or(9) as i32);
                Ok(Value::Null)
            }
            other => Err(format!("control: unknown cmd '{other}'")),
        }
    }
}

fn event_line(e: &SEvent) -> String {
    json!({"event": {"channel": e.channel, "record_id": e.record_id, "xml": e.xml}}).to_string()
}

/// Runs the stand-in on stdin/stdout until stdin closes or an `exit` request; returns the exit
/// code. `args`: `[--state FILE] [--host NAME --range FIRST-LAST]`. Shared by the
/// `hyperv-standin` binary and `macpool hyperv standin` (hidden), so end-to-end tests of the
/// `macpool` binary can use it as their PowerShell.
pub fn serve_stdio(args: &[String]) -> i32 {
    use std::io::{BufRead, Write};
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let path = get("--state").map(std::path::PathBuf::from);
    let state = match &path {
        Some(p) if p.exists() => {
            let bytes = std::fs::read(p).expect("state file readable");
            serde_json::from_slice(&bytes).expect("state file is a stand-in state")
        }
        _ => {
            let host = get("--host").unwrap_or_else(|| "HV-STANDIN".into());
            let range = get("--range").unwrap_or_else(|| "00155D0A0000-00155D0A00FF".into());
            StandinState::new(&host, range.parse().expect("--range FIRST-LAST"))
        }
    };
    let mut s = Standin::new(state, path);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // `-File PATH` (the bootstrap from a file, as `powershell.exe -File`); otherwise the first
    // stdin line must be the loader. Ready only once the bootstrap compiled.
    if let Some(file) = get("-File") {
        let loaded = std::fs::read(&file)
            .map_err(|e| format!("{file}: {e}"))
            .and_then(|b| {
                let b = b
                    .strip_prefix(b"\xef\xbb\xbf".as_slice())
                    .unwrap_or(&b)
                    .to_vec();
                String::from_utf8(b)
                    .map(|t| t.replace("\r\n", "\n"))
                    .map_err(|e| e.to_string())
            })
            .and_then(|t| s.load(&t));
        match loaded {
            Ok(()) => {
                writeln!(out, "{READY}").ok();
                out.flush().ok();
            }
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        }
    }
    let mut input = std::io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let o = match decode_stdin_line(&buf) {
            Ok(line) => s.line(&line),
            Err(e) => {
                // answer the request (its id is ASCII) with the decoding failure
                let text = String::from_utf8_lossy(&buf);
                let id = serde_json::from_str::<Request>(text.trim_end()).map_or(0, |r| r.id);
                Output {
                    lines: vec![json!({"id": id, "ok": false, "error": e}).to_string()],
                }
            }
        };
        let was_loaded = s.loaded;
        for l in o.lines {
            writeln!(out, "{l}").ok();
        }
        out.flush().ok();
        if !was_loaded {
            eprintln!("the first line was not a valid bootstrap loader");
            return 1;
        }
        if let Some(code) = s.exit {
            return code;
        }
    }
    0
}

const READY: &str = "{\"ready\":true,\"version\":\"hyperv-standin\"}";

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: &str, script: String) -> String {
        serde_json::to_string(&Request {
            id: 1,
            op: op.into(),
            script,
            control: None,
        })
        .unwrap()
    }

    #[test]
    fn round_robin_wraps_and_checks_only_this_host() {
        let mut s = Standin::new(
            StandinState::new("A", "00155D0A0000-00155D0A0002".parse().unwrap()),
            None,
        );
        let mut out = Vec::new();
        let a = s.allocate().unwrap();
        let b = s.allocate().unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("00155D0A0000", "00155D0A0001"));
        s.state.vms.push(SVm {
            id: "x".into(),
            name: "x".into(),
            state: "Off".into(),
            adapters: vec![SAdapter {
                name: "n".into(),
                id: String::new(),
                mac: "00155D0A0000".into(),
                dynamic: true,
            }],
            ..Default::default()
        });
        assert_eq!(s.allocate().unwrap(), "00155D0A0002");
        // wraps; :00 is in use here, :01 is not (nothing on this host holds it)
        assert_eq!(s.allocate().unwrap(), "00155D0A0001");
        s.emit(WORKER_ADMIN, EV_STARTED, "x", "x", &mut out);
        assert!(out.is_empty(), "nothing pushed without a watch");
    }

    #[test]
    fn a_running_vm_refuses_a_mac_change_and_failures_change_nothing() {
        let mut s = Standin::new(
            StandinState::new("A", "00155D0A0000-00155D0A00FF".parse().unwrap()),
            None,
        );
        let mut out = Vec::new();
        s.control(
            json!({"cmd":"create-vm","id":"v1","name":"it's $me"}),
            &mut out,
        )
        .unwrap();
        s.state.vms[0].state = "Running".into();
        let before = s.state.clone();
        let cmd = crate::powershell::Command::SetAdapterMac {
            adapter: crate::AdapterRef {
                vm_id: "v1".into(),
                adapter: "Network Adapter".into(),
                id: None,
                checkpoint_id: None,
            },
            setting: crate::MacSetting::Static("02:00:00:00:00:01".parse().unwrap()),
        };
        let o = s.line(&req(cmd.op(), cmd.script()));
        assert!(o.lines[0].contains("\"ok\":false"), "{:?}", o.lines);
        assert_eq!(s.state, before);
    }
}
