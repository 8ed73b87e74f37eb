//! tprd: the local TwinPeaks key-resolver daemon. Stub resolvers and applications ask it over
//! DNS on loopback: TYPE65300 gets verified records only (AD set), a verification failure gets
//! SERVFAIL with an Extended DNS Error, A/AAAA are answered from the configured DNS servers.
//! SIGHUP re-reads the trust anchors; SIGTERM/SIGINT stop it cleanly. UDP cache hits are
//! answered by a fast path on a thread per listen address.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};
use twinpeaks::resolver::Resolver;
use twinpeaks::resolver::serve::{ResolverHandler, serve_udp};
use twinpeaks::resolver::settings::Settings;
use twinpeaks::tcp::{TcpLimits, serve_tcp};
use twinpeaks::time;

/// The TwinPeaks key-resolver daemon.
#[derive(Parser)]
#[command(
    version,
    about = "tprd: the local TwinPeaks key resolver (verified TYPE65300 with AD, A/AAAA)"
)]
struct Args {
    /// The resolver's config file (see docs/operator.md, "Key resolver daemon").
    #[arg(short, long)]
    config: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tprd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let settings = Settings::load(&args.config)?;
    if settings.listen.is_empty() {
        bail!(
            "{}: listen: give at least one address",
            args.config.display()
        );
    }
    let spec = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => format!(
            "hickory_server=warn,hickory_resolver=warn,hickory_net=error,{}",
            settings.log
        ),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .with_context(|| format!("{}: log: bad filter `{spec}`", args.config.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args.config, settings))
}

async fn serve(path: PathBuf, settings: Settings) -> Result<()> {
    let cfg = settings
        .resolver_config(time::now())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let roots = cfg.anchors.len();
    let resolver = Arc::new(Resolver::new(cfg)?);
    let handler = ResolverHandler::new(resolver.clone());
    // TCP on the runtime (`twinpeaks::tcp`); UDP on a thread per address (the fast path for
    // hits).
    let limits = TcpLimits {
        max_clients: settings.tcp_max_clients,
        idle: Duration::from_secs(settings.tcp_timeout_secs),
    };
    let mut tcp_tasks = tokio::task::JoinSet::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    for addr in &settings.listen {
        let udp = std::net::UdpSocket::bind(addr).with_context(|| format!("listen {addr}/udp"))?;
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen {addr}/tcp"))?;
        tcp_tasks.spawn(serve_tcp(tcp, Arc::new(handler.clone()), limits));
        let (h, rt, stop) = (
            Arc::new(handler.clone()),
            tokio::runtime::Handle::current(),
            stop.clone(),
        );
        let addr = *addr;
        udp_threads.push(std::thread::spawn(move || {
            if let Err(e) = serve_udp(h, udp, rt, stop) {
                error!(%addr, error = %e, "UDP listener stopped");
            }
        }));
    }
    // Watched before "serving" is said: a signal sent on that line must find the watch.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    info!(listen = ?settings.listen, anchors = roots, dns = ?settings.dns, "tprd serving");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // Anchors only: listen addresses and cache sizes need a restart.
                match Settings::load(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.anchors(time::now()))
                {
                    Ok(a) => {
                        let n = a.len();
                        resolver.set_anchors(a);
                        handler.clear();
                        info!(anchors = n, "trust anchors reloaded (SIGHUP), cache cleared");
                    }
                    Err(e) => warn!(error = %e, "anchor reload refused, the old anchors stay"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    stop.store(true, Ordering::Relaxed);
    for t in udp_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    tcp_tasks.abort_all();
    Ok(())
}
