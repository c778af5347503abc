//! HTML built as text, safe by construction: every value from a VM, host, pool, file or user
//! goes through [`Esc`] (or `attr`/`text`), which escapes `& < > " '`; markup is only ever a
//! string literal of this crate. One page layout for every page.

use std::fmt::{self, Display, Write};

/// A value written escaped for HTML text and quoted attributes alike.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

/// Percent-encodes a value for a URL path segment or query value.
pub struct Url<'a>(pub &'a str);

impl Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                f.write_char(b as char)?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// A page being written. `w!` appends formatted markup; values must be wrapped in [`Esc`].
#[derive(Default)]
pub struct Html(pub String);

#[macro_export]
macro_rules! w {
    ($h:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = write!($h.0, $($arg)*);
    }};
}

/// Which top-level section a page belongs to (highlighted in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Pools,
    Conflicts,
    Hosts,
    History,
    Audit,
    Tokens,
    None,
}

/// What the layout needs to know about the viewer.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
}

/// Wraps a page body in the layout: navigation, search box, sign-out.
pub fn page(title: &str, section: Section, viewer: Option<&Viewer>, body: Html) -> String {
    let mut h = Html::default();
    w!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · macpool</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <link rel=\"icon\" href=\"/assets/favicon.svg\" type=\"image/svg+xml\">\
         <script src=\"/assets/app.js\" defer></script></head><body>",
        Esc(title)
    );
    w!(
        h,
        "<header class=\"top\"><a class=\"brand\" href=\"/pools\">macpool</a>"
    );
    if let Some(v) = viewer {
        w!(h, "<nav aria-label=\"Sections\"><ul>");
        let items = [
            (Section::Pools, "/pools", "Pools"),
            (Section::Conflicts, "/conflicts", "Conflicts"),
            (Section::Hosts, "/hosts", "Hosts"),
            (Section::History, "/history", "History"),
            (Section::Audit, "/audit", "Audit"),
            (Section::Tokens, "/tokens", "Tokens"),
        ];
        for (s, href, label) in items {
            if s == Section::Tokens && v.role != "admin" {
                continue;
            }
            let current = if s == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            w!(h, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        w!(
            h,
            "</ul></nav><form role=\"search\" action=\"/search\" method=\"get\">\
             <label for=\"q\" class=\"sr\">Search</label>\
             <input id=\"q\" name=\"q\" type=\"search\" placeholder=\"MAC, VM, host…\" required>\
             <button type=\"submit\">Search</button></form>\
             <form method=\"post\" action=\"/logout\" class=\"signout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <span class=\"who\">{} <small>({})</small></span>\
             <button type=\"submit\">Sign out</button></form>",
            Esc(v.csrf),
            Esc(v.name),
            Esc(v.role)
        );
    }
    w!(h, "</header><main id=\"main\">");
    h.0.push_str(&body.0);
    w!(h, "</main></body></html>");
    h.0
}

/// A MAC as the dashboard spells it everywhere: IEEE, `00-15-5D-F0-00-7A`.
pub fn ieee(m: macpool_core::Mac) -> String {
    m.display(macpool_core::mac::MacFormat::Ieee).to_string()
}

/// A count with thousands separators: 1,048,576.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(h: &mut Html, csrf: &str) {
    w!(
        h,
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        Esc(csrf)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        let hostile = r#"<script>alert(1)</script>"'><img src=x onerror=alert(2)>&"#;
        let out = Esc(hostile).to_string();
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('"'));
        assert!(!out.contains('\''));
        assert_eq!(
            out,
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&gt;&lt;img src=x onerror=alert(2)&gt;&amp;"
        );
    }

    #[test]
    fn urls_encode_everything_but_unreserved_characters() {
        assert_eq!(Url("a b/ü?&").to_string(), "a%20b%2F%C3%BC%3F%26");
        assert_eq!(Url("00-15-5D-F0-00-7A").to_string(), "00-15-5D-F0-00-7A");
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_048_576), "1,048,576");
    }
}
