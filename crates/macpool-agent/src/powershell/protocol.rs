//! The line protocol between the agent and its PowerShell child (or the stand-in).
//!
//! Agent → child, one JSON object per line, pure ASCII ([`request_line`]: Windows PowerShell
//! decodes a redirected stdin with the OEM code page, so anything above 0x7E is `\uXXXX`):
//! `{"id":7,"op":"turn-off","script":"Get-VM -Id '…' | Stop-VM -TurnOff -Force -Confirm:$false"}`.
//! The child runs `script` (the real bootstrap ignores `op`; the stand-in dispatches on it and
//! reads its arguments from the script's literals). Test-only stand-in requests carry `control`
//! instead of a script.
//!
//! Child → agent, one JSON object per line, any order:
//! - `{"ready":true,"version":"…"}` once the bootstrap runs;
//! - `{"id":7,"ok":true,"result":…}` or `{"id":7,"ok":false,"error":"…"}` for request 7;
//! - `{"event":{"channel":"…","record_id":N,"xml":"<Event …>"}}` pushed whenever the event-log
//!   watcher sees a matching event (unsolicited);
//! - `{"watch_failed":{"channel":"…","error":"…"}}` when a watcher reports an `EventException`
//!   (it delivers nothing more; the agent resubscribes with backoff);
//! - `{"log":"…"}` diagnostics from the child.
//!
//! Responses may carry `"warnings":["…"]`: the Warning/Verbose/Debug/Information streams of the
//! request, captured so that they never reach stdout between protocol lines.
//!
//! Anything else is malformed: logged with the raw text and skipped.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub op: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub ok: bool,
    #[serde(default)]
    pub result: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `req` as one protocol line (without the newline), every character above 0x7E escaped as
/// `\uXXXX` (JSON's own escape, UTF-16 surrogate pairs beyond the BMP): Windows PowerShell reads
/// a redirected stdin in the console's OEM code page, so only ASCII arrives intact.
pub fn request_line(req: &Request) -> String {
    let json = serde_json::to_string(req).expect("a request serialises");
    // non-ASCII only occurs inside JSON strings, where \uXXXX means the same character
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// An event as the child pushes it: the rendered event XML (`EventRecord.ToXml()`), parsed on
/// this side by [`crate::events`] like any exported event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub channel: String,
    pub record_id: u64,
    pub xml: String,
}

/// One line from the child, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Ready { version: String },
    Response(Response),
    Event(EventLine),
    WatchFailed { channel: String, error: String },
    Log(String),
    Malformed { raw: String, reason: String },
}

#[derive(Deserialize)]
struct Any {
    #[serde(default)]
    ready: Option<bool>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    watch_failed: Option<WatchFailed>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct WatchFailed {
    #[serde(default)]
    channel: String,
    #[serde(default)]
    error: String,
}

/// Classifies one line (without its newline; a UTF-8 BOM and `\r` are tolerated).
pub fn classify(line: &str) -> Incoming {
    let text = line.trim_start_matches('\u{feff}').trim_end_matches('\r');
    let bad = |reason: String| Incoming::Malformed {
        raw: line.to_string(),
        reason,
    };
    let any: Any = match serde_json::from_str(text) {
        Ok(a) => a,
        Err(e) => return bad(format!("not a JSON object: {e}")),
    };
    if let Some(ev) = any.event {
        return match serde_json::from_value::<EventLine>(ev) {
            Ok(e) => Incoming::Event(e),
            Err(e) => bad(format!("event without channel/record_id/xml: {e}")),
        };
    }
    if let (Some(id), Some(ok)) = (any.id, any.ok) {
        return Incoming::Response(Response {
            id,
            ok,
            result: any.result,
            error: any.error,
            warnings: any.warnings,
        });
    }
    if any.ready == Some(true) {
        return Incoming::Ready {
            version: any.version.unwrap_or_default(),
        };
    }
    if let Some(w) = any.watch_failed {
        return Incoming::WatchFailed {
            channel: w.channel,
            error: w.error,
        };
    }
    if let Some(l) = any.log {
        return Incoming::Log(l);
    }
    bad("neither a response, an event, a log line nor the ready line".into())
}

/// PowerShell's `ConvertTo-Json` writes one result as an object and several as an array; this
/// always gives the list.
pub fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("value") && o.contains_key("Count") => {
            o.get("value").map(as_list).unwrap_or_default()
        }
        other => vec![other],
    }
}

/// A result that should be text (a MAC, a cursor): strings as they are, other scalars printed.
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        assert_eq!(
            classify(r#"{"ready":true,"version":"5.1.17763.1"}"#),
            Incoming::Ready {
                version: "5.1.17763.1".into()
            }
        );
        let Incoming::Response(r) = classify("{\"id\":3,\"ok\":false,\"error\":\"boom\"}\r") else {
            panic!()
        };
        assert_eq!((r.id, r.ok, r.error.as_deref()), (3, false, Some("boom")));
        let Incoming::Event(e) =
            classify(r#"{"event":{"channel":"C","record_id":9,"xml":"<Event/>"}}"#)
        else {
            panic!()
        };
        assert_eq!(e.record_id, 9);
        assert!(matches!(classify("garbage"), Incoming::Malformed { .. }));
        assert!(matches!(
            classify(r#"{"event":{"channel":"C"}}"#),
            Incoming::Malformed { .. }
        ));
        assert!(matches!(classify("{}"), Incoming::Malformed { .. }));
    }

    #[test]
    fn one_or_many_results() {
        let one = serde_json::json!({"a":1});
        let many = serde_json::json!([{"a":1},{"a":2}]);
        let wrapped = serde_json::json!({"value":[1,2,3],"Count":3});
        assert_eq!(as_list(&one).len(), 1);
        assert_eq!(as_list(&many).len(), 2);
        assert_eq!(as_list(&wrapped).len(), 3);
        assert_eq!(as_list(&Value::Null).len(), 0);
    }

    #[test]
    fn requests_serialize_as_one_line() {
        let r = Request {
            id: 1,
            op: "start".into(),
            script: "Get-VM -Id 'a\nb'".into(),
            control: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }

    /// issue 17: "Büro-01" must reach an OEM-code-page stdin intact.
    #[test]
    fn request_lines_are_ascii_and_mean_the_same() {
        let r = Request {
            id: 2,
            op: "inventory".into(),
            script: "Get-VM -Name 'Büro-01' | 'Carte réseau' ‘q’ 桌面 \u{1F600} \u{7f}".into(),
            control: None,
        };
        let line = request_line(&r);
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line}");
        assert!(line.contains("B\\u00fcro-01"), "{line}");
        assert!(line.contains("\\ud83d\\ude00"), "{line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }

    #[test]
    fn watch_failures_and_warnings_are_their_own_lines() {
        assert_eq!(
            classify(r#"{"watch_failed":{"channel":"C","error":"The handle is invalid."}}"#),
            Incoming::WatchFailed {
                channel: "C".into(),
                error: "The handle is invalid.".into()
            }
        );
        let Incoming::Response(r) =
            classify(r#"{"id":4,"ok":true,"result":null,"warnings":["WARNING: x"]}"#)
        else {
            panic!()
        };
        assert_eq!(r.warnings, ["WARNING: x"]);
    }
}
