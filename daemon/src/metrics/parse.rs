//! A strict reader of the Prometheus text exposition format 0.0.4, for tests and benches that
//! check what `GET /metrics` serves: every line must be a `# HELP`, a `# TYPE` or a sample; every
//! sample's family must have its HELP and TYPE before it; histograms must be cumulative up to
//! `+Inf` = `_count`. Stricter than Prometheus itself (no blank lines, no other comments, no
//! repeated sample), so what passes here scrapes everywhere.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample of a parsed exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with a histogram's `_bucket`/`_sum`/`_count` suffix.
    pub name: String,
    /// Labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed exposition: samples, and the type of each family.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Family name → `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub types: HashMap<String, String>,
}

/// Why a text is not valid exposition format (the message names the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl Parsed {
    /// The value of the sample `name` with exactly `labels`, if present.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
    }
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// The family a sample belongs to (histogram series carry a suffix).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    name
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

/// Parses text exposition format 0.0.4 strictly: every line is a HELP, a TYPE or a sample;
/// every sample's family has HELP and TYPE before it; TYPE and HELP at most once per family;
/// no sample (name and labels) twice; histograms have cumulative buckets ending in `+Inf`
/// equal to `_count`.
///
/// # Errors
///
/// The first line that breaks a rule, with its number.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    let mut helps = HashSet::new();
    let mut seen = HashSet::new();
    if !text.ends_with('\n') {
        return Err(ParseError("the exposition must end with a newline".into()));
    }
    for (n, line) in text.lines().enumerate() {
        let err = |e: String| ParseError(format!("line {}: {e}: {line:?}", n + 1));
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest
                .split_once(' ')
                .ok_or_else(|| err("HELP without text".into()))?;
            if !is_name(name, true) || !helps.insert(name.to_owned()) {
                return Err(err("bad or repeated HELP".into()));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| err("TYPE without type".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(err(format!("unknown type {kind}")));
            }
            if !is_name(name, true)
                || parsed
                    .types
                    .insert(name.to_owned(), kind.to_owned())
                    .is_some()
            {
                return Err(err("bad or repeated TYPE".into()));
            }
        } else if line.starts_with('#') || line.is_empty() {
            return Err(err("unexpected comment or empty line".into()));
        } else {
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| err("no value".into()))?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .ok_or_else(|| err("unclosed labels".into()))?;
                    (name, parse_labels(inner).map_err(err)?)
                }
                None => (series, BTreeMap::new()),
            };
            if !is_name(name, true) {
                return Err(err("bad metric name".into()));
            }
            let family = family_of(name, &parsed.types);
            if !parsed.types.contains_key(family) || !helps.contains(family) {
                return Err(err(format!("sample of {family} before its HELP and TYPE")));
            }
            if !seen.insert(format!("{name}{labels:?}")) {
                return Err(err("duplicate sample".into()));
            }
            parsed.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value: parse_value(value).map_err(err)?,
            });
        }
    }
    for (family, kind) in &parsed.types {
        if kind == "histogram" {
            check_histogram(&parsed, family)?;
        }
    }
    Ok(parsed)
}

fn check_histogram(parsed: &Parsed, family: &str) -> Result<(), String> {
    let bucket = format!("{family}_bucket");
    let buckets: Vec<(f64, f64)> = parsed
        .samples
        .iter()
        .filter(|s| s.name == bucket)
        .map(|s| {
            let le = s.labels.get("le").ok_or(format!("{bucket} without le"))?;
            Ok((parse_value(le)?, s.value))
        })
        .collect::<Result<_, String>>()?;
    let ordered = buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
    let last = buckets.last().ok_or(format!("{family} has no buckets"))?;
    let count = parsed
        .value(&format!("{family}_count"), &[])
        .ok_or(format!("{family} has no _count"))?;
    if !ordered || last.0 != f64::INFINITY || last.1 != count {
        return Err(format!(
            "{family}: buckets not cumulative up to +Inf = _count"
        ));
    }
    parsed
        .value(&format!("{family}_sum"), &[])
        .ok_or(format!("{family} has no _sum"))?;
    Ok(())
}

/// The counter and histogram samples whose value went down from `before` to `after`, described
/// (empty when every counter only grew). Samples that appear only in `after` are new series.
pub fn counters_decreased(before: &Parsed, after: &Parsed) -> Vec<String> {
    let mut down = Vec::new();
    for s in &after.samples {
        let family = family_of(&s.name, &after.types);
        let kind = after.types.get(family).map(String::as_str);
        if !matches!(kind, Some("counter" | "histogram")) {
            continue;
        }
        let was = before
            .samples
            .iter()
            .find(|b| b.name == s.name && b.labels == s.labels);
        if let Some(was) = was
            && s.value < was.value
        {
            down.push(format!(
                "{} {:?} went down from {} to {}",
                s.name, s.labels, was.value, s.value
            ));
        }
    }
    down
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_refuses_what_prometheus_would() {
        let bad = [
            "wgmesh_x 1\n",                                                       // no HELP/TYPE
            "# HELP wgmesh_x x\n# TYPE wgmesh_x gauge\nwgmesh_x one\n",           // not a number
            "# HELP wgmesh_x x\n# TYPE wgmesh_x gauge\nwgmesh_x{a=\"1} 1\n",      // unterminated
            "# HELP wgmesh_x x\n# TYPE wgmesh_x meter\nwgmesh_x 1\n",             // unknown type
            "# HELP wgmesh_x x\n# TYPE wgmesh_x gauge\nwgmesh_x 1\nwgmesh_x 2\n", // twice
            "# HELP wgmesh_x x\n# TYPE wgmesh_x gauge\nwgmesh_x 1",               // no newline
            "# HELP wgmesh_x x\n# TYPE wgmesh_x gauge\n\nwgmesh_x 1\n",           // blank line
        ];
        for text in bad {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
        let good = "# HELP wgmesh_x x\n# TYPE wgmesh_x gauge\nwgmesh_x{a=\"q\\\"\"} 1.5\n";
        let p = parse(good).unwrap();
        assert_eq!(p.value("wgmesh_x", &[("a", "q\"")]), Some(1.5));
    }

    #[test]
    fn a_counter_that_goes_down_is_reported() {
        let text = |v: u32| format!("# HELP c_total c\n# TYPE c_total counter\nc_total {v}\n");
        let (one, two) = (parse(&text(1)).unwrap(), parse(&text(2)).unwrap());
        assert!(counters_decreased(&one, &two).is_empty());
        assert_eq!(counters_decreased(&two, &one).len(), 1);
    }
}
