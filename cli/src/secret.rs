//! `wgmeshctl secret …`: generate a secret, show what a secret derives, compute a node's mesh
//! addresses. None of these print the secret, the PSK or the gossip key unless asked to.

use std::fmt::Write as _;

use base64::Engine as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use wgmeshd::config::{MeshSecret, MeshSubnet, SecretArgs};
use wgmeshd::crypto::derive::hex;
use wgmeshd::crypto::{DerivedKeys, legacy_subnet, mesh_ipv4, mesh_ipv4_with_nonce, mesh_ipv6};
use wgmeshd::wire::decode_wg_key;

use crate::{Exit, print_json, print_out, resolve_secret};

/// `secret` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print a new random secret (wgmesh://v1/... with 128 random bytes). Store it with
    /// `(umask 077; wgmeshctl secret new > /etc/wgmesh/secret)`.
    New {
        /// Print `{"secret": "wgmesh://v1/..."}` instead of the bare secret.
        #[arg(long)]
        json: bool,
    },
    /// Show the mesh parameters a secret derives: network id, subnet, ports, multicast group.
    Inspect(InspectArgs),
    /// Show the mesh IPv4 and IPv6 a WireGuard public key gets in a mesh.
    MeshIp(MeshIpArgs),
}

/// Options of `secret inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// Custom IPv4 mesh subnet the mesh uses (--mesh-subnet of wgmeshd).
    #[arg(long, value_name = "CIDR")]
    mesh_subnet: Option<MeshSubnet>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also print the gossip (envelope) key and the WireGuard PSK. Anyone who sees them can read
    /// discovery traffic; use only for debugging.
    #[arg(long)]
    show_keys: bool,
}

/// Options of `secret mesh-ip`.
#[derive(Debug, Args)]
pub struct MeshIpArgs {
    /// The node's WireGuard public key (base64).
    #[arg(long, value_name = "KEY")]
    pubkey: String,
    #[command(flatten)]
    secret: SecretArgs,
    /// Custom IPv4 mesh subnet the mesh uses (--mesh-subnet of wgmeshd).
    #[arg(long, value_name = "CIDR")]
    mesh_subnet: Option<MeshSubnet>,
    /// Collision re-derivation number (1, 2, ...): the IPv4 a node moves to after losing an
    /// address collision. 0 is the normal address.
    #[arg(long, value_name = "N", default_value_t = 0)]
    nonce: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs a `secret` subcommand.
pub fn run(cmd: SecretCommand) -> anyhow::Result<Exit> {
    match cmd {
        SecretCommand::New { json } => new(json),
        SecretCommand::Inspect(args) => inspect(&args),
        SecretCommand::MeshIp(args) => mesh_ip(&args),
    }
    .map(|()| Exit::Success)
}

fn new(json: bool) -> anyhow::Result<()> {
    let mut random = [0u8; MeshSecret::GENERATED_BYTES];
    getrandom::getrandom(&mut random)
        .map_err(|e| anyhow::anyhow!("OS random generator failed: {e}"))?;
    let secret = MeshSecret::from_random_bytes(&random).to_uri();
    if json {
        return print_json(&serde_json::json!({ "secret": secret }));
    }
    print_out(&format!("{secret}\n"))
}

/// What `secret inspect --json` prints.
#[derive(Debug, Serialize)]
struct Inspection {
    network_id: String,
    mesh_subnet: String,
    mesh_subnet_custom: bool,
    mesh_ipv6_prefix: String,
    gossip_port: u16,
    dht_port: u16,
    probe_port: u16,
    rendezvous_id: String,
    lan_multicast_group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gossip_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    psk: Option<String>,
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let secret = resolve_secret(&args.secret)?;
    let keys = DerivedKeys::derive(&secret);
    if args.show_keys {
        eprintln!(
            "wgmeshctl: warning: printing the gossip key and PSK; anyone who sees them can read this mesh's discovery traffic"
        );
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let info = Inspection {
        network_id: keys.network_id_short(),
        mesh_subnet: args
            .mesh_subnet
            .map_or_else(|| legacy_subnet(&keys).to_string(), |s| s.to_string()),
        mesh_subnet_custom: args.mesh_subnet.is_some(),
        mesh_ipv6_prefix: keys.ipv6_prefix_text(),
        gossip_port: keys.gossip_port,
        dht_port: keys.dht_port(),
        probe_port: keys.probe_port(),
        rendezvous_id: hex(&keys.rendezvous_id),
        lan_multicast_group: keys.lan_multicast().to_string(),
        gossip_key: args.show_keys.then(|| hex(&keys.gossip_key)),
        psk: args.show_keys.then(|| b64.encode(keys.psk)),
    };
    if args.json {
        return print_json(&info);
    }
    let custom = if info.mesh_subnet_custom {
        " (custom)"
    } else {
        ""
    };
    let mut text = String::new();
    let _ = writeln!(text, "Network ID:        {}", info.network_id);
    let _ = writeln!(text, "Mesh subnet:       {}{custom}", info.mesh_subnet);
    let _ = writeln!(text, "Mesh IPv6 prefix:  {}", info.mesh_ipv6_prefix);
    let _ = writeln!(
        text,
        "Gossip port:       {}/udp (peer exchange and gossip)",
        info.gossip_port
    );
    let _ = writeln!(text, "DHT port:          {}/udp", info.dht_port);
    let _ = writeln!(
        text,
        "Probe port:        {}/tcp (mesh health probe)",
        info.probe_port
    );
    let _ = writeln!(text, "Rendezvous ID:     {}", info.rendezvous_id);
    let _ = writeln!(text, "LAN multicast:     {}", info.lan_multicast_group);
    if let (Some(gk), Some(psk)) = (&info.gossip_key, &info.psk) {
        let _ = writeln!(text, "Gossip key:        {gk}");
        let _ = writeln!(text, "WireGuard PSK:     {psk}");
    }
    print_out(&text)
}

/// What `secret mesh-ip --json` prints.
#[derive(Debug, Serialize)]
struct MeshIps {
    pubkey: String,
    mesh_ip: String,
    mesh_ipv6: String,
    prefix_len: u8,
    nonce: u32,
}

fn mesh_ip(args: &MeshIpArgs) -> anyhow::Result<()> {
    decode_wg_key(&args.pubkey)
        .map_err(|e| anyhow::anyhow!("--pubkey is not a WireGuard public key: {e}"))?;
    let secret = resolve_secret(&args.secret)?;
    let keys = DerivedKeys::derive(&secret);
    let custom = args.mesh_subnet.as_ref();
    let v4 = match args.nonce {
        0 => mesh_ipv4(&keys, &secret, &args.pubkey, custom),
        n => mesh_ipv4_with_nonce(&keys, &secret, &args.pubkey, custom, n),
    };
    let out = MeshIps {
        pubkey: args.pubkey.clone(),
        mesh_ip: v4.to_string(),
        mesh_ipv6: mesh_ipv6(&keys, &secret, &args.pubkey).to_string(),
        prefix_len: custom.map_or(16, |s| s.prefix_len()),
        nonce: args.nonce,
    };
    if args.json {
        return print_json(&out);
    }
    let mut text = String::new();
    let _ = writeln!(text, "Mesh IPv4:  {}/{}", out.mesh_ip, out.prefix_len);
    let _ = writeln!(text, "Mesh IPv6:  {}/64", out.mesh_ipv6);
    print_out(&text)
}
