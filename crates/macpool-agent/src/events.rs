//! Hyper-V event records: the XML that `EventRecord.ToXml()` and `wevtutil qe … /f:xml` write,
//! and `.evtx` files (through the `evtx` crate when built with the `evtx` feature).
//!
//! A wevtutil export is several `<Event>` elements one after another with no root; each is read
//! on its own, so one broken event is reported (with its raw text) and the others still read.
//! Elements are matched by local name, so files with or without the
//! `http://schemas.microsoft.com/win/2004/08/events/event` namespace read the same. The VM is
//! taken from `UserData/VmlEventLog/VmId` (and `VmName`) only, never from the message: VM names
//! contain spaces and quotes. Whether 18596 carries that payload is [likely] (reference/hyperv.md,
//! "Events"); an event without it is reported, not guessed.

use std::path::Path;

use macpool_audit::hyperv_json::parse_date;
use macpool_core::Timestamp;
use roxmltree::{Document, Node};

use crate::hypervisor::{EventKind, HvEvent};

pub const WORKER_ADMIN: &str = "Microsoft-Windows-Hyper-V-Worker-Admin";
pub const VMMS_ADMIN: &str = "Microsoft-Windows-Hyper-V-VMMS-Admin";
pub const EVENT_NS: &str = "http://schemas.microsoft.com/win/2004/08/events/event";
pub const VML_NS: &str = "http://www.microsoft.com/Windows/Virtualization/Events";

/// Restored (checkpoint applied / saved state restored).
pub const EV_RESTORED: u32 = 18596;
pub const EV_STARTED: u32 = 18500;
/// VM created, as [likely] written by VMMS (no Microsoft text found for 18304).
pub const EV_CREATED: u32 = 18304;
/// VM created, as the public tools watch it; watched together with [`EV_CREATED`].
pub const EV_CREATED_13002: u32 = 13002;
pub const EV_DELETED: u32 = 13003;

/// What the agent does with `(channel, event id)`; `None` for every other event.
pub fn kind_of(channel: &str, event_id: u32) -> Option<EventKind> {
    let worker = channel.eq_ignore_ascii_case(WORKER_ADMIN);
    let vmms = channel.eq_ignore_ascii_case(VMMS_ADMIN);
    match event_id {
        EV_RESTORED if worker => Some(EventKind::Restored),
        EV_STARTED if worker => Some(EventKind::Started),
        EV_CREATED | EV_CREATED_13002 if vmms => Some(EventKind::Created),
        EV_DELETED if vmms => Some(EventKind::Deleted),
        _ => None,
    }
}

/// The subscriptions the agent needs: channel → event ids.
pub fn watched() -> [(&'static str, &'static [u32]); 2] {
    [
        (WORKER_ADMIN, &[EV_RESTORED, EV_STARTED]),
        (VMMS_ADMIN, &[EV_CREATED_13002, EV_CREATED, EV_DELETED]),
    ]
}

/// One event as read from XML, whatever its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub channel: String,
    pub provider: Option<String>,
    pub event_id: u32,
    pub record_id: u64,
    pub time: Option<Timestamp>,
    pub vm_id: Option<String>,
    pub vm_name: Option<String>,
    pub raw: String,
}

impl EventRecord {
    pub fn kind(&self) -> Option<EventKind> {
        kind_of(&self.channel, self.event_id)
    }

    /// The agent's view; `Err` (with the reason) for events it does not handle or cannot
    /// attribute to a VM.
    pub fn to_hv_event(&self) -> Result<HvEvent, String> {
        let kind = self.kind().ok_or_else(|| {
            format!(
                "event {} of {} is not one the agent handles",
                self.event_id, self.channel
            )
        })?;
        let vm_id = self.vm_id.clone().ok_or_else(|| {
            format!(
                "event {} (record {}) has no UserData/VmlEventLog/VmId",
                self.event_id, self.record_id
            )
        })?;
        Ok(HvEvent {
            kind,
            channel: self.channel.clone(),
            event_id: self.event_id,
            record_id: self.record_id,
            time: self.time,
            vm_id,
            vm_name: self.vm_name.clone(),
            raw: self.raw.clone(),
        })
    }
}

/// A problem with one event (or a whole file), with the raw text when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventProblem {
    pub message: String,
    pub raw: Option<String>,
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text_of(n: Option<Node>) -> Option<String> {
    n.and_then(|n| n.text())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parses one `<Event>` element's text.
pub fn parse_event_xml(xml: &str) -> Result<EventRecord, String> {
    // the parser recurses per nesting level: a hostile export must not overflow the stack
    macpool_audit::xml::check(xml)?;
    let doc = Document::parse(xml).map_err(|e| format!("not well-formed XML: {e}"))?;
    let ev = doc.root_element();
    if ev.tag_name().name() != "Event" {
        return Err(format!(
            "root element is <{}>, not <Event>",
            ev.tag_name().name()
        ));
    }
    let system = child(ev, "System").ok_or("no <System> element")?;
    let event_id: u32 = text_of(child(system, "EventID"))
        .ok_or("no EventID")?
        .parse()
        .map_err(|e| format!("EventID: {e}"))?;
    let record_id: u64 = text_of(child(system, "EventRecordID"))
        .ok_or("no EventRecordID")?
        .parse()
        .map_err(|e| format!("EventRecordID: {e}"))?;
    let channel = text_of(child(system, "Channel")).ok_or("no Channel")?;
    let provider = child(system, "Provider").and_then(|p| p.attribute("Name").map(str::to_string));
    let time = child(system, "TimeCreated")
        .and_then(|t| t.attribute("SystemTime"))
        .and_then(parse_date);
    let vml = child(ev, "UserData").and_then(|u| child(u, "VmlEventLog"));
    let vm_id = text_of(vml.and_then(|v| child(v, "VmId")));
    let vm_name = vml
        .and_then(|v| child(v, "VmName"))
        .and_then(|n| n.text().map(str::to_string));
    Ok(EventRecord {
        channel,
        provider,
        event_id,
        record_id,
        time,
        vm_id,
        vm_name,
        raw: xml.to_string(),
    })
}

/// Every `<Event …>…</Event>` span of a text, in order (events do not nest; `<EventData>` and
/// `<EventID>` are not starts).
fn event_spans(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(off) = text[pos..].find("<Event") {
        let start = pos + off;
        let after = text[start + 6..].chars().next();
        if !matches!(after, Some(' ' | '>' | '\t' | '\r' | '\n' | '/')) {
            pos = start + 6;
            continue;
        }
        match text[start..].find("</Event>") {
            Some(end) => {
                let stop = start + end + "</Event>".len();
                out.push(&text[start..stop]);
                pos = stop;
            }
            None => {
                // self-closing or truncated: hand the rest over to be reported
                out.push(&text[start..]);
                break;
            }
        }
    }
    out
}

/// Reads a wevtutil XML export (or one event).
pub fn parse_events_text(text: &str) -> (Vec<EventRecord>, Vec<EventProblem>) {
    let mut events = Vec::new();
    let mut problems = Vec::new();
    for span in event_spans(text) {
        match parse_event_xml(span) {
            Ok(e) => events.push(e),
            Err(message) => problems.push(EventProblem {
                message,
                raw: Some(span.to_string()),
            }),
        }
    }
    (events, problems)
}

/// Text from bytes: UTF-8 (with or without a BOM) or UTF-16 with a BOM, as Windows tools write.
fn text_from(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    let le = bytes.starts_with(&[0xFF, 0xFE]);
    if le || bytes.starts_with(&[0xFE, 0xFF]) {
        let units = bytes[2..].chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        return char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// `.evtx` files start with this signature.
pub const EVTX_MAGIC: &[u8] = b"ElfFile\0";

/// Reads an exported file: `.evtx` (by signature) or XML text.
pub fn read_events(bytes: &[u8]) -> Result<(Vec<EventRecord>, Vec<EventProblem>), String> {
    if bytes.starts_with(EVTX_MAGIC) {
        return read_evtx(bytes);
    }
    let text = text_from(bytes);
    let (events, problems) = parse_events_text(&text);
    if events.is_empty() && problems.is_empty() {
        return Err(
            "no <Event> element found (expected `wevtutil qe … /f:xml` output or an .evtx file)"
                .into(),
        );
    }
    Ok((events, problems))
}

/// Reads a file by path.
pub fn read_events_file(path: &Path) -> Result<(Vec<EventRecord>, Vec<EventProblem>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    read_events(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(feature = "evtx")]
fn read_evtx(bytes: &[u8]) -> Result<(Vec<EventRecord>, Vec<EventProblem>), String> {
    let mut parser = evtx::EvtxParser::from_buffer(bytes.to_vec())
        .map_err(|e| format!("not a readable .evtx file: {e}"))?;
    let mut events = Vec::new();
    let mut problems = Vec::new();
    for r in parser.records() {
        match r {
            Ok(rec) => match parse_event_xml(&rec.data) {
                Ok(e) => events.push(e),
                Err(message) => problems.push(EventProblem {
                    message: format!("record {}: {message}", rec.event_record_id),
                    raw: Some(rec.data),
                }),
            },
            Err(e) => problems.push(EventProblem {
                message: format!("unreadable .evtx record: {e}"),
                raw: None,
            }),
        }
    }
    Ok((events, problems))
}

#[cfg(not(feature = "evtx"))]
fn read_evtx(_: &[u8]) -> Result<(Vec<EventRecord>, Vec<EventProblem>), String> {
    Err("evtx not supported in this build (built without the `evtx` feature); export with `wevtutil qe <channel> /f:xml` instead".into())
}

/// One row of `macpool hyperv events --json`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    pub time: Option<String>,
    pub record_id: u64,
    pub event_id: u32,
    pub channel: String,
    pub kind: Option<&'static str>,
    pub vm_name: Option<String>,
    pub vm_id: Option<String>,
}

impl From<&EventRecord> for EventRow {
    fn from(e: &EventRecord) -> EventRow {
        EventRow {
            time: e.time.map(|t| t.to_string()),
            record_id: e.record_id,
            event_id: e.event_id,
            channel: e.channel.clone(),
            kind: e.kind().map(EventKind::name),
            vm_name: e.vm_name.clone(),
            vm_id: e.vm_id.clone(),
        }
    }
}

/// The `--json` output: an array of [`EventRow`].
pub fn render_json(events: &[EventRecord]) -> String {
    let rows: Vec<EventRow> = events.iter().map(EventRow::from).collect();
    serde_json::to_string_pretty(&rows).expect("rows serialise")
}

/// The table: time, record id, event id, VM name, VM id.
pub fn render_table(events: &[EventRecord]) -> String {
    let head = ["TIME", "RECORD", "EVENT", "VM NAME", "VM ID"];
    let rows: Vec<[String; 5]> = events
        .iter()
        .map(|e| {
            [
                e.time.map_or("-".into(), |t| t.to_string()),
                e.record_id.to_string(),
                match e.kind() {
                    Some(k) => format!("{} {}", e.event_id, k.name()),
                    None => e.event_id.to_string(),
                },
                e.vm_name.clone().unwrap_or_else(|| "-".into()),
                e.vm_id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head.map(String::from));
    for r in &rows {
        line(r);
    }
    out
}

/// One event in the documented shape (used by the stand-in and tests): `ToXml()` style, with
/// the event namespace and the `VmlEventLog` payload.
pub fn render_event_xml(
    channel: &str,
    event_id: u32,
    record_id: u64,
    time: Timestamp,
    vm_name: &str,
    vm_id: &str,
) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;")
    };
    let provider = if channel.eq_ignore_ascii_case(VMMS_ADMIN) {
        "Microsoft-Windows-Hyper-V-VMMS"
    } else {
        "Microsoft-Windows-Hyper-V-Worker"
    };
    let ms = time.as_millis();
    let stamp = format!("{}", Timestamp::from_millis(ms - ms % 1000));
    let stamp = format!("{}.{:03}0000Z", &stamp[..19], ms % 1000);
    format!(
        "<Event xmlns='{EVENT_NS}'><System><Provider Name='{provider}' Guid='{{51ddfa29-d5c8-4803-be4b-2ecb715570fe}}'/><EventID>{event_id}</EventID><Version>0</Version><Level>4</Level><Task>0</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='{stamp}'/><EventRecordID>{record_id}</EventRecordID><Correlation/><Execution ProcessID='4242' ThreadID='4343'/><Channel>{channel}</Channel><Computer>hv.example.test</Computer><Security UserID='S-1-5-83-1-1'/></System><UserData><VmlEventLog xmlns='{VML_NS}'><VmName>{}</VmName><VmId>{}</VmId></VmlEventLog></UserData></Event>",
        esc(vm_name),
        esc(vm_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wevtutil export as Windows writes it: several events, no root, one per line, with the
    /// namespace; VM names with spaces and quotes; an unrelated event (18502) in between.
    const EXPORT: &str = r#"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Hyper-V-Worker' Guid='{51ddfa29-d5c8-4803-be4b-2ecb715570fe}'/><EventID>18596</EventID><Version>0</Version><Level>4</Level><Task>0</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='2015-10-14T09:12:31.4537711Z'/><EventRecordID>4711</EventRecordID><Correlation/><Execution ProcessID='5512' ThreadID='6104'/><Channel>Microsoft-Windows-Hyper-V-Worker-Admin</Channel><Computer>HV-B.corp.example</Computer><Security UserID='S-1-5-83-1-1234'/></System><UserData><VmlEventLog xmlns='http://www.microsoft.com/Windows/Virtualization/Events'><VmName>RDS Pool 'Sales' Desk 07</VmName><VmId>5F0E6C3A-1B2C-4D5E-8F90-0123456789AB</VmId></VmlEventLog></UserData></Event>
<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Hyper-V-Worker' Guid='{51ddfa29-d5c8-4803-be4b-2ecb715570fe}'/><EventID>18502</EventID><Version>0</Version><Level>4</Level><Task>0</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='2015-10-14T09:12:33.0000000Z'/><EventRecordID>4712</EventRecordID><Correlation/><Execution ProcessID='5512' ThreadID='6104'/><Channel>Microsoft-Windows-Hyper-V-Worker-Admin</Channel><Computer>HV-B.corp.example</Computer><Security UserID='S-1-5-83-1-1234'/></System><UserData><VmlEventLog xmlns='http://www.microsoft.com/Windows/Virtualization/Events'><VmName>desk 08</VmName><VmId>aaaaaaaa-0000-4000-8000-000000000008</VmId></VmlEventLog></UserData></Event>
<Event><System><Provider Name='Microsoft-Windows-Hyper-V-Worker'/><EventID>18500</EventID><TimeCreated SystemTime='2015-10-14T09:13:00.5Z'/><EventRecordID>4713</EventRecordID><Channel>Microsoft-Windows-Hyper-V-Worker-Admin</Channel></System><UserData><VmlEventLog><VmName>Ünïcødé $x `y</VmName><VmId>bbbbbbbb-0000-4000-8000-000000000009</VmId></VmlEventLog></UserData><RenderingInfo Culture='en-US'><Message>'Ünïcødé $x `y' started successfully. (Virtual machine ID BBBBBBBB-0000-4000-8000-000000000009)</Message></RenderingInfo></Event>
"#;

    #[test]
    fn wevtutil_export_reads_with_and_without_namespace() {
        let (events, problems) = read_events(EXPORT.as_bytes()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(events.len(), 3);
        let e = &events[0];
        assert_eq!((e.event_id, e.record_id), (18596, 4711));
        assert_eq!(e.vm_name.as_deref(), Some("RDS Pool 'Sales' Desk 07"));
        assert_eq!(
            e.vm_id.as_deref(),
            Some("5F0E6C3A-1B2C-4D5E-8F90-0123456789AB")
        );
        assert_eq!(e.time.unwrap().to_string(), "2015-10-14T09:12:31.453Z");
        assert_eq!(e.kind(), Some(EventKind::Restored));
        assert_eq!(events[1].kind(), None);
        assert_eq!(events[2].kind(), Some(EventKind::Started));
        assert_eq!(events[2].vm_name.as_deref(), Some("Ünïcødé $x `y"));
        let hv = events[0].to_hv_event().unwrap();
        assert_eq!(hv.vm_id, "5F0E6C3A-1B2C-4D5E-8F90-0123456789AB");
        assert!(events[1].to_hv_event().is_err());
    }

    #[test]
    fn utf16_export_and_a_broken_event_in_the_middle() {
        let broken = EXPORT.replacen(
            "<EventRecordID>4712</EventRecordID>",
            "<EventRecordID>x</EventRecordID>",
            1,
        );
        let mut bytes = vec![0xFF, 0xFE];
        for u in broken.encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let (events, problems) = read_events(&bytes).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("EventRecordID"),
            "{:?}",
            problems[0]
        );
        assert!(problems[0].raw.as_deref().unwrap().contains("desk 08"));
    }

    #[test]
    fn the_vm_comes_from_userdata_never_the_message() {
        let xml = "<Event><System><EventID>18596</EventID><EventRecordID>1</EventRecordID><Channel>Microsoft-Windows-Hyper-V-Worker-Admin</Channel></System><RenderingInfo><Message>'x' was restored successfully. (Virtual machine ID 11111111-0000-0000-0000-000000000000)</Message></RenderingInfo></Event>";
        let e = parse_event_xml(xml).unwrap();
        assert_eq!(e.vm_id, None);
        assert!(e.to_hv_event().unwrap_err().contains("VmlEventLog/VmId"));
    }

    #[test]
    fn rendered_events_read_back() {
        let xml = render_event_xml(
            WORKER_ADMIN,
            18596,
            77,
            Timestamp::from_millis(1_445_000_000_123),
            "a 'b' & <c>",
            "id-1",
        );
        let e = parse_event_xml(&xml).unwrap();
        assert_eq!(e.record_id, 77);
        assert_eq!(e.vm_name.as_deref(), Some("a 'b' & <c>"));
        assert_eq!(e.time, Some(Timestamp::from_millis(1_445_000_000_123)));
        assert_eq!(
            e.provider.as_deref(),
            Some("Microsoft-Windows-Hyper-V-Worker")
        );
    }

    #[test]
    fn table_and_json() {
        let (events, _) = read_events(EXPORT.as_bytes()).unwrap();
        let t = render_table(&events);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "TIME                      RECORD  EVENT           VM NAME                   VM ID"
        );
        assert!(lines[1].starts_with(
            "2015-10-14T09:12:31.453Z  4711    18596 restored  RDS Pool 'Sales' Desk 07  5F0E6C3A"
        ));
        let j: serde_json::Value = serde_json::from_str(&render_json(&events)).unwrap();
        assert_eq!(j[0]["kind"], "restored");
        assert_eq!(j[1]["kind"], serde_json::Value::Null);
    }

    #[test]
    fn not_events_is_an_error() {
        assert!(read_events(b"hello").is_err());
        #[cfg(feature = "evtx")]
        assert!(
            read_events(b"ElfFile\0garbage")
                .unwrap_err()
                .contains(".evtx")
        );
    }
}
