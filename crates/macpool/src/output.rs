//! How results reach people (aligned tables) and scripts (`--json`), and MAC spelling on output.

use macpool_core::{Mac, MacFormat};
use serde::Serialize;
use serde_json::Value;

/// Output settings from the global flags.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
    pub mac_format: MacFormat,
}

impl Output {
    /// Re-spells a MAC string from the server in the chosen dialect.
    pub fn mac(&self, s: &str) -> String {
        match Mac::parse(s) {
            Ok(m) => m.display(self.mac_format).to_string(),
            Err(_) => s.to_string(),
        }
    }

    pub fn opt_mac(&self, s: &Option<String>) -> String {
        s.as_deref()
            .map(|m| self.mac(m))
            .unwrap_or_else(|| "-".into())
    }

    /// Prints a value as pretty JSON, MACs re-spelled.
    pub fn print_json<T: Serialize>(&self, value: &T) {
        let mut v = serde_json::to_value(value).expect("DTOs serialize");
        self.respell(&mut v);
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    }

    fn respell(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if matches!(k.as_str(), "mac" | "first" | "last")
                        && let Value::String(s) = val
                    {
                        *s = self.mac(s);
                    } else {
                        self.respell(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.respell(i)),
            _ => {}
        }
    }
}

/// Left-aligned columns separated by two spaces; numeric-looking columns right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..cols)
        .map(|i| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.get(i).is_some_and(|c| is_number(c) || c == "-"))
                && rows.iter().any(|r| r.get(i).is_some_and(|c| is_number(c)))
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            let last = i + 1 == cols;
            if numeric[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if !last {
                    s.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                s.push_str("  ");
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn is_number(c: &str) -> bool {
    c.trim_end_matches('%').parse::<f64>().is_ok()
}

/// `key  value` lines for a single record.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<w$}  {v}\n"))
        .collect()
}

pub fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_right_align_numbers() {
        let t = table(
            &["NAME", "FREE"],
            &[
                vec!["a".into(), "5".into()],
                vec!["longer".into(), "250".into()],
            ],
        );
        assert_eq!(t, "NAME    FREE\na          5\nlonger   250\n");
    }

    #[test]
    fn json_macs_follow_the_chosen_dialect() {
        let out = Output {
            json: true,
            mac_format: MacFormat::Unix,
        };
        let mut v = serde_json::json!({"mac": "00-15-5D-00-00-01", "runs": [{"first": "00-15-5D-00-00-02", "count": 1}]});
        out.respell(&mut v);
        assert_eq!(v["mac"], "00:15:5d:00:00:01");
        assert_eq!(v["runs"][0]["first"], "00:15:5d:00:00:02");
    }
}
