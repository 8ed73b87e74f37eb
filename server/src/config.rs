//! `tpkd.toml`: one file per key server. Every option is described in docs/operator.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use serde::Deserialize;

/// A key server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The key server's name = the apex of the key zone it serves.
    pub name: String,
    /// Addresses to serve DNS on, UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Directory of `kgc.secret`, `server.key` and `params`.
    pub state_dir: PathBuf,
    /// The key zone file.
    pub zone_file: PathBuf,
    /// sled store of enrolled members (default: `<state_dir>/store`).
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Unix control socket for `tp ctl` (default: `<state_dir>/tpkd.sock`).
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Networks allowed to transfer the zone (AXFR/IXFR); empty = nobody.
    #[serde(default)]
    pub axfr_allow: Vec<IpNet>,
    /// Secondaries to send NOTIFY to when the zone changes (reload, enrollment).
    #[serde(default)]
    pub notify: Vec<SocketAddr>,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter).
    #[serde(default = "default_log")]
    pub log: String,
    /// Idle timeout of a TCP connection, seconds.
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout_secs: u64,
    /// Default validity of members enrolled online, days.
    #[serde(default = "default_validity_days")]
    pub enroll_validity_days: u32,
    /// TTL of members enrolled online, seconds.
    #[serde(default = "default_ttl")]
    pub enroll_ttl: u32,
    /// Re-sign a member when less than this much of its validity window is left, seconds.
    #[serde(default = "default_resign_margin")]
    pub resign_margin_secs: u64,
    /// Length of the validity window a re-signed member gets, seconds.
    #[serde(default = "default_resign_validity")]
    pub resign_validity_secs: u64,
    /// How far in the past a new window starts (against clients' clock skew), seconds.
    #[serde(default = "default_backdate")]
    pub inception_backdate_secs: u64,
    /// How often tpkd looks for members due for re-signing, seconds.
    #[serde(default = "default_resign_check")]
    pub resign_check_secs: u64,
}

fn default_resign_margin() -> u64 {
    30 * 86_400
}
fn default_resign_validity() -> u64 {
    365 * 86_400
}
fn default_backdate() -> u64 {
    3600
}
fn default_resign_check() -> u64 {
    3600
}

fn default_log() -> String {
    "info".into()
}
fn default_tcp_timeout() -> u64 {
    10
}
fn default_validity_days() -> u32 {
    365
}
fn default_ttl() -> u32 {
    3600
}

impl Config {
    /// Read and check a config file; relative paths are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read config", path.display()))?;
        let mut cfg: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        cfg.state_dir = abs(&cfg.state_dir);
        cfg.zone_file = abs(&cfg.zone_file);
        // Defaults live in the state directory, which is already resolved.
        cfg.store = Some(match cfg.store.as_deref() {
            Some(p) => abs(p),
            None => cfg.state_dir.join("store"),
        });
        cfg.control_socket = Some(match cfg.control_socket.as_deref() {
            Some(p) => abs(p),
            None => cfg.state_dir.join("tpkd.sock"),
        });
        cfg.name = twinpeaks::clpkc::canonical_name(&cfg.name)
            .map_err(|e| anyhow::anyhow!("{}: name: {e}", path.display()))?;
        if cfg.listen.is_empty() {
            bail!("{}: listen: give at least one address", path.display());
        }
        if cfg.tcp_timeout_secs == 0 || cfg.enroll_validity_days == 0 {
            bail!(
                "{}: tcp_timeout_secs and enroll_validity_days must be positive",
                path.display()
            );
        }
        if cfg.resign_check_secs == 0 || cfg.resign_validity_secs <= cfg.resign_margin_secs {
            bail!(
                "{}: resign_check_secs must be positive and resign_validity_secs longer than resign_margin_secs (a re-signed member would be due again at once)",
                path.display()
            );
        }
        Ok(cfg)
    }

    /// The store path.
    pub fn store_path(&self) -> &Path {
        self.store.as_deref().unwrap_or(Path::new("store"))
    }

    /// The control socket path.
    pub fn control_path(&self) -> &Path {
        self.control_socket
            .as_deref()
            .unwrap_or(Path::new("tpkd.sock"))
    }
}
