//! `wgmeshctl debug decode-packet`: open one captured discovery datagram with the mesh secret
//! and show what is inside, or exactly why it does not open.

use std::io::Read as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use wgmeshd::config::SecretArgs;
use wgmeshd::crypto::envelope::MAX_DATAGRAM_LEN;
use wgmeshd::crypto::{DerivedKeys, Envelope};
use wgmeshd::wire::PeerAnnouncement;

use crate::{Exit, print_json, resolve_secret};

/// `debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Decode one captured discovery datagram read from stdin (the raw UDP payload, or base64 of
    /// it) and print its type and payload as JSON. Exits 1 with the reason if it does not open.
    DecodePacket(DecodeArgs),
}

/// Options of `debug decode-packet`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// Judge freshness as of this Unix time (seconds) instead of now, for old captures.
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<u64>,
}

/// Runs a `debug` subcommand.
pub fn run(cmd: DebugCommand) -> anyhow::Result<Exit> {
    match cmd {
        DebugCommand::DecodePacket(args) => decode_packet(&args),
    }
}

/// What `decode-packet` prints for a datagram that opens.
#[derive(Debug, Serialize)]
struct Decoded {
    #[serde(rename = "type")]
    msg_type: &'static str,
    timestamp: i64,
    age_seconds: i64,
    /// For HELLO/REPLY/ANNOUNCE: whether the announcement passes Go's validation (LAN and gossip
    /// receivers drop it otherwise; the exchange socket does not validate).
    #[serde(skip_serializing_if = "Option::is_none")]
    announcement_valid: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    announcement_error: Option<String>,
    payload: serde_json::Value,
}

fn decode_packet(args: &DecodeArgs) -> anyhow::Result<Exit> {
    let mut input = Vec::new();
    // Base64 of the largest datagram plus line breaks fits in twice the datagram limit.
    std::io::stdin()
        .take(2 * MAX_DATAGRAM_LEN as u64 + 1)
        .read_to_end(&mut input)?;
    if input.len() > 2 * MAX_DATAGRAM_LEN {
        anyhow::bail!("input is larger than any discovery datagram can be");
    }
    let datagram = to_datagram(&input)?;
    let secret = resolve_secret(&args.secret)?;
    let env = Envelope::new(&DerivedKeys::derive(&secret).gossip_key);
    let now = args
        .at
        .map_or_else(SystemTime::now, |s| UNIX_EPOCH + Duration::from_secs(s));
    let opened = match env.open_raw(&datagram, now) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("wgmeshctl: packet does not open: {e}");
            return Ok(Exit::Failure);
        }
    };
    let (announcement_valid, announcement_error) = if opened.msg_type.carries_announcement() {
        match opened
            .payload::<PeerAnnouncement>()
            .and_then(|a| Ok(a.validate()?))
        {
            Ok(()) => (Some(true), None),
            Err(e) => (Some(false), Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    print_json(&Decoded {
        msg_type: opened.msg_type.as_str(),
        timestamp: opened.timestamp,
        age_seconds: now_secs - opened.timestamp,
        announcement_valid,
        announcement_error,
        payload: serde_json::from_slice(&opened.plaintext)?,
    })?;
    Ok(Exit::Success)
}

/// Accepts the datagram itself (it starts with `{`) or standard/URL-safe base64 of it.
fn to_datagram(input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        anyhow::bail!("no input: pipe one datagram (raw or base64) into stdin");
    }
    if trimmed.starts_with(b"{") {
        return Ok(input.to_vec());
    }
    let text: Vec<u8> = trimmed
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(&text).ok())
        .ok_or_else(|| anyhow::anyhow!("input is neither a datagram (JSON) nor base64 of one"))
}
