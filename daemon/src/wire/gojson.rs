//! JSON exactly as Go's `encoding/json` writes it: compact, struct field order, and Go's HTML-safe
//! escaping of `<`, `>`, `&`, U+2028 and U+2029. Byte-identical output matters for the compat
//! fixture and for anyone comparing captures from Go and Rust nodes.

use std::io;

use serde::Serialize;
use serde::de::{Deserialize, Deserializer};
use serde_json::ser::{CompactFormatter, Formatter};

/// serde_json formatter that adds Go's extra string escapes to the compact format.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    // Everything else is the compact format, which matches Go (including `\b`, `\f`, `\n`, `\r`,
    // `\t` short escapes and `\u00XX` for other control characters).
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        CompactFormatter.write_char_escape(writer, char_escape)
    }
}

/// Serialises `value` as Go's `json.Marshal` would.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Our payload types are plain structs of strings, integers, bools and vectors: serialising
    // them into memory cannot fail.
    if value.serialize(&mut ser).is_err() {
        unreachable!("payload types serialise infallibly");
    }
    out
}

/// Deserialises a field that Go would leave at its zero value when the JSON holds `null`.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `skip_serializing_if` helper for Go's `omitempty` on booleans.
pub fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let s = "a<b>c&d\u{2028}e\u{2029}f/g\"h\\i\nj\u{1}k\u{8}l\u{c}";
        let got = String::from_utf8(to_go_json(&s)).unwrap();
        assert_eq!(
            got,
            r#""a\u003cb\u003ec\u0026d\u2028e\u2029f/g\"h\\i\nj\u0001k\bl\f""#
        );
    }

    #[test]
    fn plain_strings_are_untouched() {
        assert_eq!(to_go_json(&"héllo wörld"), "\"héllo wörld\"".as_bytes());
    }
}
