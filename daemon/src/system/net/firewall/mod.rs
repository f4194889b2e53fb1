//! Opens the host firewall for traffic an introducer forwards between peers of its mesh
//! interface, and closes it again at exit.
//!
//! Go peers pick introducers as relays and route a relayed peer's mesh IP through the
//! introducer's WireGuard key, so packets arrive on the mesh interface and must leave through it.
//! Forwarding sysctls alone are not enough where a firewall drops forwarded packets (a `drop`
//! policy, or `drop`/`reject` rules, on the `forward` hook). Where it would, one accept rule
//! `iifname <iface> oifname <iface> accept`, commented `wgmesh:<iface>`, goes at the top of each
//! chain that needs it:
//!
//! - **nftables** (`nft -j list ruleset`): every *base chain* on the `forward` hook of family
//!   `ip`, `ip6` or `inet` whose policy is `drop`, or which can reach a `drop`/`reject` verdict
//!   (in its own rules, verdict maps included, or in a chain it jumps or goes to). An `accept`
//!   only ends the evaluation of its own base chain, so a table of our own would not help: the
//!   rule is inserted into each such chain. Rules made by iptables-nft live in nftables tables
//!   (`ip filter FORWARD`, …) and are handled here too. Changes are sent as one JSON batch on
//!   `nft -j -f -`, so they apply atomically and no table or chain name is ever parsed by nft's
//!   command-line grammar (a chain called `fwd` is a keyword there).
//! - **iptables-legacy** (`iptables -V` says `(legacy)`, or says nf_tables while `nft` is not
//!   installed): `iptables`/`ip6tables -I FORWARD 1 -i X -o X -m comment --comment wgmesh:X -j
//!   ACCEPT` when `-S` shows a `DROP` policy on `FORWARD` or a reachable `DROP`/`REJECT`.
//!
//! A program that is not installed means there is no firewall of that kind to handle (logged at
//! debug). At start, rules of ours left behind by a run that crashed are deleted first (nftables:
//! in the same batch); at exit, [`FirewallGuard::remove`] deletes every rule carrying our comment,
//! found again by listing, so a chain someone else changed meanwhile is handled by what it holds
//! then. Rules of other interfaces (`wgmesh:wg1`) are never touched.
//!
//! Split: the decisions ([`NftRuleset::parse`], [`plan_nft`], [`plan_nft_removal`],
//! [`nft_batch`], [`XtablesFilter::parse`], [`plan_xtables`], the argv builders) are pure and
//! table-tested; [`allow_forwarding`] and [`FirewallGuard::remove`] only run the programs (never
//! through a shell; arguments as separate argv items), each bounded by [`COMMAND_TIMEOUT`].
//! Commands run in the network namespace of the calling thread.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use super::NetError;

/// What every rule of ours carries in its comment, followed by the interface name.
pub const COMMENT_PREFIX: &str = "wgmesh:";
/// How long one firewall command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The nftables program.
pub const NFT: &str = "nft";
/// Seconds iptables waits for the xtables lock (`-w`).
const XTABLES_WAIT_SECS: &str = "5";
/// nftables families whose `forward` hook sees routed IP packets.
const IP_FAMILIES: [&str; 3] = ["ip", "ip6", "inet"];

/// The comment that marks our rule for `iface`: `wgmesh:<iface>`.
pub fn rule_comment(iface: &str) -> String {
    format!("{COMMENT_PREFIX}{iface}")
}

// ------------------------------------------------------------------------------------------
// nftables: pure part

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

// ------------------------------------------------------------------------------------------
// iptables: pure part

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

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ------------------------------------------------------------------------------------------
// the shell

/// The accept rules this daemon put in place for one interface; [`FirewallGuard::remove`] takes
/// them out again. `Display` lists them for the log.
#[derive(Debug)]
#[must_use = "the rules stay until `remove` is called"]
pub struct FirewallGuard {
    iface: String,
    /// nftables chains that got our rule.
    nft: Vec<ChainRef>,
    /// iptables programs (legacy, or nf_tables without `nft`) whose `FORWARD` got our rule.
    xtables: Vec<(Xtables, XtablesBackend)>,
    /// Rules of a crashed earlier run deleted at start.
    leftovers: usize,
}

impl FirewallGuard {
    /// The interface the rules are for.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Whether no rule was added (no firewall would drop forwarded packets).
    pub fn is_empty(&self) -> bool {
        self.nft.is_empty() && self.xtables.is_empty()
    }

    /// How many rules of ours left behind by an earlier run were deleted at start.
    pub fn leftovers_removed(&self) -> usize {
        self.leftovers
    }

    /// Where our rule went, e.g. `nft inet fw fwd` or `iptables (legacy) FORWARD`.
    pub fn rules(&self) -> Vec<String> {
        let nft = self.nft.iter().map(|c| format!("nft {c}"));
        let xt = self.xtables.iter().map(|(x, backend)| {
            let kind = match backend {
                XtablesBackend::Legacy => "legacy",
                XtablesBackend::Nft => "nf_tables",
            };
            format!("{} ({kind}) FORWARD", x.program())
        });
        nft.chain(xt).collect()
    }

    /// Deletes every rule of ours for this interface, found by listing again (also copies
    /// someone moved or duplicated). Only the kinds of firewall that got a rule are touched.
    ///
    /// # Errors
    ///
    /// The first failing command (with its stderr); the other kinds are still cleaned.
    pub async fn remove(self) -> Result<(), NetError> {
        let mut first_error = None;
        if !self.nft.is_empty() {
            let result = async {
                let text = run_required(NFT, &nft_list_args(), None).await?;
                let ruleset = parse_nft_output(&text)?;
                apply_nft(&plan_nft_removal(&ruleset, &self.iface), &self.iface).await
            }
            .await;
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        for (xt, _) in &self.xtables {
            if let Err(e) = delete_xtables_ours(*xt, &self.iface).await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl fmt::Display for FirewallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("no rule needed (no firewall drops forwarded packets)")
        } else {
            write!(f, "accept rule in {}", self.rules().join(", "))
        }
    }
}

/// Makes sure the firewall lets packets from `iface` to `iface` be forwarded: deletes rules of
/// ours left by a crashed run, then inserts our accept rule where a firewall would drop them
/// (see the module docs). Call it after turning forwarding on; keep the guard and call
/// [`FirewallGuard::remove`] at exit.
///
/// # Errors
///
/// A command that fails (naming it and its stderr) or whose output does not parse; whatever was
/// inserted before the failure is removed again.
pub async fn allow_forwarding(iface: &str) -> Result<FirewallGuard, NetError> {
    let mut guard = FirewallGuard {
        iface: iface.to_owned(),
        nft: Vec::new(),
        xtables: Vec::new(),
        leftovers: 0,
    };
    match open(&mut guard).await {
        Ok(()) => {
            if guard.leftovers > 0 {
                tracing::warn!(
                    iface,
                    removed = guard.leftovers,
                    "removed firewall rules a previous run left behind"
                );
            }
            Ok(guard)
        }
        Err(e) => {
            if !guard.is_empty()
                && let Err(undo) = guard.remove().await
            {
                tracing::error!(iface, error = %undo, "cannot remove the firewall rules just added");
            }
            Err(e)
        }
    }
}

async fn open(guard: &mut FirewallGuard) -> Result<(), NetError> {
    let iface = guard.iface.clone();
    let nft_present = match run(NFT, &nft_list_args(), None).await? {
        None => {
            tracing::debug!("`nft` is not installed: no nftables rules to handle");
            false
        }
        Some(text) => {
            let plan = plan_nft(&parse_nft_output(&text)?, &iface);
            tracing::debug!(iface, ?plan, "nftables plan");
            apply_nft(&plan, &iface).await?;
            guard.leftovers += plan.delete.len();
            guard.nft = plan.insert;
            true
        }
    };
    for xt in Xtables::ALL {
        let program = xt.program();
        let Some(version) = run(program, &xtables_version_args(), None).await? else {
            tracing::debug!(program, "not installed: no iptables rules of that family");
            continue;
        };
        let backend = parse_xtables_version(&version);
        if backend == XtablesBackend::Nft && nft_present {
            // Its rules are nftables chains, handled above.
            continue;
        }
        let text = match run_required(program, &xtables_list_args(), None).await {
            Err(NetError::CommandFailed { stderr, .. }) if family_unsupported(&stderr) => {
                tracing::debug!(program, %stderr, "address family disabled: nothing to handle");
                continue;
            }
            other => other?,
        };
        let filter = XtablesFilter::parse(&text).map_err(|reason| NetError::CommandOutput {
            command: describe(program, &xtables_list_args()),
            reason,
        })?;
        let plan = plan_xtables(&filter, &iface);
        tracing::debug!(program, ?backend, ?plan, "iptables plan");
        for _ in 0..plan.delete {
            run_required(program, &xtables_delete_args(&iface), None).await?;
        }
        guard.leftovers += plan.delete;
        if plan.insert {
            run_required(program, &xtables_insert_args(&iface), None).await?;
            guard.xtables.push((xt, backend));
        }
    }
    Ok(())
}

/// Deletes every accept rule of ours for `iface` (comment `wgmesh:<iface>`) from every firewall
/// present, without adding any: for a node that no longer is an introducer after a run that could
/// not clean up. Returns how many rules were deleted.
///
/// # Errors
///
/// A command that fails or whose output does not parse.
pub async fn remove_leftover_rules(iface: &str) -> Result<usize, NetError> {
    let mut removed = 0;
    let nft_present = match run(NFT, &nft_list_args(), None).await? {
        None => false,
        Some(text) => {
            let plan = plan_nft_removal(&parse_nft_output(&text)?, iface);
            apply_nft(&plan, iface).await?;
            removed += plan.delete.len();
            true
        }
    };
    for xt in Xtables::ALL {
        let program = xt.program();
        let Some(version) = run(program, &xtables_version_args(), None).await? else {
            continue;
        };
        if parse_xtables_version(&version) == XtablesBackend::Nft && nft_present {
            continue;
        }
        let text = match run_required(program, &xtables_list_args(), None).await {
            Err(NetError::CommandFailed { stderr, .. }) if family_unsupported(&stderr) => continue,
            other => other?,
        };
        let filter = XtablesFilter::parse(&text).map_err(|reason| NetError::CommandOutput {
            command: describe(program, &xtables_list_args()),
            reason,
        })?;
        let ours = count_xtables_ours(&filter, iface);
        for _ in 0..ours {
            run_required(program, &xtables_delete_args(iface), None).await?;
        }
        removed += ours;
    }
    Ok(removed)
}

/// Whether iptables failed because the kernel has that address family off (`ipv6.disable=1`):
/// then no packet of it is forwarded either.
fn family_unsupported(stderr: &str) -> bool {
    stderr.contains("Address family not supported")
}

async fn delete_xtables_ours(xt: Xtables, iface: &str) -> Result<(), NetError> {
    let program = xt.program();
    let text = run_required(program, &xtables_list_args(), None).await?;
    let filter = XtablesFilter::parse(&text).map_err(|reason| NetError::CommandOutput {
        command: describe(program, &xtables_list_args()),
        reason,
    })?;
    for _ in 0..count_xtables_ours(&filter, iface) {
        run_required(program, &xtables_delete_args(iface), None).await?;
    }
    Ok(())
}

fn parse_nft_output(text: &str) -> Result<NftRuleset, NetError> {
    NftRuleset::parse(text).map_err(|reason| NetError::CommandOutput {
        command: describe(NFT, &nft_list_args()),
        reason,
    })
}

async fn apply_nft(plan: &NftPlan, iface: &str) -> Result<(), NetError> {
    match nft_batch(plan, iface) {
        Some(batch) => run_required(NFT, &nft_apply_args(), Some(&batch))
            .await
            .map(drop),
        None => Ok(()),
    }
}

fn describe(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Like [`run`], but a missing program is an error too.
async fn run_required(
    program: &str,
    args: &[String],
    input: Option<&str>,
) -> Result<String, NetError> {
    run(program, args, input)
        .await?
        .ok_or_else(|| NetError::CommandSpawn {
            command: describe(program, args),
            source: io::Error::new(io::ErrorKind::NotFound, "program not found in PATH"),
        })
}

/// Runs `program args` (found in `PATH`, never through a shell) with `input` on stdin and
/// returns its stdout; `None` when the program is not installed.
async fn run(
    program: &str,
    args: &[String],
    input: Option<&str>,
) -> Result<Option<String>, NetError> {
    let command = || match input {
        Some(text) => format!("{} (input: {text})", describe(program, args)),
        None => describe(program, args),
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(NetError::CommandSpawn {
                command: command(),
                source,
            });
        }
    };
    let stdin = child.stdin.take();
    let feed = async move {
        if let (Some(mut pipe), Some(text)) = (stdin, input) {
            pipe.write_all(text.as_bytes()).await?;
            pipe.shutdown().await?;
        }
        Ok::<(), io::Error>(())
    };
    let work = async { tokio::join!(feed, child.wait_with_output()) };
    let (fed, output) = tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| NetError::CommandTimeout {
            command: command(),
            seconds: COMMAND_TIMEOUT.as_secs(),
        })?;
    let output = output.map_err(|source| NetError::CommandSpawn {
        command: command(),
        source,
    })?;
    if !output.status.success() {
        return Err(NetError::CommandFailed {
            command: command(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    // A program that exits 0 without reading all its input did what it wanted; only a failed
    // write with a failed exit matters, and that is reported above.
    if let Err(e) = fed {
        tracing::debug!(command = %command(), error = %e, "writing the command's input failed");
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
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
        assert_eq!(nft_list_args(), ["-j", "list", "ruleset"]);
        assert_eq!(nft_apply_args(), ["-j", "-f", "-"]);
    }

    #[test]
    fn guard_describes_what_it_added() {
        let mut guard = FirewallGuard {
            iface: "wg0".into(),
            nft: Vec::new(),
            xtables: Vec::new(),
            leftovers: 0,
        };
        assert!(guard.is_empty());
        assert_eq!(
            guard.to_string(),
            "no rule needed (no firewall drops forwarded packets)"
        );
        guard.nft = chains(&[("inet", "fw", "fwd")]);
        guard.xtables = vec![(Xtables::V4, XtablesBackend::Legacy)];
        assert_eq!(
            guard.to_string(),
            "accept rule in nft inet fw fwd, iptables (legacy) FORWARD"
        );
    }

    #[tokio::test]
    async fn run_reports_missing_programs_failures_and_output() {
        let missing = run("wgmesh-no-such-program", &[], None).await.unwrap();
        assert_eq!(missing, None);
        let echoed = run("cat", &[], Some("hello")).await.unwrap();
        assert_eq!(echoed.as_deref(), Some("hello"));
        let err = run("ls", &strings(&["/wgmesh/no/such/dir"]), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ls /wgmesh/no/such/dir` failed"), "{err}");
        let err = run_required("wgmesh-no-such-program", &strings(&["-V"]), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("wgmesh-no-such-program -V"), "{err}");
    }
}
