//! NAT topologies for end-to-end tests, built on the lab's public API.
//!
//! [`NatLab::build`] makes LAN 1 the "internet": every host on it (public hosts and NAT routers)
//! also gets `198.51.100.<host number>/24` on `eth0`. That is an RFC 5737 documentation range:
//! global unicast and not private for Go's rules and ours (so endpoints and introducers there
//! count as public), and it never leaves the lab's namespaces. Each NAT gets a LAN of its own
//! (LAN 2, 3, … in the order given) holding its router and the hosts behind it; those hosts get
//! a default route via the router and have no other way out.
//!
//! A router forwards, and masquerades what leaves through its public leg (nftables `masquerade`:
//! the source port is kept when it is free, so a private host's mapping is the same for every
//! destination: an endpoint-independent, "cone" NAT). It drops unsolicited packets from the
//! internet side (new connections to the router itself or towards the private side), as a home
//! router does. That matters for hole punching: a dropped packet leaves no conntrack entry, so
//! the first of two crossing punch packets is simply lost and the second finds the mapping the
//! first one opened; without the drop, the first packet would create an inbound entry on the
//! other router that takes the port, and the other side's outbound mapping would move to a
//! random port.
//!
//! [`NatLab::build_with`] can make the routers move one UDP source port: packets from
//! [`Behaviour::shift_port`] `P` leave as `P + 1` (for every destination, so the mapping stays
//! endpoint-independent), as a NAT does when the port is in use by another host behind it. Peers
//! then reach that socket only through the mapping a third party observed, never through
//! `<router address>:P`.
//!
//! Needs `nft` (package nftables) in the hosts; [`NatLab::build`] checks.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, ensure};

use crate::lab::{self, Host, Lab};

/// The first three octets of the "internet" addresses.
pub const PUBLIC_PREFIX: [u8; 3] = [198, 51, 100];

/// How the routers translate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// A UDP source port the routers map to the next port up instead of keeping it.
    pub shift_port: Option<u16>,
}

/// nftables rules of a router whose public leg is `eth0` and public address `public`.
fn router_rules(public: Ipv4Addr, behaviour: Behaviour) -> String {
    let shift = behaviour.shift_port.map_or(String::new(), |p| {
        format!(
            "oifname \"eth0\" udp sport {p} counter snat ip to {public}:{}\n        ",
            u32::from(p) + 1
        )
    });
    ROUTER_RULES.replace("SHIFT", &shift)
}

/// The rules, with `SHIFT` where a port shift goes (before the masquerade).
const ROUTER_RULES: &str = r#"table ip wgmesh_lab_nat {
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        SHIFToifname "eth0" masquerade
    }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "eth0" ct state new drop
    }
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname "eth0" ct state new drop
    }
}
"#;

/// A lab with public hosts and hosts behind NAT routers; see the module documentation.
#[derive(Debug)]
pub struct NatLab {
    lab: Lab,
    /// (router, hosts behind it).
    nats: Vec<(String, Vec<String>)>,
}

impl NatLab {
    /// Builds the lab: `public` hosts on the internet LAN, and for each `(router, hosts)` of
    /// `nats` a router on the internet LAN with `hosts` behind it.
    ///
    /// # Errors
    ///
    /// When the lab cannot be built or a router cannot be configured (everything built so far is
    /// removed again).
    pub fn build(test_name: &str, public: &[&str], nats: &[(&str, &[&str])]) -> Result<Self> {
        Self::build_with(test_name, public, nats, Behaviour::default())
    }

    /// [`NatLab::build`] with routers that translate as `behaviour` says.
    ///
    /// # Errors
    ///
    /// As [`NatLab::build`].
    pub fn build_with(
        test_name: &str,
        public: &[&str],
        nats: &[(&str, &[&str])],
        behaviour: Behaviour,
    ) -> Result<Self> {
        lab::require_tool("nft", "nftables");
        ensure!(!nats.is_empty(), "a NAT lab needs at least one NAT");
        let mut internet: Vec<&str> = public.to_vec();
        internet.extend(nats.iter().map(|(router, _)| *router));
        let mut builder = Lab::builder(test_name).lan(&internet);
        for (router, hosts) in nats {
            let mut lan = vec![*router];
            lan.extend_from_slice(hosts);
            builder = builder.lan(&lan);
        }
        let lab = builder.build()?;
        let this = Self {
            lab,
            nats: nats
                .iter()
                .map(|(r, hs)| {
                    (
                        (*r).to_owned(),
                        hs.iter().map(|h| (*h).to_owned()).collect(),
                    )
                })
                .collect(),
        };
        for name in &internet {
            let host = this.lab.host(name);
            let addr = format!("{}/24", public_ip(host));
            host.exec_ok("ip", &["addr", "add", &addr, "dev", "eth0"])
                .with_context(|| format!("giving {name} its public address"))?;
        }
        for (lan, (router, hosts)) in this.nats.iter().enumerate() {
            let router = this.lab.host(router);
            this.configure_router(router, behaviour)?;
            let gateway = router
                .ip_on(lan + 2)
                .context("the router has a leg on its private LAN")?
                .to_string();
            for name in hosts {
                this.lab
                    .host(name)
                    .exec_ok("ip", &["route", "add", "default", "via", &gateway])
                    .with_context(|| format!("routing {name} through its NAT"))?;
            }
        }
        Ok(this)
    }

    fn configure_router(&self, router: &Host, behaviour: Behaviour) -> Result<()> {
        let name = router.name();
        router
            .exec_ok("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .with_context(|| format!("turning forwarding on in {name}"))?;
        let rules = router.dir().join("nat.nft");
        std::fs::write(&rules, router_rules(public_ip(router), behaviour))
            .with_context(|| format!("writing {rules:?}"))?;
        let path = rules.to_string_lossy().into_owned();
        router
            .exec_ok("nft", &["-f", &path])
            .with_context(|| format!("loading the NAT rules in {name}"))?;
        Ok(())
    }

    /// The lab.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The host called `name`; panics when there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.lab.host(name)
    }

    /// The router `host` sits behind, if it is behind one.
    pub fn router_of(&self, host: &str) -> Option<&Host> {
        self.nats
            .iter()
            .find(|(_, hosts)| hosts.iter().any(|h| h == host))
            .map(|(router, _)| self.lab.host(router))
    }

    /// How many connections (first packets) `router` moved to another port so far (see
    /// [`Behaviour::shift_port`]; 0 without a shift).
    ///
    /// # Errors
    ///
    /// When `nft` fails or its output has no counter.
    pub fn shifted(&self, router: &str) -> Result<u64> {
        let out = self.lab.host(router).exec_ok(
            "nft",
            &["list", "chain", "ip", "wgmesh_lab_nat", "postrouting"],
        )?;
        let Some(line) = out.lines().find(|l| l.contains("snat")) else {
            return Ok(0);
        };
        let packets = line
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .with_context(|| format!("no packet counter in {line:?}"))?;
        packets
            .parse()
            .with_context(|| format!("packet counter {packets:?} in {line:?}"))
    }

    /// The address the internet sees for `host`: its own public address when it is on the
    /// internet LAN, else its router's.
    pub fn public_ip(&self, host: &str) -> Ipv4Addr {
        match self.router_of(host) {
            Some(router) => public_ip(router),
            None => public_ip(self.lab.host(host)),
        }
    }
}

/// The public address of a host on the internet LAN (`198.51.100.<host number>`).
pub fn public_ip(host: &Host) -> Ipv4Addr {
    let [a, b, c] = PUBLIC_PREFIX;
    Ipv4Addr::new(a, b, c, host.number())
}
