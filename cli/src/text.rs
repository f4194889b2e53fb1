//! Text building blocks every command renders with: aligned `Key: value` blocks, tables,
//! relative times, sizes, short keys and timestamps. Pure; no clock is read here (ages come from
//! the API's `*_seconds_ago` fields, timestamps from the events).

use std::fmt::Write as _;

/// `Key: value` lines with the values aligned; a value may continue on further lines, indented
/// to the value column.
#[derive(Debug, Default)]
pub struct Block {
    rows: Vec<(String, Vec<String>)>,
}

impl Block {
    /// Adds a row.
    pub fn row(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.rows.push((key.to_owned(), vec![value.into()]));
        self
    }

    /// Adds a line under the last row's value (it belongs to that row).
    pub fn more(&mut self, line: impl Into<String>) -> &mut Self {
        if let Some((_, lines)) = self.rows.last_mut() {
            lines.push(line.into());
        }
        self
    }

    /// The text, every line ending in a newline.
    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0)
            + 1;
        let mut out = String::new();
        for (key, lines) in &self.rows {
            for (i, line) in lines.iter().enumerate() {
                let label = if i == 0 {
                    format!("{key}:")
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{}", format!("{label:<width$}  {line}").trim_end());
            }
        }
        out
    }
}

/// Columns separated by two spaces, left-aligned, no trailing blanks.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `45s`, `3m 12s`, `2h 5m`, `3d 4h`: the two largest units, enough to read at a glance.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `4s ago`.
pub fn ago(secs: u64) -> String {
    format!("{} ago", duration(secs))
}

/// `512 B`, `1.2 KiB`, `3.4 MiB`, …
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Display only: f64 rounding does not show at one decimal.
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The first 8 characters of a key: enough to tell peers apart in a table and to name one to
/// `peers get`.
pub fn short_key(key: &str) -> &str {
    key.char_indices().nth(8).map_or(key, |(i, _)| &key[..i])
}

/// `alpha (PYtJ5VmQ)`, or just the short key without a hostname.
pub fn peer_name(hostname: &str, key: &str) -> String {
    if hostname.is_empty() {
        short_key(key).to_owned()
    } else {
        format!("{hostname} ({})", short_key(key))
    }
}

/// `-` for nothing.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// `a, b, c`, or `-` for none.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// `unix_ms` as an RFC 3339 UTC time to the second: `2026-12-01T13:56:24Z`. UTC, so the output
/// does not depend on the machine's time zone.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        let table = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m 0s"),
            (3599, "59m 59s"),
            (3600, "1h 0m"),
            (86_399, "23h 59m"),
            (86_400, "1d 0h"),
            (200_000, "2d 7h"),
        ];
        for (secs, want) in table {
            assert_eq!(duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let rows = [
            ["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            ["long".to_owned(), "x".to_owned(), "".to_owned()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x\n");
    }

    #[test]
    fn block_aligns_values_and_continues_rows() {
        let mut b = Block::default();
        b.row("A", "1").row("Long key", "2").more("2b").row("C", "");
        assert_eq!(
            b.render(),
            "A:         1\nLong key:  2\n           2b\nC:\n"
        );
    }

    #[test]
    fn sizes_in_binary_units() {
        let table = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1234, "1.2 KiB"),
            (5 * 1024 * 1024 + 1, "5.0 MiB"),
            (u64::MAX, "16384.0 PiB"),
        ];
        for (n, want) in table {
            assert_eq!(bytes(n), want, "{n}");
        }
    }

    #[test]
    fn utc_times() {
        let table = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_763_780_000_999, "2025-11-22T02:53:20Z"),
            (4_102_444_799_000, "2099-12-31T23:59:59Z"),
        ];
        for (ms, want) in table {
            assert_eq!(utc(ms), want, "{ms}");
        }
    }

    #[test]
    fn short_keys_and_names() {
        let key = "PYtJ5VmQqBAr7dnbTmCR1xP/v+/jrHmuTnGC4Aixu+o=";
        assert_eq!(short_key(key), "PYtJ5VmQ");
        assert_eq!(short_key("k1"), "k1");
        assert_eq!(peer_name("alpha", key), "alpha (PYtJ5VmQ)");
        assert_eq!(peer_name("", key), "PYtJ5VmQ");
    }
}
