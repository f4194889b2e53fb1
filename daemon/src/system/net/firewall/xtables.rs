//! The iptables side of the firewall (iptables-legacy, or iptables-nft where `nft` is not
//! installed), pure: tells the backend from `iptables -V`, reads `iptables -S`, decides whether
//! `FORWARD` gets our accept rule and how many rules of ours go, and builds the `iptables`/
//! `ip6tables` argv. Running them is the shell's job (`mod.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{rule_comment, strings};

/// Seconds iptables waits for the xtables lock (`-w`).
const XTABLES_WAIT_SECS: &str = "5";

/// Which iptables program: IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Xtables {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Xtables {
    /// Both, IPv4 first.
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];

    /// The program name.
    pub const fn program(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }
}

/// The kernel interface an iptables program drives, from its `-V` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtablesBackend {
    /// `(legacy)`, or a version before 1.8 (no suffix, always legacy): rules nft cannot see.
    Legacy,
    /// `(nf_tables)`: rules that are nftables tables and chains.
    Nft,
}

/// Reads `iptables -V` output such as `iptables v1.8.9 (nf_tables)`.
pub fn parse_xtables_version(output: &str) -> XtablesBackend {
    if output.contains("(nf_tables)") {
        XtablesBackend::Nft
    } else {
        XtablesBackend::Legacy
    }
}

#[derive(Debug, Clone)]
struct XtRule {
    chain: String,
    /// The argument of `-j` or `-g`.
    target: Option<String>,
    /// The tokens after `-A <chain>`, quotes removed.
    spec: Vec<String>,
}

/// The filter table as `iptables -S` prints it, reduced to policies and rules.
#[derive(Debug, Clone, Default)]
pub struct XtablesFilter {
    policies: BTreeMap<String, String>,
    user_chains: BTreeSet<String>,
    rules: Vec<XtRule>,
}

impl XtablesFilter {
    /// Parses `iptables -S` output (`-P`, `-N` and `-A` lines; others are ignored).
    ///
    /// # Errors
    ///
    /// When a line has an unterminated quote or lacks its chain name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for line in text.lines() {
            let tokens =
                split_words(line).ok_or_else(|| format!("unbalanced quote in {line:?}"))?;
            let Some((op, rest)) = tokens.split_first() else {
                continue;
            };
            let chain = || {
                rest.first()
                    .cloned()
                    .ok_or_else(|| format!("no chain in {line:?}"))
            };
            match op.as_str() {
                "-P" => {
                    let policy = rest.get(1).cloned().unwrap_or_default();
                    out.policies.insert(chain()?, policy);
                }
                "-N" => {
                    out.user_chains.insert(chain()?);
                }
                "-A" => {
                    let spec: Vec<String> = rest[1..].to_vec();
                    let target = spec
                        .iter()
                        .position(|t| t == "-j" || t == "-g")
                        .and_then(|i| spec.get(i + 1))
                        .cloned();
                    out.rules.push(XtRule {
                        chain: chain()?,
                        target,
                        spec,
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn forward_may_drop(&self) -> bool {
        if self.policies.get("FORWARD").map(String::as_str) == Some("DROP") {
            return true;
        }
        let mut seen = BTreeSet::from(["FORWARD".to_owned()]);
        let mut queue = VecDeque::from(["FORWARD".to_owned()]);
        while let Some(name) = queue.pop_front() {
            for rule in self.rules.iter().filter(|r| r.chain == name) {
                match rule.target.as_deref() {
                    Some("DROP" | "REJECT") => return true,
                    Some(t) if self.user_chains.contains(t) && seen.insert(t.to_owned()) => {
                        queue.push_back(t.to_owned());
                    }
                    _ => {}
                }
            }
        }
        false
    }
}

/// Splits a line like a POSIX shell would for the subset iptables prints: words separated by
/// blanks, double quotes grouping, backslash escaping inside them. `None` on an open quote.
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        other => cur.push(other),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            other => {
                in_word = true;
                cur.push(other);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// What to change in one iptables program's filter table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XtablesPlan {
    /// How many rules of ours to delete first.
    pub delete: usize,
    /// Whether to insert ours at the top of `FORWARD`.
    pub insert: bool,
}

/// The start-up plan for `iface`: delete every rule of ours, insert one when `FORWARD` may drop.
pub fn plan_xtables(filter: &XtablesFilter, iface: &str) -> XtablesPlan {
    XtablesPlan {
        delete: count_xtables_ours(filter, iface),
        insert: filter.forward_may_drop(),
    }
}

/// How many rules of ours `FORWARD` holds (exactly our rule spec, so `-D` with that spec
/// removes each).
pub fn count_xtables_ours(filter: &XtablesFilter, iface: &str) -> usize {
    let ours = xtables_rule_spec(iface);
    filter
        .rules
        .iter()
        .filter(|r| r.chain == "FORWARD" && r.spec == ours)
        .count()
}

/// Our rule's match and target, as `iptables -S` prints it after `-A FORWARD`.
fn xtables_rule_spec(iface: &str) -> Vec<String> {
    let comment = rule_comment(iface);
    strings(&[
        "-i",
        iface,
        "-o",
        iface,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "ACCEPT",
    ])
}

/// `iptables -V`.
pub fn xtables_version_args() -> Vec<String> {
    strings(&["-V"])
}

/// `iptables -w 5 -S` (the whole filter table, so jump targets can be followed).
pub fn xtables_list_args() -> Vec<String> {
    strings(&["-w", XTABLES_WAIT_SECS, "-S"])
}

/// `iptables -w 5 -I FORWARD 1 <our rule>`.
pub fn xtables_insert_args(iface: &str) -> Vec<String> {
    let mut args = strings(&["-w", XTABLES_WAIT_SECS, "-I", "FORWARD", "1"]);
    args.extend(xtables_rule_spec(iface));
    args
}

/// `iptables -w 5 -D FORWARD <our rule>` (deletes one copy).
pub fn xtables_delete_args(iface: &str) -> Vec<String> {
    let mut args = strings(&["-w", XTABLES_WAIT_SECS, "-D", "FORWARD"]);
    args.extend(xtables_rule_spec(iface));
    args
}

/// Whether iptables failed because the kernel has that address family off (`ipv6.disable=1`):
/// then no packet of it is forwarded either.
pub(super) fn family_unsupported(stderr: &str) -> bool {
    stderr.contains("Address family not supported")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtables_version_tells_legacy_from_nf_tables() {
        for (name, output, want) in [
            (
                "nf_tables",
                "iptables v1.8.9 (nf_tables)\n",
                XtablesBackend::Nft,
            ),
            (
                "legacy",
                "iptables v1.8.9 (legacy)\n",
                XtablesBackend::Legacy,
            ),
            (
                "ip6tables legacy",
                "ip6tables v1.8.7 (legacy)\n",
                XtablesBackend::Legacy,
            ),
            ("before 1.8", "iptables v1.6.1\n", XtablesBackend::Legacy),
        ] {
            assert_eq!(parse_xtables_version(output), want, "{name}");
        }
    }

    #[test]
    fn xtables_plan_follows_policy_drops_and_leftovers() {
        struct Case {
            name: &'static str,
            save: &'static str,
            want: XtablesPlan,
        }
        let ours = r#"-A FORWARD -i wg0 -o wg0 -m comment --comment "wgmesh:wg0" -j ACCEPT"#;
        let cases = [
            Case {
                name: "all accept",
                save: "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n",
                want: XtablesPlan::default(),
            },
            Case {
                name: "policy drop",
                save: "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n",
                want: XtablesPlan {
                    delete: 0,
                    insert: true,
                },
            },
            Case {
                name: "reject rule",
                save: "-P FORWARD ACCEPT\n-A FORWARD -p tcp -j REJECT --reject-with tcp-reset\n",
                want: XtablesPlan {
                    delete: 0,
                    insert: true,
                },
            },
            Case {
                name: "drop through a user chain (docker style)",
                save: "-P FORWARD ACCEPT\n-N DOCKER-USER\n-N ISOLATION\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -g ISOLATION\n-A ISOLATION -i docker0 -j DROP\n",
                want: XtablesPlan {
                    delete: 0,
                    insert: true,
                },
            },
            Case {
                name: "drop in a chain FORWARD never reaches",
                save: "-P FORWARD ACCEPT\n-N OTHER\n-A INPUT -j OTHER\n-A OTHER -j DROP\n",
                want: XtablesPlan::default(),
            },
            Case {
                name: "leftovers of ours, quoted or not",
                save: "-P FORWARD DROP\n-A FORWARD -i wg0 -o wg0 -m comment --comment wgmesh:wg0 -j ACCEPT\n-A FORWARD -i wg0 -o wg0 -m comment --comment \"wgmesh:wg0\" -j ACCEPT\n",
                want: XtablesPlan {
                    delete: 2,
                    insert: true,
                },
            },
            Case {
                name: "another interface's rule or a look-alike is not ours",
                save: "-P FORWARD ACCEPT\n-A FORWARD -i wg1 -o wg1 -m comment --comment \"wgmesh:wg1\" -j ACCEPT\n-A FORWARD -i wg0 -o wg0 -j ACCEPT\n",
                want: XtablesPlan::default(),
            },
        ];
        for case in cases {
            let filter = XtablesFilter::parse(case.save).unwrap();
            assert_eq!(plan_xtables(&filter, "wg0"), case.want, "{}", case.name);
        }
        let filter = XtablesFilter::parse(&format!("-P FORWARD ACCEPT\n{ours}\n")).unwrap();
        assert_eq!(count_xtables_ours(&filter, "wg0"), 1);
        assert!(XtablesFilter::parse("-A FORWARD --comment \"open").is_err());
    }

    #[test]
    fn a_disabled_address_family_is_recognised() {
        for (name, stderr, want) in [
            (
                "ipv6.disable=1 (legacy)",
                "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `filter': Address family not supported by protocol",
                true,
            ),
            (
                "permission",
                "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `filter': Permission denied (you must be root)",
                false,
            ),
        ] {
            assert_eq!(family_unsupported(stderr), want, "{name}");
        }
    }

    #[test]
    fn split_words_handles_quotes_and_escapes() {
        for (name, line, want) in [
            (
                "plain",
                "-A FORWARD -j DROP",
                vec!["-A", "FORWARD", "-j", "DROP"],
            ),
            (
                "quoted with blank",
                r#"--comment "a b" -j X"#,
                vec!["--comment", "a b", "-j", "X"],
            ),
            (
                "escaped quote",
                r#"--comment "say \"hi\"""#,
                vec!["--comment", r#"say "hi""#],
            ),
            ("empty quotes", r#"x "" y"#, vec!["x", "", "y"]),
            ("blank line", "   ", vec![]),
        ] {
            assert_eq!(split_words(line).unwrap(), want, "{name}");
        }
        assert_eq!(split_words(r#"a "b"#), None);
    }

    #[test]
    fn xtables_argv_is_one_item_per_word() {
        assert_eq!(
            xtables_insert_args("wg0"),
            [
                "-w",
                "5",
                "-I",
                "FORWARD",
                "1",
                "-i",
                "wg0",
                "-o",
                "wg0",
                "-m",
                "comment",
                "--comment",
                "wgmesh:wg0",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            xtables_delete_args("wg0"),
            [
                "-w",
                "5",
                "-D",
                "FORWARD",
                "-i",
                "wg0",
                "-o",
                "wg0",
                "-m",
                "comment",
                "--comment",
                "wgmesh:wg0",
                "-j",
                "ACCEPT"
            ]
        );
    }
}
