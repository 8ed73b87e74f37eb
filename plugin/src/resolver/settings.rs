//! The resolver's TOML settings (`tprd.toml`, `tp resolve --config`). Every option is
//! described in docs/operator.md ("Key resolver daemon").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Policy, ResolverConfig, anchors};

/// Settings as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Trust-anchor files (relative to the settings file).
    #[serde(default)]
    pub anchors: Vec<PathBuf>,
    /// Islands: key servers trusted as local roots of their subtrees.
    #[serde(default)]
    pub islands: Vec<Island>,
    /// `all` or `quorum`.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// With `policy = "quorum"`: how many anchors must agree.
    #[serde(default)]
    pub quorum: Option<usize>,
    /// DNS servers for A/AAAA.
    #[serde(default)]
    pub dns: Vec<SocketAddr>,
    /// Extra addresses (secondaries) per key zone.
    #[serde(default)]
    pub secondaries: HashMap<String, Vec<SocketAddr>>,
    /// Time for one query to one address, ms.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_ms: u64,
    /// UDP sends per query and address.
    #[serde(default = "default_attempts")]
    pub attempts: u8,
    /// Time for a whole resolution, ms.
    #[serde(default = "default_resolution_timeout")]
    pub resolution_timeout_ms: u64,
    /// Clock-skew allowance on validity windows, seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Entries per cache.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Longest a positive entry is kept, seconds.
    #[serde(default = "default_max_ttl")]
    pub max_ttl_secs: u32,
    /// Longest a negative answer is kept, seconds.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_secs: u32,
    /// The daemon's listen addresses (UDP and TCP); unused by `tp resolve`.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// The daemon's log filter.
    #[serde(default = "default_log")]
    pub log: String,
    /// The daemon's idle TCP timeout, seconds.
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout_secs: u64,
    /// The daemon's TCP connections open at once per listen address (idle ones are closed to
    /// make room).
    #[serde(default = "default_tcp_max_clients")]
    pub tcp_max_clients: usize,
}

/// An island anchor as written in the settings (`tp island` prints one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Island {
    /// The key server's name.
    pub name: String,
    /// Its identity address (IP and port of its KS record).
    pub address: SocketAddr,
    /// Its params, hex (as in its `params` file).
    pub params: String,
    /// Its own public key `Q`, hex (compressed point).
    pub key: String,
}

fn default_policy() -> String {
    "all".into()
}
fn default_query_timeout() -> u64 {
    1500
}
fn default_attempts() -> u8 {
    2
}
fn default_resolution_timeout() -> u64 {
    5000
}
fn default_skew() -> u64 {
    300
}
fn default_cache_size() -> usize {
    100_000
}
fn default_max_ttl() -> u32 {
    86_400
}
fn default_negative_ttl() -> u32 {
    60
}
fn default_log() -> String {
    "info".into()
}
fn default_tcp_max_clients() -> usize {
    256
}
fn default_tcp_timeout() -> u64 {
    10
}

/// A settings problem, naming the file and the option.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct SettingsError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub reason: String,
}

impl Settings {
    /// Read and check a settings file; relative anchor paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let err = |reason: String| SettingsError {
            file: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut s: Settings = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for a in &mut s.anchors {
            if a.is_relative() {
                *a = base.join(&*a);
            }
        }
        s.check().map_err(err)?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.anchors.is_empty() && self.islands.is_empty() {
            return Err("anchors: give at least one trust-anchor file (or an island)".into());
        }
        self.policy()?;
        if self.query_timeout_ms == 0 || self.resolution_timeout_ms == 0 || self.attempts == 0 {
            return Err(
                "query_timeout_ms, resolution_timeout_ms and attempts must be positive".into(),
            );
        }
        if self.cache_size == 0 {
            return Err("cache_size must be positive".into());
        }
        if !(1..=65_536).contains(&self.tcp_max_clients) || self.tcp_timeout_secs == 0 {
            return Err(
                "tcp_max_clients must be from 1 to 65536 and tcp_timeout_secs positive".into(),
            );
        }
        for zone in self.secondaries.keys() {
            crate::clpkc::canonical_name(zone)
                .map_err(|e| format!("secondaries: zone {zone:?}: {e}"))?;
        }
        Ok(())
    }

    /// The cross-verification policy.
    pub fn policy(&self) -> Result<Policy, String> {
        match (self.policy.as_str(), self.quorum) {
            ("all", None) => Ok(Policy::All),
            ("all", Some(_)) => Err("quorum is only read with policy = \"quorum\"".into()),
            ("quorum", Some(n)) if n >= 1 => Ok(Policy::Quorum(n)),
            ("quorum", _) => Err("policy = \"quorum\" needs quorum = N (N >= 1)".into()),
            (p, _) => Err(format!("policy {p:?} is neither \"all\" nor \"quorum\"")),
        }
    }

    /// The trust anchors: every anchor file read and checked at `now`, then the islands.
    pub fn anchors(&self, now: u64) -> Result<Vec<super::Anchor>, String> {
        let mut all = Vec::new();
        for p in &self.anchors {
            all.extend(anchors::read(p, now).map_err(|e| e.to_string())?);
        }
        for (i, isl) in self.islands.iter().enumerate() {
            all.push(
                anchors::island(
                    &isl.name,
                    isl.address,
                    &isl.params,
                    &isl.key,
                    format!("islands[{i}] ({})", isl.name),
                )
                .map_err(|e| e.to_string())?,
            );
        }
        Ok(all)
    }

    /// The resolver config: anchors read and checked now.
    pub fn resolver_config(&self, now: u64) -> Result<ResolverConfig, String> {
        let anchors = self.anchors(now)?;
        let mut secondaries = HashMap::new();
        for (zone, addrs) in &self.secondaries {
            let z = crate::clpkc::canonical_name(zone).map_err(|e| e.to_string())?;
            secondaries.insert(z, addrs.clone());
        }
        Ok(ResolverConfig {
            anchors,
            policy: self.policy()?,
            dns: self.dns.clone(),
            secondaries,
            query_timeout: Duration::from_millis(self.query_timeout_ms),
            attempts: self.attempts,
            resolution_timeout: Duration::from_millis(self.resolution_timeout_ms),
            clock_skew: self.clock_skew_secs,
            cache_size: self.cache_size,
            max_ttl: self.max_ttl_secs,
            negative_ttl: self.negative_ttl_secs,
        })
    }
}
