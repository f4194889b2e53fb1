//! Static bootstrap peers (`--peer HOST:PORT`, ours, not Go's): nodes at known exchange
//! addresses, for networks with neither multicast nor a reachable DHT.
//!
//! Each one is resolved (DNS allowed; a name that does not resolve yet is retried, never a failed
//! start) and sent a HELLO through the exchange socket as soon as it listens. Until it answers it
//! is tried again with a backoff of 1 s doubling to 60 s; once it answered, it gets a HELLO every
//! 60 s, which keeps it (and the peers it lists) fresh in the store. Its REPLY stores it as `dht`
//! (the exchange's method) and its known peers as `dht-transitive`; the exchange then contacts
//! those directly, so a node that only knows one address joins the whole mesh.
//!
//! Layer `static` in `GET /v1/status`: `running` with which peers answered and which are still
//! tried, or `retrying` with the errors while none answered; `off` without `--peer`. Metrics of
//! layer `static`: a discovery event per answer, a send per contact attempt (the HELLO datagrams
//! themselves are the exchange's sends).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::contact::Exchange;
use super::exchange::ExchangeService;
use crate::config::HostPort;
use crate::metrics::LayerCounters;
use crate::peers::Method;
use crate::supervisor::{LayerHandle, TaskError};
use crate::system::net::udp;

/// First delay before a static peer that did not answer is tried again.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest delay between tries of a static peer that does not answer.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Time between HELLOs to a static peer that answers.
pub const REFRESH: Duration = Duration::from_secs(60);

/// When to contact one static peer next. Pure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    backoff: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self { backoff: RETRY_MIN }
    }
}

impl Schedule {
    /// The delay after an attempt that `answered` (or not).
    pub fn next(&mut self, answered: bool) -> Duration {
        if answered {
            self.backoff = RETRY_MIN;
            REFRESH
        } else {
            let delay = self.backoff;
            self.backoff = (self.backoff * 2).min(RETRY_MAX);
            delay
        }
    }
}

/// How one static peer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Not tried yet.
    Pending,
    /// Its last HELLO was answered from this address.
    Answered(SocketAddr),
    /// Its last attempt failed.
    Failing(String),
}

/// What layer `static` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerReport {
    /// At least one peer answered: which did, which are still tried.
    Running(String),
    /// None answered yet: why each failed.
    Retrying(String),
    /// Nothing tried yet.
    Starting,
}

/// The layer's state from each peer's (by its `HOST:PORT`). Pure.
pub fn layer_report(states: &BTreeMap<String, PeerState>) -> LayerReport {
    let answered: Vec<&str> = states
        .iter()
        .filter(|(_, s)| matches!(s, PeerState::Answered(_)))
        .map(|(p, _)| p.as_str())
        .collect();
    let failing: Vec<String> = states
        .iter()
        .filter_map(|(p, s)| match s {
            PeerState::Failing(e) => Some(format!("{p}: {e}")),
            _ => None,
        })
        .collect();
    if !answered.is_empty() {
        let mut detail = format!("answered: {}", answered.join(", "));
        let waiting: Vec<&str> = states
            .iter()
            .filter(|(_, s)| !matches!(s, PeerState::Answered(_)))
            .map(|(p, _)| p.as_str())
            .collect();
        if !waiting.is_empty() {
            detail.push_str(&format!("; still trying: {}", waiting.join(", ")));
        }
        LayerReport::Running(detail)
    } else if failing.is_empty() {
        LayerReport::Starting
    } else {
        LayerReport::Retrying(format!(
            "no static peer answered yet: {}",
            failing.join("; ")
        ))
    }
}

/// The `static-peers` task.
#[derive(Clone)]
pub struct StaticPeers {
    /// The `--peer` list (not empty).
    pub peers: Vec<HostPort>,
    /// The exchange socket the HELLOs go through.
    pub exchange: Arc<ExchangeService>,
    /// Use IPv6 addresses of a name (`--no-ipv6`: IPv4 only).
    pub ipv6: bool,
    /// Layer `static`.
    pub layer: LayerHandle,
    /// Its metrics.
    pub counters: LayerCounters,
}

impl StaticPeers {
    /// Contacts every static peer on its own schedule until `cancel` fires.
    ///
    /// # Errors
    ///
    /// Never: failures are states of the layer, retried.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), TaskError> {
        let states = Arc::new(Mutex::new(
            self.peers
                .iter()
                .map(|p| (p.to_string(), PeerState::Pending))
                .collect::<BTreeMap<_, _>>(),
        ));
        let loops = self
            .peers
            .iter()
            .map(|peer| self.peer_loop(peer, &states, &cancel));
        futures_util::future::join_all(loops).await;
        Ok(())
    }

    async fn peer_loop(
        &self,
        peer: &HostPort,
        states: &Mutex<BTreeMap<String, PeerState>>,
        cancel: &CancellationToken,
    ) {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = self.exchange.ready() => {}
        }
        let mut schedule = Schedule::default();
        let name = peer.to_string();
        loop {
            let state = tokio::select! {
                () = cancel.cancelled() => return,
                state = self.attempt(peer) => state,
            };
            let answered = matches!(state, PeerState::Answered(_));
            match &state {
                PeerState::Answered(from) => {
                    self.counters.event();
                    self.layer.success();
                    tracing::debug!(peer = %name, %from, "static peer answered");
                }
                PeerState::Failing(error) => {
                    tracing::debug!(peer = %name, %error, "static peer did not answer");
                }
                PeerState::Pending => {}
            }
            self.set_state(states, &name, state);
            let delay = schedule.next(answered);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Resolves `peer` and sends a HELLO to its addresses until one answers.
    async fn attempt(&self, peer: &HostPort) -> PeerState {
        let addrs = match udp::resolve(peer.host(), peer.port()).await {
            Ok(addrs) => addrs,
            Err(e) => return PeerState::Failing(format!("cannot resolve: {e}")),
        };
        let mut last = String::from("no IPv4 address (IPv6 is off)");
        for addr in addrs.into_iter().filter(|a| self.ipv6 || a.is_ipv4()) {
            self.counters.sent();
            match self.exchange.hello(addr, Method::Dht).await {
                Ok(contacted) => return PeerState::Answered(contacted.from),
                Err(e) => last = e.to_string(),
            }
        }
        PeerState::Failing(last)
    }

    /// Records one peer's state and publishes the layer's when it changed.
    fn set_state(&self, states: &Mutex<BTreeMap<String, PeerState>>, name: &str, state: PeerState) {
        let (before, after) = {
            let mut map = states.lock().unwrap_or_else(PoisonError::into_inner);
            let before = layer_report(&map);
            map.insert(name.to_owned(), state);
            (before, layer_report(&map))
        };
        if before == after {
            return;
        }
        match after {
            LayerReport::Running(detail) => {
                tracing::info!(%detail, "static peers");
                self.layer.running(Some(detail));
            }
            LayerReport::Retrying(error) => {
                tracing::warn!(%error, "static peers");
                self.layer.retrying(&error);
            }
            LayerReport::Starting => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_answers_refresh_every_minute() {
        let mut s = Schedule::default();
        // (answered, delay in s)
        #[rustfmt::skip]
        let rows = [
            (false, 1), (false, 2), (false, 4), (false, 8), (false, 16), (false, 32), (false, 60),
            (false, 60), (true, 60), (true, 60), (false, 1), (false, 2),
        ];
        for (i, (answered, secs)) in rows.into_iter().enumerate() {
            assert_eq!(s.next(answered), Duration::from_secs(secs), "step {i}");
        }
    }

    #[test]
    fn layer_states() {
        let a: SocketAddr = "192.0.2.1:51900".parse().unwrap();
        let map = |rows: &[(&str, PeerState)]| {
            rows.iter()
                .map(|(p, s)| ((*p).to_owned(), s.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let fail = |e: &str| PeerState::Failing(e.into());
        #[rustfmt::skip]
        let rows = [
            ("nothing tried", map(&[("a:1", PeerState::Pending)]), LayerReport::Starting),
            ("one failing", map(&[("a:1", fail("timeout")), ("b:1", PeerState::Pending)]),
                LayerReport::Retrying("no static peer answered yet: a:1: timeout".into())),
            ("all failing", map(&[("a:1", fail("timeout")), ("b:1", fail("cannot resolve"))]),
                LayerReport::Retrying("no static peer answered yet: a:1: timeout; b:1: cannot resolve".into())),
            ("one answered", map(&[("a:1", PeerState::Answered(a)), ("b:1", fail("timeout"))]),
                LayerReport::Running("answered: a:1; still trying: b:1".into())),
            ("all answered", map(&[("a:1", PeerState::Answered(a))]),
                LayerReport::Running("answered: a:1".into())),
        ];
        for (case, states, want) in rows {
            assert_eq!(layer_report(&states), want, "{case}");
        }
    }
}
