//! The WireGuard cross-platform userspace API (UAPI) as text, read-only: what a `get` answers,
//! and how the lines of a request are judged. Pure: no I/O, no clock.
//!
//! The protocol (<https://www.wireguard.com/xplatform/>, as `wg` and wireguard-go speak it): a
//! request is an operation line (`get=1` or `set=1`), for `set` followed by `key=value` lines,
//! and ends with an empty line. The answer to `get` is `key=value` lines (device first, then each
//! peer opened by its `public_key`), then `errno=0` and an empty line; every other answer is just
//! `errno=N` and an empty line, with N the negated errno value as wireguard-go sends it (`wg`
//! turns `errno=-1` on a `set` into "Operation not permitted"). Keys are lowercase hex.
//!
//! This daemon owns its device, so `set` is refused ([`Errno::PERM`]) once its request has been
//! read in full; anything else that is not a well-formed `get` is refused with
//! [`Errno::INVAL`], and a line or request over the caps with [`Errno::MSGSIZE`].

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::keys::PrivateKey;
use crate::system::wg::{LiveDevice, LivePeer};

/// Longest line accepted, newline excluded (the longest legitimate one, an endpoint with a
/// 4096-byte host name as `wg` allows, fits).
pub const LINE_CAP: usize = 4_200;
/// Most bytes of one request (operation line to empty line): a `set` larger than this is not
/// read to its end.
pub const REQUEST_CAP: usize = 64 * 1024;

/// Longest device part of a `get` answer: `private_key=` (76), `listen_port=` (18),
/// `errno=0` and the empty line (9).
const DEVICE_LINES_MAX: usize = 128;
/// Longest peer part without its allowed IPs: keys 75 + 78, protocol 19, endpoint up to 68
/// (`[v6%scope]:port`), handshake 45 + 35, counters 30 + 30, keepalive 36.
const PEER_LINES_MAX: usize = 448;
/// Longest `allowed_ip=` line (an IPv6 prefix).
const ALLOWED_IP_LINE_MAX: usize = 64;

/// An error code of the answer: written as `errno=-N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// `EPERM`: the request would change the device, which only the daemon may do.
    pub const PERM: Self = Self(1);
    /// `EIO`: the device could not be read.
    pub const IO: Self = Self(5);
    /// `EINVAL`: not a request of this protocol.
    pub const INVAL: Self = Self(22);
    /// `EMSGSIZE`: a line or the request is longer than the caps.
    pub const MSGSIZE: Self = Self(90);
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `set=1`: the device is the daemon's; read-only here.
    SetRefused,
    /// The first line is neither `get=1` nor `set=1`.
    UnknownOperation,
    /// `get=1` not followed directly by the empty line.
    TrailingAfterGet,
    /// A line longer than [`LINE_CAP`].
    LineTooLong,
    /// A request longer than [`REQUEST_CAP`].
    RequestTooLarge,
}

impl Refusal {
    /// The code sent back.
    pub fn errno(self) -> Errno {
        match self {
            Self::SetRefused => Errno::PERM,
            Self::UnknownOperation | Self::TrailingAfterGet => Errno::INVAL,
            Self::LineTooLong | Self::RequestTooLarge => Errno::MSGSIZE,
        }
    }

    /// A fixed word for logs and the drop counter.
    pub fn reason(self) -> &'static str {
        match self {
            Self::SetRefused => "set_refused",
            Self::UnknownOperation => "unknown_operation",
            Self::TrailingAfterGet => "trailing_after_get",
            Self::LineTooLong => "line_too_long",
            Self::RequestTooLarge => "request_too_large",
        }
    }

    /// Whether the connection may go on with another request after the answer: only after a
    /// refused `set`, whose request was read to its end. After anything else the stream is out
    /// of step, so it is closed.
    pub fn keeps_connection(self) -> bool {
        self == Self::SetRefused
    }
}

/// What to do after one more line of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The request goes on: read another line.
    More,
    /// A complete `get`: answer with the device.
    Get,
    /// Answer with the refusal's errno.
    Refuse(Refusal),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Waiting for the operation line.
    #[default]
    Operation,
    /// After `get=1`: only the empty line may follow.
    Get,
    /// Inside a `set` body, until the empty line.
    Set,
}

/// Judges the lines of the requests on one connection, one line at a time.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    phase: Phase,
    /// Bytes of the current request so far, newlines included.
    bytes: usize,
}

impl Decoder {
    /// A decoder waiting for a first request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a request has begun and not ended (an end of stream here is a cut request).
    pub fn in_request(&self) -> bool {
        self.phase != Phase::Operation
    }

    /// Takes one line, without its newline. After a [`Step::Get`] or a refused `set` the
    /// decoder waits for the next request.
    pub fn line(&mut self, line: &[u8]) -> Step {
        self.bytes = self.bytes.saturating_add(line.len() + 1);
        if line.len() > LINE_CAP {
            return self.refuse(Refusal::LineTooLong);
        }
        if self.bytes > REQUEST_CAP {
            return self.refuse(Refusal::RequestTooLarge);
        }
        match (self.phase, line) {
            (Phase::Operation, b"get=1") => self.phase = Phase::Get,
            (Phase::Operation, b"set=1") => self.phase = Phase::Set,
            (Phase::Operation, _) => return self.refuse(Refusal::UnknownOperation),
            (Phase::Get, b"") => {
                self.reset();
                return Step::Get;
            }
            (Phase::Get, _) => return self.refuse(Refusal::TrailingAfterGet),
            (Phase::Set, b"") => return self.refuse(Refusal::SetRefused),
            // The body of a set is not looked at: it is refused whatever it says.
            (Phase::Set, _) => {}
        }
        Step::More
    }

    /// A line longer than [`LINE_CAP`] arrived (the reader stopped before its end).
    pub fn line_too_long(&mut self) -> Step {
        self.refuse(Refusal::LineTooLong)
    }

    fn refuse(&mut self, refusal: Refusal) -> Step {
        self.reset();
        Step::Refuse(refusal)
    }

    fn reset(&mut self) {
        self.phase = Phase::Operation;
        self.bytes = 0;
    }
}

/// The answer to a refused or failed request: `errno=-N` and the empty line.
pub fn error_answer(errno: Errno) -> String {
    format!("errno={}\n\n", -i64::from(errno.0))
}

/// The answer to `get`: the device's settings and peers, then `errno=0` and the empty line.
///
/// `private_key` is the daemon's key; it is listed only when the device runs with it (its public
/// key is the device's), as the kernel lists it to root. Peers come in the device's order
/// (sorted by public key); a peer without a handshake shows time 0, without keepalive interval 0,
/// without a preshared key 64 zeros, as wireguard-go shows them.
pub fn get_answer(device: &LiveDevice, private_key: Option<&PrivateKey>) -> Zeroizing<String> {
    // Room for everything up front: a growing buffer would leave a copy of the private key in
    // freed memory; this one is zeroed when dropped.
    let capacity = DEVICE_LINES_MAX
        + device
            .peers
            .values()
            .map(|p| PEER_LINES_MAX + p.allowed_ips.len() * ALLOWED_IP_LINE_MAX)
            .sum::<usize>();
    let mut out = Zeroizing::new(String::with_capacity(capacity));
    let key = private_key.filter(|k| device.public_key == Some(k.public_key()));
    if let Some(key) = key {
        line(&mut out, "private_key", hex(key.expose_secret()));
    }
    if device.listen_port != 0 {
        line(&mut out, "listen_port", device.listen_port);
    }
    for (public_key, peer) in &device.peers {
        line(&mut out, "public_key", hex(&public_key.0));
        peer_lines(&mut out, peer);
    }
    out.push_str("errno=0\n\n");
    debug_assert!(out.len() <= capacity, "the get answer outgrew its buffer");
    out
}

fn peer_lines(out: &mut String, peer: &LivePeer) {
    let psk = peer.preshared_key.map_or([0; 32], |k| k.0);
    line(out, "preshared_key", hex(&psk));
    line(out, "protocol_version", 1);
    if let Some(endpoint) = peer.endpoint {
        line(out, "endpoint", endpoint);
    }
    let (secs, nanos) = handshake_fields(peer.last_handshake);
    line(out, "last_handshake_time_sec", secs);
    line(out, "last_handshake_time_nsec", nanos);
    line(out, "tx_bytes", peer.tx_bytes);
    line(out, "rx_bytes", peer.rx_bytes);
    line(
        out,
        "persistent_keepalive_interval",
        peer.keepalive.unwrap_or(0),
    );
    for net in &peer.allowed_ips {
        line(out, "allowed_ip", net);
    }
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing into a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

/// Lowercase hex of a key (64 characters).
fn hex(bytes: &[u8; 32]) -> HexKey<'_> {
    HexKey(bytes)
}

/// Formats a key as hex without a heap copy of its bytes (the private key stays in one place).
struct HexKey<'a>(&'a [u8; 32]);

impl std::fmt::Display for HexKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The time of a handshake as `get` reports it: seconds and nanoseconds since the Unix epoch,
/// both 0 for none (or one before the epoch).
pub fn handshake_fields(t: Option<SystemTime>) -> (u64, u32) {
    let d = t
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use ipnet::IpNet;

    use super::*;
    use crate::keys::{PresharedKey, PublicKey};

    fn private(b: u8) -> PrivateKey {
        PrivateKey::from_bytes([b; 32])
    }

    fn peer() -> LivePeer {
        LivePeer::default()
    }

    #[test]
    fn get_lists_the_device_then_each_peer_exactly() {
        let key = private(7);
        let mut peers = BTreeMap::new();
        peers.insert(
            PublicKey([0xab; 32]),
            LivePeer {
                endpoint: Some("192.168.1.2:51820".parse().unwrap()),
                allowed_ips: vec![
                    "10.1.2.3/32".parse().unwrap(),
                    "fd00::3/128".parse().unwrap(),
                ],
                preshared_key: Some(PresharedKey([0x01; 32])),
                keepalive: Some(25),
                last_handshake: Some(UNIX_EPOCH + Duration::new(1_795_321_468, 522_000_123)),
                rx_bytes: 1104,
                tx_bytes: 820,
            },
        );
        peers.insert(
            PublicKey([0x02; 32]),
            LivePeer {
                endpoint: Some("[fd00::9]:51999".parse().unwrap()),
                ..peer()
            },
        );
        peers.insert(PublicKey([0xff; 32]), peer());
        let device = LiveDevice {
            public_key: Some(key.public_key()),
            listen_port: 51820,
            peers,
        };
        let zeros = "00".repeat(32);
        let expected = format!(
            "private_key={priv}\n\
             listen_port=51820\n\
             public_key={p2}\n\
             preshared_key={zeros}\n\
             protocol_version=1\n\
             endpoint=[fd00::9]:51999\n\
             last_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\n\
             tx_bytes=0\n\
             rx_bytes=0\n\
             persistent_keepalive_interval=0\n\
             public_key={pab}\n\
             preshared_key={psk}\n\
             protocol_version=1\n\
             endpoint=192.168.1.2:51820\n\
             last_handshake_time_sec=1795321468\n\
             last_handshake_time_nsec=522000123\n\
             tx_bytes=820\n\
             rx_bytes=1104\n\
             persistent_keepalive_interval=25\n\
             allowed_ip=10.1.2.3/32\n\
             allowed_ip=fd00::3/128\n\
             public_key={pff}\n\
             preshared_key={zeros}\n\
             protocol_version=1\n\
             last_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\n\
             tx_bytes=0\n\
             rx_bytes=0\n\
             persistent_keepalive_interval=0\n\
             errno=0\n\n",
            priv = "07".repeat(32),
            p2 = "02".repeat(32),
            pab = "ab".repeat(32),
            psk = "01".repeat(32),
            pff = "ff".repeat(32),
        );
        assert_eq!(*get_answer(&device, Some(&key)), expected);
    }

    #[test]
    fn the_longest_answer_fits_its_buffer() {
        let key = private(9);
        let widest_v6: IpNet = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"
            .parse()
            .unwrap();
        let widest = LivePeer {
            endpoint: Some(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
                65535,
                0,
                u32::MAX,
            ))),
            allowed_ips: vec![widest_v6; 5],
            preshared_key: Some(PresharedKey([0xee; 32])),
            keepalive: Some(u16::MAX),
            last_handshake: Some(
                UNIX_EPOCH + Duration::new(u64::from(u32::MAX) * 1000, 999_999_999),
            ),
            rx_bytes: u64::MAX,
            tx_bytes: u64::MAX,
        };
        let device = LiveDevice {
            public_key: Some(key.public_key()),
            listen_port: 65535,
            peers: (0..20u8)
                .map(|b| (PublicKey([b; 32]), widest.clone()))
                .collect(),
        };
        // The debug assertion in get_answer is the check; the length is a sanity one.
        let answer = get_answer(&device, Some(&key));
        assert!(answer.len() > 20 * 400, "{}", answer.len());
    }

    #[test]
    fn get_shows_the_private_key_only_when_the_device_runs_with_it() {
        let key = private(7);
        let cases = [
            ("device has no key yet", None, 0, "errno=0\n\n".to_owned()),
            (
                "device runs another key",
                Some(private(8).public_key()),
                0,
                "errno=0\n\n".to_owned(),
            ),
            (
                "device runs ours",
                Some(key.public_key()),
                0,
                format!("private_key={}\nerrno=0\n\n", "07".repeat(32)),
            ),
            (
                "port without key",
                None,
                51821,
                "listen_port=51821\nerrno=0\n\n".to_owned(),
            ),
        ];
        for (name, public_key, listen_port, expected) in cases {
            let device = LiveDevice {
                public_key,
                listen_port,
                peers: BTreeMap::new(),
            };
            assert_eq!(*get_answer(&device, Some(&key)), expected, "{name}");
        }
        let device = LiveDevice {
            public_key: Some(key.public_key()),
            listen_port: 0,
            peers: BTreeMap::new(),
        };
        assert_eq!(*get_answer(&device, None), "errno=0\n\n", "no key given");
    }

    #[test]
    fn handshake_before_the_epoch_reads_as_never() {
        assert_eq!(handshake_fields(None), (0, 0));
        assert_eq!(
            handshake_fields(Some(UNIX_EPOCH - Duration::from_secs(5))),
            (0, 0)
        );
        assert_eq!(
            handshake_fields(Some(UNIX_EPOCH + Duration::new(3, 4))),
            (3, 4)
        );
    }

    #[test]
    fn errors_are_negated_errno_values() {
        assert_eq!(error_answer(Errno::PERM), "errno=-1\n\n");
        assert_eq!(error_answer(Errno::INVAL), "errno=-22\n\n");
        assert_eq!(error_answer(Errno::MSGSIZE), "errno=-90\n\n");
        assert_eq!(error_answer(Errno::IO), "errno=-5\n\n");
    }

    /// Feeds `lines` as the server does (stopping at a refusal that closes the connection) and
    /// collects every step that is not `More`, plus whether a request is still open at the end.
    fn run(lines: &[&[u8]]) -> (Vec<Step>, bool) {
        let mut d = Decoder::new();
        let mut steps = Vec::new();
        for l in lines {
            match d.line(l) {
                Step::More => {}
                Step::Refuse(r) if !r.keeps_connection() => {
                    steps.push(Step::Refuse(r));
                    break;
                }
                step => steps.push(step),
            }
        }
        (steps, d.in_request())
    }

    #[test]
    fn requests_are_judged_line_by_line() {
        let long = vec![b'a'; LINE_CAP + 1];
        let at_cap = vec![b'a'; LINE_CAP];
        let set_line = [b"allowed_ip=".as_slice(), &[b'x'; 1000]].concat();
        let big_set: Vec<&[u8]> = std::iter::once(b"set=1".as_slice())
            .chain(std::iter::repeat_n(set_line.as_slice(), 70))
            .collect();
        // (case, lines, steps other than More, a request still open at the end)
        type Case<'a> = (&'a str, Vec<&'a [u8]>, Vec<Step>, bool);
        let cases: Vec<Case> = vec![
            ("get", vec![b"get=1", b""], vec![Step::Get], false),
            (
                "two gets on one connection",
                vec![b"get=1", b"", b"get=1", b""],
                vec![Step::Get, Step::Get],
                false,
            ),
            ("get not yet ended", vec![b"get=1"], vec![], true),
            (
                "get with a trailing line",
                vec![b"get=1", b"public_key=00"],
                vec![Step::Refuse(Refusal::TrailingAfterGet)],
                false,
            ),
            (
                "set is read to its end, then refused",
                vec![
                    b"set=1",
                    b"private_key=0000",
                    b"replace_peers=true",
                    b"",
                    b"get=1",
                    b"",
                ],
                vec![Step::Refuse(Refusal::SetRefused), Step::Get],
                false,
            ),
            (
                "set not yet ended",
                vec![b"set=1", b"listen_port=1"],
                vec![],
                true,
            ),
            (
                "unknown operation",
                vec![b"get=2"],
                vec![Step::Refuse(Refusal::UnknownOperation)],
                false,
            ),
            (
                "an empty line first",
                vec![b""],
                vec![Step::Refuse(Refusal::UnknownOperation)],
                false,
            ),
            (
                "operation with a carriage return",
                vec![b"get=1\r"],
                vec![Step::Refuse(Refusal::UnknownOperation)],
                false,
            ),
            (
                "binary garbage",
                vec![&[0xff, 0x00, 0x13]],
                vec![Step::Refuse(Refusal::UnknownOperation)],
                false,
            ),
            (
                "a line over the cap",
                vec![b"set=1", &long],
                vec![Step::Refuse(Refusal::LineTooLong)],
                false,
            ),
            (
                "a line at the cap is fine",
                vec![b"set=1", &at_cap, b""],
                vec![Step::Refuse(Refusal::SetRefused)],
                false,
            ),
            (
                "a set over the request cap",
                big_set,
                vec![Step::Refuse(Refusal::RequestTooLarge)],
                false,
            ),
        ];
        for (name, lines, steps, open) in cases {
            assert_eq!(run(&lines), (steps, open), "{name}");
        }
    }

    #[test]
    fn refusals_map_to_errno_and_only_a_refused_set_keeps_the_connection() {
        let cases = [
            (Refusal::SetRefused, Errno::PERM, true),
            (Refusal::UnknownOperation, Errno::INVAL, false),
            (Refusal::TrailingAfterGet, Errno::INVAL, false),
            (Refusal::LineTooLong, Errno::MSGSIZE, false),
            (Refusal::RequestTooLarge, Errno::MSGSIZE, false),
        ];
        for (refusal, errno, keeps) in cases {
            assert_eq!(refusal.errno(), errno, "{refusal:?}");
            assert_eq!(refusal.keeps_connection(), keeps, "{refusal:?}");
        }
        let mut d = Decoder::new();
        assert_eq!(d.line(b"set=1"), Step::More);
        assert_eq!(d.line_too_long(), Step::Refuse(Refusal::LineTooLong));
        assert!(!d.in_request());
    }
}
