//! Limits an XML text must meet before it reaches `roxmltree`. Its parser recurses once per
//! nesting level, so XML nested ~15,000 levels deep (a 100 KB file) overflows the stack and aborts
//! the whole process; and it expands internal DTD entities, so one large entity referenced
//! 10,000 times becomes hundreds of megabytes of text. Neither libvirt (`virsh dumpxml`) nor
//! wevtutil ever writes a DTD or nests more than a dozen levels, so both are refused outright,
//! with the line, and nothing is expanded.

/// Deepest element nesting read. libvirt's snapshot XML (the deepest it writes) stays under 15
/// levels; this also keeps the parser's recursion far inside a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 256;

fn line_at(bytes: &[u8], at: usize) -> usize {
    memchr::memchr_iter(b'\n', &bytes[..at.min(bytes.len())]).count() + 1
}

/// `Err` says why `text` must not be parsed: elements nested deeper than [`MAX_DEPTH`], or an
/// entity declaration (`<!ENTITY`). A linear scan without allocation; it never rejects
/// well-formed XML within the limits, and leaves every other error to the parser.
pub fn check(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let past = |from: usize, end: &[u8]| {
        memchr::memmem::find(&b[from.min(b.len())..], end).map_or(b.len(), |p| from + p + end.len())
    };
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'<', &b[i..]) {
        let at = i + off;
        let rest = &b[at..];
        if rest.starts_with(b"<!--") {
            i = past(at + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = past(at + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = past(at + 2, b"?>");
        } else if rest.starts_with(b"<!ENTITY") {
            return Err(format!(
                "the XML declares an entity (<!ENTITY> in a DTD) at line {}: libvirt never writes \
                 a DTD, and entities are not expanded (an entity can multiply the text a \
                 thousandfold); not read",
                line_at(b, at)
            ));
        } else if rest.starts_with(b"<!") {
            // <!DOCTYPE …: step inside, so that the declarations of its internal subset are seen
            i = at + 2;
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = at + 2;
        } else {
            // a start tag: it ends at the first '>' outside a quoted attribute value
            let mut j = at + 1;
            let mut quote = None;
            while j < b.len() {
                match (quote, b[j]) {
                    (None, q @ (b'"' | b'\'')) => quote = Some(q),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if j >= b.len() {
                return Ok(()); // truncated: the parser says where
            }
            if b[j - 1] != b'/' {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "XML nested more than {MAX_DEPTH} levels deep (at line {}): not an \
                         export (libvirt nests a dozen levels at most); not read",
                        line_at(b, at)
                    ));
                }
            }
            i = j + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "<a x='>'>".repeat(levels), "</a>".repeat(levels))
    }

    #[test]
    fn depth_is_counted_outside_comments_cdata_quotes_and_empty_tags() {
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
        let why = check(&format!("<r>\n{}", nested(MAX_DEPTH))).unwrap_err();
        assert!(
            why.contains("more than 256 levels deep (at line 2)"),
            "{why}"
        );
        let flat = "<r><!-- <a><a> --><![CDATA[<a><a>]]><?pi <a> ?><b/><c a='<'/></r>".repeat(300);
        assert_eq!(check(&flat), Ok(()));
        assert_eq!(check(&"<a/>".repeat(10_000)), Ok(()));
    }

    #[test]
    fn entity_declarations_are_refused_a_plain_doctype_is_not() {
        assert_eq!(check("<!DOCTYPE domain><domain/>"), Ok(()));
        let bomb = "<?xml version='1.0'?>\n<!DOCTYPE d [\n <!ENTITY e 'xxxx'>\n]>\n<d>&e;&e;</d>";
        let why = check(bomb).unwrap_err();
        assert!(why.contains("entity") && why.contains("line 3"), "{why}");
        // in a comment it declares nothing
        assert_eq!(check("<!-- <!ENTITY e 'x'> --><d/>"), Ok(()));
    }

    #[test]
    fn the_deepest_allowed_document_parses_on_a_small_stack() {
        let text = nested(MAX_DEPTH);
        let handle = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || roxmltree::Document::parse(&text).map(|d| d.descendants().count()))
            .unwrap();
        assert_eq!(handle.join().unwrap(), Ok(MAX_DEPTH + 1));
    }
}
