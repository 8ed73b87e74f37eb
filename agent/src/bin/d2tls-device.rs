//! `d2tls-device`: the constrained device's side (also runs the standalone baseline).
#![deny(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use d2tls::config::DeviceConfig;
use d2tls::device::Device;
use d2tls::device_io::{self, load_credentials};
use d2tls::session::Suite;
use d2tls::tls::{Connection, EarlyData, TlsError};
use d2tls::wire::Transport;

/// Gets a DTLS 1.2, TLS 1.2 or TLS 1.3 session with a server through the agent (or alone,
/// --standalone).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Device config file (TOML); see docs/d2tls.md.
    #[arg(long, short)]
    config: PathBuf,
    /// Override `server` (host:port).
    #[arg(long)]
    server: Option<String>,
    /// Override `transport` (dtls, tls or tls13).
    #[arg(long)]
    transport: Option<String>,
    /// Override `suite` (ccm8 or gcm).
    #[arg(long)]
    suite: Option<String>,
    /// Run the full handshake on the device itself (the baseline D2TLS is measured against).
    #[arg(long)]
    standalone: bool,
    /// Application data to send once the session is up.
    #[arg(long)]
    send: Option<String>,
    /// Wait for this many seconds for data from the server and print it.
    #[arg(long)]
    expect_reply: Option<u64>,
    /// Connections to open one after the other; after the first, the device resumes the
    /// context it holds and delegates again only when that fails or the context expired.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// After the last connection, tell the agent that this device will ask for the same
    /// delegation again in about this many ms (its next wake-up): the agent may start that
    /// handshake ahead, so that the next setup finds it waiting at the signature.
    #[arg(long, conflicts_with = "standalone", value_parser = clap::value_parser!(u32).range(0..=86_400_000))]
    next_session_in_ms: Option<u32>,
    /// Benchmarks (feature `measure`): sleep this many ms after boot, before the first setup
    /// (outside the measured region; lets a CPU throttle's quota refill).
    #[cfg(feature = "measure")]
    #[arg(long, default_value_t = 0)]
    settle_ms: u64,
    /// Benchmarks (feature `measure`): then spin until this many µs of CPU time are used
    /// (outside the measured region; starts the setup at a chosen point of a CPU throttle's
    /// quota).
    #[cfg(feature = "measure")]
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    burn_us: u64,
    /// Log filter when RUST_LOG is unset.
    #[arg(long, default_value = "info")]
    log_level: String,
}

// Benchmarks: counts every heap byte (Rust's and OpenSSL's) for the device's memory figures.
#[cfg(feature = "measure")]
#[global_allocator]
static HEAP: d2tls::measure::heap::CountingAlloc = d2tls::measure::heap::CountingAlloc;

fn main() {
    #[cfg(feature = "measure")]
    let openssl_counted = d2tls::measure::heap::count_openssl_heap();
    let cli = Cli::parse();
    d2tls::init_logging(&cli.log_level);
    #[cfg(feature = "measure")]
    if !openssl_counted {
        tracing::warn!(
            event = "heap.uncounted",
            reason = "OpenSSL allocated before main"
        );
    }
    if let Err(e) = run(cli) {
        eprintln!("d2tls-device: error: {}", d2tls::error::one_line(e.chain()));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = DeviceConfig::load(&cli.config)?;
    if let Some(s) = cli.server {
        cfg.server = s;
    }
    if let Some(t) = &cli.transport {
        match Transport::parse(t) {
            Some(t) => cfg.transport = t,
            None => bail!("--transport: `{t}` (dtls, tls or tls13)"),
        }
    }
    if let Some(s) = &cli.suite {
        match Suite::parse(s) {
            Some(s) => cfg.suite = Some(s),
            None => bail!("--suite: `{s}` (ccm8 or gcm)"),
        }
    }
    let timeout = Duration::from_secs(cfg.timeout_secs);
    let (key, chain) = load_credentials(&cfg)?;
    let mut out = std::io::stdout();
    if cli.standalone {
        let sslctx = device_io::boot_standalone(&cfg, &key, &chain)?;
        #[cfg(feature = "measure")]
        probe::before_setup(cli.settle_ms, cli.burn_us);
        for _ in 0..cli.connections {
            let mark = Mark::start();
            let mut conn = device_io::full_handshake(&sslctx, &cfg, Instant::now() + timeout)?;
            report(
                &mut out,
                &conn,
                EarlyData::NotSent,
                "none",
                0,
                1,
                (0, 0),
                (0, 0, 0),
                mark.finish(),
            )?;
            let none = EarlyData::NotSent;
            exchange(
                &mut out,
                &mut conn,
                cli.send.as_deref(),
                none,
                cli.expect_reply,
            )?;
            conn.close();
        }
        return Ok(());
    }
    let chain_der = chain
        .iter()
        .map(|c| c.to_der())
        .collect::<Result<Vec<_>, _>>()
        .context("certificate DER")?;
    let mut device = Device::new(key, chain_der);
    let sslctx = device_io::boot_for_resumption(cfg.transport, cfg.tls13_kex)?;
    // TLS 1.3: the first line goes out as early data (0-RTT) where the ticket allows it.
    let early_line = cli
        .send
        .as_deref()
        .filter(|_| cfg.transport == Transport::Tls13 && cfg.early_data)
        .map(|t| format!("{t}\n").into_bytes());
    let target = device_io::target_of(&cfg);
    // A paired device keeps its association with its gateway: the channel is opened once at
    // boot and kept across sessions (reopened inside a setup only if it broke).
    let mut link = device_io::link_from(&cfg)?;
    let boot_channel = (link.bytes_sent, link.bytes_received);
    let mut held = None;
    let mut delegations = 0;
    #[cfg(feature = "measure")]
    probe::before_setup(cli.settle_ms, cli.burn_us);
    for _ in 0..cli.connections {
        let before = (link.bytes_sent, link.bytes_received);
        let mark = Mark::start();
        let early = early_line.as_deref();
        let (mut conn, early) =
            match device_io::resume_held(&sslctx, &mut held, &target, timeout, early) {
                Some(resumed) => resumed,
                None => {
                    let (conn, attempts, h, early) = device_io::delegate_and_resume(
                        &sslctx,
                        &mut link,
                        &mut device,
                        &target,
                        cfg.max_delegations,
                        timeout,
                        early,
                    )?;
                    delegations += attempts;
                    held = Some(h);
                    (conn, early)
                }
            };
        let setup = mark.finish();
        // Channel bytes of this setup only (the boot-time hello is reported apart).
        let channel = (link.bytes_sent - before.0, link.bytes_received - before.1);
        let resumed_by = held.as_ref().map_or("none", |h| h.resumed_by());
        report(
            &mut out,
            &conn,
            early,
            resumed_by,
            delegations,
            device.signatures(),
            channel,
            (boot_channel.0, boot_channel.1, link.connects),
            setup,
        )?;
        exchange(
            &mut out,
            &mut conn,
            cli.send.as_deref(),
            early,
            cli.expect_reply,
        )?;
        // TLS 1.3: the next connection uses the ticket this one brought, if it read one.
        if let Some(h) = held.as_mut() {
            h.refresh(&conn);
        }
        conn.close();
    }
    // A hint: the sessions above succeeded whether or not the agent hears it.
    if let Some(ms) = cli.next_session_in_ms {
        match link.send(&device.expectation(ms, &target)) {
            Ok(()) => tracing::info!(event = "delegation.expected", in_ms = ms),
            Err(e) => tracing::warn!(event = "delegation.expect_failed", reason = %e),
        }
    }
    Ok(())
}

/// Start of a session setup: its time, and the probes' readings with `measure`.
struct Mark {
    started: Instant,
    probe: probe::Start,
}

impl Mark {
    fn start() -> Mark {
        let probe = probe::start();
        Mark {
            started: Instant::now(),
            probe,
        }
    }

    fn finish(self) -> Setup {
        Setup {
            time: self.started.elapsed(),
            figures: probe::finish(self.probe),
        }
    }
}

/// Figures of the session setup: wall time, and with `measure` the probes' fields.
struct Setup {
    time: Duration,
    figures: String,
}

/// The benchmarks' probes (feature `measure`): the process's CPU time (user + system), its
/// minor page faults, and heap (bytes in use at the setup's start and the peak above it).
#[cfg(feature = "measure")]
mod probe {
    use std::time::Duration;

    use d2tls::measure::{heap, process_cpu_time, process_usage};

    pub struct Start {
        cpu: Duration,
        faults: u64,
        heap: usize,
    }

    pub fn start() -> Start {
        heap::reset_peak();
        Start {
            cpu: process_cpu_time(),
            faults: process_usage().2,
            heap: heap::current(),
        }
    }

    pub fn finish(s: Start) -> String {
        let cpu = process_cpu_time().saturating_sub(s.cpu);
        let faults = process_usage().2.saturating_sub(s.faults);
        let peak = heap::peak().saturating_sub(s.heap);
        format!(
            " setup_cpu_us={} setup_minflt={faults} heap_start={} heap_setup_peak={peak}",
            cpu.as_micros(),
            s.heap
        )
    }

    /// Knobs between boot and the first setup: sleep, then spin on the CPU clock.
    pub fn before_setup(settle_ms: u64, burn_us: u64) {
        if settle_ms > 0 {
            std::thread::sleep(Duration::from_millis(settle_ms));
        }
        let start = process_cpu_time();
        let mut x = 0u64;
        while process_cpu_time().saturating_sub(start) < Duration::from_micros(burn_us) {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

/// Without `measure`: no probes, no fields.
#[cfg(not(feature = "measure"))]
mod probe {
    pub struct Start;

    pub fn start() -> Start {
        Start
    }

    pub fn finish(_: Start) -> String {
        String::new()
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    out: &mut impl Write,
    conn: &Connection,
    early: EarlyData,
    resumed_by: &str,
    delegations: u32,
    signatures: u64,
    channel: (u64, u64),
    boot: (u64, u64, u32),
    setup: Setup,
) -> anyhow::Result<()> {
    let ssl = conn.ssl();
    let (server_sent, server_received) = conn.bytes();
    let sid = ssl
        .session()
        .map(|s| hex::encode(s.id()))
        .unwrap_or_default();
    let cipher = ssl.current_cipher().map(|c| c.name()).unwrap_or("none");
    writeln!(
        out,
        "session reused={} resumed_by={} kex={} early_data={} version={} cipher={} session_id={} delegations={} signatures={} channel_sent={} channel_received={} channel_boot_sent={} channel_boot_received={} channel_connects={} server_sent={} server_received={} setup_us={}{}",
        ssl.session_reused(),
        resumed_by,
        device_io::kex_of(conn),
        early.name(),
        ssl.version_str(),
        cipher,
        sid,
        delegations,
        signatures,
        channel.0,
        channel.1,
        boot.0,
        boot.1,
        boot.2,
        server_sent,
        server_received,
        setup.time.as_micros(),
        setup.figures
    )?;
    out.flush()?;
    Ok(())
}

fn exchange(
    out: &mut impl Write,
    conn: &mut Connection,
    send: Option<&str>,
    early: EarlyData,
    expect: Option<u64>,
) -> anyhow::Result<()> {
    // Early data the server accepted is delivered; rejected early data is sent again here.
    if let Some(text) = send.filter(|_| early == EarlyData::Accepted) {
        writeln!(out, "sent: {text} (early data)")?;
        out.flush()?;
    } else if let Some(text) = send {
        conn.send(
            format!("{text}\n").as_bytes(),
            Instant::now() + Duration::from_secs(10),
        )?;
        writeln!(out, "sent: {text}")?;
        out.flush()?;
    }
    if let Some(secs) = expect {
        let mut buf = [0u8; 4096];
        let n = match conn.recv(&mut buf, Instant::now() + Duration::from_secs(secs)) {
            Err(TlsError::NoData) => {
                bail!("no data from the server within {secs} s (--expect-reply {secs})")
            }
            r => r?,
        };
        if n == 0 {
            bail!("the server closed the connection before sending data");
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        writeln!(out, "received: {}", text.trim_end())?;
        out.flush()?;
    }
    Ok(())
}
