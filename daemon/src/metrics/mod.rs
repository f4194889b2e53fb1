//! Prometheus metrics: the daemon's counters and the text exposition format 0.0.4 they are served
//! in (`GET /metrics` on the API socket, and on TCP with `join --metrics-listen ADDR`).
//!
//! Counters live here as atomics, bumped where things happen (the reconcile loop, LAN discovery,
//! the API's request layer); gauges (peers by state and by path, health, task restarts) are read
//! from the status snapshot at scrape time, so a scrape never touches the store or the device
//! itself. [`render`] is pure: values in, text out. No registry crate: the format is a few lines
//! of text and we have a dozen families. [`parse`] reads it back strictly, for tests.
//!
//! Names follow Go wgmesh where it has one (reference daemon-behaviour §14); the differences:
//! - `wgmesh_active_peers` counts **active** peers; Go counts every stored peer, dead ones
//!   included (that count is the sum of `wgmesh_peers{state}`);
//! - `wgmesh_reconcile_duration_seconds` covers the whole pass (device read, diff, apply, routes),
//!   with Go's default buckets;
//! - `wgmesh_discovery_dropped_total{layer}` is ours: datagrams a layer received and dropped;
//! - `wgmesh_relayed_peers` is the size of the relay table after the last reconcile pass, as
//!   in Go (set by the reconcile loop, not read from the status);
//! - not exported yet, for want of the feature in this build:
//!   `wgmesh_probe_rtt_seconds`, `wgmesh_nat_traversal_*`; nor Go's runtime and process
//!   collectors.

pub mod parse;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wgmesh_api_types::Status;

/// Media type of the exposition (`text/plain; version=0.0.4`).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the reconcile duration buckets, in seconds (Prometheus' default buckets, as
/// Go's `prometheus.DefBuckets`).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Route label of requests that matched no route (keeps the label set bounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A histogram with fixed buckets. Lock-free; readers may see an observation in the count a
/// moment before its sum, never a count that goes down.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: Vec<AtomicU64>,
    /// Sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

/// What a histogram holds at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValues {
    /// (upper bound, cumulative count), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The cumulative view.
    pub fn values(&self) -> HistogramValues {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            buckets.push((
                self.bounds.get(i).copied().unwrap_or(f64::INFINITY),
                cumulative,
            ));
        }
        HistogramValues {
            buckets,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: cumulative,
        }
    }
}

/// Counters of one discovery layer. Cheap to clone; every clone counts on the same numbers.
#[derive(Debug, Clone, Default)]
pub struct LayerCounters {
    inner: Arc<LayerInner>,
}

#[derive(Debug, Default)]
struct LayerInner {
    events: AtomicU64,
    sends: AtomicU64,
    /// Reason → datagrams dropped. Reasons are fixed strings, so the map stays small.
    drops: Mutex<BTreeMap<&'static str, u64>>,
}

impl LayerCounters {
    /// The layer received something valid about a peer (LAN: an announcement from a peer of the
    /// mesh).
    pub fn event(&self) {
        self.inner.events.fetch_add(1, Ordering::Relaxed);
    }

    /// The layer sent something (LAN: one announcement on one interface).
    pub fn sent(&self) {
        self.inner.sends.fetch_add(1, Ordering::Relaxed);
    }

    /// The layer dropped something it received, for `reason` (a fixed word such as
    /// `rate_limited` or `authentication`, never text from the network).
    pub fn dropped(&self, reason: &'static str) {
        *self
            .inner
            .drops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// Drops so far, by reason.
    pub fn drops(&self) -> BTreeMap<&'static str, u64> {
        self.inner
            .drops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Every counter of the daemon. Share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    reconcile_runs: AtomicU64,
    reconcile_failures: AtomicU64,
    reconcile_duration: Histogram,
    /// added, updated, removed, failed
    reconcile_changes: [AtomicU64; 4],
    /// Peers relayed after the last reconcile pass (a gauge).
    relayed_peers: AtomicU64,
    layers: Mutex<BTreeMap<&'static str, LayerCounters>>,
    /// (route, status) → requests. Routes are the router's path templates, so the set is small.
    api_requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconcile_runs: AtomicU64::new(0),
            reconcile_failures: AtomicU64::new(0),
            reconcile_duration: Histogram::new(&DURATION_BUCKETS),
            reconcile_changes: Default::default(),
            relayed_peers: AtomicU64::new(0),
            layers: Mutex::new(BTreeMap::new()),
            api_requests: Mutex::new(BTreeMap::new()),
        }
    }
}

/// What one reconcile pass did, for [`Metrics::reconcile_pass`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCounts {
    /// Peers added to the device.
    pub added: usize,
    /// Peers changed.
    pub updated: usize,
    /// Peers removed.
    pub removed: usize,
    /// Peer changes the device refused.
    pub failed: usize,
}

/// Every counter's value at one instant (what [`render`] prints besides the status gauges).
#[derive(Debug, Clone, PartialEq)]
pub struct CounterValues {
    /// Reconcile passes that completed.
    pub reconcile_runs: u64,
    /// Reconcile passes that failed (the device could not be read).
    pub reconcile_failures: u64,
    /// Duration of the completed passes.
    pub reconcile_duration: HistogramValues,
    /// Peer changes: added, updated, removed, failed.
    pub reconcile_changes: [u64; 4],
    /// Peers relayed through an introducer after the last pass.
    pub relayed_peers: u64,
    /// Layer → (events, sends).
    pub layers: BTreeMap<&'static str, (u64, u64)>,
    /// (layer, reason) → datagrams dropped.
    pub layer_drops: BTreeMap<(&'static str, &'static str), u64>,
    /// (route, status) → requests.
    pub api_requests: BTreeMap<(String, u16), u64>,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Metrics {
    /// A completed reconcile pass that took `duration`.
    pub fn reconcile_pass(&self, duration: Duration, counts: PassCounts) {
        self.reconcile_runs.fetch_add(1, Ordering::Relaxed);
        self.reconcile_duration.observe(duration);
        let [added, updated, removed, failed] = &self.reconcile_changes;
        add(added, counts.added);
        add(updated, counts.updated);
        add(removed, counts.removed);
        add(failed, counts.failed);
    }

    /// The number of relayed peers after a pass.
    pub fn set_relayed_peers(&self, n: usize) {
        self.relayed_peers
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A reconcile pass that failed.
    pub fn reconcile_failed(&self) {
        self.reconcile_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of discovery layer `name` (created at zero on first use, so a layer that is
    /// on shows up in the exposition before it counted anything).
    pub fn layer(&self, name: &'static str) -> LayerCounters {
        self.layers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default()
            .clone()
    }

    /// One API request on `route` (the matched path template, or [`UNMATCHED_ROUTE`]) answered
    /// with `status`.
    pub fn api_request(&self, route: &str, status: u16) {
        let mut map = self
            .api_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&(route.to_owned(), status)) {
            *n += 1;
        } else {
            map.insert((route.to_owned(), status), 1);
        }
    }

    /// Every counter now.
    pub fn values(&self) -> CounterValues {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (layers, layer_drops) = {
            let map = self.layers.lock().unwrap_or_else(PoisonError::into_inner);
            let layers = map
                .iter()
                .map(|(name, c)| (*name, (load(&c.inner.events), load(&c.inner.sends))))
                .collect();
            let drops = map
                .iter()
                .flat_map(|(name, c)| {
                    c.drops()
                        .into_iter()
                        .map(move |(reason, n)| ((*name, reason), n))
                })
                .collect();
            (layers, drops)
        };
        CounterValues {
            reconcile_runs: load(&self.reconcile_runs),
            reconcile_failures: load(&self.reconcile_failures),
            reconcile_duration: self.reconcile_duration.values(),
            reconcile_changes: self.reconcile_changes.each_ref().map(load),
            relayed_peers: load(&self.relayed_peers),
            layers,
            layer_drops,
            api_requests: self
                .api_requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Builds exposition text family by family.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value.into());
    }
}

/// A sample value: counts print as integers, measurements as floats.
enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self::Int(u64::try_from(v).unwrap_or(u64::MAX))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{}", float(*v)),
        }
    }
}

/// A float as the exposition format spells it (`+Inf`, `-Inf`, `NaN`, else Rust's shortest form).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// Peer states always exported (at zero when empty), so a dashboard never sees a state vanish.
const PEER_STATES: [&str; 4] = ["active", "cached", "quarantined", "dead"];

/// NAT types always exported by `wgmesh_nat_type` (Go's one-hot gauge).
const NAT_TYPES: [&str; 3] = ["cone", "symmetric", "unknown"];

/// The exposition of `status` (gauges) and `counters`.
pub fn render(status: &Status, counters: &CounterValues) -> String {
    let mut e = Exposition {
        out: String::with_capacity(4096),
    };
    e.family(
        "wgmesh_build_info",
        "gauge",
        "Always 1; the daemon's version is in the label.",
    );
    e.sample("wgmesh_build_info", &[("version", &status.version)], 1u64);
    e.family(
        "wgmesh_healthy",
        "gauge",
        "1 when the mesh interface is up and every required task runs (GET /v1/health is 200), else 0.",
    );
    e.sample("wgmesh_healthy", &[], u64::from(status.health.healthy));

    let p = &status.peers;
    e.family(
        "wgmesh_active_peers",
        "gauge",
        "Peers heard of within 5 minutes and not quarantined (Go wgmesh counts every stored peer here).",
    );
    e.sample("wgmesh_active_peers", &[], p.active);
    e.family("wgmesh_peers", "gauge", "Stored peers by state.");
    for state in PEER_STATES {
        let n = match state {
            "active" => p.active,
            "cached" => p.cached,
            "quarantined" => p.quarantined,
            _ => p.dead,
        };
        e.sample("wgmesh_peers", &[("state", state)], n);
    }
    e.family(
        "wgmesh_connected_peers",
        "gauge",
        "Peers with a WireGuard handshake in the last 3 minutes.",
    );
    e.sample("wgmesh_connected_peers", &[], p.connected);
    e.family(
        "wgmesh_peers_by_via",
        "gauge",
        "Stored peers by how their endpoint was learned (none: no endpoint).",
    );
    for (via, n) in &p.by_via {
        e.sample("wgmesh_peers_by_via", &[("via", via)], *n);
    }

    e.family(
        "wgmesh_reconcile_runs_total",
        "counter",
        "Reconcile passes completed.",
    );
    e.sample("wgmesh_reconcile_runs_total", &[], counters.reconcile_runs);
    e.family(
        "wgmesh_reconcile_failures_total",
        "counter",
        "Reconcile passes that failed because the device could not be read.",
    );
    e.sample(
        "wgmesh_reconcile_failures_total",
        &[],
        counters.reconcile_failures,
    );
    e.family(
        "wgmesh_reconcile_duration_seconds",
        "histogram",
        "Duration of a reconcile pass: device read, diff, apply, route sync.",
    );
    let h = &counters.reconcile_duration;
    for (bound, n) in &h.buckets {
        let le = float(*bound);
        e.sample(
            "wgmesh_reconcile_duration_seconds_bucket",
            &[("le", &le)],
            *n,
        );
    }
    e.sample("wgmesh_reconcile_duration_seconds_sum", &[], h.sum);
    e.sample("wgmesh_reconcile_duration_seconds_count", &[], h.count);
    e.family(
        "wgmesh_reconcile_changes_total",
        "counter",
        "Peer changes made by reconcile passes (failed: refused by the device even one by one).",
    );
    for (change, n) in ["added", "updated", "removed", "failed"]
        .into_iter()
        .zip(counters.reconcile_changes)
    {
        e.sample("wgmesh_reconcile_changes_total", &[("change", change)], n);
    }
    e.family(
        "wgmesh_relayed_peers",
        "gauge",
        "Peers reached through an introducer (relay) after the last reconcile pass.",
    );
    e.sample("wgmesh_relayed_peers", &[], counters.relayed_peers);

    e.family(
        "wgmesh_discovery_events_total",
        "counter",
        "Valid peer information received, by discovery layer (lan: announcements heard; stun: server answers).",
    );
    for (layer, (events, _)) in &counters.layers {
        e.sample(
            "wgmesh_discovery_events_total",
            &[("layer", layer)],
            *events,
        );
    }
    e.family(
        "wgmesh_discovery_sends_total",
        "counter",
        "Messages sent by discovery layer (lan: announcements, one per interface).",
    );
    for (layer, (_, sends)) in &counters.layers {
        e.sample("wgmesh_discovery_sends_total", &[("layer", layer)], *sends);
    }
    e.family(
        "wgmesh_discovery_drops_total",
        "counter",
        "Datagrams a discovery layer received and dropped, by reason (exchange: rate_limited, malformed, authentication, stale, …).",
    );
    for ((layer, reason), n) in &counters.layer_drops {
        e.sample(
            "wgmesh_discovery_drops_total",
            &[("layer", layer), ("reason", reason)],
            *n,
        );
    }
    e.family(
        "wgmesh_nat_type",
        "gauge",
        "1 for this node's NAT type as STUN measured it (none yet counts as unknown), 0 for the others.",
    );
    let nat = status.nat_type.as_deref().unwrap_or("unknown");
    for kind in NAT_TYPES {
        e.sample("wgmesh_nat_type", &[("type", kind)], u64::from(nat == kind));
    }

    e.family(
        "wgmesh_api_requests_total",
        "counter",
        "Control API requests by route template and HTTP status.",
    );
    for ((route, code), n) in &counters.api_requests {
        let code = code.to_string();
        e.sample(
            "wgmesh_api_requests_total",
            &[("route", route), ("status", &code)],
            *n,
        );
    }
    e.family(
        "wgmesh_task_restarts_total",
        "counter",
        "Restarts of each supervised task after a failure.",
    );
    for t in &status.tasks {
        e.sample(
            "wgmesh_task_restarts_total",
            &[("task", &t.name)],
            u64::from(t.restarts),
        );
    }
    e.out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wgmesh_api_types::{Health, PeerCounts, TaskStatus};

    use super::parse::{counters_decreased, parse};
    use super::*;

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            peers: PeerCounts {
                total: 5,
                active: 3,
                cached: 0,
                connected: 2,
                quarantined: 1,
                dead: 1,
                by_via: BTreeMap::from([("lan".to_owned(), 4), ("none".to_owned(), 1)]),
            },
            tasks: vec![
                TaskStatus {
                    name: "lan-discovery".into(),
                    state: "running".into(),
                    restarts: 2,
                    ..TaskStatus::default()
                },
                TaskStatus {
                    name: "reconcile".into(),
                    state: "running".into(),
                    ..TaskStatus::default()
                },
            ],
            health: Health::default(),
            ..Status::default()
        }
    }

    #[test]
    fn the_exposition_parses_and_carries_every_family() {
        let m = Metrics::default();
        let lan = m.layer("lan");
        lan.event();
        lan.event();
        lan.sent();
        let exchange = m.layer("exchange");
        exchange.dropped("rate_limited");
        exchange.dropped("rate_limited");
        exchange.dropped("authentication");
        m.layer("stun").dropped("unexpected_source");
        m.reconcile_pass(
            Duration::from_millis(7),
            PassCounts {
                added: 3,
                ..PassCounts::default()
            },
        );
        m.reconcile_pass(Duration::from_secs(20), PassCounts::default());
        m.reconcile_failed();
        m.api_request("/v1/peers", 200);
        m.api_request("/v1/peers", 200);
        m.api_request(UNMATCHED_ROUTE, 404);
        let text = render(&status(), &m.values());
        let p = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        type Row = (&'static str, &'static [(&'static str, &'static str)], f64);
        let table: &[Row] = &[
            ("wgmesh_build_info", &[("version", "0.1.0")], 1.0),
            ("wgmesh_healthy", &[], 1.0),
            ("wgmesh_active_peers", &[], 3.0),
            ("wgmesh_peers", &[("state", "active")], 3.0),
            ("wgmesh_peers", &[("state", "cached")], 0.0),
            ("wgmesh_peers", &[("state", "quarantined")], 1.0),
            ("wgmesh_peers", &[("state", "dead")], 1.0),
            ("wgmesh_connected_peers", &[], 2.0),
            ("wgmesh_peers_by_via", &[("via", "lan")], 4.0),
            ("wgmesh_peers_by_via", &[("via", "none")], 1.0),
            ("wgmesh_reconcile_runs_total", &[], 2.0),
            ("wgmesh_reconcile_failures_total", &[], 1.0),
            (
                "wgmesh_reconcile_duration_seconds_bucket",
                &[("le", "0.005")],
                0.0,
            ),
            (
                "wgmesh_reconcile_duration_seconds_bucket",
                &[("le", "0.01")],
                1.0,
            ),
            (
                "wgmesh_reconcile_duration_seconds_bucket",
                &[("le", "10")],
                1.0,
            ),
            (
                "wgmesh_reconcile_duration_seconds_bucket",
                &[("le", "+Inf")],
                2.0,
            ),
            ("wgmesh_reconcile_duration_seconds_count", &[], 2.0),
            ("wgmesh_reconcile_duration_seconds_sum", &[], 20.007),
            (
                "wgmesh_reconcile_changes_total",
                &[("change", "added")],
                3.0,
            ),
            (
                "wgmesh_reconcile_changes_total",
                &[("change", "failed")],
                0.0,
            ),
            ("wgmesh_discovery_events_total", &[("layer", "lan")], 2.0),
            ("wgmesh_discovery_sends_total", &[("layer", "lan")], 1.0),
            (
                "wgmesh_discovery_drops_total",
                &[("layer", "stun"), ("reason", "unexpected_source")],
                1.0,
            ),
            ("wgmesh_nat_type", &[("type", "cone")], 0.0),
            ("wgmesh_nat_type", &[("type", "unknown")], 1.0),
            (
                "wgmesh_discovery_drops_total",
                &[("layer", "exchange"), ("reason", "rate_limited")],
                2.0,
            ),
            (
                "wgmesh_discovery_drops_total",
                &[("layer", "exchange"), ("reason", "authentication")],
                1.0,
            ),
            (
                "wgmesh_api_requests_total",
                &[("route", "/v1/peers"), ("status", "200")],
                2.0,
            ),
            (
                "wgmesh_api_requests_total",
                &[("route", "unmatched"), ("status", "404")],
                1.0,
            ),
            (
                "wgmesh_task_restarts_total",
                &[("task", "lan-discovery")],
                2.0,
            ),
            ("wgmesh_task_restarts_total", &[("task", "reconcile")], 0.0),
        ];
        for (name, labels, want) in table {
            let got = p.value(name, labels);
            assert!(
                got.is_some_and(|v| (v - want).abs() < 1e-9),
                "{name}{labels:?}: {got:?}, want {want}\n{text}"
            );
        }
        assert_eq!(p.types["wgmesh_reconcile_duration_seconds"], "histogram");
        assert_eq!(p.types["wgmesh_api_requests_total"], "counter");
    }

    #[test]
    fn counters_only_grow_between_scrapes() {
        let m = Metrics::default();
        let lan = m.layer("lan");
        let first = parse(&render(&status(), &m.values())).unwrap();
        lan.event();
        lan.sent();
        m.reconcile_pass(
            Duration::from_millis(30),
            PassCounts {
                updated: 1,
                ..PassCounts::default()
            },
        );
        m.api_request("/v1/status", 200);
        let second = parse(&render(&status(), &m.values())).unwrap();
        assert_eq!(counters_decreased(&first, &second), Vec::<String>::new());
        assert_eq!(second.value("wgmesh_reconcile_runs_total", &[]), Some(1.0));
    }

    #[test]
    fn the_nat_type_gauge_is_one_hot() {
        let m = Metrics::default();
        // (status nat_type, the type at 1)
        for (nat, hot) in [
            (None, "unknown"),
            (Some("cone"), "cone"),
            (Some("symmetric"), "symmetric"),
            (Some("unknown"), "unknown"),
        ] {
            let st = Status {
                nat_type: nat.map(str::to_owned),
                ..status()
            };
            let p = parse(&render(&st, &m.values())).unwrap();
            for kind in NAT_TYPES {
                let want = if kind == hot { 1.0 } else { 0.0 };
                assert_eq!(
                    p.value("wgmesh_nat_type", &[("type", kind)]),
                    Some(want),
                    "{nat:?} {kind}"
                );
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.api_request("/v1/\"odd\"\\path\n", 404);
        let text = render(&status(), &m.values());
        let p = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            p.value(
                "wgmesh_api_requests_total",
                &[("route", "/v1/\"odd\"\\path\n"), ("status", "404")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn histogram_buckets_table() {
        let h = Histogram::new(&DURATION_BUCKETS);
        // (observation, index of the first bucket that counts it)
        let table = [
            (Duration::ZERO, 0),
            (Duration::from_millis(5), 0),
            (Duration::from_micros(5001), 1),
            (Duration::from_millis(100), 4),
            (Duration::from_secs(10), 10),
            (Duration::from_secs(11), 11),
        ];
        for (d, _) in table {
            h.observe(d);
        }
        let v = h.values();
        assert_eq!(v.count, 6);
        assert_eq!(v.buckets.len(), DURATION_BUCKETS.len() + 1);
        for (i, (_, cumulative)) in v.buckets.iter().enumerate() {
            let want = table.iter().filter(|(_, first)| *first <= i).count() as u64;
            assert_eq!(*cumulative, want, "bucket {i}");
        }
    }
}
