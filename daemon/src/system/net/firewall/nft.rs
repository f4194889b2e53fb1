//! The nftables side of the firewall, pure: reads `nft -j list ruleset`, decides which base
//! chains on the `forward` hook get our accept rule and which rules of ours go, and builds the
//! JSON batch and the `nft` argv that carry it out. Running `nft` is the shell's job (`mod.rs`).

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use serde_json::{Value, json};

use super::{rule_comment, strings};

/// nftables families whose `forward` hook sees routed IP packets.
const IP_FAMILIES: [&str; 3] = ["ip", "ip6", "inet"];

/// A chain, named as nftables names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainRef {
    /// `ip`, `ip6`, `inet`, …
    pub family: String,
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
}

impl ChainRef {
    /// A chain reference from its three names.
    pub fn new(family: &str, table: &str, chain: &str) -> Self {
        Self {
            family: family.to_owned(),
            table: table.to_owned(),
            chain: chain.to_owned(),
        }
    }

    fn same_table(&self, other: &Self) -> bool {
        self.family == other.family && self.table == other.table
    }
}

impl fmt::Display for ChainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.family, self.table, self.chain)
    }
}

/// One rule of ours in an nftables chain, by handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// Where it is.
    pub chain: ChainRef,
    /// Its handle (unique within the table, never reused while the table exists).
    pub handle: u64,
}

#[derive(Debug, Clone)]
struct NftChain {
    id: ChainRef,
    /// Set on base chains only.
    hook: Option<String>,
    policy: Option<String>,
}

#[derive(Debug, Clone)]
struct NftRule {
    chain: ChainRef,
    handle: Option<u64>,
    comment: Option<String>,
    /// Whether the rule can end in `drop` or `reject` (verdict maps included).
    drops: bool,
    /// Chains it jumps or goes to (same table).
    targets: Vec<String>,
}

/// The chains and rules of `nft -j list ruleset`, reduced to what the decision needs. Objects it
/// does not know (sets, maps, flowtables, newer expressions) are ignored, so a ruleset full of
/// other software's rules always parses.
#[derive(Debug, Clone, Default)]
pub struct NftRuleset {
    chains: Vec<NftChain>,
    rules: Vec<NftRule>,
}

impl NftRuleset {
    /// Parses the JSON that `nft -j list ruleset` prints.
    ///
    /// # Errors
    ///
    /// When the text is not JSON or has no `nftables` array (the reason, as text).
    pub fn parse(json: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let items = doc
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("no \"nftables\" array")?;
        let mut set = Self::default();
        for item in items {
            if let Some(chain) = item.get("chain") {
                if let Some(id) = chain_ref(chain, "name") {
                    set.chains.push(NftChain {
                        id,
                        hook: str_field(chain, "hook"),
                        policy: str_field(chain, "policy"),
                    });
                }
            } else if let Some(rule) = item.get("rule")
                && let Some(id) = chain_ref(rule, "chain")
            {
                let mut drops = false;
                let mut targets = Vec::new();
                if let Some(expr) = rule.get("expr") {
                    scan_verdicts(expr, &mut drops, &mut targets);
                }
                set.rules.push(NftRule {
                    chain: id,
                    handle: rule.get("handle").and_then(Value::as_u64),
                    comment: str_field(rule, "comment"),
                    drops,
                    targets,
                });
            }
        }
        Ok(set)
    }

    /// Whether a packet in `base` can meet a `drop` (its policy, or a `drop`/`reject` verdict in
    /// it or in any chain it reaches by `jump`/`goto`).
    fn may_drop(&self, base: &NftChain) -> bool {
        if base.policy.as_deref() == Some("drop") {
            return true;
        }
        let mut seen = BTreeSet::from([base.id.chain.clone()]);
        let mut queue = VecDeque::from([base.id.chain.clone()]);
        while let Some(name) = queue.pop_front() {
            for rule in self
                .rules
                .iter()
                .filter(|r| r.chain.same_table(&base.id) && r.chain.chain == name)
            {
                if rule.drops {
                    return true;
                }
                for t in &rule.targets {
                    if seen.insert(t.clone()) {
                        queue.push_back(t.clone());
                    }
                }
            }
        }
        false
    }

    fn ours<'a>(&'a self, iface: &str) -> impl Iterator<Item = RuleRef> + 'a {
        let comment = rule_comment(iface);
        self.rules.iter().filter_map(move |r| {
            let handle = r.handle?;
            (r.comment.as_deref() == Some(comment.as_str())).then(|| RuleRef {
                chain: r.chain.clone(),
                handle,
            })
        })
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn chain_ref(v: &Value, name_key: &str) -> Option<ChainRef> {
    Some(ChainRef {
        family: str_field(v, "family")?,
        table: str_field(v, "table")?,
        chain: str_field(v, name_key)?,
    })
}

/// Walks an expression tree: `{"drop": …}`/`{"reject": …}` anywhere (statement or verdict map
/// value) marks a drop; `{"jump"|"goto": {"target": …}}` records a target.
fn scan_verdicts(v: &Value, drops: &mut bool, targets: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for i in items {
                scan_verdicts(i, drops, targets);
            }
        }
        Value::Object(map) => {
            for (key, inner) in map {
                match key.as_str() {
                    "drop" | "reject" => *drops = true,
                    "jump" | "goto" => {
                        if let Some(t) = inner.get("target").and_then(Value::as_str) {
                            targets.push(t.to_owned());
                        }
                    }
                    _ => scan_verdicts(inner, drops, targets),
                }
            }
        }
        _ => {}
    }
}

/// What to change in nftables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftPlan {
    /// Rules of ours to delete (left over from a crashed run at start; all of them at exit).
    pub delete: Vec<RuleRef>,
    /// Base chains that get our accept rule at the top.
    pub insert: Vec<ChainRef>,
}

impl NftPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.insert.is_empty()
    }
}

/// The start-up plan for `iface`: delete every rule of ours that is there, and insert one at the
/// top of every `ip`/`ip6`/`inet` base chain on the `forward` hook that may drop.
pub fn plan_nft(ruleset: &NftRuleset, iface: &str) -> NftPlan {
    let insert = ruleset
        .chains
        .iter()
        .filter(|c| IP_FAMILIES.contains(&c.id.family.as_str()))
        .filter(|c| c.hook.as_deref() == Some("forward"))
        .filter(|c| ruleset.may_drop(c))
        .map(|c| c.id.clone())
        .collect();
    NftPlan {
        delete: ruleset.ours(iface).collect(),
        insert,
    }
}

/// The exit plan for `iface`: delete every rule of ours, wherever it is now.
pub fn plan_nft_removal(ruleset: &NftRuleset, iface: &str) -> NftPlan {
    NftPlan {
        delete: ruleset.ours(iface).collect(),
        insert: Vec::new(),
    }
}

/// The JSON batch for `nft -j -f -` that carries out `plan` (deletions first), or `None` when
/// there is nothing to do.
pub fn nft_batch(plan: &NftPlan, iface: &str) -> Option<String> {
    if plan.is_empty() {
        return None;
    }
    let meta =
        |key: &str| json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": iface}});
    let mut cmds: Vec<Value> = plan
        .delete
        .iter()
        .map(|r| {
            json!({"delete": {"rule": {
                "family": r.chain.family, "table": r.chain.table, "chain": r.chain.chain,
                "handle": r.handle,
            }}})
        })
        .collect();
    cmds.extend(plan.insert.iter().map(|c| {
        json!({"insert": {"rule": {
            "family": c.family, "table": c.table, "chain": c.chain,
            "comment": rule_comment(iface),
            "expr": [meta("iifname"), meta("oifname"), {"counter": null}, {"accept": null}],
        }}})
    }));
    Some(json!({ "nftables": cmds }).to_string())
}

/// `nft -j list ruleset`.
pub fn nft_list_args() -> Vec<String> {
    strings(&["-j", "list", "ruleset"])
}

/// `nft -j -f -` (the batch on stdin).
pub fn nft_apply_args() -> Vec<String> {
    strings(&["-j", "-f", "-"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(items: &[Value]) -> NftRuleset {
        let doc = json!({"nftables": items});
        NftRuleset::parse(&doc.to_string()).unwrap()
    }

    fn base(family: &str, table: &str, name: &str, hook: &str, policy: &str) -> Value {
        json!({"chain": {"family": family, "table": table, "name": name, "handle": 1,
            "type": "filter", "hook": hook, "prio": 0, "policy": policy}})
    }

    fn regular(family: &str, table: &str, name: &str) -> Value {
        json!({"chain": {"family": family, "table": table, "name": name, "handle": 2}})
    }

    fn rule(family: &str, table: &str, chain: &str, handle: u64, expr: Value) -> Value {
        json!({"rule": {"family": family, "table": table, "chain": chain, "handle": handle,
            "expr": expr}})
    }

    fn ours(family: &str, table: &str, chain: &str, handle: u64, iface: &str) -> Value {
        json!({"rule": {"family": family, "table": table, "chain": chain, "handle": handle,
            "comment": rule_comment(iface), "expr": [{"accept": null}]}})
    }

    fn chains(list: &[(&str, &str, &str)]) -> Vec<ChainRef> {
        list.iter()
            .map(|(f, t, c)| ChainRef::new(f, t, c))
            .collect()
    }

    #[test]
    fn nft_plan_inserts_where_a_forward_chain_may_drop_and_deletes_ours() {
        struct Case {
            name: &'static str,
            items: Vec<Value>,
            insert: Vec<ChainRef>,
            delete: Vec<(ChainRef, u64)>,
        }
        let cases = [
            Case {
                name: "empty ruleset",
                items: vec![json!({"metainfo": {"version": "1.0.6"}})],
                insert: vec![],
                delete: vec![],
            },
            Case {
                name: "policy drop, no rules",
                items: vec![base("inet", "fw", "fwd", "forward", "drop")],
                insert: chains(&[("inet", "fw", "fwd")]),
                delete: vec![],
            },
            Case {
                name: "policy accept, no drop anywhere",
                items: vec![
                    base("inet", "fw", "fwd", "forward", "accept"),
                    rule(
                        "inet",
                        "fw",
                        "fwd",
                        3,
                        json!([{"counter": null}, {"accept": null}]),
                    ),
                ],
                insert: vec![],
                delete: vec![],
            },
            Case {
                name: "policy accept with a drop rule",
                items: vec![
                    base("ip", "filter", "FORWARD", "forward", "accept"),
                    rule(
                        "ip",
                        "filter",
                        "FORWARD",
                        2,
                        json!([{"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]),
                    ),
                ],
                insert: chains(&[("ip", "filter", "FORWARD")]),
                delete: vec![],
            },
            Case {
                name: "reject in a verdict map",
                items: vec![
                    base("inet", "firewalld", "filter_FORWARD", "forward", "accept"),
                    rule(
                        "inet",
                        "firewalld",
                        "filter_FORWARD",
                        9,
                        json!([{"vmap": {"key": {"ct": {"key": "state"}},
                        "data": {"set": [["established", {"accept": null}], ["invalid", {"reject": {"type": "icmpx"}}]]}}}]),
                    ),
                ],
                insert: chains(&[("inet", "firewalld", "filter_FORWARD")]),
                delete: vec![],
            },
            Case {
                name: "drop reached through jump then goto",
                items: vec![
                    base("inet", "fw", "forward", "forward", "accept"),
                    regular("inet", "fw", "a"),
                    regular("inet", "fw", "b"),
                    rule(
                        "inet",
                        "fw",
                        "forward",
                        4,
                        json!([{"jump": {"target": "a"}}]),
                    ),
                    rule("inet", "fw", "a", 5, json!([{"goto": {"target": "b"}}])),
                    rule("inet", "fw", "b", 6, json!([{"drop": null}])),
                ],
                insert: chains(&[("inet", "fw", "forward")]),
                delete: vec![],
            },
            Case {
                name: "a drop in an unreachable chain or another table does not count",
                items: vec![
                    base("inet", "fw", "forward", "forward", "accept"),
                    regular("inet", "fw", "lonely"),
                    rule("inet", "fw", "lonely", 5, json!([{"drop": null}])),
                    regular("inet", "other", "a"),
                    rule(
                        "inet",
                        "fw",
                        "forward",
                        6,
                        json!([{"jump": {"target": "a"}}]),
                    ),
                    rule("inet", "other", "a", 7, json!([{"drop": null}])),
                ],
                insert: vec![],
                delete: vec![],
            },
            Case {
                name: "jump loop terminates",
                items: vec![
                    base("ip6", "t", "fwd", "forward", "accept"),
                    regular("ip6", "t", "x"),
                    rule("ip6", "t", "fwd", 2, json!([{"jump": {"target": "x"}}])),
                    rule("ip6", "t", "x", 3, json!([{"jump": {"target": "fwd"}}])),
                ],
                insert: vec![],
                delete: vec![],
            },
            Case {
                name: "other hooks and families are not ours to open",
                items: vec![
                    base("inet", "fw", "input", "input", "drop"),
                    base("bridge", "br", "fwd", "forward", "drop"),
                    base("netdev", "nd", "ingress", "ingress", "drop"),
                ],
                insert: vec![],
                delete: vec![],
            },
            Case {
                name: "every dropping forward chain, in every table",
                items: vec![
                    base("ip", "filter", "FORWARD", "forward", "drop"),
                    base("ip6", "filter", "FORWARD", "forward", "drop"),
                    base("inet", "fw", "fwd", "forward", "drop"),
                ],
                insert: chains(&[
                    ("ip", "filter", "FORWARD"),
                    ("ip6", "filter", "FORWARD"),
                    ("inet", "fw", "fwd"),
                ]),
                delete: vec![],
            },
            Case {
                name: "leftover of a crash is deleted and the rule inserted again",
                items: vec![
                    base("inet", "fw", "fwd", "forward", "drop"),
                    ours("inet", "fw", "fwd", 11, "wg0"),
                    ours("inet", "fw", "fwd", 12, "wg1"),
                ],
                insert: chains(&[("inet", "fw", "fwd")]),
                delete: vec![(ChainRef::new("inet", "fw", "fwd"), 11)],
            },
            Case {
                name: "leftover in a chain that no longer drops is only deleted",
                items: vec![
                    base("inet", "fw", "fwd", "forward", "accept"),
                    ours("inet", "fw", "fwd", 4, "wg0"),
                ],
                insert: vec![],
                delete: vec![(ChainRef::new("inet", "fw", "fwd"), 4)],
            },
        ];
        for case in cases {
            let set = ruleset(&case.items);
            let plan = plan_nft(&set, "wg0");
            assert_eq!(plan.insert, case.insert, "{}: insert", case.name);
            let delete: Vec<(ChainRef, u64)> = plan
                .delete
                .into_iter()
                .map(|r| (r.chain, r.handle))
                .collect();
            assert_eq!(delete, case.delete, "{}: delete", case.name);
        }
    }

    #[test]
    fn nft_removal_deletes_only_our_interface_rules() {
        let set = ruleset(&[
            base("inet", "fw", "fwd", "forward", "drop"),
            ours("inet", "fw", "fwd", 7, "wg0"),
            ours("ip", "filter", "FORWARD", 8, "wg0"),
            ours("ip", "filter", "FORWARD", 9, "wg10"),
            rule("ip", "filter", "FORWARD", 10, json!([{"drop": null}])),
        ]);
        let plan = plan_nft_removal(&set, "wg0");
        assert!(plan.insert.is_empty());
        let handles: Vec<u64> = plan.delete.iter().map(|r| r.handle).collect();
        assert_eq!(handles, [7, 8]);
    }

    #[test]
    fn nft_parse_accepts_real_output_and_rejects_garbage() {
        // Verbatim from nft 1.0.6 (iptables-nft rules included).
        let real = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "fw", "handle": 1}}, {"chain": {"family": "inet", "table": "fw", "name": "sub", "handle": 1}}, {"rule": {"family": "inet", "table": "fw", "chain": "sub", "handle": 2, "expr": [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}]}}, {"table": {"family": "ip", "name": "filter", "handle": 2}}, {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}, {"chain": {"family": "ip", "table": "filter", "name": "MYCH", "handle": 3}}, {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 2, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 4, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "MYCH"}}]}}, {"set": {"family": "ip", "name": "s", "table": "filter", "type": "ipv4_addr", "handle": 5}}]}"#;
        let plan = plan_nft(&NftRuleset::parse(real).unwrap(), "wg0");
        assert_eq!(plan.insert, chains(&[("ip", "filter", "FORWARD")]));
        for (name, text) in [
            ("not json", "table inet fw {"),
            ("no nftables array", r#"{"tables": []}"#),
            ("nftables not an array", r#"{"nftables": {}}"#),
        ] {
            assert!(NftRuleset::parse(text).is_err(), "{name}");
        }
    }

    #[test]
    fn nft_batch_deletes_then_inserts_our_rule() {
        assert_eq!(nft_batch(&NftPlan::default(), "wg0"), None);
        let plan = NftPlan {
            delete: vec![RuleRef {
                chain: ChainRef::new("inet", "fw", "fwd"),
                handle: 11,
            }],
            insert: chains(&[("inet", "fw", "fwd")]),
        };
        let batch: Value = serde_json::from_str(&nft_batch(&plan, "wg0").unwrap()).unwrap();
        assert_eq!(
            batch,
            json!({"nftables": [
                {"delete": {"rule": {"family": "inet", "table": "fw", "chain": "fwd", "handle": 11}}},
                {"insert": {"rule": {"family": "inet", "table": "fw", "chain": "fwd",
                    "comment": "wgmesh:wg0",
                    "expr": [
                        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "wg0"}},
                        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wg0"}},
                        {"counter": null},
                        {"accept": null}
                    ]}}}
            ]})
        );
    }

    #[test]
    fn nft_argv_is_one_item_per_word() {
        assert_eq!(nft_list_args(), ["-j", "list", "ruleset"]);
        assert_eq!(nft_apply_args(), ["-j", "-f", "-"]);
    }
}
