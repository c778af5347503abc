//! Bytes to text and format detection. PowerShell writes UTF-16LE with a BOM (`Out-File`, `>` in
//! Windows PowerShell 5.1), UTF-8 with or without a BOM (PowerShell 7, `Set-Content -Encoding
//! UTF8`), or the ANSI code page (`Set-Content` in 5.1); all of them must read.

use std::borrow::Cow;

use crate::Format;

/// A file's content as UTF-8-or-ASCII-compatible bytes, with a note when it took decoding.
pub(crate) struct Decoded<'a> {
    pub text: Cow<'a, [u8]>,
    pub note: Option<String>,
}

fn utf16(bytes: &[u8], big_endian: bool) -> Vec<u8> {
    let units = bytes.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect::<String>()
        .into_bytes()
}

/// Strips a BOM and decodes UTF-16; `Err` for binary files, which are not inventories.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded<'_>, String> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return Ok(Decoded {
            text: Cow::Borrowed(rest),
            note: None,
        });
    }
    let le_bom = bytes.starts_with(&[0xFF, 0xFE]);
    let be_bom = bytes.starts_with(&[0xFE, 0xFF]);
    if le_bom || be_bom {
        return Ok(Decoded {
            text: Cow::Owned(utf16(&bytes[2..], be_bom)),
            note: None,
        });
    }
    // UTF-16 without a BOM: ASCII text with every other byte zero.
    let head = &bytes[..bytes.len().min(64)];
    if head.len() >= 4 && head.len().is_multiple_of(2) {
        let even_zero = head.iter().step_by(2).all(|b| *b == 0);
        let odd_zero = head.iter().skip(1).step_by(2).all(|b| *b == 0);
        if odd_zero != even_zero {
            return Ok(Decoded {
                text: Cow::Owned(utf16(bytes, even_zero)),
                note: Some(format!(
                    "read as UTF-16{} without a byte order mark",
                    if even_zero { "BE" } else { "LE" }
                )),
            });
        }
    }
    if memchr::memchr(0, &bytes[..bytes.len().min(8192)]).is_some() {
        return Err("binary file (contains NUL bytes), not an inventory".into());
    }
    Ok(Decoded {
        text: Cow::Borrowed(bytes),
        note: None,
    })
}

/// The bytes as `&str`; text that is not UTF-8 is read as Windows-1252/Latin-1 (what Windows
/// PowerShell 5.1's `Set-Content` writes), with a note saying so.
pub(crate) fn text(bytes: &[u8]) -> (Cow<'_, str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), None),
        Err(e) => (
            Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
            Some(format!(
                "not UTF-8 (first bad byte at offset {}): read as Windows-1252/Latin-1",
                e.valid_up_to()
            )),
        ),
    }
}

fn content_lines(prefix: &[u8]) -> impl Iterator<Item = &str> {
    prefix
        .split(|b| *b == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap_or("").trim())
        .filter(|l| !l.is_empty())
}

/// Guesses the format from the first 64 KiB.
pub(crate) fn detect(bytes: &[u8]) -> Format {
    let prefix = &bytes[..bytes.len().min(64 * 1024)];
    match prefix.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{' | b'[') => return Format::HypervJson,
        Some(b'<') => return Format::LibvirtXml,
        _ => {}
    }
    let mut lines = content_lines(prefix);
    let Some(first) = lines.next() else {
        return Format::MacList;
    };
    if first.to_ascii_lowercase().starts_with("address,hwaddr") {
        return Format::KeaLeases;
    }
    let isc_statement = |l: &str| {
        [
            "lease ",
            "host ",
            "server-duid ",
            "authoring-byte-order ",
            "failover peer ",
            "group ",
            "subclass ",
            "class ",
        ]
        .iter()
        .any(|k| l.starts_with(k))
            && l.ends_with(['{', ';'])
    };
    let isc_comment = |l: &str| l.starts_with('#') && l.contains("dhcpd.leases");
    if isc_comment(first)
        || content_lines(prefix)
            .filter(|l| !l.starts_with('#'))
            .take(5)
            .any(isc_statement)
    {
        return Format::IscDhcpLeases;
    }
    let mut fields = first.split_ascii_whitespace();
    let (f0, f1) = (fields.next().unwrap_or(""), fields.next());
    if f0 == "duid"
        || (!f0.is_empty()
            && f0.bytes().all(|b| b.is_ascii_digit())
            && f1.is_some_and(|m| macpool_core::Mac::parse(m).is_ok())
            && fields.count() >= 2)
    {
        return Format::DnsmasqLeases;
    }
    Format::MacList
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boms_and_utf16_decode_to_the_same_text() {
        let text = "[{\"MacAddress\":\"00155D018511\"}]";
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        let le_no_bom: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut utf8_bom = vec![0xEF, 0xBB, 0xBF];
        utf8_bom.extend_from_slice(text.as_bytes());
        for bytes in [le, be, le_no_bom, utf8_bom, text.as_bytes().to_vec()] {
            assert_eq!(&*decode(&bytes).unwrap().text, text.as_bytes());
        }
        assert!(decode(&[0x7F, b'E', b'L', b'F', 0, 0, 1]).is_err());
    }

    #[test]
    fn latin1_text_is_read_with_a_note() {
        let (s, note) = text(b"caf\xe9");
        assert_eq!(s, "caf\u{e9}");
        assert!(note.unwrap().contains("offset 3"));
    }

    #[test]
    fn detection_by_content() {
        assert_eq!(detect(b"\r\n  [ {"), Format::HypervJson);
        assert_eq!(
            detect(b"<?xml version='1.0'?><domain/>"),
            Format::LibvirtXml
        );
        assert_eq!(
            detect(b"address,hwaddr,client_id,valid_lifetime\n"),
            Format::KeaLeases
        );
        assert_eq!(
            detect(
                b"# The format of this file is documented in the dhcpd.leases(5) manual page.\n"
            ),
            Format::IscDhcpLeases
        );
        assert_eq!(
            detect(b"authoring-byte-order little-endian;\n"),
            Format::IscDhcpLeases
        );
        assert_eq!(
            detect(b"lease 10.0.0.5 {\n  starts 3 2015/10/14 12:00:00;\n"),
            Format::IscDhcpLeases
        );
        assert_eq!(
            detect(b"1445000000 00:15:5d:01:85:11 10.0.0.5 desk-01 *\n"),
            Format::DnsmasqLeases
        );
        assert_eq!(
            detect(b"00:15:5d:01:85:11\n00:15:5d:01:85:12\n"),
            Format::MacList
        );
        assert_eq!(
            detect(b"mac,label\n00:15:5d:01:85:11,desk\n"),
            Format::MacList
        );
        assert_eq!(detect(b""), Format::MacList);
    }
}
