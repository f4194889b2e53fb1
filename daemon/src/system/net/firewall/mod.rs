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
//! Split: the decisions are pure and table-tested, one file per kind of firewall: `nft.rs`
//! ([`NftRuleset::parse`], [`plan_nft`], [`plan_nft_removal`], [`nft_batch`], the `nft` argv
//! builders) and `xtables.rs` ([`parse_xtables_version`], [`XtablesFilter::parse`],
//! [`plan_xtables`], the `iptables` argv builders), their items re-exported here. `mod.rs` is
//! the shell: [`allow_forwarding`], [`remove_leftover_rules`] and [`FirewallGuard::remove`]
//! only run the programs (never through a shell; arguments as separate argv items), each bounded
//! by [`COMMAND_TIMEOUT`]. Commands run in the network namespace of the calling thread.

mod nft;
mod xtables;

use std::fmt;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

pub use nft::{
    ChainRef, NftPlan, NftRuleset, RuleRef, nft_apply_args, nft_batch, nft_list_args, plan_nft,
    plan_nft_removal,
};
pub use xtables::{
    Xtables, XtablesBackend, XtablesFilter, XtablesPlan, count_xtables_ours, parse_xtables_version,
    plan_xtables, xtables_delete_args, xtables_insert_args, xtables_list_args,
    xtables_version_args,
};

use super::NetError;
use xtables::family_unsupported;

/// What every rule of ours carries in its comment, followed by the interface name.
pub const COMMENT_PREFIX: &str = "wgmesh:";
/// How long one firewall command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The nftables program.
pub const NFT: &str = "nft";

/// The comment that marks our rule for `iface`: `wgmesh:<iface>`.
pub fn rule_comment(iface: &str) -> String {
    format!("{COMMENT_PREFIX}{iface}")
}

/// The items as owned strings, one argv item each.
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
        guard.nft = vec![ChainRef::new("inet", "fw", "fwd")];
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
