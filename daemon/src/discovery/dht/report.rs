//! What the DHT layer says in `GET /v1/status`: its detail while it runs and why it retries.
//! Pure.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};

use super::nodefile::NodeRecord;
use super::schedule::{QUERY_INTERVAL, STABLE_QUERY_INTERVAL};

/// Most warm-start nodes added to the bootstrap list: the library contacts every bootstrap node
/// in each query while its table is small, so the list stays short.
pub const MAX_WARM_BOOTSTRAP: usize = 16;

/// The bootstrap nodes of one attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapPlan {
    /// The addresses to bootstrap from: the configured ones, then warm-start nodes (IPv4 only:
    /// the DHT library is IPv4-only), without duplicates.
    pub addrs: Vec<SocketAddrV4>,
    /// Configured nodes that gave no usable address, with why.
    pub unusable: Vec<(String, String)>,
}

/// The bootstrap list from the configured nodes as resolved (`(HOST:PORT, addresses or the
/// resolver's error)`) and the nodes of the node file.
pub fn plan_bootstrap(
    resolved: &[(String, Result<Vec<SocketAddr>, String>)],
    warm: &[NodeRecord],
) -> BootstrapPlan {
    let mut plan = BootstrapPlan::default();
    let push = |addrs: &mut Vec<SocketAddrV4>, addr: SocketAddr| match addr {
        SocketAddr::V4(v4) if !addrs.contains(&v4) => {
            addrs.push(v4);
            true
        }
        SocketAddr::V4(_) => true,
        SocketAddr::V6(_) => false,
    };
    for (name, result) in resolved {
        match result {
            Ok(addrs) => {
                let mut any = false;
                for addr in addrs {
                    any |= push(&mut plan.addrs, *addr);
                }
                if !any {
                    let why = if addrs.is_empty() {
                        "no address"
                    } else {
                        "IPv6 only (the DHT is IPv4-only)"
                    };
                    plan.unusable.push((name.clone(), why.to_owned()));
                }
            }
            Err(e) => plan.unusable.push((name.clone(), e.clone())),
        }
    }
    let mut warm_added = 0;
    for node in warm {
        if warm_added >= MAX_WARM_BOOTSTRAP {
            break;
        }
        let before = plan.addrs.len();
        push(&mut plan.addrs, node.addr);
        warm_added += usize::from(plan.addrs.len() > before);
    }
    plan
}

/// Why the DHT layer is retrying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No configured bootstrap node resolved to an IPv4 address, and no warm-start node is known.
    NothingResolves(Vec<(String, String)>),
    /// The DHT node could not be started.
    Start(String),
    /// No bootstrap node answered: the routing table is still empty.
    NoAnswer {
        /// The addresses tried.
        tried: Vec<SocketAddrV4>,
        /// Configured nodes that gave no address.
        unusable: Vec<(String, String)>,
    },
    /// The routing table emptied while running (every node went silent).
    TableEmpty,
}

/// `a (why), b (why)`.
fn list_unusable(f: &mut fmt::Formatter<'_>, unusable: &[(String, String)]) -> fmt::Result {
    for (i, (name, why)) in unusable.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{name} ({why})")?;
    }
    Ok(())
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NothingResolves(unusable) => {
                f.write_str("no DHT bootstrap node resolves: ")?;
                list_unusable(f, unusable)
            }
            Self::Start(e) => write!(f, "cannot start the DHT node: {e}"),
            Self::NoAnswer { tried, unusable } => {
                f.write_str("no DHT bootstrap node answered (tried ")?;
                for (i, addr) in tried.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{addr}")?;
                }
                f.write_str(")")?;
                if !unusable.is_empty() {
                    f.write_str("; unresolved: ")?;
                    list_unusable(f, unusable)?;
                }
                Ok(())
            }
            Self::TableEmpty => f.write_str(
                "the DHT routing table is empty: no DHT node answers any more (the library keeps asking the bootstrap nodes)",
            ),
        }
    }
}

/// What the layer has done, for its status detail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The DHT node's UDP port.
    pub port: u16,
    /// Nodes in the routing table at the last look.
    pub table_nodes: usize,
    /// Announces that reached the DHT (each covers both hourly ids).
    pub announces: u64,
    /// Whether the last announce reached the DHT (`None`: none yet).
    pub last_announce_ok: Option<bool>,
    /// Queries made (each covers both hourly ids).
    pub queries: u64,
    /// Whether queries slowed to one a minute.
    pub stable: bool,
    /// Addresses found that were new enough to contact.
    pub contacted: u64,
    /// Contacts that answered as a peer of this mesh.
    pub answered: u64,
}

/// The status detail: `UDP 52191, 3 nodes in the routing table; announced 1 time (last reached
/// the DHT); 4 queries (every 30 s); 2 addresses contacted, 2 answered`.
pub fn detail(v: &View) -> String {
    let last = match v.last_announce_ok {
        None => "",
        Some(true) => " (last reached the DHT)",
        Some(false) => " (last reached no node)",
    };
    let every = if v.stable {
        STABLE_QUERY_INTERVAL
    } else {
        QUERY_INTERVAL
    };
    format!(
        "UDP {}, {} {} in the routing table; announced {} {}{last}; {} {} (every {} s); {} {} contacted, {} answered",
        v.port,
        v.table_nodes,
        plural(v.table_nodes as u64, "node", "nodes"),
        v.announces,
        plural(v.announces, "time", "times"),
        v.queries,
        plural(v.queries, "query", "queries"),
        every.as_secs(),
        v.contacted,
        plural(v.contacted, "address", "addresses"),
        v.answered,
    )
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn bootstrap_list_from_names_and_warm_nodes() {
        let warm: Vec<NodeRecord> = ["192.0.2.9:6881", "[2001:db8::9]:6881", "192.0.2.1:6881"]
            .iter()
            .map(|s| NodeRecord {
                id: [1; 20],
                addr: a(s),
            })
            .collect();
        let ok = |v: &[&str]| Ok(v.iter().map(|s| a(s)).collect::<Vec<_>>());
        #[rustfmt::skip]
        type Resolved = Vec<(String, Result<Vec<SocketAddr>, String>)>;
        /// (case, resolved, warm nodes, bootstrap list, unusable names)
        type Row<'a> = (
            &'a str,
            Resolved,
            &'a [NodeRecord],
            Vec<SocketAddrV4>,
            Vec<(String, String)>,
        );
        let table: Vec<Row> = vec![
            (
                "one literal",
                vec![("192.0.2.1:6881".into(), ok(&["192.0.2.1:6881"]))],
                &[],
                vec![v4("192.0.2.1:6881")],
                vec![],
            ),
            (
                "a name with two addresses and a duplicate",
                vec![(
                    "r.example:6881".into(),
                    ok(&["192.0.2.1:6881", "192.0.2.2:6881", "192.0.2.1:6881"]),
                )],
                &[],
                vec![v4("192.0.2.1:6881"), v4("192.0.2.2:6881")],
                vec![],
            ),
            (
                "unresolvable name next to a good one",
                vec![
                    ("bad.example:1".into(), Err("no such host".into())),
                    ("192.0.2.1:6881".into(), ok(&["192.0.2.1:6881"])),
                ],
                &[],
                vec![v4("192.0.2.1:6881")],
                vec![("bad.example:1".into(), "no such host".into())],
            ),
            (
                "IPv6 only is unusable",
                vec![("v6.example:1".into(), ok(&["[2001:db8::1]:1"]))],
                &[],
                vec![],
                vec![(
                    "v6.example:1".into(),
                    "IPv6 only (the DHT is IPv4-only)".into(),
                )],
            ),
            (
                "a name without addresses",
                vec![("empty.example:1".into(), ok(&[]))],
                &[],
                vec![],
                vec![("empty.example:1".into(), "no address".into())],
            ),
            (
                "warm nodes follow, IPv4 only, no duplicates",
                vec![("192.0.2.1:6881".into(), ok(&["192.0.2.1:6881"]))],
                &warm,
                vec![v4("192.0.2.1:6881"), v4("192.0.2.9:6881")],
                vec![],
            ),
            (
                "warm nodes alone",
                vec![("bad.example:1".into(), Err("timeout".into()))],
                &warm,
                vec![v4("192.0.2.9:6881"), v4("192.0.2.1:6881")],
                vec![("bad.example:1".into(), "timeout".into())],
            ),
        ];
        for (case, resolved, warm, addrs, unusable) in table {
            let plan = plan_bootstrap(&resolved, warm);
            assert_eq!(plan.addrs, addrs, "{case}");
            assert_eq!(plan.unusable, unusable, "{case}");
        }
        let many: Vec<NodeRecord> = (0..100u32)
            .map(|i| NodeRecord {
                id: [0; 20],
                addr: SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0001 + i), 6881)),
            })
            .collect();
        assert_eq!(plan_bootstrap(&[], &many).addrs.len(), MAX_WARM_BOOTSTRAP);
    }

    #[test]
    fn problems_say_what_was_tried() {
        #[rustfmt::skip]
        let table = [
            (Problem::NothingResolves(vec![("router.example:6881".into(), "no such host".into()),
                                           ("x.example:1".into(), "timeout".into())]),
             "no DHT bootstrap node resolves: router.example:6881 (no such host), x.example:1 (timeout)"),
            (Problem::Start("Address in use".into()), "cannot start the DHT node: Address in use"),
            (Problem::NoAnswer { tried: vec![v4("192.0.2.1:6881"), v4("192.0.2.2:1")], unusable: vec![] },
             "no DHT bootstrap node answered (tried 192.0.2.1:6881, 192.0.2.2:1)"),
            (Problem::NoAnswer { tried: vec![v4("192.0.2.1:6881")],
                                 unusable: vec![("bad.example:1".into(), "no such host".into())] },
             "no DHT bootstrap node answered (tried 192.0.2.1:6881); unresolved: bad.example:1 (no such host)"),
        ];
        for (problem, want) in table {
            assert_eq!(problem.to_string(), want);
        }
        assert!(
            Problem::TableEmpty
                .to_string()
                .contains("routing table is empty")
        );
    }

    #[test]
    fn detail_reads_as_a_sentence() {
        #[rustfmt::skip]
        let table = [
            (View { port: 52191, table_nodes: 1, ..View::default() },
             "UDP 52191, 1 node in the routing table; announced 0 times; 0 queries (every 30 s); 0 addresses contacted, 0 answered"),
            (View { port: 52191, table_nodes: 3, announces: 1, last_announce_ok: Some(true), queries: 1,
                    contacted: 1, answered: 1, ..View::default() },
             "UDP 52191, 3 nodes in the routing table; announced 1 time (last reached the DHT); 1 query (every 30 s); 1 address contacted, 1 answered"),
            (View { port: 40000, table_nodes: 9, announces: 4, last_announce_ok: Some(false), queries: 20,
                    stable: true, contacted: 5, answered: 3 },
             "UDP 40000, 9 nodes in the routing table; announced 4 times (last reached no node); 20 queries (every 60 s); 5 addresses contacted, 3 answered"),
        ];
        for (view, want) in table {
            assert_eq!(detail(&view), want);
        }
    }
}
