//! The script the child runs: `bootstrap.ps1` (a read-eval loop over stdin, the event-log
//! watchers, and the helper functions generated scripts call). Two ways to load it:
//! - `-Command -` (default): sent as the first stdin line, base64-encoded so that it is one
//!   complete statement, and run with `Invoke-Expression` — a pattern endpoint protection
//!   (AMSI/EDR) may flag;
//! - `-File` ([`DEFAULT_FILE`]): written once by `macpool hyperv bootstrap-script`, signable for
//!   AllSigned sites; the agent checks that the file still is this version's bootstrap.

/// The bootstrap PowerShell: the shared inventory collector (`macpool-audit`'s `inventory.ps1`,
/// also used by `macpool hyperv export-script`), then the agent's loop (`bootstrap.ps1`).
pub fn bootstrap() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{}\n{}",
            macpool_audit::script::INVENTORY_PS1,
            include_str!("bootstrap.ps1")
        )
    });
    &TEXT
}

/// The one line that loads the bootstrap in a `powershell.exe -Command -` child.
pub fn loader_line() -> String {
    format!(
        "$macpoolBootstrap = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('{}')); Invoke-Expression $macpoolBootstrap",
        base64(bootstrap().as_bytes())
    )
}

/// Where `-File` mode expects the bootstrap by default (ProgramData: machine-wide, writable by
/// administrators only).
pub const DEFAULT_FILE: &str = r"C:\ProgramData\macpool\agent-bootstrap.ps1";

/// The bootstrap as a `.ps1` file: UTF-8 with a BOM (Windows PowerShell 5.1 reads a BOM-less
/// script in the ANSI code page) and CRLF line ends.
pub fn file_bytes() -> Vec<u8> {
    let mut out = b"\xef\xbb\xbf".to_vec();
    out.extend_from_slice(
        bootstrap()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n")
            .as_bytes(),
    );
    out
}

/// Whether a `-File` bootstrap is this version's (a signature block may follow it).
pub fn file_matches(bytes: &[u8]) -> bool {
    let bytes = bytes
        .strip_prefix(b"\xef\xbb\xbf".as_slice())
        .unwrap_or(bytes);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    text.replace("\r\n", "\n").starts_with(bootstrap())
}

/// The marker the stand-in looks for to accept the loader line.
pub const LOADER_PREFIX: &str = "$macpoolBootstrap = ";

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes [`base64`] (for the stand-in's check and tests).
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for q in bytes.chunks(4) {
        let pad = q.iter().rev().take_while(|c| **c == b'=').count();
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&b[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_carries_the_bootstrap_intact() {
        let line = loader_line();
        assert!(!line.contains('\n'));
        let b64 = crate::powershell::quote::literals(&line).unwrap().remove(0);
        assert_eq!(unbase64(&b64).unwrap(), bootstrap().as_bytes());
        for s in ["", "a", "ab", "abc", "abcd"] {
            assert_eq!(unbase64(&base64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }

    #[test]
    fn the_file_form_is_recognised_also_when_signed() {
        let mut f = file_bytes();
        assert!(file_matches(&f));
        f.extend_from_slice(b"\r\n# SIG # Begin signature block\r\n# MIIe...\r\n");
        assert!(file_matches(&f));
        assert!(!file_matches(b"\xef\xbb\xbf# an older bootstrap\r\n"));
    }

    #[test]
    fn bootstrap_defines_what_the_scripts_call() {
        for f in [
            "function Get-MacpoolInventory",
            "function Get-MacpoolCursor",
            "function Start-MacpoolWatch",
            "function Stop-MacpoolWatch",
            "EventLogWatcher(q, null, after >= 0)",
            "[ScriptBlock]::Create",
        ] {
            assert!(bootstrap().contains(f), "{f}");
        }
    }
}
