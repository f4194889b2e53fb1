//! Client side of `wgmesh-labnode serve`: one JSON command per line in, one JSON answer out.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use wgmeshd::keys::{PrivateKey, PublicKey};

use crate::Exe;
use crate::lab::{Host, PipedProcess};

/// How long one command may take before the test fails (1000-peer applies included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `wgmesh-labnode serve` process in a lab host.
pub struct LabNode {
    /// Label for messages (the host name).
    pub name: String,
    process: PipedProcess,
}

impl LabNode {
    /// Starts `serve` of the multi-call program `exe` in `host`.
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn start(exe: &Exe, host: &Host) -> anyhow::Result<Self> {
        let process = exe
            .in_host(host, "serve")
            .env("RUST_LOG", "warn")
            .spawn_piped()
            .with_context(|| format!("start labnode in {}", host.name()))?;
        Ok(Self {
            name: host.name().to_owned(),
            process,
        })
    }

    /// The `serve` process (its PID, for CPU measurements).
    pub fn process(&self) -> &crate::lab::LabProcess {
        self.process.process()
    }

    /// Sends one command and returns the answer; an `ok:false` answer is an error.
    pub fn call(&mut self, cmd: Value) -> anyhow::Result<Value> {
        let line = self
            .process
            .request(&cmd.to_string(), REPLY_TIMEOUT)
            .with_context(|| format!("{}: no answer to {cmd}", self.name))?;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: bad answer {line:?}", self.name))?;
        if v["ok"] != json!(true) {
            bail!(
                "{}: {}",
                self.name,
                v["error"].as_str().unwrap_or("unknown error")
            );
        }
        Ok(v)
    }

    /// `up` with the userspace backend, the given port and addresses.
    pub fn up(&mut self, listen_port: u16, addresses: &[&str]) -> anyhow::Result<Value> {
        self.call(json!({"cmd": "up", "iface": "wg0", "backend": "userspace", "listen_port": listen_port, "addresses": addresses}))
    }

    /// `apply` with the given fields (`{"private_key":…,"add":[…],…}`).
    pub fn apply(&mut self, mut fields: Value) -> anyhow::Result<Value> {
        fields["cmd"] = json!("apply");
        self.call(fields)
    }

    /// The device as `read` reports it.
    pub fn read(&mut self) -> anyhow::Result<Value> {
        Ok(self.call(json!({"cmd": "read"}))?["device"].clone())
    }

    /// The peer entry for `key` in a `read`, if present.
    pub fn peer(&mut self, key: &str) -> anyhow::Result<Option<Value>> {
        let dev = self.read()?;
        let peers = dev["peers"]
            .as_array()
            .ok_or_else(|| anyhow!("no peers array"))?;
        Ok(peers.iter().find(|p| p["public_key"] == key).cloned())
    }
}

/// Sends one LAN ANNOUNCE, sealed with the secret in `secret_file`, from `host` to `dest` for a
/// node with `public_key`, `mesh_ip` and WireGuard port `wg_port` (`wgmesh-labnode announce`):
/// how a labnode playing a Go peer gets into a daemon's peer store.
pub fn announce(
    exe: &crate::Exe,
    host: &Host,
    secret_file: &Path,
    public_key: &str,
    mesh_ip: Ipv4Addr,
    wg_port: u16,
    dest: SocketAddr,
) -> anyhow::Result<()> {
    exe.in_host(host, "announce")
        .arg(secret_file)
        .args([
            public_key.to_owned(),
            mesh_ip.to_string(),
            wg_port.to_string(),
            dest.to_string(),
        ])
        .output_ok()
        .map(drop)
}

/// A deterministic test key pair number `n` (never used outside lab namespaces).
pub fn keypair(n: u16) -> (String, String) {
    let mut bytes = [0u8; 32];
    bytes[1..3].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 0x40;
    let private = PrivateKey::from_bytes(bytes);
    let public: PublicKey = private.public_key();
    (private.to_base64().to_string(), public.to_string())
}
