//! The multi-call test program: `wgmesh-labnode` runs it, and so does `wgmesh-lab` (hidden
//! subcommands), through one dispatch function, [`main_from`].
//!
//! Tests and the lab start every daemon and CLI through it, so they always run the code of this
//! build, never a `wgmeshd` or `wgmeshctl` binary left in `target/` by an earlier build:
//!
//! - `wgmeshd ARGS…`: the daemon's own entry point, `wgmeshd::cli::main_from`;
//! - `wgmeshctl ARGS…`: the CLI's own entry point, `wgmeshctl::main_from`;
//! - `serve`: exercises the daemon's data-plane layer for real (`wgmeshd::system::{wg, net}`),
//!   without `wg` or `ip`. It reads one JSON command per line on stdin and answers one JSON line
//!   on stdout (see [`crate::node`] for the client side):
//!   - `{"cmd":"up","iface":"wg0","backend":"userspace","listen_port":51820,"addresses":["10.77.0.1/16"]}`
//!   - `{"cmd":"apply", "private_key":…, "listen_port":…, "add":[…], "update":[…], "remove":[…]}`
//!   - `{"cmd":"read"}`
//!   - `{"cmd":"kick","peers":["<key>",…]}` (start a handshake with each now, as the daemon does
//!     with peers it just added)
//!   - `{"cmd":"sync_routes","routes":[{"dst":"10.9.0.0/24","gateway":null}]}`
//!   - `{"cmd":"routes"}`
//!   - `{"cmd":"down"}`
//!
//!   Answers are `{"ok":true,…}` or `{"ok":false,"error":"…"}`;
//! - `tcp-echo ADDR` / `tcp-check ADDR BYTES TIMEOUT_MS` / `udp-echo ADDR` /
//!   `udp-check ADDR TIMEOUT_MS`: move and verify bytes between hosts (the echo servers print
//!   `listening` once bound);
//! - `announce SECRET_FILE PUBKEY MESH_IP WG_PORT DEST`: sends one LAN ANNOUNCE sealed with the
//!   mesh key (as a Go peer's LAN discovery does) as a UDP datagram to `DEST`, so a daemon learns
//!   a labnode as a peer; the daemon's LAN socket takes unicast as well;
//! - `announce-many SECRET_FILE FIRST COUNT SUBNET BASE_PORT DEST [HOSTNAME]`: the same for COUNT
//!   synthetic nodes with the lab keys `FIRST..FIRST+COUNT` ([`crate::node::keypair`]), mesh IPs
//!   counted up from the 10th address of SUBNET, WireGuard ports from BASE_PORT and the hostname
//!   HOSTNAME (default `wgmesh-labnode`), paced so that the daemon's receive buffer never
//!   overflows (`wgmesh-lab bench-api` fills a store with them);
//! - `http-get ADDR PATH`: one HTTP/1.1 `GET PATH` to the TCP address ADDR (a daemon's
//!   `--metrics-listen`), the whole response (head and body) on stdout;
//! - `stun-server --bind IP:PORT`: a STUN responder for the lab (the daemons' own codec in
//!   reverse, `wgmeshd::discovery::stun::codec`): every binding request is answered with a
//!   binding success response whose XOR-MAPPED-ADDRESS is the request's source address; anything
//!   else is ignored. Prints `listening` once bound, then one `answered SOURCE` line per answer;
//! - `dht-node --bind IP:PORT`: a mainline DHT node in server mode with no bootstrap of its own
//!   (the daemon's own DHT code, `wgmeshd::system::dht`), the lab's only bootstrap node; prints
//!   `listening IP:PORT` once bound and runs until killed;
//! - `udp-garbage DEST COUNT`: sends COUNT datagrams of garbage (random bytes of random length,
//!   some oversized, and broken bencode) to DEST as fast as the socket takes them, then prints
//!   how many were sent and how long it took;
//! - `flood-udp LISTEN_PORT DEST COUNT`: a hostile host. Prints `listening`, waits (at most 60 s)
//!   for one datagram on UDP LISTEN_PORT (a daemon's HELLO, captured: start a daemon with
//!   `--peer <this host>:LISTEN_PORT`), prints `captured …`, waits for a line on stdin, then
//!   sends COUNT datagrams to DEST as fast as it can, in
//!   turn: replays of the captured datagram, envelopes sealed with a wrong key, garbage (random
//!   bytes, envelope-shaped JSON with bad fields, a cut envelope) and 65507-byte datagrams (the largest UDP payload); prints one JSON line with what it sent.
//!
//! How a test gets the program's path: [`crate::Exe`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use wgmeshd::system::net::{DesiredRoute, Netlink};
use wgmeshd::system::wg::{
    AnyWireGuard, BackendChoice, DeviceUpdate, LiveDevice, PeerConfig, PeerUpdate, WireGuard,
};

/// The subcommands [`main_from`] knows.
pub const COMMANDS: &[&str] = &[
    "wgmeshd",
    "wgmeshctl",
    "serve",
    "tcp-echo",
    "tcp-check",
    "udp-echo",
    "udp-check",
    "announce",
    "announce-many",
    "http-get",
    "stun-server",
    "dht-node",
    "udp-garbage",
    "flood-udp",
    "probe",
];

const USAGE: &str = "usage: wgmesh-labnode wgmeshd ARGS… | wgmeshctl ARGS… | serve | tcp-echo ADDR \
                     | tcp-check ADDR BYTES TIMEOUT_MS | probe ADDR | udp-echo ADDR | udp-check ADDR TIMEOUT_MS \
                     | announce SECRET_FILE PUBKEY MESH_IP WG_PORT DEST \
                     | announce-many SECRET_FILE FIRST COUNT SUBNET BASE_PORT DEST [HOSTNAME] \
                     | http-get ADDR PATH | stun-server --bind IP:PORT \
                     | dht-node --bind IP:PORT | udp-garbage DEST COUNT \
                     | flood-udp LISTEN_PORT DEST COUNT";

/// Runs the subcommand named by `args[1]` (`args[0]` is the program name) with the rest of the
/// arguments, and returns the exit status; a missing or unknown subcommand prints the usage and
/// returns 2.
///
/// `wgmeshd` and `wgmeshctl` hand over to those programs' entry points with `args[2..]` (and
/// their own name as the program name, so their messages read as usual); they build their own
/// runtime, so they are dispatched before this program builds one.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let rest = args.iter().skip(2).cloned();
    match command {
        "wgmeshd" => return wgmeshd::cli::main_from(std::iter::once("wgmeshd".into()).chain(rest)),
        "wgmeshctl" => {
            return wgmeshctl::main_from(std::iter::once("wgmeshctl".into()).chain(rest));
        }
        c if COMMANDS.contains(&c) => {}
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let args: Vec<String> = match args
        .iter()
        .skip(1)
        .map(|a| a.clone().into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("wgmesh-labnode: argument {bad:?} is not UTF-8");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wgmesh-labnode: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args[0].as_str() {
            "serve" => serve().await,
            "tcp-echo" => tcp_echo(arg(&args, 1)?).await,
            "tcp-check" => tcp_check(arg(&args, 1)?, arg(&args, 2)?, arg(&args, 3)?).await,
            "probe" => go_probe(arg(&args, 1)?).await,
            "udp-echo" => udp_echo(arg(&args, 1)?).await,
            "udp-check" => udp_check(arg(&args, 1)?, arg(&args, 2)?).await,
            "announce" => {
                announce(
                    arg(&args, 1)?,
                    arg(&args, 2)?,
                    arg(&args, 3)?,
                    arg(&args, 4)?,
                    arg(&args, 5)?,
                )
                .await
            }
            "announce-many" => {
                announce_many(
                    arg(&args, 1)?,
                    arg(&args, 2)?,
                    arg(&args, 3)?,
                    arg(&args, 4)?,
                    arg(&args, 5)?,
                    arg(&args, 6)?,
                    args.get(7).map_or(DEFAULT_HOSTNAME, String::as_str),
                )
                .await
            }
            "http-get" => http_get(arg(&args, 1)?, arg(&args, 2)?).await,
            "stun-server" => {
                if args.get(1).map(String::as_str) != Some("--bind") {
                    bail!("usage: stun-server --bind IP:PORT");
                }
                stun_server(arg(&args, 2)?).await
            }
            "dht-node" => {
                if args.get(1).map(String::as_str) != Some("--bind") {
                    bail!("usage: dht-node --bind IP:PORT");
                }
                dht_node(arg(&args, 2)?).await
            }
            "udp-garbage" => udp_garbage(arg(&args, 1)?, arg(&args, 2)?).await,
            "flood-udp" => flood_udp(arg(&args, 1)?, arg(&args, 2)?, arg(&args, 3)?).await,
            other => bail!("unknown command {other}"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgmesh-labnode: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let raw = args.get(i).ok_or_else(|| anyhow!("missing argument {i}"))?;
    raw.parse().map_err(|e| anyhow!("argument {raw:?}: {e}"))
}

#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Command {
    Up {
        iface: String,
        backend: String,
        listen_port: u16,
        #[serde(default)]
        addresses: Vec<ipnet::IpNet>,
    },
    Apply(ApplyCmd),
    Read,
    Kick {
        peers: Vec<String>,
    },
    SyncRoutes {
        routes: Vec<RouteCmd>,
    },
    Routes,
    Down,
}

#[derive(Deserialize, Default)]
struct ApplyCmd {
    private_key: Option<String>,
    listen_port: Option<u16>,
    #[serde(default)]
    add: Vec<PeerCmd>,
    #[serde(default)]
    update: Vec<UpdateCmd>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Deserialize)]
struct PeerCmd {
    public_key: String,
    endpoint: Option<SocketAddr>,
    preshared_key: Option<String>,
    keepalive: Option<u16>,
    #[serde(default)]
    allowed_ips: Vec<ipnet::IpNet>,
}

#[derive(Deserialize)]
struct UpdateCmd {
    public_key: String,
    endpoint: Option<SocketAddr>,
    /// Absent: unchanged; null: remove; string: set.
    #[serde(default, deserialize_with = "some")]
    preshared_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    keepalive: Option<Option<u16>>,
    allowed_ips: Option<Vec<ipnet::IpNet>>,
}

#[derive(Deserialize)]
struct RouteCmd {
    dst: ipnet::IpNet,
    gateway: Option<std::net::IpAddr>,
}

fn some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

fn to_update(cmd: ApplyCmd) -> anyhow::Result<DeviceUpdate> {
    let key = |s: &str| s.parse().map_err(|e| anyhow!("key {s:?}: {e}"));
    Ok(DeviceUpdate {
        private_key: cmd
            .private_key
            .as_deref()
            .map(|s| {
                s.parse::<wgmeshd::keys::PrivateKey>()
                    .map(std::sync::Arc::new)
            })
            .transpose()
            .map_err(|e| anyhow!("private key: {e}"))?,
        listen_port: cmd.listen_port,
        add: cmd
            .add
            .into_iter()
            .map(|p| {
                Ok(PeerConfig {
                    public_key: key(&p.public_key)?,
                    endpoint: p.endpoint,
                    preshared_key: p
                        .preshared_key
                        .as_deref()
                        .map(|s| s.parse())
                        .transpose()
                        .map_err(|e| anyhow!("psk: {e}"))?,
                    keepalive: p.keepalive,
                    allowed_ips: p.allowed_ips,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        update: cmd
            .update
            .into_iter()
            .map(|u| {
                Ok(PeerUpdate {
                    public_key: key(&u.public_key)?,
                    endpoint: u.endpoint,
                    preshared_key: match u.preshared_key {
                        None => None,
                        Some(None) => Some(None),
                        Some(Some(s)) => Some(Some(s.parse().map_err(|e| anyhow!("psk: {e}"))?)),
                    },
                    keepalive: u.keepalive,
                    replace_allowed_ips: u.allowed_ips,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        remove: cmd
            .remove
            .iter()
            .map(|s| key(s))
            .collect::<anyhow::Result<_>>()?,
    })
}

fn device_json(dev: &LiveDevice) -> Value {
    let peers: Vec<Value> = dev
        .peers
        .iter()
        .map(|(k, p)| {
            json!({
                "public_key": k.to_string(),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "allowed_ips": p.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "has_preshared_key": p.preshared_key.is_some(),
                "keepalive": p.keepalive,
                "last_handshake_unix": p.last_handshake.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
            })
        })
        .collect();
    json!({
        "public_key": dev.public_key.map(|k| k.to_string()),
        "listen_port": dev.listen_port,
        "peers": peers,
    })
}

struct Node {
    wg: AnyWireGuard,
    net: Netlink,
    ifindex: u32,
}

async fn serve() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut node: Option<Node> = None;
    while let Some(line) = lines.next_line().await? {
        let reply = match handle(&mut node, &line).await {
            Ok(mut v) => {
                v["ok"] = json!(true);
                v
            }
            Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
        };
        stdout.write_all(format!("{reply}\n").as_bytes()).await?;
        stdout.flush().await?;
    }
    // stdin closed: the test is done with us.
    if let Some(n) = node.take() {
        n.wg.shutdown().await?;
    }
    Ok(())
}

async fn handle(node: &mut Option<Node>, line: &str) -> anyhow::Result<Value> {
    let cmd: Command = serde_json::from_str(line).context("bad command")?;
    let started = Instant::now();
    let ms = |s: Instant| s.elapsed().as_secs_f64() * 1000.0;
    match cmd {
        Command::Up {
            iface,
            backend,
            listen_port,
            addresses,
        } => {
            let choice = match backend.as_str() {
                "auto" => BackendChoice::Auto,
                "kernel" => BackendChoice::Kernel,
                "userspace" => BackendChoice::Userspace,
                other => bail!("unknown backend {other}"),
            };
            let net = Netlink::connect().await?;
            let (wg, reason) = AnyWireGuard::open(&net, choice, &iface, listen_port).await?;
            let create_ms = ms(started);
            let ifindex = net
                .link_index(&iface)
                .await?
                .ok_or_else(|| anyhow!("interface {iface} missing after create"))?;
            net.sync_addresses(ifindex, &addresses).await?;
            net.set_mtu(ifindex, 1420).await?;
            net.set_link_up(ifindex).await?;
            let kind = wg.kind();
            *node = Some(Node { wg, net, ifindex });
            Ok(
                json!({"backend": kind, "reason": reason, "create_ms": create_ms, "total_ms": ms(started)}),
            )
        }
        Command::Apply(cmd) => {
            let n = node.as_ref().ok_or_else(|| anyhow!("not up"))?;
            let update = to_update(cmd)?;
            let report = n.wg.apply(update).await?;
            Ok(json!({
                "writes": report.writes, "added": report.added, "updated": report.updated,
                "removed": report.removed, "ms": ms(started),
            }))
        }
        Command::Read => {
            let n = node.as_ref().ok_or_else(|| anyhow!("not up"))?;
            let dev = n.wg.read().await?;
            Ok(json!({"device": device_json(&dev), "ms": ms(started)}))
        }
        Command::Kick { peers } => {
            let n = node.as_ref().ok_or_else(|| anyhow!("not up"))?;
            let keys = peers
                .iter()
                .map(|s| s.parse().map_err(|e| anyhow!("key {s:?}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            n.wg.kick(&keys).await;
            Ok(json!({"ms": ms(started)}))
        }
        Command::SyncRoutes { routes } => {
            let n = node.as_ref().ok_or_else(|| anyhow!("not up"))?;
            let desired: Vec<DesiredRoute> = routes
                .into_iter()
                .map(|r| match r.gateway {
                    Some(gw) => DesiredRoute::via(r.dst, gw),
                    None => Ok(DesiredRoute::device(r.dst)),
                })
                .collect::<Result<_, _>>()?;
            let report = n.net.sync_routes(n.ifindex, &desired).await?;
            Ok(json!({"report": format!("{report:?}")}))
        }
        Command::Routes => {
            let n = node.as_ref().ok_or_else(|| anyhow!("not up"))?;
            let routes = n.net.routes(n.ifindex).await?;
            let list: Vec<Value> = routes
                .iter()
                .map(|r| json!({"dst": r.destination.to_string(), "gateway": r.gateway.map(|g| g.to_string()), "protocol": r.protocol}))
                .collect();
            Ok(json!({"routes": list}))
        }
        Command::Down => {
            if let Some(n) = node.take() {
                n.wg.shutdown().await?;
            }
            Ok(json!({}))
        }
    }
}

async fn tcp_echo(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening");
    loop {
        let (mut sock, _) = listener.accept().await?;
        tokio::spawn(async move {
            let (mut r, mut w) = sock.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// A mesh probe as Go wgmesh sends it, written out by hand (not our client): `ping\n` over a
/// plain TCP connection to `addr`; prints the line that comes back (within 5 s).
async fn go_probe(addr: SocketAddr) -> anyhow::Result<()> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (r, mut w) = stream.into_split();
        w.write_all(b"ping\n").await?;
        let mut line = String::new();
        BufReader::new(r).read_line(&mut line).await?;
        print!("{line}");
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| anyhow!("probe {addr} timed out"))?
}

/// Sends `bytes` of a pattern to an echo server and checks every byte comes back.
async fn tcp_check(addr: SocketAddr, bytes: usize, timeout_ms: u64) -> anyhow::Result<()> {
    let work = async {
        let started = Instant::now();
        let sock = tokio::net::TcpStream::connect(addr).await?;
        let (mut r, mut w) = sock.into_split();
        let payload: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await?;
            w.shutdown().await
        });
        let mut back = Vec::with_capacity(bytes);
        r.read_to_end(&mut back).await?;
        writer.await??;
        anyhow::ensure!(
            back == payload,
            "echo differs: sent {} bytes, got {}",
            payload.len(),
            back.len()
        );
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{{\"bytes\":{bytes},\"secs\":{secs},\"mbit_per_s\":{}}}",
            (bytes as f64 * 16.0) / secs / 1e6
        );
        Ok(())
    };
    tokio::time::timeout(Duration::from_millis(timeout_ms), work)
        .await
        .map_err(|_| anyhow!("tcp check to {addr} timed out after {timeout_ms} ms"))?
}

/// Answers every STUN binding request on `bind` with the request's source address.
async fn stun_server(bind: SocketAddr) -> anyhow::Result<()> {
    use wgmeshd::discovery::stun::codec;
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .with_context(|| format!("bind {bind}"))?;
    println!("listening");
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        match codec::parse_binding_request(&buf[..n]) {
            Ok(txn) => {
                sock.send_to(&codec::binding_response(txn, from), from)
                    .await?;
                println!("answered {from}");
            }
            Err(e) => eprintln!("ignored {n} bytes from {from}: {e}"),
        }
    }
}

async fn udp_echo(listen: SocketAddr) -> anyhow::Result<()> {
    let sock = tokio::net::UdpSocket::bind(listen).await?;
    println!("listening");
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        sock.send_to(&buf[..n], from).await?;
    }
}

/// Sends a datagram every 100 ms until one comes back intact.
async fn udp_check(addr: SocketAddr, timeout_ms: u64) -> anyhow::Result<()> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    let probe = b"wgmesh-lab-udp-probe";
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        sock.send_to(probe, addr).await?;
        let reply =
            tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await;
        if let Ok(Ok((n, _))) = reply
            && &buf[..n] == probe
        {
            return Ok(());
        }
    }
    bail!("no UDP echo from {addr} within {timeout_ms} ms")
}

/// Hostname of the nodes a labnode announces.
const DEFAULT_HOSTNAME: &str = "wgmesh-labnode";

/// One LAN ANNOUNCE datagram for a node with `pubkey`, `hostname`, `mesh_ip` and WireGuard port
/// `wg_port`, sealed with `envelope` (as a Go peer's LAN discovery sends it).
fn sealed_announcement(
    envelope: &wgmeshd::crypto::Envelope,
    pubkey: String,
    hostname: &str,
    mesh_ip: std::net::Ipv4Addr,
    wg_port: u16,
) -> anyhow::Result<Vec<u8>> {
    use wgmeshd::crypto::MessageType;
    use wgmeshd::wire::{PROTOCOL, PeerAnnouncement};

    let ann = PeerAnnouncement {
        protocol: PROTOCOL.to_owned(),
        wg_pubkey: pubkey,
        hostname: hostname.to_owned(),
        mesh_ip: mesh_ip.to_string(),
        wg_endpoint: format!("0.0.0.0:{wg_port}"),
        timestamp: std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)?
            .as_secs()
            .try_into()?,
        ..PeerAnnouncement::default()
    };
    ann.validate()?;
    envelope
        .seal(MessageType::Announce, &ann)
        .map_err(|e| anyhow!("cannot seal the announcement: {e}"))
}

/// The envelope of the mesh whose secret is in `secret_file`.
fn mesh_envelope(secret_file: &std::path::Path) -> anyhow::Result<wgmeshd::crypto::Envelope> {
    use wgmeshd::crypto::{DerivedKeys, Envelope};

    let secret = wgmeshd::config::resolve_secret(None, Some(secret_file), |_| None)?;
    let keys = DerivedKeys::derive(&secret);
    Ok(Envelope::new(&keys.gossip_key))
}

async fn udp_socket_for(dest: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    Ok(tokio::net::UdpSocket::bind(bind).await?)
}

/// Sends one sealed LAN ANNOUNCE for a node with `pubkey`, `mesh_ip` and WireGuard port
/// `wg_port` to `dest`.
async fn announce(
    secret_file: std::path::PathBuf,
    pubkey: String,
    mesh_ip: std::net::Ipv4Addr,
    wg_port: u16,
    dest: SocketAddr,
) -> anyhow::Result<()> {
    let datagram = sealed_announcement(
        &mesh_envelope(&secret_file)?,
        pubkey,
        DEFAULT_HOSTNAME,
        mesh_ip,
        wg_port,
    )?;
    let sock = udp_socket_for(dest).await?;
    sock.send_to(&datagram, dest)
        .await
        .with_context(|| format!("sending the announcement to {dest}"))?;
    Ok(())
}

/// Datagrams sent back to back before [`announce_many`] pauses for [`ANNOUNCE_PAUSE`]: a burst
/// stays well inside a receive buffer of the default size, and the pause lets the daemon drain it.
const ANNOUNCE_BURST: usize = 25;
/// See [`ANNOUNCE_BURST`].
const ANNOUNCE_PAUSE: Duration = Duration::from_millis(15);

/// Announces `count` synthetic nodes (lab keys `first..first+count`) named `hostname` to `dest`:
/// node `i` has the mesh IP `subnet`'s address 10 + `i` and the WireGuard port `base_port + i`.
async fn announce_many(
    secret_file: std::path::PathBuf,
    first: u16,
    count: u16,
    subnet: ipnet::Ipv4Net,
    base_port: u16,
    dest: SocketAddr,
    hostname: &str,
) -> anyhow::Result<()> {
    let envelope = mesh_envelope(&secret_file)?;
    let sock = udp_socket_for(dest).await?;
    let base = u32::from(subnet.network());
    for i in 0..count {
        let key = first
            .checked_add(i)
            .ok_or_else(|| anyhow!("key numbers past {}", u16::MAX))?;
        let ip = std::net::Ipv4Addr::from(base + 10 + u32::from(i));
        anyhow::ensure!(subnet.contains(&ip), "{count} nodes do not fit in {subnet}");
        let port = base_port
            .checked_add(i)
            .ok_or_else(|| anyhow!("ports past {}", u16::MAX))?;
        let datagram =
            sealed_announcement(&envelope, crate::node::keypair(key).1, hostname, ip, port)?;
        sock.send_to(&datagram, dest)
            .await
            .with_context(|| format!("sending announcement {i} to {dest}"))?;
        if usize::from(i) % ANNOUNCE_BURST == ANNOUNCE_BURST - 1 {
            tokio::time::sleep(ANNOUNCE_PAUSE).await;
        }
    }
    Ok(())
}

/// `GET path` to `addr` on a connection of its own (closed after the answer); prints the whole
/// response.
async fn http_get(addr: SocketAddr, path: String) -> anyhow::Result<()> {
    let work = async {
        let mut sock = tokio::net::TcpStream::connect(addr).await?;
        sock.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut response = Vec::new();
        sock.read_to_end(&mut response).await?;
        let mut stdout = tokio::io::stdout();
        stdout.write_all(&response).await?;
        stdout.flush().await?;
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow!("GET {path} on {addr}: no answer within 10 s"))?
        .with_context(|| format!("GET {path} on {addr}"))
}

/// A DHT bootstrap node on `bind` until killed.
async fn dht_node(bind: std::net::SocketAddrV4) -> anyhow::Result<()> {
    use wgmeshd::system::dht::{DhtNode, NodeConfig};
    let node = DhtNode::start(NodeConfig {
        bind: *bind.ip(),
        port: bind.port(),
        bootstrap: Vec::new(),
    })
    .await?;
    if node.local_addr() != bind {
        bail!(
            "{bind} is busy (the node would listen on {})",
            node.local_addr()
        );
    }
    println!("listening {}", node.local_addr());
    std::future::pending::<()>().await;
    drop(node);
    Ok(())
}

/// Sends `count` garbage datagrams to `dest`: random bytes (1 to 1400 of them, one in 16 of
/// 4096 to 8191) and broken bencode, from a fixed-seed generator so that runs compare.
async fn udp_garbage(dest: SocketAddr, count: u64) -> anyhow::Result<()> {
    let bind: SocketAddr = if dest.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    // xorshift64*: no dependency, same sequence every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    const BENCODE: [&[u8]; 5] = [
        b"d1:ad2:id20:",
        b"d1:q4:ping1:t2:aa1:y1:qe",
        b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes999999:",
        b"li1ei2ei3e",
        b"d1:y1:q1:q13:announce_peer1:ad4:porti-1e5:token0:ee",
    ];
    let started = Instant::now();
    let mut buf = vec![0u8; 8192];
    let mut sent = 0u64;
    for i in 0..count {
        let len = if i % 4 == 0 {
            let template = BENCODE[(next() % BENCODE.len() as u64) as usize];
            buf[..template.len()].copy_from_slice(template);
            template.len()
        } else {
            // Every 16th is oversized (more than a DHT node reads: 2048 bytes), fragmented on the
            // wire.
            let len = if i % 16 == 1 {
                4096 + (next() % 4096) as usize
            } else {
                1 + (next() % 1400) as usize
            };
            for chunk in buf[..len].chunks_mut(8) {
                let word = next().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            len
        };
        // A full socket buffer (ENOBUFS, EAGAIN) waits a moment and tries again.
        loop {
            match sock.send_to(&buf[..len], dest).await {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e.into()),
            }
        }
        sent += 1;
    }
    println!(
        "{{\"sent\":{sent},\"seconds\":{:.3}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A small deterministic generator for the flood's garbage (no crypto strength needed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// See the module documentation (`flood-udp`).
async fn flood_udp(listen_port: u16, dest: SocketAddr, count: u64) -> anyhow::Result<()> {
    use wgmeshd::crypto::{Envelope, MessageType};
    use wgmeshd::wire::{PROTOCOL, PeerAnnouncement};

    let sock = tokio::net::UdpSocket::bind(("0.0.0.0", listen_port))
        .await
        .with_context(|| format!("bind UDP port {listen_port}"))?;
    println!("listening");
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(60), sock.recv_from(&mut buf))
        .await
        .context("no datagram to capture within 60 s")??;
    let captured = buf[..n].to_vec();
    println!("captured {n} bytes from {from}");
    // The test says when: it reads the daemon's counters first.
    let mut go = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut go)
        .await
        .context("waiting for the go line on stdin")?;

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let wrong = Envelope::new(&[0x5a; 32]);
    let ann = PeerAnnouncement {
        protocol: PROTOCOL.to_owned(),
        wg_pubkey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        mesh_ip: "10.99.0.1".to_owned(),
        wg_endpoint: "0.0.0.0:51820".to_owned(),
        timestamp: std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        ..PeerAnnouncement::default()
    };
    let shaped = br#"{"type":"HELLO","nonce":"!!!!","ciphertext":"AAAA"}"#.to_vec();
    let cut = captured[..captured.len() / 2].to_vec();
    let oversized = vec![b'{'; 65_507];
    let mut sent = [0u64; 4];
    let started = Instant::now();
    for i in 0..count {
        let kind = (i % 4) as usize;
        // The replay first: it gets past the rate limiter (a new source's first token).
        let datagram: std::borrow::Cow<'_, [u8]> = match kind {
            0 => captured.as_slice().into(),
            2 => match (i / 4) % 3 {
                0 => {
                    let len = 1 + (rng.next() % 1400) as usize;
                    rng.bytes(len).into()
                }
                1 => shaped.as_slice().into(),
                _ => cut.as_slice().into(),
            },
            1 => {
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&i.to_be_bytes());
                wrong
                    .seal_with_nonce(MessageType::Hello, &ann, &nonce)
                    .into()
            }
            _ => oversized.as_slice().into(),
        };
        loop {
            match sock.send_to(&datagram, dest).await {
                Ok(_) => break,
                // A full socket buffer: wait for the kernel to drain it.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(anyhow!("sending datagram {i} to {dest}: {e}")),
            }
        }
        sent[kind] += 1;
    }
    println!(
        "{}",
        json!({
            "replay": sent[0], "wrong_key": sent[1], "garbage": sent[2], "oversized": sent[3],
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
