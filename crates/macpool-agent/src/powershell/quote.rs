//! PowerShell single-quoted string literals: the only way a value from outside (a VM name, an
//! adapter name, an id) ever enters a script.
//!
//! Inside `'…'` PowerShell expands nothing (`$`, backticks, `"` are plain characters); the only
//! special characters are the single quotes, and PowerShell's tokenizer treats the typographic
//! look-alikes U+2018 `‘`, U+2019 `’`, U+201A `‚` and U+201B `‛` exactly like `'`. A quote is
//! written by doubling it, so every one of the five is doubled (as itself). [`literals`] is the
//! inverse, used by the stand-in and by the round-trip property test.

/// The characters PowerShell accepts as a single quote.
pub const SINGLE_QUOTES: [char; 5] = ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'];

pub fn is_single_quote(c: char) -> bool {
    SINGLE_QUOTES.contains(&c)
}

/// `value` as a single-quoted PowerShell literal.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if is_single_quote(c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Why a script's literals could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LiteralError {
    #[error("unterminated single-quoted string starting at character {0}")]
    Unterminated(usize),
}

/// Every single-quoted literal of `script`, in order, unescaped; text outside literals is
/// skipped. Mirrors PowerShell's tokenizer for `'…'` (a quote followed by a quote is one quote
/// character, the second one; any other quote ends the literal). Double-quoted strings and
/// comments are not expected in generated scripts outside the fixed parts and are not special.
pub fn literals(script: &str) -> Result<Vec<String>, LiteralError> {
    let mut out = Vec::new();
    let mut chars = script.chars().enumerate().peekable();
    while let Some((start, c)) = chars.next() {
        if !is_single_quote(c) {
            continue;
        }
        let mut lit = String::new();
        loop {
            match chars.next() {
                None => return Err(LiteralError::Unterminated(start)),
                Some((_, q)) if is_single_quote(q) => match chars.peek() {
                    Some(&(_, q2)) if is_single_quote(q2) => {
                        lit.push(q2);
                        chars.next();
                    }
                    _ => break,
                },
                Some((_, other)) => lit.push(other),
            }
        }
        out.push(lit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_quoted() {
        assert_eq!(quote("desk 01"), "'desk 01'");
        assert_eq!(quote("O'Brien"), "'O''Brien'");
        assert_eq!(quote("$env:X `n \"x\""), "'$env:X `n \"x\"'");
        assert_eq!(quote("‘a’‚b‛"), "'‘‘a’’‚‚b‛‛'");
        assert_eq!(quote("Ünïcødé 桌面"), "'Ünïcødé 桌面'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn literals_are_read_back_in_order() {
        let s = format!(
            "Get-VM -Id {} | Where-Object Name -eq {}",
            quote("a'b"),
            quote("’$x")
        );
        assert_eq!(literals(&s).unwrap(), vec!["a'b", "’$x"]);
        assert_eq!(literals("x 'abc"), Err(LiteralError::Unterminated(2)));
    }

    proptest! {
        #[test]
        fn any_string_round_trips(s in any::<String>(), t in "[ '‘’‚‛$`\"a-zé]{0,12}") {
            let script = format!("Cmd -A {} -B {};", quote(&s), quote(&t));
            prop_assert_eq!(literals(&script).unwrap(), vec![s, t]);
        }
    }
}
