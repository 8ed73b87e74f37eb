//! `tpkd.toml`: one file per key server. Every option is described in docs/operator.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

/// Why a config file cannot be used: the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read config", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is read but is not a usable config (it names the option).
    #[error("{}: {reason}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// What is wrong, naming the option.
        reason: String,
    },
    /// A `[[tsig]]` key cannot be used (its secret file, secret, algorithm or patterns).
    #[error("[[tsig]] {key}: {reason}")]
    Tsig {
        /// The key's name.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

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
    /// TCP connections open at once on each listen address; when all are taken, idle ones are
    /// closed to make room and new clients wait.
    #[serde(default = "default_tcp_max_clients")]
    pub tcp_max_clients: usize,
    /// Answer plain UDP queries from the answers encoded at zone build (default); `false`
    /// sends every query through the hickory path (for comparison and diagnosis).
    #[serde(default = "default_fast_path")]
    pub fast_path: bool,
    /// Threads reading UDP on each listen address, each with its own SO_REUSEPORT socket when
    /// there are several (default: the cores).
    #[serde(default = "default_udp_workers")]
    pub udp_workers: usize,
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
    /// TSIG keys accepted for enrollment over DNS UPDATE (docs/enrollment.md); none = off.
    #[serde(default)]
    pub tsig: Vec<TsigConfig>,
}

/// One `[[tsig]]` key: who may enroll which names over UPDATE.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigConfig {
    /// The key's name, as the requester's TSIG record carries it.
    pub name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// The secret, base64, in a file readable by the owner only (preferred)…
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// …or inline, base64.
    #[serde(default)]
    pub secret: Option<String>,
    /// Names this key may enroll: `www.example.com.` or `*.example.com.` (any name below).
    pub allow: Vec<String>,
    /// Allowed clock difference, seconds (RFC 8945 recommends 300).
    #[serde(default = "default_fudge")]
    pub fudge: u16,
}

impl std::fmt::Debug for TsigConfig {
    // The secret never appears in a log or an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigConfig")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret_file", &self.secret_file)
            .field("allow", &self.allow)
            .field("fudge", &self.fudge)
            .finish_non_exhaustive()
    }
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}
fn default_fudge() -> u16 {
    300
}

fn default_resign_margin() -> u64 {
    30 * 86_400
}
fn default_resign_validity() -> u64 {
    365 * 86_400
}
fn default_backdate() -> u64 {
    twinpeaks::time::DEFAULT_BACKDATE_SECS
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
fn default_tcp_max_clients() -> usize {
    256
}
fn default_fast_path() -> bool {
    true
}
fn default_udp_workers() -> usize {
    // The cores, within the range the option accepts.
    std::thread::available_parallelism().map_or(1, |n| n.get().min(256))
}
fn default_validity_days() -> u32 {
    365
}
fn default_ttl() -> u32 {
    3600
}

impl Config {
    /// Read and check a config file; relative paths are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
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
        for k in &mut cfg.tsig {
            if let Some(f) = k.secret_file.as_deref() {
                k.secret_file = Some(abs(f));
            }
        }
        cfg.name = twinpeaks::clpkc::canonical_name(&cfg.name)
            .map_err(|e| invalid(format!("name: {e}")))?;
        if cfg.listen.is_empty() {
            return Err(invalid("listen: give at least one address".into()));
        }
        if !(1..=65_536).contains(&cfg.tcp_max_clients) {
            return Err(invalid("tcp_max_clients: from 1 to 65536".into()));
        }
        if !(1..=256).contains(&cfg.udp_workers) {
            return Err(invalid("udp_workers: from 1 to 256".into()));
        }
        if cfg.tcp_timeout_secs == 0 || cfg.enroll_validity_days == 0 {
            return Err(invalid(
                "tcp_timeout_secs and enroll_validity_days must be positive".into(),
            ));
        }
        if cfg.resign_check_secs == 0 || cfg.resign_validity_secs <= cfg.resign_margin_secs {
            return Err(invalid(
                "resign_check_secs must be positive and resign_validity_secs longer than resign_margin_secs (a re-signed member would be due again at once)".into(),
            ));
        }
        if u64::from(cfg.enroll_validity_days) * 86_400 <= cfg.resign_margin_secs {
            return Err(invalid(
                "enroll_validity_days must be longer than resign_margin_secs (an enrolled member would be re-signed, with resign_validity_secs, at the next check)".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for k in &cfg.tsig {
            let what = format!("[[tsig]] {}", k.name);
            if k.secret.is_some() == k.secret_file.is_some() {
                return Err(invalid(format!(
                    "{what}: give exactly one of secret_file and secret"
                )));
            }
            twinpeaks::enroll::tsig_algorithm(&k.algorithm)
                .map_err(|e| invalid(format!("{what}: {e}")))?;
            if k.allow.is_empty() {
                return Err(invalid(format!(
                    "{what}: allow: give at least one name pattern"
                )));
            }
            for p in &k.allow {
                twinpeaks::enroll::NamePattern::parse(p, &cfg.name)
                    .map_err(|e| invalid(format!("{what}: allow: {e}")))?;
            }
            if k.fudge == 0 {
                return Err(invalid(format!(
                    "{what}: fudge: 0 s would refuse every request whose clock is a second off; the usual value is 300"
                )));
            }
            if let Some(s) = &k.secret {
                twinpeaks::enroll::decode_tsig_secret(s)
                    .map_err(|e| invalid(format!("{what}: secret: {e}")))?;
            }
            if !seen.insert(k.name.trim_end_matches('.').to_ascii_lowercase()) {
                return Err(invalid(format!(
                    "{what}: a key of this name is already configured"
                )));
            }
        }
        Ok(cfg)
    }

    /// The `[[tsig]]` keys, their secrets read (a secret file must be private).
    pub fn tsig_keys(&self) -> Result<Vec<twinpeaks::enroll::TsigKey>, ConfigError> {
        let mut keys = Vec::new();
        for k in &self.tsig {
            let what = |e: String| ConfigError::Tsig {
                key: k.name.clone(),
                reason: e,
            };
            let text = match (&k.secret_file, &k.secret) {
                (Some(f), _) => {
                    twinpeaks::keyfile::read_secret(f).map_err(|e| what(e.to_string()))?
                }
                (None, Some(s)) => zeroize::Zeroizing::new(s.clone()),
                (None, None) => return Err(what("no secret".into())),
            };
            let secret = twinpeaks::enroll::decode_tsig_secret(&text).map_err(what)?;
            let alg = twinpeaks::enroll::tsig_algorithm(&k.algorithm).map_err(what)?;
            let name =
                hickory_proto::rr::Name::from_ascii(&k.name).map_err(|e| what(e.to_string()))?;
            let signer = hickory_proto::rr::TSigner::new(secret.to_vec(), alg, name, k.fudge)
                .map_err(|e| what(e.to_string()))?;
            let allow = k
                .allow
                .iter()
                .map(|p| twinpeaks::enroll::NamePattern::parse(p, &self.name))
                .collect::<Result<_, _>>()
                .map_err(what)?;
            keys.push(twinpeaks::enroll::TsigKey { signer, allow });
        }
        Ok(keys)
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
