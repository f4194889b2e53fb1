//! Quoting of command-line words for systemd unit files (`systemd.service(5)`, "Command lines").
//!
//! systemd splits `ExecStart=` at whitespace, honours double quotes, unescapes C-style escapes
//! (`\\`, `\"`, `\n`, `\xNN`, …), expands specifiers (`%x`) and environment variables (`$X`,
//! `${X}`). A word made only of [`is_plain`] characters is written as it is; any other word is
//! put in double quotes with `\` and `"` escaped, control characters written as `\n`, `\t` or
//! `\xNN`, `%` doubled and `$` doubled, so systemd hands the program exactly the original word.
//! No shell is involved anywhere.

/// Whether `c` may appear in an unquoted word: it is neither whitespace, a quote, a backslash,
/// a specifier or variable sign, nor `;` (a command separator when it stands alone).
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | ',' | ':' | '=' | '+' | '@')
}

/// `word` as one word of a systemd command line (see the module documentation).
pub fn quote_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_plain) {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The words joined into one systemd command line, each quoted as needed.
pub fn command_line<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(quote_word)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// systemd's reading of a command line, as `systemd.service(5)` describes it, for the tests:
    /// split at unquoted whitespace, `"…"` quoting, C escapes inside quotes and out, `%%` → `%`,
    /// `$$` → `$`. Anything else after `%` or `$` (a specifier or a variable) is an error here,
    /// since the renderer must never leave one.
    pub(crate) fn split_systemd(line: &str) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek().is_none() {
                return Ok(words);
            }
            let mut word = String::new();
            let mut quoted = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => quoted = !quoted,
                    ' ' | '\t' if !quoted => break,
                    '\\' => match chars.next().ok_or("trailing backslash")? {
                        'n' => word.push('\n'),
                        't' => word.push('\t'),
                        'r' => word.push('\r'),
                        '\\' => word.push('\\'),
                        '"' => word.push('"'),
                        'x' => {
                            let hex: String = chars.by_ref().take(2).collect();
                            let v = u8::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                            word.push(char::from(v));
                        }
                        other => return Err(format!("unknown escape \\{other}")),
                    },
                    '%' | '$' => {
                        if chars.next() != Some(c) {
                            return Err(format!("unescaped {c}"));
                        }
                        word.push(c);
                    }
                    c if c.is_control() => return Err(format!("raw control character {c:?}")),
                    c => word.push(c),
                }
            }
            if quoted {
                return Err("unterminated quote".to_owned());
            }
            words.push(word);
        }
    }

    #[test]
    fn quoting_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("plain path", "/usr/bin/wgmeshd", "/usr/bin/wgmeshd"),
            ("flag", "--listen-port", "--listen-port"),
            (
                "cidr list",
                "10.0.0.0/24,fd00::/64",
                "10.0.0.0/24,fd00::/64",
            ),
            ("space", "my dir", "\"my dir\""),
            ("double quote", "a\"b", "\"a\\\"b\""),
            ("single quote", "it's", "\"it's\""),
            ("dollar", "$HOME", "\"$$HOME\""),
            ("braced variable", "${X}", "\"$${X}\""),
            ("percent", "100%", "\"100%%\""),
            ("specifier", "%n", "\"%%n\""),
            ("backslash", "a\\b", "\"a\\\\b\""),
            ("newline", "a\nb", "\"a\\nb\""),
            ("tab", "a\tb", "\"a\\tb\""),
            ("bell", "a\u{7}b", "\"a\\x07b\""),
            ("non-ASCII", "grüße/网", "\"grüße/网\""),
            ("empty", "", "\"\""),
            ("lone semicolon", ";", "\";\""),
        ];
        for (name, word, want) in cases {
            assert_eq!(quote_word(word), *want, "{name}");
        }
    }

    #[test]
    fn rendered_lines_split_back_into_the_same_words() {
        let words = [
            "/opt/wg mesh/bin/wgmeshd",
            "join",
            "--state-dir",
            "/var/lib/wg \"mesh\"",
            "--socket-group",
            "$USER %i ${HOME} \\ ' ; ",
            "--interface",
            "wg0",
            "grüße\n\t\r\u{1}",
            "",
            "trailing\\",
        ];
        let line = command_line(words);
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(split_systemd(&line).unwrap(), words);
    }

    #[test]
    fn the_test_parser_rejects_what_systemd_would_expand() {
        assert!(split_systemd("a $HOME").is_err());
        assert!(split_systemd("a %n").is_err());
        assert!(split_systemd("\"open").is_err());
        assert_eq!(split_systemd("a  \"b c\"").unwrap(), ["a", "b c"]);
    }
}
