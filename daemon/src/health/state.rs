//! The health rules as pure functions over plain values (daemon-behaviour §9): when a peer is
//! stale, what a health tick or a probe result does to its counters, when a failing probe may
//! evict, and how the API names a peer's state and why. Time is always a parameter.

use std::time::Duration;

use crate::peers::Liveness;

/// How often the handshake/transfer monitor runs (Go: 20 s).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(20);
/// A handshake older than this is not fresh (Go: 150 s).
pub const STALE_AFTER: Duration = Duration::from_secs(150);
/// Time between probe rounds (Go: 1 s).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Timeout of each probe step: dial, write, read (Go: 1.2 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1200);
/// Consecutive enforced probe failures that evict a peer (Go: 8).
pub const EVICT_AFTER_FAILURES: u32 = 8;
/// A peer not heard of for this long is probed with eviction enforced (Go: 45 s).
pub const ENFORCE_UNSEEN_AFTER: Duration = Duration::from_secs(45);
/// Consecutive failed probes after which the API shows a peer `offline` (ours; Go has no such
/// state). Two, so one lost packet never flips it, and a dead peer shows within ~10 s.
pub const OFFLINE_AFTER_FAILURES: u32 = 2;

/// Go's `shouldTreatPeerAsStale`: a handshake happened (`age` is `Some`), it is older than
/// [`STALE_AFTER`], and the transfer total did not grow (`total <= prev`; a counter reset counts
/// as stale).
pub fn is_stale(handshake_age: Option<Duration>, total: u64, prev: u64) -> bool {
    handshake_age.is_some_and(|age| age > STALE_AFTER) && total <= prev
}

/// Whether a handshake this old (`None`: never) is fresh.
pub fn handshake_fresh(handshake_age: Option<Duration>) -> bool {
    handshake_age.is_some_and(|age| age <= STALE_AFTER)
}

/// Per-peer health counters, owned by the health task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Consecutive stale health ticks (signal A).
    pub stale_ticks: u32,
    /// rx+tx at the last health tick (`None` before the first).
    pub last_total: Option<u64>,
    /// Consecutive failed probes (signal B).
    pub probe_failures: u32,
}

/// What a health tick asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickAction {
    /// Nothing.
    None,
    /// First stale tick: re-apply the peer (force a new handshake).
    Reapply,
    /// Second stale tick in a row: evict.
    Evict,
}

/// One health tick (signal A) for a peer whose handshake is `handshake_age` old and whose rx+tx
/// is `total`: updates `c` and says what to do (§9.1).
pub fn health_tick(c: &mut Counters, handshake_age: Option<Duration>, total: u64) -> TickAction {
    let prev = c.last_total.unwrap_or(0);
    c.last_total = Some(total);
    if !is_stale(handshake_age, total, prev) {
        c.stale_ticks = 0;
        return TickAction::None;
    }
    c.stale_ticks = c.stale_ticks.saturating_add(1);
    if c.stale_ticks >= 2 {
        TickAction::Evict
    } else {
        TickAction::Reapply
    }
}

/// Whether failing probes may evict this peer (§9.2 step 2): it had a handshake that went stale,
/// it is relayed (no entry of its own on the device), or it was not heard of for
/// [`ENFORCE_UNSEEN_AFTER`]. A peer with a fresh direct handshake is never evicted by probes.
pub fn probe_enforced(handshake_age: Option<Duration>, relayed: bool, unseen: Duration) -> bool {
    handshake_age.is_some_and(|age| age > STALE_AFTER) || relayed || unseen > ENFORCE_UNSEEN_AFTER
}

/// What a probe result asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    /// Nothing.
    None,
    /// Evict: [`EVICT_AFTER_FAILURES`] failures in a row while enforced.
    Evict,
}

/// One probe result: updates `c`. Unlike Go, every peer is probed (concurrently), so a dead peer
/// shows `offline` within seconds even while its last handshake is still fresh; failures count
/// always, but evict only while [`probe_enforced`].
pub fn on_probe(c: &mut Counters, ok: bool, enforced: bool) -> ProbeAction {
    if ok {
        c.probe_failures = 0;
        return ProbeAction::None;
    }
    c.probe_failures = c.probe_failures.saturating_add(1);
    if enforced && c.probe_failures >= EVICT_AFTER_FAILURES {
        ProbeAction::Evict
    } else {
        ProbeAction::None
    }
}

/// A peer's health as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Fresh handshake or a recent successful probe.
    Online,
    /// On the device, no handshake yet.
    Connecting,
    /// Its handshake is older than [`STALE_AFTER`].
    Stale,
    /// Probes fail, or the peer went silent.
    Offline,
    /// Evicted; excluded until its quarantine ends.
    Quarantined,
}

impl HealthState {
    /// The API's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Connecting => "connecting",
            Self::Stale => "stale",
            Self::Offline => "offline",
            Self::Quarantined => "quarantined",
        }
    }
}

/// Reason: evicted by the health monitor and quarantined.
pub const REASON_QUARANTINED: &str = "quarantined";
/// Reason: no discovery source heard of it for 5 minutes.
pub const REASON_NOT_SEEN: &str = "not_seen";
/// Reason: the last probes failed.
pub const REASON_PROBE_FAILED: &str = "probe_failed";
/// Reason: no handshake yet.
pub const REASON_NO_HANDSHAKE_YET: &str = "no_handshake_yet";
/// Reason: the last handshake is older than 150 s.
pub const REASON_HANDSHAKE_STALE: &str = "handshake_stale";
/// Every reason code this module produces (documented in the README).
pub const REASONS: [&str; 5] = [
    REASON_QUARANTINED,
    REASON_NOT_SEEN,
    REASON_PROBE_FAILED,
    REASON_NO_HANDSHAKE_YET,
    REASON_HANDSHAKE_STALE,
];

/// What the API's health of one peer is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthInputs {
    /// The store's verdict.
    pub liveness: Liveness,
    /// Age of its last handshake on our device (`None`: none, or no entry).
    pub handshake_age: Option<Duration>,
    /// Consecutive failed probes.
    pub probe_failures: u32,
    /// Whether its last probe succeeded (a relayed peer has no WireGuard entry of its own, so
    /// no handshake: the probe through the relay is what shows it works).
    pub probe_ok: bool,
}

/// The peer's state and the reasons for it, in a fixed order (§ per-peer health).
pub fn classify(i: &HealthInputs) -> (HealthState, Vec<&'static str>) {
    let mut reasons = Vec::new();
    let state = match i.liveness {
        Liveness::Quarantined => {
            reasons.push(REASON_QUARANTINED);
            HealthState::Quarantined
        }
        Liveness::Dead => {
            reasons.push(REASON_NOT_SEEN);
            HealthState::Offline
        }
        Liveness::Active | Liveness::Cached => {
            let probe_ok = i.probe_failures == 0 && i.probe_ok;
            if i.probe_failures >= OFFLINE_AFTER_FAILURES {
                HealthState::Offline
            } else if probe_ok || handshake_fresh(i.handshake_age) {
                HealthState::Online
            } else if i.handshake_age.is_none() {
                HealthState::Connecting
            } else {
                HealthState::Stale
            }
        }
    };
    if i.probe_failures > 0 {
        reasons.push(REASON_PROBE_FAILED);
    }
    if state != HealthState::Online && state != HealthState::Quarantined {
        match i.handshake_age {
            None => reasons.push(REASON_NO_HANDSHAKE_YET),
            Some(age) if age > STALE_AFTER => reasons.push(REASON_HANDSHAKE_STALE),
            Some(_) => {}
        }
    }
    (state, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(a: u64) -> Duration {
        Duration::from_secs(a)
    }

    #[test]
    fn stale_table() {
        // Go's health_test.go cases plus the edges.
        #[rustfmt::skip]
        let rows: [(&str, Option<u64>, u64, u64, bool); 7] = [
            ("no handshake: never stale", None, 0, 0, false),
            ("30 s old: fresh", Some(30), 10, 10, false),
            ("exactly 150 s: not yet", Some(150), 10, 10, false),
            ("4 min with growth", Some(240), 20, 10, false),
            ("4 min without growth", Some(240), 10, 10, true),
            ("counter reset counts as stale", Some(240), 5, 10, true),
            ("151 s, no traffic at all", Some(151), 0, 0, true),
        ];
        for (case, age, total, prev, want) in rows {
            assert_eq!(is_stale(age.map(secs), total, prev), want, "{case}");
        }
    }

    #[test]
    fn state_machine_table() {
        // §9.4: (case, steps of (handshake age s, total) per health tick, actions wanted).
        type Tick = (Option<u64>, u64);
        #[rustfmt::skip]
        let rows: [(&str, &[Tick], &[TickAction]); 5] = [
            ("healthy stays healthy", &[(Some(10), 5), (Some(30), 9)], &[TickAction::None, TickAction::None]),
            ("stale once: re-apply", &[(Some(10), 5), (Some(200), 5)], &[TickAction::None, TickAction::Reapply]),
            ("re-applied then recovers", &[(Some(200), 0), (Some(5), 50)], &[TickAction::Reapply, TickAction::None]),
            ("stale twice: evict", &[(Some(200), 0), (Some(220), 0)], &[TickAction::Reapply, TickAction::Evict]),
            ("recovery resets the count", &[(Some(200), 0), (Some(5), 9), (Some(200), 9)], &[TickAction::Reapply, TickAction::None, TickAction::Reapply]),
        ];
        for (case, ticks, want) in rows {
            let mut c = Counters::default();
            let got: Vec<TickAction> = ticks
                .iter()
                .map(|(age, total)| health_tick(&mut c, age.map(secs), *total))
                .collect();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn enforced_table() {
        #[rustfmt::skip]
        let rows: [(&str, Option<u64>, bool, u64, bool); 6] = [
            ("fresh direct handshake, seen: not enforced", Some(10), false, 5, false),
            ("stale handshake", Some(200), false, 5, true),
            ("no handshake, seen recently: not enforced", None, false, 5, false),
            ("relayed", Some(10), true, 5, true),
            ("not seen for 46 s", Some(10), false, 46, true),
            ("not seen for exactly 45 s", Some(10), false, 45, false),
        ];
        for (case, age, relayed, unseen, want) in rows {
            assert_eq!(
                probe_enforced(age.map(secs), relayed, secs(unseen)),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn probe_counts_and_evicts_only_when_enforced() {
        // 8 failures while not enforced: counted, no eviction; the next enforced one evicts.
        let mut c = Counters::default();
        for _ in 0..8 {
            assert_eq!(on_probe(&mut c, false, false), ProbeAction::None);
        }
        assert_eq!(c.probe_failures, 8);
        assert_eq!(on_probe(&mut c, false, true), ProbeAction::Evict);
        // A success resets; 7 enforced failures do not evict, the 8th does.
        assert_eq!(on_probe(&mut c, true, true), ProbeAction::None);
        assert_eq!(c.probe_failures, 0);
        for n in 1..8 {
            assert_eq!(
                on_probe(&mut c, false, true),
                ProbeAction::None,
                "failure {n}"
            );
        }
        assert_eq!(on_probe(&mut c, false, true), ProbeAction::Evict);
    }

    #[test]
    fn classify_table() {
        use HealthState::{Connecting, Offline, Online, Stale};
        use Liveness::{Active, Cached, Dead};
        type Row = (
            &'static str,
            Liveness,
            Option<u64>,
            u32,
            bool,
            HealthState,
            &'static [&'static str],
        );
        #[rustfmt::skip]
        let rows: [Row; 11] = [
            ("fresh handshake", Active, Some(10), 0, false, Online, &[]),
            ("fresh handshake, probe ok", Active, Some(10), 0, true, Online, &[]),
            ("new, no handshake", Active, None, 0, false, Connecting, &[REASON_NO_HANDSHAKE_YET]),
            ("cached, no handshake", Cached, None, 0, false, Connecting, &[REASON_NO_HANDSHAKE_YET]),
            ("relayed: no own handshake, probe ok", Active, None, 0, true, Online, &[]),
            ("stale handshake", Active, Some(200), 0, false, Stale, &[REASON_HANDSHAKE_STALE]),
            ("stale handshake, probe ok", Active, Some(200), 0, true, Online, &[]),
            ("one failed probe: still online", Active, Some(10), 1, true, Online, &[REASON_PROBE_FAILED]),
            ("probes fail, handshake still fresh: offline", Active, Some(10), 2, true, Offline, &[REASON_PROBE_FAILED]),
            ("probes fail, handshake stale", Active, Some(300), 5, false, Offline, &[REASON_PROBE_FAILED, REASON_HANDSHAKE_STALE]),
            ("quarantined", Liveness::Quarantined, None, 0, false, HealthState::Quarantined, &[REASON_QUARANTINED]),
        ];
        for (case, liveness, age, failures, ok, want, reasons) in rows {
            let got = classify(&HealthInputs {
                liveness,
                handshake_age: age.map(secs),
                probe_failures: failures,
                probe_ok: ok,
            });
            assert_eq!(got, (want, reasons.to_vec()), "{case}");
        }
        let dead = classify(&HealthInputs {
            liveness: Dead,
            handshake_age: None,
            probe_failures: 0,
            probe_ok: false,
        });
        assert_eq!(
            dead,
            (Offline, vec![REASON_NOT_SEEN, REASON_NO_HANDSHAKE_YET])
        );
    }
}
