//! `d2tls-agent`: the security agent on the gateway.
#![deny(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use d2tls::agent::Agent;
use d2tls::config::AgentConfig;

/// Runs DTLS/TLS 1.2 handshakes on behalf of paired devices, which keep their keys.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Agent config file (TOML); see docs/d2tls.md.
    #[arg(long, short)]
    config: PathBuf,
    /// Override `listen` (IP:port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Log filter when RUST_LOG is unset (error, warn, info, debug).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() {
    let cli = Cli::parse();
    d2tls::init_logging(&cli.log_level);
    if let Err(e) = run(cli) {
        eprintln!("d2tls-agent: error: {}", d2tls::error::one_line(e.chain()));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = AgentConfig::load(&cli.config)?;
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    let listen = cfg.listen;
    let devices = cfg.devices.len();
    let agent = Arc::new(Agent::new(cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen {listen}"))?;
        let local = listener.local_addr()?;
        tracing::info!(event = "agent.listening", addr = %local, devices);
        println!("d2tls-agent listening on {local}");
        let _ = std::io::stdout().flush();
        tokio::select! {
            r = agent.serve(listener) => r.context("accept")?,
            _ = tokio::signal::ctrl_c() => tracing::info!(event = "agent.stopping"),
        }
        Ok(())
    })
}
