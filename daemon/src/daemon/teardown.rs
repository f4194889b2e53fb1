//! What the daemon changed on the host and must undo on every exit path it controls: the
//! WireGuard device (with its peers and our routes, which go with the link), and the forwarding
//! switches and firewall accept rules of an introducer.
//!
//! [`Teardown::run`] is idempotent and bounded by the caller. It never depends on the tasks having
//! stopped: a kernel link is deleted by name even when a stuck task still holds the device, and
//! the embedded device, if a task still holds it, ends with the process (its tun file closes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::host_changes;
use crate::system::net::{FirewallGuard, ForwardingState, Netlink, PROC_SYS, restore_forwarding};
use crate::system::wg::AnyWireGuard;

/// One change to undo.
#[derive(Debug)]
enum Undo {
    /// IP forwarding was switched on; put the previous values back, then drop the record of them
    /// (if everything was undone).
    Forwarding(ForwardingState, PathBuf),
    /// Firewall accept rules were added (or none were needed); delete ours.
    Firewall(FirewallGuard),
}

/// Everything to remove or restore when the daemon stops.
pub struct Teardown {
    net: Netlink,
    iface: String,
    wg: Option<Arc<AnyWireGuard>>,
    undo: Vec<Undo>,
}

impl Teardown {
    /// Takes charge of `wg`, the device of `iface`. The tasks hold clones of the same `Arc`;
    /// [`Teardown::run`] stops the device itself when it holds the last one.
    pub fn new(net: Netlink, iface: &str, wg: Arc<AnyWireGuard>) -> Self {
        Self {
            net,
            iface: iface.to_owned(),
            wg: Some(wg),
            undo: Vec::new(),
        }
    }

    /// Remembers that forwarding was enabled, with the values to restore and the
    /// `host_changes` record that holds them.
    pub fn restore_forwarding_later(&mut self, previous: ForwardingState, record: PathBuf) {
        self.undo.push(Undo::Forwarding(previous, record));
    }

    /// Remembers the firewall rules to delete.
    pub fn remove_firewall_rules_later(&mut self, guard: FirewallGuard) {
        self.undo.push(Undo::Firewall(guard));
    }

    /// Undoes everything, newest first, then removes the device. Failures are logged; each step
    /// runs once.
    pub async fn run(&mut self) {
        let mut all_undone = true;
        let mut record = None;
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::Forwarding(previous, path) => {
                    record = Some(path);
                    match restore_forwarding(Path::new(PROC_SYS), previous) {
                        Ok(()) => tracing::info!(
                            ipv4 = previous.ipv4,
                            ipv6 = ?previous.ipv6,
                            "IP forwarding restored"
                        ),
                        Err(e) => {
                            all_undone = false;
                            tracing::error!(error = %e, "cannot restore IP forwarding");
                        }
                    }
                }
                Undo::Firewall(guard) if guard.is_empty() => {}
                Undo::Firewall(guard) => {
                    let (iface, rules) = (guard.iface().to_owned(), guard.rules());
                    match guard.remove().await {
                        Ok(()) => tracing::info!(iface, ?rules, "firewall accept rules removed"),
                        Err(e) => {
                            all_undone = false;
                            tracing::error!(iface, error = %e, "cannot remove firewall accept rules");
                        }
                    }
                }
            }
        }
        // Kept when something could not be undone: the next start finishes the job.
        if let Some(path) = record.filter(|_| all_undone) {
            host_changes::remove(&path);
        }
        let Some(wg) = self.wg.take() else {
            return;
        };
        let iface = self.iface.as_str();
        match Arc::try_unwrap(wg) {
            Ok(wg) => match wg.shutdown().await {
                Ok(()) => tracing::info!(iface, "WireGuard interface removed"),
                Err(e) => {
                    tracing::error!(iface, error = %e, "removing the WireGuard device failed")
                }
            },
            Err(shared) if shared.kind() == "kernel" => {
                // A stuck task still holds the handle; the link is ours (we hold the lock), so
                // delete it by name. Its peers and routes go with it.
                match self.net.delete_link(iface).await {
                    Ok(()) => {
                        tracing::warn!(iface, "WireGuard link deleted while a task still held it")
                    }
                    Err(e) => {
                        tracing::error!(iface, error = %e, "cannot delete the WireGuard link")
                    }
                }
            }
            Err(_) => tracing::warn!(
                iface,
                "a stuck task still holds the embedded WireGuard device; it is removed when the process exits"
            ),
        }
    }
}
