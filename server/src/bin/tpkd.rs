//! tpkd: the TwinPeaks key server daemon. Serves one key zone over DNS (UDP and TCP),
//! streams transfers to its secondaries, reloads on SIGHUP or `tp ctl reload` (keeping the
//! old zone when the new one is bad), enrolls members through its control socket, and
//! stops cleanly on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};
use twinpeaks::server::{KeyServerHandler, TransferAcl, serve_udp};
use twinpeaks::tcp::{TcpLimits, serve_tcp};
use twinpeaks_server::config::Config;
use twinpeaks_server::control;
use twinpeaks_server::keyserver::{KeyServer, UpdateEnroller};

/// The TwinPeaks key server daemon.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The key server's config file (see docs/operator.md).
    #[arg(short, long)]
    config: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tpkd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let cfg = Config::load(&args.config)?;
    // RUST_LOG, when set, overrides the config. hickory logs every query at info: it stays
    // at warn unless the filter names it.
    let spec = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => format!("hickory_server=warn,{}", cfg.log),
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
    rt.block_on(serve(cfg))
}

/// A thread answering UDP on `udp` (see `twinpeaks::server::serve_udp`) until `stop`.
fn udp_worker(
    handler: &Arc<KeyServerHandler>,
    udp: std::net::UdpSocket,
    stop: &Arc<AtomicBool>,
    fast: bool,
    addr: std::net::SocketAddr,
) -> std::thread::JoinHandle<()> {
    let (h, rt, stop) = (
        handler.clone(),
        tokio::runtime::Handle::current(),
        stop.clone(),
    );
    std::thread::spawn(move || {
        if let Err(e) = serve_udp(h, udp, rt, stop, fast) {
            error!(%addr, error = %e, "UDP listener stopped");
        }
    })
}

async fn serve(cfg: Config) -> Result<()> {
    let ks = Arc::new(KeyServer::open(cfg.clone())?);
    let mut handler = KeyServerHandler::new(vec![ks.zone()], TransferAcl(cfg.axfr_allow.clone()))
        .with_counters(ks.counters.clone());
    let keys = cfg.tsig_keys()?;
    let tsig_keys = keys.len();
    if !keys.is_empty() {
        handler = handler.with_enrollment(twinpeaks::enroll::UpdateEnrollment {
            enroller: Arc::new(UpdateEnroller(ks.clone())),
            keys,
        });
    }
    // TCP on the runtime (`twinpeaks::tcp`); UDP on `udp_workers` threads per address, each
    // with its own SO_REUSEPORT socket (the fast path, then the same handler for the rest).
    let handler = Arc::new(handler);
    let limits = TcpLimits {
        max_clients: cfg.tcp_max_clients,
        idle: Duration::from_secs(cfg.tcp_timeout_secs),
    };
    let mut tcp_tasks = tokio::task::JoinSet::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    for addr in &cfg.listen {
        let udp = twinpeaks::wire::udp_sockets(*addr, cfg.udp_workers)
            .with_context(|| format!("listen {addr}/udp"))?;
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen {addr}/tcp"))?;
        tcp_tasks.spawn(serve_tcp(tcp, handler.clone(), limits));
        for udp in udp {
            udp_threads.push(udp_worker(&handler, udp, &stop, cfg.fast_path, *addr));
        }
    }
    let control_path = cfg.control_path().to_path_buf();
    let ctl_ks = ks.clone();
    let ctl_path = control_path.clone();
    // Bind the control socket before announcing readiness, so `tp ctl` works right away.
    let ctl = tokio::spawn(async move { control::serve(&ctl_path, ctl_ks).await });
    if !cfg.notify.is_empty() {
        let mut changes = ks.serial_changes();
        let targets = cfg.notify.clone();
        let listen = cfg.listen.clone();
        let zone = ks.zone().load().origin_name().clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let serial = *changes.borrow_and_update();
                for t in &targets {
                    // From the listen address of the target's family: allow-notify matches it.
                    let source = listen
                        .iter()
                        .find(|a| a.is_ipv4() == t.is_ipv4() && !a.ip().is_unspecified())
                        .map(|a| a.ip());
                    tokio::spawn(twinpeaks::notify::notify(zone.clone(), serial, *t, source));
                }
            }
        });
    }
    // Records never age out of a running server: re-sign members before their window ends.
    {
        let ks = ks.clone();
        let every = Duration::from_secs(cfg.resign_check_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let ks2 = ks.clone();
                let t0 = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || ks2.resign_due()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        let (serial, members) = ks.status();
                        let ms = t0.elapsed().as_millis();
                        info!(zone = %ks.cfg.name, resigned = n, serial, members, ms, "members re-signed before their windows end");
                    }
                    Ok(Err(e)) => {
                        warn!(zone = %ks.cfg.name, error = %e, "re-signing failed, the served zone is unchanged")
                    }
                    Err(e) => warn!(zone = %ks.cfg.name, error = %e, "re-signing task failed"),
                }
            }
        });
    }
    // Watched before "serving" is said: a signal sent on that line must find the watch (an
    // unwatched SIGHUP ends the process).
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (serial, members) = ks.status();
    info!(
        zone = %cfg.name,
        listen = ?cfg.listen,
        serial,
        members,
        control = %control_path.display(),
        tsig_keys,
        fast_path = cfg.fast_path,
        udp_workers = cfg.udp_workers,
        "tpkd serving"
    );

    let mut ctl = ctl;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let ks = ks.clone();
                match tokio::task::spawn_blocking(move || ks.reload()).await? {
                    Ok((serial, members)) => info!(zone = %cfg.name, serial, members, "zone reloaded (SIGHUP)"),
                    Err(e) => warn!(zone = %cfg.name, errors = %e.to_string().replace('\n', "; "), "reload refused, old zone keeps serving"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            res = &mut ctl => {
                let e = match res {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow::anyhow!("control socket closed"),
                    Err(e) => anyhow::anyhow!("control socket task: {e}"),
                };
                error!(error = %format!("{e:#}"), "control socket failed, stopping");
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    info!(zone = %cfg.name, "shutting down");
    stop.store(true, Ordering::Relaxed);
    for t in udp_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    ctl.abort();
    let _ = std::fs::remove_file(&control_path);
    tcp_tasks.abort_all();
    Ok(())
}
