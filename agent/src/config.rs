//! Config files of both binaries (TOML). Unknown keys are errors, so a misspelt option or a
//! private key pasted into the agent's config is refused rather than ignored. Relative paths
//! are relative to the config file. Every error names the file and the option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::channel::{PairingKey, valid_device_id};
use crate::secret::{self, FileText};
use crate::session::Suite;
use crate::wire::Transport;

/// A config that cannot be used.
#[derive(Debug, Error)]
#[error("{file}: {reason}")]
pub struct ConfigError {
    /// The config file (or `command line`).
    pub file: String,
    /// What is wrong, naming the option.
    pub reason: String,
}

fn err(file: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads and parses a config; its text is wiped afterwards (it may hold a pairing key).
fn parse<T: for<'de> Deserialize<'de>>(file: &Path) -> Result<(T, FileText), ConfigError> {
    let text = secret::read_text(file).map_err(|e| err(file, e.reason))?;
    let raw = toml::from_str(&text.text)
        .map_err(|e| err(file, e.to_string().trim_end().replace('\n', " ")))?;
    Ok((raw, text))
}

/// An inline pairing key, moved into a wiped buffer as soon as it is parsed.
fn inline_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Zeroizing::new))
}

fn rel(file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// The one way a pairing key is read: inline in the config (which must then be private to its
/// owner) or from `pairing_key_file` (likewise), into buffers wiped when dropped.
fn pairing_key(
    file: &Path,
    config: &FileText,
    option: &str,
    inline: &Option<Zeroizing<String>>,
    path: &Option<PathBuf>,
) -> Result<PairingKey, ConfigError> {
    let text = match (inline, path) {
        (Some(k), None) => {
            config
                .refuse_loose(file, "a pairing key")
                .map_err(|e| err(file, format!("{option}: {}", e.reason)))?;
            k.clone()
        }
        (None, Some(p)) => {
            let p = rel(file, p);
            secret::read_secret(&p, "a pairing key")
                .map_err(|e| err(file, format!("{option}_file: {e}")))?
        }
        (Some(_), Some(_)) => {
            return Err(err(
                file,
                format!("{option}: give `{option}` or `{option}_file`, not both"),
            ));
        }
        (None, None) => {
            return Err(err(
                file,
                format!("{option}: missing (`{option}` or `{option}_file`)"),
            ));
        }
    };
    PairingKey::from_hex(&text).map_err(|e| err(file, format!("{option}: {e}")))
}

fn suites(file: &Path, names: &[String]) -> Result<Vec<Suite>, ConfigError> {
    if names.is_empty() {
        return Ok(Suite::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Suite::parse(n).ok_or_else(|| {
                err(
                    file,
                    format!("suites: unknown suite `{n}` (ccm8, gcm, or OpenSSL's names)"),
                )
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    listen: String,
    ca_file: PathBuf,
    #[serde(default)]
    suites: Vec<String>,
    #[serde(default = "default_lifetime")]
    session_lifetime_secs: u32,
    #[serde(default = "default_handshake_timeout")]
    handshake_timeout_secs: u64,
    #[serde(default = "default_sign_timeout")]
    sign_timeout_secs: u64,
    #[serde(default)]
    allowed_servers: Vec<String>,
    #[serde(default = "default_max_delegations")]
    max_concurrent_delegations: usize,
    #[serde(default = "default_true")]
    session_tickets: bool,
    #[serde(default = "default_true")]
    prestart: bool,
    #[serde(default = "default_prestart_lead")]
    prestart_lead_ms: u32,
    #[serde(default = "default_prestart_hold")]
    prestart_hold_secs: u64,
    #[serde(default)]
    device: Vec<RawAgentDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentDevice {
    id: String,
    #[serde(default, deserialize_with = "inline_key")]
    pairing_key: Option<Zeroizing<String>>,
    pairing_key_file: Option<PathBuf>,
}

fn default_lifetime() -> u32 {
    3600
}
fn default_handshake_timeout() -> u64 {
    20
}
fn default_sign_timeout() -> u64 {
    10
}
fn default_max_delegations() -> usize {
    64
}
fn default_true() -> bool {
    true
}
fn default_prestart_lead() -> u32 {
    1000
}
fn default_prestart_hold() -> u64 {
    10
}

/// One device the agent serves.
#[derive(Debug, Clone)]
pub struct AgentDevice {
    /// Device ID from its hello.
    pub id: String,
    /// Its pairing key.
    pub pairing_key: PairingKey,
}

/// The agent's configuration (`d2tls-agent --config agent.toml`).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// TCP address devices connect to.
    pub listen: SocketAddr,
    /// PEM roots the cloud servers' chains are verified against.
    pub ca_file: PathBuf,
    /// Suites offered, in order.
    pub suites: Vec<Suite>,
    /// Lifetime given to each context.
    pub session_lifetime_secs: u32,
    /// Deadline of one full handshake.
    pub handshake_timeout_secs: u64,
    /// How long the agent waits for the device's signature.
    pub sign_timeout_secs: u64,
    /// Servers (`host:port`) devices may ask for; empty = any.
    pub allowed_servers: Vec<String>,
    /// Handshakes run at once; more wait their turn.
    pub max_concurrent_delegations: usize,
    /// Whether the agent asks servers for session tickets (RFC 5077) and hands them on.
    pub session_tickets: bool,
    /// Whether a device's expected delegation (its `Expect` message) is started ahead.
    pub prestart: bool,
    /// How long before the device's expected request the agent starts that handshake.
    pub prestart_lead_ms: u32,
    /// How long a handshake started ahead waits at the signature for the device's request.
    pub prestart_hold_secs: u64,
    /// Paired devices.
    pub devices: Vec<AgentDevice>,
}

impl AgentConfig {
    /// Loads and checks `file`.
    pub fn load(file: &Path) -> Result<AgentConfig, ConfigError> {
        let (raw, text): (RawAgent, _) = parse(file)?;
        let listen = raw
            .listen
            .parse()
            .map_err(|_| err(file, format!("listen: `{}` is not an IP:port", raw.listen)))?;
        let ca_file = rel(file, &raw.ca_file);
        if !ca_file.is_file() {
            return Err(err(
                file,
                format!("ca_file: {} is not a file", ca_file.display()),
            ));
        }
        if raw.session_lifetime_secs == 0
            || raw.handshake_timeout_secs == 0
            || raw.sign_timeout_secs == 0
        {
            return Err(err(
                file,
                "session_lifetime_secs, handshake_timeout_secs and sign_timeout_secs must be > 0",
            ));
        }
        let mut devices = Vec::with_capacity(raw.device.len());
        for (i, d) in raw.device.iter().enumerate() {
            if !valid_device_id(&d.id) {
                return Err(err(
                    file,
                    format!("device[{i}].id: `{}` is not 1..=64 of [A-Za-z0-9._-]", d.id),
                ));
            }
            if devices.iter().any(|x: &AgentDevice| x.id == d.id) {
                return Err(err(
                    file,
                    format!("device[{i}].id: `{}` appears twice", d.id),
                ));
            }
            let pairing_key = pairing_key(
                file,
                &text,
                &format!("device[{i}].pairing_key"),
                &d.pairing_key,
                &d.pairing_key_file,
            )?;
            devices.push(AgentDevice {
                id: d.id.clone(),
                pairing_key,
            });
        }
        if devices.is_empty() {
            return Err(err(file, "no [[device]] configured"));
        }
        if raw.prestart_lead_ms > 60_000 {
            return Err(err(file, "prestart_lead_ms must be 0..=60000"));
        }
        if !(1..=300).contains(&raw.prestart_hold_secs) {
            return Err(err(file, "prestart_hold_secs must be 1..=300"));
        }
        if !(1..=65536).contains(&raw.max_concurrent_delegations) {
            return Err(err(file, "max_concurrent_delegations must be 1..=65536"));
        }
        for (i, s) in raw.allowed_servers.iter().enumerate() {
            if s.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(err(
                    file,
                    format!("allowed_servers[{i}]: `{s}` is not host:port"),
                ));
            }
        }
        Ok(AgentConfig {
            listen,
            ca_file,
            suites: suites(file, &raw.suites)?,
            session_lifetime_secs: raw.session_lifetime_secs,
            handshake_timeout_secs: raw.handshake_timeout_secs,
            sign_timeout_secs: raw.sign_timeout_secs,
            allowed_servers: raw
                .allowed_servers
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            max_concurrent_delegations: raw.max_concurrent_delegations,
            session_tickets: raw.session_tickets,
            prestart: raw.prestart,
            prestart_lead_ms: raw.prestart_lead_ms,
            prestart_hold_secs: raw.prestart_hold_secs,
            devices,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    device_id: String,
    agent: Option<String>,
    #[serde(default, deserialize_with = "inline_key")]
    pairing_key: Option<Zeroizing<String>>,
    pairing_key_file: Option<PathBuf>,
    certificate: PathBuf,
    private_key: PathBuf,
    server: String,
    #[serde(default)]
    server_name: String,
    #[serde(default = "default_transport")]
    transport: String,
    suite: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_attempts")]
    max_delegations: u32,
    #[serde(default = "default_device_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_kex")]
    tls13_kex: String,
    #[serde(default = "default_true")]
    early_data: bool,
}

fn default_kex() -> String {
    "psk_dhe_ke".into()
}

/// How a TLS 1.3 device resumes (RFC 8446 §4.2.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls13Kex {
    /// psk_dhe_ke only: the PSK and a fresh ECDHE (forward secrecy for the resumed session).
    PskDheKe,
    /// psk_ke offered beside psk_dhe_ke (`SSL_OP_ALLOW_NO_DHE_KEX`): the server may resume
    /// without (EC)DHE, so the device derives no shared secret.
    PskKe,
}

impl Tls13Kex {
    /// Parses `psk_dhe_ke` / `psk_ke`.
    pub fn parse(s: &str) -> Option<Tls13Kex> {
        match s {
            "psk_dhe_ke" => Some(Tls13Kex::PskDheKe),
            "psk_ke" => Some(Tls13Kex::PskKe),
            _ => None,
        }
    }
}

fn default_transport() -> String {
    "dtls".into()
}
fn default_attempts() -> u32 {
    3
}
fn default_device_timeout() -> u64 {
    30
}

/// The device's configuration (`d2tls-device --config device.toml`).
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// This device's ID (as paired with the agent).
    pub device_id: String,
    /// The agent's `host:port` (needed unless standalone).
    pub agent: Option<String>,
    /// Pairing key shared with the agent (needed unless standalone).
    pub pairing_key: Option<PairingKey>,
    /// PEM chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (read by the device only).
    pub private_key: PathBuf,
    /// Cloud server `host:port`.
    pub server: String,
    /// Name to verify on the server certificate (empty: the host of `server`).
    pub server_name: String,
    /// DTLS 1.2, TLS 1.2 or TLS 1.3.
    pub transport: Transport,
    /// Fixed suite, or any delegated suite.
    pub suite: Option<Suite>,
    /// TLS 1.3: the resumption's key exchange modes.
    pub tls13_kex: Tls13Kex,
    /// TLS 1.3: send the first data as early data (0-RTT) when the ticket allows it.
    pub early_data: bool,
    /// Roots for verifying the server in standalone mode.
    pub ca_file: Option<PathBuf>,
    /// Delegations tried before giving up.
    pub max_delegations: u32,
    /// Deadline of each network step.
    pub timeout_secs: u64,
}

impl DeviceConfig {
    /// Loads and checks `file`.
    pub fn load(file: &Path) -> Result<DeviceConfig, ConfigError> {
        let (raw, text): (RawDevice, _) = parse(file)?;
        if !valid_device_id(&raw.device_id) {
            return Err(err(
                file,
                format!(
                    "device_id: `{}` is not 1..=64 of [A-Za-z0-9._-]",
                    raw.device_id
                ),
            ));
        }
        let transport = Transport::parse(&raw.transport).ok_or_else(|| {
            err(
                file,
                format!("transport: `{}` (dtls, tls or tls13)", raw.transport),
            )
        })?;
        let tls13_kex = Tls13Kex::parse(&raw.tls13_kex).ok_or_else(|| {
            err(
                file,
                format!("tls13_kex: `{}` (psk_dhe_ke or psk_ke)", raw.tls13_kex),
            )
        })?;
        let suite = match &raw.suite {
            None => None,
            Some(n) => Some(suites(file, std::slice::from_ref(n))?[0]),
        };
        let pairing_key = if raw.pairing_key.is_some() || raw.pairing_key_file.is_some() {
            Some(pairing_key(
                file,
                &text,
                "pairing_key",
                &raw.pairing_key,
                &raw.pairing_key_file,
            )?)
        } else {
            None
        };
        if raw.max_delegations == 0 || raw.timeout_secs == 0 {
            return Err(err(file, "max_delegations and timeout_secs must be > 0"));
        }
        for (option, p) in [
            ("certificate", &raw.certificate),
            ("private_key", &raw.private_key),
        ] {
            if !rel(file, p).is_file() {
                return Err(err(
                    file,
                    format!("{option}: {} is not a file", rel(file, p).display()),
                ));
            }
        }
        Ok(DeviceConfig {
            device_id: raw.device_id,
            agent: raw.agent,
            pairing_key,
            certificate: rel(file, &raw.certificate),
            private_key: rel(file, &raw.private_key),
            server: raw.server,
            server_name: raw.server_name,
            transport,
            suite,
            tls13_kex,
            early_data: raw.early_data,
            ca_file: raw.ca_file.map(|p| rel(file, &p)),
            max_delegations: raw.max_delegations,
            timeout_secs: raw.timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a file only its owner may read (configs here hold pairing keys).
    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        chmod(&p, 0o600);
        p
    }

    fn chmod(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn pairing_keys_in_files_others_can_read_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.pem", "x");
        let key = "ab".repeat(32);
        let inline = format!(
            "listen = \"127.0.0.1:7000\"\nca_file = \"ca.pem\"\n[[device]]\nid = \"s1\"\npairing_key = \"{key}\"\n"
        );
        let f = write(dir.path(), "a.toml", &inline);
        chmod(&f, 0o644);
        let e = AgentConfig::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("device[0].pairing_key")
                && e.contains("permissions 644")
                && e.contains("chmod 600"),
            "{e}"
        );
        // In a key file: the key file must be private, the config need not be.
        let by_file = "listen = \"127.0.0.1:7000\"\nca_file = \"ca.pem\"\n[[device]]\nid = \"s1\"\npairing_key_file = \"s1.key\"\n";
        let f = write(dir.path(), "b.toml", by_file);
        chmod(&f, 0o644);
        let k = write(dir.path(), "s1.key", &format!("{key}\n"));
        assert_eq!(AgentConfig::load(&f).unwrap().devices.len(), 1);
        chmod(&k, 0o640);
        let e = AgentConfig::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("device[0].pairing_key_file") && e.contains("s1.key") && e.contains("640"),
            "{e}"
        );
        // The device's config: the same rule.
        write(dir.path(), "d.pem", "x");
        write(dir.path(), "d.key", "x");
        let dev = format!(
            "device_id = \"s1\"\npairing_key = \"{key}\"\ncertificate = \"d.pem\"\nprivate_key = \"d.key\"\nserver = \"127.0.0.1:4433\"\n"
        );
        let f = write(dir.path(), "d.toml", &dev);
        assert!(DeviceConfig::load(&f).is_ok());
        chmod(&f, 0o604);
        let e = DeviceConfig::load(&f).unwrap_err().to_string();
        assert!(e.contains("pairing_key") && e.contains("604"), "{e}");
    }

    #[test]
    fn agent_config_errors_name_the_option() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.pem", "x");
        let key = "ab".repeat(32);
        let ok = format!(
            "listen = \"127.0.0.1:7000\"\nca_file = \"ca.pem\"\n[[device]]\nid = \"s1\"\npairing_key = \"{key}\"\n"
        );
        let f = write(dir.path(), "a.toml", &ok);
        let cfg = AgentConfig::load(&f).unwrap();
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.suites, Suite::ALL.to_vec());
        assert!(cfg.session_tickets);
        assert!(cfg.prestart);
        assert_eq!((cfg.prestart_lead_ms, cfg.prestart_hold_secs), (1000, 10));
        let f = write(
            dir.path(),
            "t.toml",
            &format!("session_tickets = false\n{ok}"),
        );
        assert!(!AgentConfig::load(&f).unwrap().session_tickets);

        let cases = [
            (ok.replace("127.0.0.1:7000", "nowhere"), "listen"),
            (ok.replace("ca.pem", "missing.pem"), "ca_file"),
            (ok.replace(&key, "zz"), "device[0].pairing_key"),
            (ok.replace("\"s1\"", "\"bad id\""), "device[0].id"),
            (format!("{ok}private_key = \"device.key\"\n"), "private_key"),
            (format!("suites = [\"rc4\"]\n{ok}"), "suites"),
            (
                format!("session_tickets = \"yes\"\n{ok}"),
                "session_tickets",
            ),
            (
                format!("allowed_servers = [\"nohost\"]\n{ok}"),
                "allowed_servers[0]",
            ),
            (
                format!("max_concurrent_delegations = 0\n{ok}"),
                "max_concurrent_delegations",
            ),
            (
                format!("prestart_hold_secs = 0\n{ok}"),
                "prestart_hold_secs",
            ),
            (
                format!("prestart_lead_ms = 60001\n{ok}"),
                "prestart_lead_ms",
            ),
            (format!("prestart = 1\n{ok}"), "prestart"),
        ];
        for (text, want) in cases {
            let f = write(dir.path(), "bad.toml", &text);
            let e = AgentConfig::load(&f).unwrap_err().to_string();
            assert!(e.contains("bad.toml") && e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn device_config_errors_name_the_option() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.pem", "x");
        write(dir.path(), "d.key", "x");
        let ok = "device_id = \"s1\"\nagent = \"127.0.0.1:7000\"\npairing_key = \"".to_string()
            + &"cd".repeat(32)
            + "\"\ncertificate = \"d.pem\"\nprivate_key = \"d.key\"\nserver = \"127.0.0.1:4433\"\n";
        let f = write(dir.path(), "d.toml", &ok);
        let cfg = DeviceConfig::load(&f).unwrap();
        assert_eq!(cfg.transport, Transport::Dtls);
        assert_eq!((cfg.tls13_kex, cfg.early_data), (Tls13Kex::PskDheKe, true));
        let t13 =
            format!("{ok}transport = \"tls13\"\ntls13_kex = \"psk_ke\"\nearly_data = false\n");
        let cfg = DeviceConfig::load(&write(dir.path(), "t13.toml", &t13)).unwrap();
        assert_eq!(cfg.transport, Transport::Tls13);
        assert_eq!((cfg.tls13_kex, cfg.early_data), (Tls13Kex::PskKe, false));
        let cases = [
            (format!("{ok}transport = \"quic\"\n"), "transport"),
            (
                format!("{ok}tls13_kex = \"ecdhe\"\n"),
                "tls13_kex: `ecdhe` (psk_dhe_ke or psk_ke)",
            ),
            (format!("{ok}early_data = \"yes\"\n"), "early_data"),
            (format!("{ok}suite = \"rc4\"\n"), "suites"),
            (ok.replace("d.key", "nope.key"), "private_key"),
            (ok.replace("server =", "srv ="), "server"),
        ];
        for (text, want) in cases {
            let f = write(dir.path(), "bad.toml", &text);
            let e = DeviceConfig::load(&f).unwrap_err().to_string();
            assert!(e.contains("bad.toml") && e.contains(want), "{want}: {e}");
        }
    }
}
