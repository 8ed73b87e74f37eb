//! `tp-dnsd`: the demo's plain DNS server, and the "stock hickory" benchmark baseline.
//!
//! A hickory-server authoritative server built the way hickory's own is (`Catalog` of
//! `InMemoryZoneHandler`s behind a `Server` on UDP and TCP). It serves ordinary zone files
//! parsed by hickory's own parser (`--zone`) and, for the benchmark, key zones loaded as opaque
//! RFC 3597 data with no checks and no signing (`--opaque-keyzone`): that is what an
//! unmodified hickory would serve after an AXFR of a key zone.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser as _;
use hickory_proto::rr::rdata::{NS, NULL};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};
use tracing::{error, info, warn};
use twinpeaks::record::TPKEY;
use twinpeaks::zonefile::{self, Entry};

/// Idle timeout of a TCP connection: long enough for `dig +tcp`, short enough that idle
/// clients cannot pin connections.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection (hickory's own tests use 32).
const TCP_RESPONSE_BUFFER: usize = 32;
/// How long in-flight work may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Plain authoritative DNS server for the TwinPeaks demo (and the stock-hickory baseline of
/// the throughput benchmark).
#[derive(clap::Parser, Debug)]
#[command(name = "tp-dnsd", version)]
struct Args {
    /// Address to serve on, UDP and TCP (repeatable), e.g. 127.0.0.1:5353.
    #[arg(long = "listen", value_name = "ADDR:PORT", required = true)]
    listen: Vec<SocketAddr>,

    /// A DNS zone file to serve, parsed by hickory's zone parser (repeatable).
    #[arg(long = "zone", value_name = "ORIGIN=PATH", value_parser = parse_zone_arg)]
    zones: Vec<ZoneArg>,

    /// A TwinPeaks key zone served as opaque TYPE65300 data, unchecked (repeatable).
    /// The benchmark baseline: what stock hickory serves when it holds the same records.
    #[arg(long = "opaque-keyzone", value_name = "ORIGIN=PATH", value_parser = parse_zone_arg)]
    opaque_keyzones: Vec<ZoneArg>,
}

/// `ORIGIN=PATH` from the command line.
#[derive(Clone, Debug)]
struct ZoneArg {
    origin: Name,
    path: PathBuf,
}

fn parse_zone_arg(s: &str) -> Result<ZoneArg, String> {
    let (origin, path) = s.split_once('=').ok_or_else(|| {
        format!("expected ORIGIN=PATH (e.g. example.com.=example.com.zone), got '{s}'")
    })?;
    if origin.is_empty() || path.is_empty() {
        return Err(format!(
            "expected ORIGIN=PATH with both parts non-empty, got '{s}'"
        ));
    }
    let mut origin =
        Name::from_ascii(origin).map_err(|e| format!("bad zone origin '{origin}': {e}"))?;
    // Origins on the command line are absolute whether or not the user wrote the final dot.
    origin.set_fqdn(true);
    Ok(ZoneArg {
        origin,
        path: PathBuf::from(path),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: what failed and why.
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // hickory logs every query at info; that is debug-level detail for an operator and would
    // also distort the benchmark, so it is opt-in via RUST_LOG.
    let filter = EnvFilter::try_from_default_env()
        // hickory's DNSSEC-enabled catalog (the feature is on for tpkd's TSIG) warns once per
        // answer of an unsigned zone: that is every answer here.
        .unwrap_or_else(|_| {
            EnvFilter::new(
                "info,hickory_server::server=warn,hickory_server::zone_handler::catalog=error",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

#[tokio::main]
async fn run(args: Args) -> Result<()> {
    if args.zones.is_empty() && args.opaque_keyzones.is_empty() {
        bail!("nothing to serve: give at least one --zone or --opaque-keyzone");
    }

    let mut catalog = Catalog::new();
    let mut seen = BTreeSet::new();
    let all = args
        .zones
        .iter()
        .map(|z| (z, false))
        .chain(args.opaque_keyzones.iter().map(|z| (z, true)));
    for (zone, opaque) in all {
        if !seen.insert(LowerName::new(&zone.origin)) {
            bail!("zone {} is given twice on the command line", zone.origin);
        }
        let (handler, count) = if opaque {
            load_opaque_keyzone(&zone.origin, &zone.path)
        } else {
            load_dns_zone(&zone.origin, &zone.path)
        }
        .with_context(|| format!("zone {} from {}", zone.origin, zone.path.display()))?;
        info!(
            zone = %zone.origin,
            file = %zone.path.display(),
            records = count,
            kind = if opaque { "opaque-keyzone" } else { "dns" },
            "zone loaded"
        );
        let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
        catalog.upsert(LowerName::new(&zone.origin), vec![handler]);
    }

    let mut server = Server::new(catalog);
    // Watched before "listening" is said: a SIGTERM sent on that line must find the watch.
    let stop = StopSignals::watch()?;
    for addr in &args.listen {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind UDP {addr}"))?;
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind TCP {addr}"))?;
        // Report the bound address, which differs from the argument for port 0.
        let local = udp.local_addr().unwrap_or(*addr);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        info!(addr = %local, "listening on UDP and TCP");
    }

    tokio::select! {
        done = server.block_until_done() => {
            done.context("server stopped")?;
            bail!("server stopped without a signal");
        }
        signal = stop.next() => info!(signal, "stopping"),
    }
    server.shutdown_token().cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, server.block_until_done()).await {
        Ok(Ok(())) => info!("stopped"),
        Ok(Err(e)) => warn!(error = %e, "error while stopping"),
        Err(_) => warn!("in-flight requests did not finish within the grace period"),
    }
    Ok(())
}

/// SIGTERM and SIGINT, watched from the moment this is made.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn watch() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    /// Waits for one and names it.
    async fn next(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// An ordinary zone file, parsed by hickory's own parser.
fn load_dns_zone(origin: &Name, path: &Path) -> Result<(InMemoryZoneHandler, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read: {e}"))?;
    // The returned origin is the last $ORIGIN of the file; the zone_of check below is what
    // matters.
    let (_, records) = Parser::new(text, Some(path.to_path_buf()), Some(origin.clone()))
        .parse()
        .map_err(|e| anyhow!("parse error: {e}"))?;
    if let Some(outside) = records.values().find(|rrset| !origin.zone_of(rrset.name())) {
        bail!("record {} is outside the zone", outside.name());
    }
    let count = records
        .values()
        .map(|rrset| rrset.records_without_rrsigs().count())
        .sum();
    let handler = InMemoryZoneHandler::new(
        origin.clone(),
        records,
        ZoneType::Primary,
        AxfrPolicy::Deny,
        None,
    )
    .map_err(|e| anyhow!("{e}"))?;
    Ok((handler, count))
}

/// A key zone, its TPKEY records upserted as opaque `RData::Unknown` into a stock handler.
fn load_opaque_keyzone(origin: &Name, path: &Path) -> Result<(InMemoryZoneHandler, usize)> {
    // ZoneErrors already name the file and line of each problem.
    let parsed = zonefile::read(path, origin)
        .and_then(zonefile::ParsedZone::strict)
        .map_err(|e| anyhow!("{e}"))?;
    let serial = parsed
        .lines
        .iter()
        .find_map(|l| match &l.entry {
            Entry::Soa(soa) if &l.owner == origin => Some(soa.serial),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no SOA record at the origin {origin}"))?;

    let mut handler =
        InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny, None);
    for line in &parsed.lines {
        let at = || format!("{}:{}", path.display(), line.line);
        if !origin.zone_of(&line.owner) {
            bail!("{}: owner {} is outside the zone", at(), line.owner);
        }
        let rdata = match &line.entry {
            Entry::Soa(soa) => RData::SOA(soa.clone()),
            Entry::Ns(ns) => RData::NS(NS(ns.clone())),
            Entry::Glue(std::net::IpAddr::V4(a)) => RData::A((*a).into()),
            Entry::Glue(std::net::IpAddr::V6(a)) => RData::AAAA((*a).into()),
            Entry::Key(key) => {
                let wire = key.to_wire().map_err(|e| anyhow!("{}: {e}", at()))?;
                RData::Unknown {
                    code: RecordType::Unknown(TPKEY),
                    rdata: NULL::with(wire),
                }
            }
        };
        let record = Record::from_rdata(line.owner.clone(), line.ttl, rdata);
        if !handler.upsert_mut(record, serial) {
            bail!(
                "{}: hickory refused the record (conflicts with another at {})",
                at(),
                line.owner
            );
        }
    }
    Ok((handler, parsed.lines.len()))
}
