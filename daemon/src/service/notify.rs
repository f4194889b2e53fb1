//! What to tell systemd (`sd_notify(3)`) and when, from plain observations of the daemon:
//!
//! - `READY=1` once, after the first reconcile pass (the interface is up by then and the pass has
//!   put the cached peers on the device);
//! - `WATCHDOG=1` every half watchdog period, but only while the reconcile loop completed a pass
//!   within the period (or within a floor above the loop's own interval, for periods shorter
//!   than that): a stuck loop stops the pings, and systemd restarts the daemon at most two
//!   periods after its last pass;
//! - `STATUS=` a one-line summary whenever it changes;
//! - `STOPPING=1` when shutdown begins.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

/// One assignment for the notify socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Start-up finished.
    Ready,
    /// Still alive.
    Watchdog,
    /// Human-readable status (one line).
    Status(String),
    /// Shutdown began.
    Stopping,
}

impl Message {
    /// The `KEY=value` text of the assignment.
    pub fn assignment(&self) -> String {
        match self {
            Self::Ready => "READY=1".to_owned(),
            Self::Watchdog => "WATCHDOG=1".to_owned(),
            Self::Status(s) => format!("STATUS={}", s.replace(['\n', '\r'], " ")),
            Self::Stopping => "STOPPING=1".to_owned(),
        }
    }
}

/// The assignments as one datagram (newline-separated, as `sd_notify` accepts them).
pub fn datagram(messages: &[Message]) -> String {
    messages
        .iter()
        .map(Message::assignment)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `$NOTIFY_SOCKET` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A socket file.
    Path(PathBuf),
    /// An abstract socket (`@name` in the variable), by name without the `@`.
    Abstract(Vec<u8>),
}

impl NotifyTarget {
    /// Parses `$NOTIFY_SOCKET`; `None` when it is empty or neither absolute nor abstract.
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(name) = value.strip_prefix('@') {
            return (!name.is_empty()).then(|| Self::Abstract(name.as_bytes().to_vec()));
        }
        value
            .starts_with('/')
            .then(|| Self::Path(PathBuf::from(value)))
    }
}

/// The watchdog period from `$WATCHDOG_USEC` and `$WATCHDOG_PID`: `None` when unset, not a
/// positive number, or meant for another process (`$WATCHDOG_PID` set and not `own_pid`).
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The facts behind the `STATUS=` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusFacts {
    /// Peers on the WireGuard device.
    pub on_device: usize,
    /// Of those, peers reached through an introducer.
    pub relayed: usize,
    /// Peers with a recent handshake.
    pub connected: usize,
    /// Overall health (`GET /v1/health`).
    pub healthy: bool,
    /// The health reasons, most important first.
    pub reasons: Vec<String>,
}

/// The one-line summary, e.g. `3 peers: 2 direct, 1 relayed, 3 connected; healthy`.
pub fn status_line(f: &StatusFacts) -> String {
    let direct = f.on_device.saturating_sub(f.relayed);
    let peers = if f.on_device == 1 { "peer" } else { "peers" };
    let health = match (f.healthy, f.reasons.first()) {
        (true, None) => "healthy".to_owned(),
        (true, Some(r)) => format!("healthy, {} warning(s): {r}", f.reasons.len()),
        (false, Some(r)) => format!("unhealthy: {r}"),
        (false, None) => "unhealthy".to_owned(),
    };
    format!(
        "{} {peers}: {direct} direct, {} relayed, {} connected; {health}",
        f.on_device, f.relayed, f.connected
    )
}

/// What the notifier sees at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Now.
    pub now: Instant,
    /// When the last reconcile pass ended (`None` before the first).
    pub last_pass: Option<Instant>,
    /// The current `STATUS=` line.
    pub status: String,
}

/// The notifier's memory between observations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notifier {
    watchdog: Option<Duration>,
    /// How old the last pass may be for a ping: the period, at least the floor.
    stale_after: Duration,
    ready: bool,
    status: Option<String>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// A notifier for a service with this watchdog period (`None`: no watchdog). A pass older
    /// than the period, or than `floor` when that is longer, stops the pings (`floor`: a few
    /// reconcile intervals, so a period shorter than the loop's interval does not look stuck).
    pub fn new(watchdog: Option<Duration>, floor: Duration) -> Self {
        Self {
            watchdog,
            stale_after: watchdog.map_or(floor, |w| w.max(floor)),
            ready: false,
            status: None,
            last_ping: None,
        }
    }

    /// How often pings are due: half the watchdog period.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// When to look again at the latest (besides every reconcile pass): when the next ping is
    /// due, or a quarter period from `now` while pings are held back; `None` without watchdog.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let period = self.watchdog?;
        let due = self.last_ping.map_or(now, |t| t + period / 2);
        Some(if due > now { due } else { now + period / 4 })
    }

    /// The messages `obs` calls for (in the order to send them), remembering what was sent.
    pub fn step(&mut self, obs: &Observation) -> Vec<Message> {
        let mut out = Vec::new();
        let Some(last_pass) = obs.last_pass else {
            return out;
        };
        if !self.ready {
            self.ready = true;
            out.push(Message::Ready);
        }
        if self.status.as_deref() != Some(obs.status.as_str()) {
            self.status = Some(obs.status.clone());
            out.push(Message::Status(obs.status.clone()));
        }
        if let Some(period) = self.watchdog {
            let fresh = obs.now.saturating_duration_since(last_pass) <= self.stale_after;
            let due = self
                .last_ping
                .is_none_or(|t| obs.now.saturating_duration_since(t) >= period / 2);
            if fresh && due {
                self.last_ping = Some(obs.now);
                out.push(Message::Watchdog);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_table() {
        let t0 = Instant::now();
        let s = |x: u64| t0 + Duration::from_secs(x);
        let obs = |now: u64, pass: Option<u64>, status: &str| Observation {
            now: s(now),
            last_pass: pass.map(s),
            status: status.to_owned(),
        };
        use Message::*;
        let st = |x: &str| Status(x.to_owned());
        // (case, observation, expected messages), run in sequence on one notifier with a 30 s
        // watchdog.
        let steps: Vec<(&str, Observation, Vec<Message>)> = vec![
            ("before the first pass: nothing", obs(0, None, "a"), vec![]),
            (
                "first pass: ready, status, ping",
                obs(1, Some(1), "a"),
                vec![Ready, st("a"), Watchdog],
            ),
            ("ping not due yet", obs(5, Some(5), "a"), vec![]),
            ("status changed", obs(6, Some(6), "b"), vec![st("b")]),
            (
                "ping due (15 s later)",
                obs(16, Some(11), "b"),
                vec![Watchdog],
            ),
            ("again 15 s later", obs(31, Some(26), "b"), vec![Watchdog]),
            (
                "loop stuck: pass 31 s old, no ping",
                obs(57, Some(26), "b"),
                vec![],
            ),
            ("still stuck", obs(70, Some(26), "b"), vec![]),
            (
                "loop back: ping resumes, no second READY",
                obs(71, Some(71), "b"),
                vec![Watchdog],
            ),
        ];
        let mut n = Notifier::new(Some(Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(n.ping_interval(), Some(Duration::from_secs(15)));
        assert_eq!(n.next_wake(s(0)), Some(s(0) + Duration::from_millis(7500)));
        for (name, o, want) in steps {
            assert_eq!(n.step(&o), want, "{name}");
        }
        assert_eq!(n.next_wake(s(72)), Some(s(86)), "next ping due");
        assert_eq!(
            n.next_wake(s(90)),
            Some(s(90) + Duration::from_millis(7500))
        );
    }

    #[test]
    fn a_short_period_pings_between_passes_until_the_floor() {
        let t0 = Instant::now();
        let ms = |x: u64| t0 + Duration::from_millis(x);
        let mut n = Notifier::new(Some(Duration::from_secs(2)), Duration::from_secs(15));
        let at = |now: u64, pass: u64| Observation {
            now: ms(now),
            last_pass: Some(ms(pass)),
            status: "s".into(),
        };
        assert!(n.step(&at(0, 0)).contains(&Message::Watchdog));
        // Passes every 5 s, pings every second in between.
        for now in [1000, 2000, 3000, 4000, 6000, 14_000] {
            assert_eq!(n.step(&at(now, 0)), [Message::Watchdog], "{now} ms");
        }
        assert_eq!(n.step(&at(15_001, 0)), [], "pass older than the floor");
    }

    #[test]
    fn without_watchdog_only_ready_and_status() {
        let t0 = Instant::now();
        let mut n = Notifier::new(None, Duration::from_secs(15));
        let o = Observation {
            now: t0,
            last_pass: Some(t0),
            status: "x".into(),
        };
        assert_eq!(n.step(&o), [Message::Ready, Message::Status("x".into())]);
        assert_eq!(n.step(&o), []);
        assert_eq!(n.ping_interval(), None);
        assert_eq!(n.next_wake(t0), None);
    }

    #[test]
    fn watchdog_period_table() {
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<u64>);
        let cases: &[Case] = &[
            ("unset", None, None, None),
            ("for us, no pid", Some("2000000"), None, Some(2_000_000)),
            (
                "for us by pid",
                Some("30000000"),
                Some("42"),
                Some(30_000_000),
            ),
            ("for another pid", Some("30000000"), Some("43"), None),
            ("zero", Some("0"), None, None),
            ("garbage", Some("soon"), None, None),
        ];
        for (name, usec, pid, want) in cases {
            assert_eq!(
                watchdog_period(*usec, *pid, 42),
                want.map(Duration::from_micros),
                "{name}"
            );
        }
    }

    #[test]
    fn targets_and_datagrams() {
        assert_eq!(
            NotifyTarget::parse("/run/systemd/notify"),
            Some(NotifyTarget::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifyTarget::parse("@sd-notify"),
            Some(NotifyTarget::Abstract(b"sd-notify".to_vec()))
        );
        assert_eq!(NotifyTarget::parse(""), None);
        assert_eq!(NotifyTarget::parse("@"), None);
        assert_eq!(NotifyTarget::parse("relative/sock"), None);
        assert_eq!(
            datagram(&[Message::Ready, Message::Status("a\nb".into())]),
            "READY=1\nSTATUS=a b"
        );
        assert_eq!(datagram(&[Message::Stopping]), "STOPPING=1");
    }

    #[test]
    fn status_lines() {
        let cases: &[(&str, StatusFacts, &str)] = &[
            (
                "healthy mix",
                StatusFacts {
                    on_device: 3,
                    relayed: 1,
                    connected: 2,
                    healthy: true,
                    reasons: vec![],
                },
                "3 peers: 2 direct, 1 relayed, 2 connected; healthy",
            ),
            (
                "one peer with a warning",
                StatusFacts {
                    on_device: 1,
                    relayed: 0,
                    connected: 1,
                    healthy: true,
                    reasons: vec!["dht: no route".into(), "stun: timeout".into()],
                },
                "1 peer: 1 direct, 0 relayed, 1 connected; healthy, 2 warning(s): dht: no route",
            ),
            (
                "unhealthy",
                StatusFacts {
                    healthy: false,
                    reasons: vec!["the mesh interface is down".into()],
                    ..StatusFacts::default()
                },
                "0 peers: 0 direct, 0 relayed, 0 connected; unhealthy: the mesh interface is down",
            ),
        ];
        for (name, facts, want) in cases {
            assert_eq!(status_line(facts), *want, "{name}");
        }
    }
}
