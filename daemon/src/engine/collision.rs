//! Mesh-IP collisions (daemon-behaviour §11): two nodes that claim the same mesh IPv4.
//!
//! [`plan`] is pure: from this node and the stored peers it finds every shared address, picks the
//! winner (the lower public key, compared byte-wise on the base64 text as Go does) and gives each
//! loser the address it moves to: the collision derivation with nonce 1, 2, … up to
//! [`MAX_NONCE`], the first one that no known node (ourselves included) holds. Unlike Go, the
//! local node takes part (Go never checks it), and the nonce loop goes past 1 when nonce 1 is
//! taken too.
//!
//! [`CollisionTask`] is the thin shell: after every reconcile pass it runs [`plan`]; when this
//! node lost, it moves to the new address — [`LocalNode::mesh_ip`] (announcements pick it up at
//! their next send), the interface address, and the identity state file (so a restart keeps it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::reconcile::Reconciled;
use crate::config::{MeshSecret, MeshSubnet};
use crate::crypto::{DerivedKeys, mesh_ipv4_with_nonce};
use crate::identity;
use crate::keys::{PrivateKey, PublicKey};
use crate::node::LocalNode;
use crate::peers::PeerStore;
use crate::system::net::Netlink;

/// Highest nonce tried before a loser keeps its address (and an error is logged).
pub const MAX_NONCE: u32 = 16;

/// One node's claim on a mesh IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The node.
    pub public_key: PublicKey,
    /// The address it holds.
    pub mesh_ip: Ipv4Addr,
}

/// Where a loser of a collision goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// The first free address of the nonce derivation.
    To {
        /// The new address.
        ip: Ipv4Addr,
        /// The nonce that gave it.
        nonce: u32,
    },
    /// Every nonce up to [`MAX_NONCE`] gave a taken address: the loser keeps its address.
    Exhausted,
}

/// One lost collision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    /// The shared address.
    pub mesh_ip: Ipv4Addr,
    /// The node that keeps it.
    pub winner: PublicKey,
    /// Where the loser goes.
    pub to: Move,
}

/// Every collision among the known nodes, by loser.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollisionPlan {
    /// This node lost: where it goes.
    pub local: Option<Loss>,
    /// Peers that lost, with where they are expected to go.
    pub remote: BTreeMap<PublicKey, Loss>,
}

/// The winner order: the lower base64 text wins (Go compares the strings byte-wise).
fn wins(a: &PublicKey, b: &PublicKey) -> bool {
    a.to_string() < b.to_string()
}

/// The first nonce address that nobody in `taken` holds.
pub fn first_free(taken: &BTreeSet<Ipv4Addr>, derive: impl Fn(u32) -> Ipv4Addr) -> Move {
    (1..=MAX_NONCE)
        .map(|nonce| (nonce, derive(nonce)))
        .find(|(_, ip)| !taken.contains(ip))
        .map_or(Move::Exhausted, |(nonce, ip)| Move::To { ip, nonce })
}

/// Finds the collisions among `local` and `peers` and where each loser goes; `derive(key,
/// nonce)` is the collision derivation. Peers with our own key are ignored. Pure.
pub fn plan(
    local: Claim,
    peers: &[Claim],
    derive: impl Fn(&PublicKey, u32) -> Ipv4Addr,
) -> CollisionPlan {
    let mut holders: BTreeMap<Ipv4Addr, BTreeSet<PublicKey>> = BTreeMap::new();
    holders
        .entry(local.mesh_ip)
        .or_default()
        .insert(local.public_key);
    for p in peers.iter().filter(|p| p.public_key != local.public_key) {
        holders.entry(p.mesh_ip).or_default().insert(p.public_key);
    }
    let taken: BTreeSet<Ipv4Addr> = holders.keys().copied().collect();
    let mut out = CollisionPlan::default();
    for (ip, keys) in &holders {
        let Some(winner) = keys
            .iter()
            .copied()
            .reduce(|a, b| if wins(&b, &a) { b } else { a })
        else {
            continue;
        };
        for loser in keys.iter().filter(|k| **k != winner) {
            let loss = Loss {
                mesh_ip: *ip,
                winner,
                to: first_free(&taken, |n| derive(loser, n)),
            };
            if *loser == local.public_key {
                out.local = Some(loss);
            } else {
                out.remote.insert(*loser, loss);
            }
        }
    }
    out
}

/// What the collision derivation needs (crypto-and-wire §3.4).
#[derive(Clone)]
pub struct Derivation {
    /// Values derived from the secret.
    pub keys: DerivedKeys,
    /// The secret.
    pub secret: MeshSecret,
    /// `--mesh-subnet`, if given.
    pub custom: Option<MeshSubnet>,
}

impl Derivation {
    /// The address of `key` for `nonce`.
    pub fn derive(&self, key: &PublicKey, nonce: u32) -> Ipv4Addr {
        mesh_ipv4_with_nonce(
            &self.keys,
            &self.secret,
            &key.to_string(),
            self.custom.as_ref(),
            nonce,
        )
    }
}

/// The `collisions` task: after every reconcile pass, checks for shared mesh IPs and moves this
/// node when it lost.
#[derive(Clone)]
pub struct CollisionTask {
    /// The peers.
    pub store: Arc<PeerStore>,
    /// This node; its mesh IP is replaced here when we lose.
    pub local: watch::Sender<LocalNode>,
    /// Passes of the reconcile loop (the wake-up).
    pub reconciled: watch::Receiver<Reconciled>,
    /// The derivation.
    pub derivation: Derivation,
    /// Netlink, for the interface address.
    pub net: Netlink,
    /// The mesh interface.
    pub ifindex: u32,
    /// Prefix length of the mesh IPv4 subnet.
    pub prefix_len: u8,
    /// `<state-dir>/<iface>.json`.
    pub state_file: PathBuf,
    /// The daemon's private key (written back to the state file with the new address).
    pub private_key: Arc<PrivateKey>,
    /// Remote losers and their expected new address, for the API.
    pub expected: Arc<watch::Sender<BTreeMap<PublicKey, Ipv4Addr>>>,
}

/// Why the task stopped (it is restarted by the supervisor).
#[derive(Debug, thiserror::Error)]
pub enum CollisionError {
    /// The reconcile loop is gone.
    #[error("the reconcile loop stopped publishing")]
    ReconcileGone,
    /// The interface address could not be changed.
    #[error("cannot move the interface to the new mesh IP: {0}")]
    Address(String),
}

impl CollisionTask {
    /// Runs until `cancel`.
    ///
    /// # Errors
    ///
    /// The reconcile loop stopped, or the interface address could not be changed (the local
    /// node keeps its old address then, and the next run tries again).
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), CollisionError> {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                changed = self.reconciled.changed() => {
                    if changed.is_err() {
                        // The reconcile loop ends only when the daemon stops (a failure of that
                        // critical task stops it too): not an error of this task.
                        if cancel.is_cancelled() {
                            return Ok(());
                        }
                        return Err(CollisionError::ReconcileGone);
                    }
                }
            }
            self.check().await?;
        }
    }

    async fn check(&self) -> Result<(), CollisionError> {
        let (me, mesh_ipv6) = {
            let l = self.local.borrow();
            (
                Claim {
                    public_key: l.public_key,
                    mesh_ip: l.mesh_ip,
                },
                l.mesh_ipv6,
            )
        };
        let peers: Vec<Claim> = self
            .store
            .list()
            .into_iter()
            .filter_map(|p| {
                p.mesh_ip.map(|mesh_ip| Claim {
                    public_key: p.public_key,
                    mesh_ip,
                })
            })
            .collect();
        let plan = plan(me, &peers, |k, n| self.derivation.derive(k, n));
        let expected: BTreeMap<PublicKey, Ipv4Addr> = plan
            .remote
            .iter()
            .filter_map(|(k, loss)| match loss.to {
                Move::To { ip, .. } => Some((*k, ip)),
                Move::Exhausted => None,
            })
            .collect();
        self.expected.send_if_modified(|cur| {
            if *cur == expected {
                return false;
            }
            for (k, loss) in &plan.remote {
                if !cur.contains_key(k) {
                    tracing::warn!(
                        mesh_ip = %loss.mesh_ip, winner = %loss.winner, loser = %k,
                        expected = ?loss.to,
                        "mesh IP collision: the peer with the higher key lost and should re-derive"
                    );
                }
            }
            *cur = expected;
            true
        });
        let Some(loss) = plan.local else {
            return Ok(());
        };
        tracing::warn!(
            mesh_ip = %loss.mesh_ip, winner = %loss.winner,
            "mesh IP collision: a peer with a lower key holds our mesh IP"
        );
        match loss.to {
            Move::Exhausted => {
                tracing::error!(
                    mesh_ip = %loss.mesh_ip, tries = MAX_NONCE,
                    "mesh IP collision: every re-derived address is taken; keeping ours"
                );
                Ok(())
            }
            Move::To { ip, nonce } => self.move_to(loss.mesh_ip, ip, nonce, mesh_ipv6).await,
        }
    }

    async fn move_to(
        &self,
        old: Ipv4Addr,
        new: Ipv4Addr,
        nonce: u32,
        mesh_ipv6: Ipv6Addr,
    ) -> Result<(), CollisionError> {
        let addresses = [
            IpNet::new(new.into(), self.prefix_len)
                .map_err(|e| CollisionError::Address(e.to_string()))?,
            IpNet::new(mesh_ipv6.into(), 64).map_err(|e| CollisionError::Address(e.to_string()))?,
        ];
        self.net
            .sync_addresses(self.ifindex, &addresses)
            .await
            .map_err(|e| CollisionError::Address(e.to_string()))?;
        tracing::info!(%old, %new, nonce, "mesh IP collision: interface moved to the new mesh IP");
        self.local.send_modify(|l| l.mesh_ip = new);
        tracing::info!(%new, "mesh IP collision: announcing the new mesh IP from the next send");
        let public_key = self.local.borrow().public_key;
        match identity::save_parts(
            &self.state_file,
            &self.private_key,
            public_key,
            new,
            mesh_ipv6,
        ) {
            Ok(()) => tracing::info!(
                file = %self.state_file.display(), %new,
                "mesh IP collision: new mesh IP saved; a restart keeps it"
            ),
            Err(e) => tracing::error!(
                error = %e, %new,
                "mesh IP collision: cannot save the new mesh IP; a restart returns to the old one"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretOrigin;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn claim(b: u8, s: &str) -> Claim {
        Claim {
            public_key: key(b),
            mesh_ip: ip(s),
        }
    }

    /// A derivation that is easy to read: key byte b, nonce n -> 10.9.b.n.
    fn toy(k: &PublicKey, n: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 9, k.0[0], n as u8)
    }

    #[test]
    fn winner_is_the_lower_base64_text() {
        // Byte-wise on the text, not on the raw key: [0x04;32] is "BAQE…", [0xf8;32] is "+Pj4…",
        // and '+' (0x2b) sorts before 'B' (0x42) although 0xf8 > 0x04.
        assert!(key(0xf8).to_string() < key(0x04).to_string());
        assert!(wins(&key(0xf8), &key(0x04)));
        assert!(wins(&key(1), &key(2)));
        assert!(!wins(&key(2), &key(2)));
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            local: Claim,
            peers: Vec<Claim>,
            local_to: Option<Move>,
            remote: Vec<(u8, Move)>,
        }
        let to = |s: &str, nonce| Move::To { ip: ip(s), nonce };
        let cases = [
            Case {
                name: "no collision",
                local: claim(1, "10.9.0.1"),
                peers: vec![claim(2, "10.9.0.2"), claim(3, "10.9.0.3")],
                local_to: None,
                remote: vec![],
            },
            Case {
                name: "local loses to a lower key (Go never checks the local node)",
                local: claim(3, "10.9.0.1"),
                peers: vec![claim(2, "10.9.0.1")],
                local_to: Some(to("10.9.3.1", 1)),
                remote: vec![],
            },
            Case {
                name: "local wins: the peer is expected to move",
                local: claim(1, "10.9.0.1"),
                peers: vec![claim(2, "10.9.0.1")],
                local_to: None,
                remote: vec![(2, to("10.9.2.1", 1))],
            },
            Case {
                name: "two peers collide, we are not involved",
                local: claim(1, "10.9.0.1"),
                peers: vec![claim(5, "10.9.0.7"), claim(4, "10.9.0.7")],
                local_to: None,
                remote: vec![(5, to("10.9.5.1", 1))],
            },
            Case {
                name: "three share one address: both losers move",
                local: claim(3, "10.9.0.7"),
                peers: vec![claim(2, "10.9.0.7"), claim(4, "10.9.0.7")],
                local_to: Some(to("10.9.3.1", 1)),
                remote: vec![(4, to("10.9.4.1", 1))],
            },
            Case {
                name: "nonce 1 taken by a third peer: nonce 2",
                local: claim(3, "10.9.0.1"),
                peers: vec![claim(2, "10.9.0.1"), claim(9, "10.9.3.1")],
                local_to: Some(to("10.9.3.2", 2)),
                remote: vec![],
            },
            Case {
                name: "a peer entry with our own key is not a collision",
                local: claim(3, "10.9.0.1"),
                peers: vec![claim(3, "10.9.0.1")],
                local_to: None,
                remote: vec![],
            },
        ];
        for c in cases {
            let p = plan(c.local, &c.peers, toy);
            assert_eq!(p.local.map(|l| l.to), c.local_to, "{}", c.name);
            let remote: Vec<(u8, Move)> = p.remote.iter().map(|(k, l)| (k.0[0], l.to)).collect();
            assert_eq!(remote, c.remote, "{}", c.name);
        }
    }

    #[test]
    fn loser_records_the_winner_and_the_address() {
        let p = plan(claim(3, "10.9.0.1"), &[claim(2, "10.9.0.1")], toy);
        let loss = p.local.unwrap();
        assert_eq!(loss.winner, key(2));
        assert_eq!(loss.mesh_ip, ip("10.9.0.1"));
    }

    #[test]
    fn bounded_when_every_address_is_taken() {
        // Every nonce gives the same address, which is taken.
        let taken: BTreeSet<Ipv4Addr> = [ip("10.9.9.9")].into();
        assert_eq!(first_free(&taken, |_| ip("10.9.9.9")), Move::Exhausted);
        let calls = std::cell::Cell::new(0);
        let _ = first_free(&taken, |_| {
            calls.set(calls.get() + 1);
            ip("10.9.9.9")
        });
        assert_eq!(calls.get(), MAX_NONCE);
        let p = plan(claim(3, "10.9.9.9"), &[claim(2, "10.9.9.9")], |_, _| {
            ip("10.9.9.9")
        });
        assert_eq!(p.local.map(|l| l.to), Some(Move::Exhausted));
    }

    #[test]
    fn real_derivation_stays_in_the_subnet() {
        let secret = MeshSecret::parse("test-secret-0123456789", SecretOrigin::Literal).unwrap();
        let keys = DerivedKeys::derive(&secret);
        let legacy = Derivation {
            keys: keys.clone(),
            secret: secret.clone(),
            custom: None,
        };
        let custom = Derivation {
            keys,
            secret,
            custom: Some("192.168.100.0/24".parse().unwrap()),
        };
        for d in [&legacy, &custom] {
            let net: ipnet::Ipv4Net = d
                .custom
                .map_or_else(|| crate::crypto::legacy_subnet(&d.keys), |s| s.as_net());
            let p = plan(claim(3, "10.9.0.1"), &[claim(2, "10.9.0.1")], |k, n| {
                d.derive(k, n)
            });
            let Some(Loss {
                to: Move::To { ip, nonce: 1 },
                ..
            }) = p.local
            else {
                panic!("{p:?}");
            };
            assert!(net.contains(&ip), "{ip} in {net}");
            assert_eq!(ip, d.derive(&key(3), 1));
        }
    }
}
