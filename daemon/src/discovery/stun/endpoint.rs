//! Which public endpoint this node announces (crypto-and-wire §15.1), and when it asks again.
//! Pure.
//!
//! Each round: a global IPv6 address of the host, if there is one, wins
//! (`[ipv6]:<WireGuard port>`, NAT type `unknown`: there is no NAT to measure, and STUN is not
//! asked); otherwise the address the STUN servers saw, with our WireGuard port (the port they
//! saw belongs to the probe socket, not to WireGuard) and the NAT type their two answers give
//! ([`super::nat::detect_nat`]). When nothing was learned the old endpoint stays.
//!
//! Unlike Go, a STUN answer that is not a public address (RFC 1918, loopback, link-local, ULA,
//! unspecified: a STUN server inside the same private network) is ignored, as Go ignores such an
//! address when a peer reports it (peer-as-STUN): announcing it would send far peers to an
//! address they cannot reach, while the wildcard we announce otherwise lets each receiver use
//! the address our packets came from. What counts as public: [`super::public`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::nat::detect_nat;
use super::public::{Ipv6Choice, is_public_ip};
use crate::node::{LocalNode, NatType};

/// Time between two rounds once one learned something (Go `STUNRefreshInterval`).
pub const REFRESH: Duration = Duration::from_secs(60);
/// First delay after a round that learned nothing; it doubles up to [`REFRESH`].
pub const RETRY_MIN: Duration = Duration::from_secs(5);

/// The delay before the next round, after `failures` rounds in a row that learned nothing
/// (0: the last round learned something). Go waits 60 s in every case; a node that starts
/// before its network is up learns its endpoint sooner this way.
pub fn next_delay(failures: u32) -> Duration {
    match failures {
        0 => REFRESH,
        n => RETRY_MIN.saturating_mul(1 << (n - 1).min(16)).min(REFRESH),
    }
}

/// What one STUN server answered, or why it did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReport {
    /// The server as configured (`host:port`).
    pub server: String,
    /// The address it saw us at, or why there is none.
    pub answer: Result<SocketAddr, String>,
}

/// An endpoint and NAT type learned in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learned {
    /// Our WireGuard endpoint as others should use it.
    pub endpoint: SocketAddr,
    /// Our NAT type.
    pub nat: NatType,
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Announce this; `detail` says how it was learned (the `stun` layer's status detail).
    Use {
        /// What was learned.
        learned: Learned,
        /// How, for humans.
        detail: String,
    },
    /// Nothing learned: keep the old endpoint and NAT type; `error` says why (the layer
    /// retries).
    Keep {
        /// Why, for humans.
        error: String,
    },
}

/// One round's decision: `ipv6` (the scan's result, `None` when skipped or empty) wins;
/// otherwise the first two `reports` decide (a single report gives NAT type `unknown`); an
/// answer that is not public, or IPv6 while `ipv6_enabled` is false, counts as no answer.
pub fn decide(
    ipv6: Option<&Ipv6Choice>,
    reports: &[ServerReport],
    wg_port: u16,
    ipv6_enabled: bool,
) -> Decision {
    if let Some(choice) = ipv6 {
        let endpoint = SocketAddr::new(IpAddr::V6(choice.addr), wg_port);
        return Decision::Use {
            learned: Learned {
                endpoint,
                nat: NatType::Unknown,
            },
            detail: format!(
                "{endpoint}, nat unknown (global IPv6 on {}; STUN not asked)",
                choice.iface
            ),
        };
    }
    let reports = &reports[..reports.len().min(2)];
    let checked: Vec<Result<SocketAddr, String>> = reports
        .iter()
        .map(|r| match r.answer {
            Ok(a) if !is_public_ip(a.ip()) => Err(format!("saw us at {a}, not a public address")),
            Ok(a) if a.is_ipv6() && !ipv6_enabled => {
                Err(format!("saw us at {a}, an IPv6 address (IPv6 is off)"))
            }
            ref other => other.clone(),
        })
        .collect();
    let usable = |i: usize| checked.get(i).and_then(|r| r.as_ref().ok().copied());
    let how: Vec<String> = reports
        .iter()
        .zip(&checked)
        .map(|(r, c)| match c {
            Ok(a) => format!("{} saw {a}", r.server),
            Err(e) => format!("{}: {e}", r.server),
        })
        .collect();
    let how = how.join("; ");
    match detect_nat(usable(0), usable(1)) {
        Some(found) => {
            let endpoint = SocketAddr::new(found.mapped.ip(), wg_port);
            let note = if reports.len() < 2 {
                "; one STUN server: the NAT type needs two"
            } else {
                ""
            };
            Decision::Use {
                learned: Learned {
                    endpoint,
                    nat: found.nat,
                },
                detail: format!("{endpoint}, nat {} ({how}{note})", found.nat.as_str()),
            }
        }
        None if reports.is_empty() => Decision::Keep {
            error: "no STUN server configured".to_owned(),
        },
        None => Decision::Keep {
            error: format!("no STUN server gave a public address: {how}"),
        },
    }
}

/// What [`apply`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// `public_endpoint` was replaced.
    pub endpoint: bool,
    /// `nat_type` was replaced.
    pub nat: bool,
}

/// Puts `learned` into `node`, changing only what differs. The endpoint is also written by the
/// exchange layer (what a peer saw in a REPLY): it is replaced only when this round learned
/// something else than the last one (`previous`), so an unchanged STUN result never undoes a
/// newer observation and the two never flap. The NAT type is ours alone.
pub fn apply(node: &mut LocalNode, previous: Option<&Learned>, learned: &Learned) -> Applied {
    let mut applied = Applied::default();
    let news = previous.is_none_or(|p| p.endpoint != learned.endpoint);
    if news && node.public_endpoint != Some(learned.endpoint) {
        node.public_endpoint = Some(learned.endpoint);
        applied.endpoint = true;
    }
    if node.nat_type != Some(learned.nat) {
        node.nat_type = Some(learned.nat);
        applied.nat = true;
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(server: &str, answer: Result<&str, &str>) -> ServerReport {
        ServerReport {
            server: server.to_owned(),
            answer: answer.map(|a| a.parse().unwrap()).map_err(str::to_owned),
        }
    }

    #[test]
    fn decide_table() {
        let v6 = Ipv6Choice {
            addr: "2a00:1450::7".parse().unwrap(),
            iface: "eth0".into(),
        };
        const S1: &str = "198.51.100.10:3478";
        const S2: &str = "198.51.100.11:3478";
        const SILENT: &str = "no answer within 3 s";
        // (case, ipv6 scan, reports, ipv6 enabled, expected (endpoint, nat) or the error)
        type Row = (
            &'static str,
            Option<Ipv6Choice>,
            Vec<ServerReport>,
            bool,
            Result<(&'static str, NatType, &'static str), &'static str>,
        );
        let table: Vec<Row> = vec![
            (
                "global IPv6 wins; STUN is not asked",
                Some(v6.clone()),
                vec![],
                true,
                Ok((
                    "[2a00:1450::7]:51820",
                    NatType::Unknown,
                    "[2a00:1450::7]:51820, nat unknown (global IPv6 on eth0; STUN not asked)",
                )),
            ),
            (
                "cone: both saw the same mapping; our WireGuard port is kept",
                None,
                vec![
                    report(S1, Ok("203.0.113.1:40000")),
                    report(S2, Ok("203.0.113.1:40000")),
                ],
                true,
                Ok((
                    "203.0.113.1:51820",
                    NatType::Cone,
                    "203.0.113.1:51820, nat cone (198.51.100.10:3478 saw 203.0.113.1:40000; 198.51.100.11:3478 saw 203.0.113.1:40000)",
                )),
            ),
            (
                "symmetric: different ports",
                None,
                vec![
                    report(S1, Ok("203.0.113.1:40000")),
                    report(S2, Ok("203.0.113.1:40001")),
                ],
                true,
                Ok((
                    "203.0.113.1:51820",
                    NatType::Symmetric,
                    "203.0.113.1:51820, nat symmetric (198.51.100.10:3478 saw 203.0.113.1:40000; 198.51.100.11:3478 saw 203.0.113.1:40001)",
                )),
            ),
            (
                "one silent: unknown with the other's address",
                None,
                vec![report(S1, Err(SILENT)), report(S2, Ok("203.0.113.9:1"))],
                true,
                Ok((
                    "203.0.113.9:51820",
                    NatType::Unknown,
                    "203.0.113.9:51820, nat unknown (198.51.100.10:3478: no answer within 3 s; 198.51.100.11:3478 saw 203.0.113.9:1)",
                )),
            ),
            (
                "a single server: unknown",
                None,
                vec![report(S1, Ok("203.0.113.1:40000"))],
                true,
                Ok((
                    "203.0.113.1:51820",
                    NatType::Unknown,
                    "203.0.113.1:51820, nat unknown (198.51.100.10:3478 saw 203.0.113.1:40000; one STUN server: the NAT type needs two)",
                )),
            ),
            (
                "only the first two servers count",
                None,
                vec![
                    report(S1, Err(SILENT)),
                    report(S2, Err(SILENT)),
                    report("x:1", Ok("203.0.113.1:1")),
                ],
                true,
                Err(
                    "no STUN server gave a public address: 198.51.100.10:3478: no answer within 3 s; 198.51.100.11:3478: no answer within 3 s",
                ),
            ),
            (
                "a private answer is ignored",
                None,
                vec![
                    report(S1, Ok("192.168.1.5:40000")),
                    report(S2, Ok("203.0.113.1:40000")),
                ],
                true,
                Ok((
                    "203.0.113.1:51820",
                    NatType::Unknown,
                    "203.0.113.1:51820, nat unknown (198.51.100.10:3478: saw us at 192.168.1.5:40000, not a public address; 198.51.100.11:3478 saw 203.0.113.1:40000)",
                )),
            ),
            (
                "only private answers: keep",
                None,
                vec![
                    report(S1, Ok("10.0.0.5:40000")),
                    report(S2, Ok("10.0.0.5:40000")),
                ],
                true,
                Err(
                    "no STUN server gave a public address: 198.51.100.10:3478: saw us at 10.0.0.5:40000, not a public address; 198.51.100.11:3478: saw us at 10.0.0.5:40000, not a public address",
                ),
            ),
            (
                "an IPv6 answer with IPv6 off",
                None,
                vec![report(S1, Ok("[2a00::1]:4000")), report(S2, Err(SILENT))],
                false,
                Err(
                    "no STUN server gave a public address: 198.51.100.10:3478: saw us at [2a00::1]:4000, an IPv6 address (IPv6 is off); 198.51.100.11:3478: no answer within 3 s",
                ),
            ),
            (
                "no servers",
                None,
                vec![],
                true,
                Err("no STUN server configured"),
            ),
        ];
        for (case, ipv6, reports, enabled, want) in table {
            let got = decide(ipv6.as_ref(), &reports, 51820, enabled);
            let want = match want {
                Ok((ep, nat, detail)) => Decision::Use {
                    learned: Learned {
                        endpoint: ep.parse().unwrap(),
                        nat,
                    },
                    detail: detail.to_owned(),
                },
                Err(error) => Decision::Keep {
                    error: error.to_owned(),
                },
            };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn apply_table() {
        let ep = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let learned = |e: &str, nat| Learned {
            endpoint: ep(e),
            nat,
        };
        // (case, node's endpoint and NAT now, previous round, this round, expected node after,
        // expected changes)
        type Row = (
            &'static str,
            (Option<&'static str>, Option<NatType>),
            Option<Learned>,
            Learned,
            (Option<&'static str>, Option<NatType>),
            Applied,
        );
        let both = Applied {
            endpoint: true,
            nat: true,
        };
        let table: Vec<Row> = vec![
            (
                "first round sets both",
                (None, None),
                None,
                learned("203.0.113.1:51820", NatType::Cone),
                (Some("203.0.113.1:51820"), Some(NatType::Cone)),
                both,
            ),
            (
                "same result again changes nothing",
                (Some("203.0.113.1:51820"), Some(NatType::Cone)),
                Some(learned("203.0.113.1:51820", NatType::Cone)),
                learned("203.0.113.1:51820", NatType::Cone),
                (Some("203.0.113.1:51820"), Some(NatType::Cone)),
                Applied::default(),
            ),
            (
                "an unchanged result keeps a newer observation of the exchange layer",
                (Some("203.0.113.77:51820"), Some(NatType::Cone)),
                Some(learned("203.0.113.1:51820", NatType::Cone)),
                learned("203.0.113.1:51820", NatType::Cone),
                (Some("203.0.113.77:51820"), Some(NatType::Cone)),
                Applied::default(),
            ),
            (
                "a new result replaces it",
                (Some("203.0.113.77:51820"), Some(NatType::Cone)),
                Some(learned("203.0.113.1:51820", NatType::Cone)),
                learned("203.0.113.2:51820", NatType::Cone),
                (Some("203.0.113.2:51820"), Some(NatType::Cone)),
                Applied {
                    endpoint: true,
                    nat: false,
                },
            ),
            (
                "the NAT type alone changes",
                (Some("203.0.113.1:51820"), Some(NatType::Cone)),
                Some(learned("203.0.113.1:51820", NatType::Cone)),
                learned("203.0.113.1:51820", NatType::Symmetric),
                (Some("203.0.113.1:51820"), Some(NatType::Symmetric)),
                Applied {
                    endpoint: false,
                    nat: true,
                },
            ),
            (
                "the exchange layer already found the same endpoint",
                (Some("203.0.113.1:51820"), None),
                None,
                learned("203.0.113.1:51820", NatType::Unknown),
                (Some("203.0.113.1:51820"), Some(NatType::Unknown)),
                Applied {
                    endpoint: false,
                    nat: true,
                },
            ),
        ];
        for (case, (now_ep, now_nat), previous, new, (want_ep, want_nat), want) in table {
            let mut node = crate::node::tests::local();
            node.public_endpoint = now_ep.map(ep);
            node.nat_type = now_nat;
            let before = node.clone();
            let applied = apply(&mut node, previous.as_ref(), &new);
            assert_eq!(applied, want, "{case}");
            assert_eq!(node.public_endpoint, want_ep.map(ep), "{case}");
            assert_eq!(node.nat_type, want_nat, "{case}");
            assert_eq!(
                LocalNode {
                    public_endpoint: before.public_endpoint,
                    nat_type: before.nat_type,
                    ..node
                },
                before,
                "{case}: nothing else changes"
            );
        }
    }

    #[test]
    fn next_delay_table() {
        let secs = |n| next_delay(n).as_secs();
        let got: Vec<u64> = (0..8).map(secs).collect();
        assert_eq!(got, [60, 5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(secs(u32::MAX), 60);
    }
}
