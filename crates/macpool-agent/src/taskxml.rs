//! The Task Scheduler task that runs `macpool agent on-event` for every 18596, as the published
//! workaround's task does (reference/hyperv.md, "The published workaround"): SYSTEM, highest
//! privileges, an event trigger with `ValueQueries` for `eventChannel` and `eventRecordID`.
//! Windows writes task XML as UTF-16LE with a BOM; [`task_xml_utf16`] gives those bytes.

use crate::events::{EV_RESTORED, WORKER_ADMIN};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskOptions {
    /// Full path of `macpool.exe`.
    pub exe: String,
    /// Further arguments after `agent on-event --channel … --record-id …` (server, token file,
    /// strategy, pool …), each one argument.
    pub extra_args: Vec<String>,
    pub description: String,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// One Windows command-line argument (CommandLineToArgvW rules): quoted when it has spaces,
/// tabs or quotes; backslashes before a quote doubled.
pub fn win_arg(a: &str) -> String {
    if !a.is_empty() && !a.contains([' ', '\t', '"']) {
        return a.to_string();
    }
    let mut out = String::from("\"");
    let mut slashes = 0;
    for c in a.chars() {
        match c {
            '\\' => slashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(slashes * 2 + 1));
                out.push('"');
                slashes = 0;
            }
            _ => {
                out.push_str(&"\\".repeat(slashes));
                out.push(c);
                slashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(slashes * 2));
    out.push('"');
    out
}

/// The task XML as text (declared `UTF-16`, as Windows writes it).
pub fn task_xml(o: &TaskOptions) -> String {
    let query = format!(
        "<QueryList><Query Id=\"0\" Path=\"{WORKER_ADMIN}\"><Select Path=\"{WORKER_ADMIN}\">*[System[EventID={EV_RESTORED}]]</Select></Query></QueryList>"
    );
    let mut args =
        String::from("agent on-event --channel $(eventChannel) --record-id $(eventRecordID)");
    for a in &o.extra_args {
        args.push(' ');
        args.push_str(&win_arg(a));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>{desc}</Description>
    <URI>\macpool\on-restore</URI>
  </RegistrationInfo>
  <Triggers>
    <EventTrigger>
      <Enabled>true</Enabled>
      <Subscription>{subscription}</Subscription>
      <ValueQueries>
        <Value name="eventChannel">Event/System/Channel</Value>
        <Value name="eventRecordID">Event/System/EventRecordID</Value>
      </ValueQueries>
    </EventTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>S-1-5-18</UserId>
      <RunLevel>HighestAvailable</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>Parallel</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>false</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <ExecutionTimeLimit>PT10M</ExecutionTimeLimit>
    <Priority>7</Priority>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{exe}</Command>
      <Arguments>{args}</Arguments>
    </Exec>
  </Actions>
</Task>
"#,
        desc = xml_escape(&o.description),
        subscription = xml_escape(&query),
        exe = xml_escape(&o.exe),
        args = xml_escape(&args),
    )
}

/// The bytes Windows writes: UTF-16LE with a BOM, CRLF line ends.
/// The task as UTF-8 bytes (`task-xml --utf8`), declaring `encoding="UTF-8"`: a UTF-8 file that
/// says UTF-16 is refused by `schtasks /XML`.
pub fn task_xml_utf8(o: &TaskOptions) -> Vec<u8> {
    task_xml(o)
        .replacen(
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            1,
        )
        .into_bytes()
}

pub fn task_xml_utf16(o: &TaskOptions) -> Vec<u8> {
    let text = task_xml(o).replace('\n', "\r\n");
    let mut out = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> TaskOptions {
        TaskOptions {
            exe: r"C:\Program Files\macpool\macpool.exe".into(),
            extra_args: vec![
                "--server".into(),
                "https://macpool:7780".into(),
                "--pool".into(),
                "vdi pool".into(),
            ],
            description: "macpool guard: checks MACs after RDV_ROLLBACK restores".into(),
        }
    }

    #[test]
    fn utf8_task_xml_declares_utf8() {
        let x = String::from_utf8(task_xml_utf8(&opts())).unwrap();
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Task"));
        assert!(!x.contains("UTF-16"));
        roxmltree::Document::parse(&x).unwrap();
    }

    #[test]
    fn golden_task_xml() {
        let x = task_xml(&opts());
        assert!(
            x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<Task version=\"1.2\"")
        );
        assert!(x.contains("<Subscription>&lt;QueryList&gt;&lt;Query Id=&quot;0&quot; Path=&quot;Microsoft-Windows-Hyper-V-Worker-Admin&quot;&gt;&lt;Select Path=&quot;Microsoft-Windows-Hyper-V-Worker-Admin&quot;&gt;*[System[EventID=18596]]&lt;/Select&gt;&lt;/Query&gt;&lt;/QueryList&gt;</Subscription>"));
        assert!(x.contains("<Value name=\"eventChannel\">Event/System/Channel</Value>"));
        assert!(x.contains("<Value name=\"eventRecordID\">Event/System/EventRecordID</Value>"));
        assert!(
            x.contains("<UserId>S-1-5-18</UserId>\n      <RunLevel>HighestAvailable</RunLevel>")
        );
        assert!(x.contains(r"<Command>C:\Program Files\macpool\macpool.exe</Command>"));
        assert!(x.contains("<Arguments>agent on-event --channel $(eventChannel) --record-id $(eventRecordID) --server https://macpool:7780 --pool &quot;vdi pool&quot;</Arguments>"));
        let plain = x.replacen(" encoding=\"UTF-16\"", "", 1);
        let doc = roxmltree::Document::parse(&plain).unwrap();
        let sub = doc
            .descendants()
            .find(|n| n.has_tag_name("Subscription"))
            .unwrap()
            .text()
            .unwrap();
        assert!(sub.starts_with("<QueryList><Query Id=\"0\""));
    }

    #[test]
    fn utf16_with_bom_and_crlf() {
        let b = task_xml_utf16(&opts());
        assert_eq!(&b[..4], &[0xFF, 0xFE, b'<', 0]);
        let units: Vec<u16> = b[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let text = String::from_utf16(&units).unwrap();
        assert!(text.contains("?>\r\n<Task"));
        assert_eq!(text.replace("\r\n", "\n"), task_xml(&opts()));
    }

    #[test]
    fn windows_arguments() {
        assert_eq!(win_arg("plain"), "plain");
        assert_eq!(win_arg("a b"), "\"a b\"");
        assert_eq!(win_arg(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(win_arg(r"C:\dir with space\"), r#""C:\dir with space\\""#);
        assert_eq!(win_arg(""), "\"\"");
    }
}
