//! How long a no-op route sync takes, and how many route messages it reads, while the main
//! table holds many routes of another interface (a router with a full table).
//!
//! Runs in a private network namespace (`unshare(CLONE_NEWNET)` on its own thread, as the
//! netlink tests do), so it needs root; without it, it prints a skip message and exits 0.
//! `cargo bench -p wgmeshd --bench route_sync` prints one table row per table size: foreign
//! IPv4 routes (`proto static` on an uplink), time per no-op `sync_routes` pass (median and
//! 90th percentile over the passes) and routes read per pass.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkDummy, LinkVeth, RouteMessageBuilder};
use wgmeshd::system::net::{DesiredRoute, Netlink};

/// Table sizes measured: foreign IPv4 routes on the uplink.
const SIZES: [u32; 3] = [0, 10_000, 100_000];
/// No-op passes timed per table size.
const PASSES: usize = 30;

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED route_sync bench: needs root for a private network namespace");
        return Ok(());
    }
    let thread = std::thread::spawn(|| -> anyhow::Result<()> {
        // SAFETY: plain syscall; it only changes this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(run())
    });
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn run() -> anyhow::Result<()> {
    let nl = Netlink::connect().await?;
    let (connection, raw, _) = rtnetlink::new_connection().context("rtnetlink socket")?;
    tokio::spawn(connection);
    let lo = nl.link_index("lo").await?.context("no lo")?;
    nl.set_link_up(lo).await?;
    let mesh = link(&nl, &raw, "wgmbench0").await?;
    let uplink = link(&nl, &raw, "wgmbup0").await?;
    nl.sync_addresses(mesh, &[net("10.78.1.2/16")?, net("fd00:78::2/64")?])
        .await?;

    let mut desired = Vec::new();
    for i in 0..8u8 {
        desired.push(DesiredRoute::device(net(&format!(
            "10.{}.0.0/16",
            100 + i
        ))?));
    }
    let gw4: IpAddr = "10.78.0.1".parse()?;
    desired.push(DesiredRoute::via(net("10.120.0.0/16")?, gw4)?);
    for i in 0..3u16 {
        desired.push(DesiredRoute::device(net(&format!(
            "fd{:02x}::/64",
            0x10 + i
        ))?));
    }
    let gw6: IpAddr = "fd00:78::1".parse()?;
    desired.push(DesiredRoute::via(net("fd20::/64")?, gw6)?);

    println!(
        "route_sync: {} desired routes on the mesh interface, {PASSES} no-op passes per row",
        desired.len()
    );
    println!(
        "| foreign IPv4 routes in the table | no-op pass, median | no-op pass, p90 | routes read |"
    );
    println!("|---:|---:|---:|---:|");
    let mut present = 0u32;
    for size in SIZES {
        let started = Instant::now();
        add_foreign(&raw, uplink, present, size).await?;
        present = size;
        let added = started.elapsed();
        // Install, then settle: the measured passes must all be no-ops.
        nl.sync_routes(mesh, &desired).await?;
        let mut times = Vec::with_capacity(PASSES);
        let mut read = 0;
        for _ in 0..PASSES {
            let started = Instant::now();
            let report = nl.sync_routes(mesh, &desired).await?;
            times.push(started.elapsed());
            if !report.replaced.is_empty() || !report.removed.is_empty() {
                bail!("a measured pass was not a no-op: {report:?}");
            }
            read = report.routes_read;
        }
        times.sort();
        println!(
            "| {size} | {} | {} | {read} |",
            ms(times[times.len() / 2]),
            ms(times[times.len() * 9 / 10]),
        );
        eprintln!("  ({} foreign routes added in {})", size, ms(added));
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn net(s: &str) -> anyhow::Result<IpNet> {
    s.parse().with_context(|| format!("bad prefix {s}"))
}

/// A link that is up: a dummy, or one end of a veth pair when the kernel has no dummy driver.
async fn link(nl: &Netlink, raw: &Handle, name: &str) -> anyhow::Result<u32> {
    if raw
        .link()
        .add(LinkDummy::new(name).build())
        .execute()
        .await
        .is_err()
    {
        let peer = format!("{name}p");
        raw.link()
            .add(LinkVeth::new(name, &peer).build())
            .execute()
            .await
            .with_context(|| format!("cannot create link {name}"))?;
        let p = nl.link_index(&peer).await?.context("veth peer")?;
        nl.set_link_up(p).await?;
    }
    let index = nl.link_index(name).await?.context("new link")?;
    nl.set_link_up(index).await?;
    Ok(index)
}

/// Adds the foreign routes number `from..to` (`proto static`, /24s from 11.0.0.0, on the
/// uplink), many requests in flight at once.
async fn add_foreign(raw: &Handle, uplink: u32, from: u32, to: u32) -> anyhow::Result<()> {
    let routes = (from..to).map(|i| -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24)
            .output_interface(uplink)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Static)
            .build()
    });
    futures_util::stream::iter(routes.map(|r| raw.route().add(r).execute()))
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .context("adding foreign routes")?;
    Ok(())
}
